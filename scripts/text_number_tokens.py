"""Why the LLM's own text answers lag the readout (#13 item 3): the same short stage-1 run of the
`tiny` config twice, identical data, seed and steps, with the project tokenizer as it is (BPE: the
two decimals of "0.28m" are one merged token, 100 classes with no order) and with ``digit_tokens``
(every digit its own token, fixed width), then the generated-text QA figures on the held-out split
next to the readout's and how many distinct distances the generated text uses.

    python scripts/text_number_tokens.py --data runs/tiny_sample/data --out runs/text_numbers --steps 400

Writes OUT/text_number_tokens.json. Timings are process CPU seconds (the machine is shared).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import time
from pathlib import Path

import torch

from vipa.evaluate import evaluate_qa
from vipa.model.checkpoint import load_checkpoint
from vipa.model.config import get_config
from vipa.train.data import build_tokenizer, load_split, stage_dataset
from vipa.train.loop import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--max-episodes", type=int, default=240)
    ap.add_argument("--frame-step", type=int, default=2)
    ap.add_argument("--max-qa", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["merged", "digits"], choices=["merged", "digits"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = get_config("tiny")
    caches, ids = load_split(args.data, base, "train", 0.2, 0, args.frame_step, args.max_episodes)
    test, test_ids = load_split(args.data, base, "test", 0.2, 0)
    assert not set(ids) & set(test_ids)
    results = {}
    path = out / "text_number_tokens.json"
    if path.is_file():
        results = json.loads(path.read_text()).get("variants", {})
    for name in args.variants:
        if name in results:
            continue
        cfg = get_config("tiny", digit_tokens=(name == "digits"))
        tok = build_tokenizer(caches, cfg)
        ds = stage_dataset(caches, tok, cfg, "stage1")
        c0 = time.process_time()
        res = train(cfg, "stage1", ds, tok, out / name, steps=args.steps, progress=False, num_threads=args.threads,
                    meta={"train_episodes": ids, "test_fraction": 0.2, "samples": len(ds)})
        train_cpu = time.process_time() - c0
        model, cfg, tok, _ = load_checkpoint(res.final)
        rep = evaluate_qa(model, tok, cfg, test, args.max_qa, lm_text=True)
        dists = [m.group(1) for e in rep["lm_texts"] if (m := re.search(r"(\d+\.\d+)\s*m", e))]
        common = collections.Counter(dists).most_common(3)
        results[name] = {"readout": rep["model"], "generated_text": rep["model_lm_text"],
                         "constant": rep["constant_baseline"], "n": rep["n"],
                         "distinct_distances": len(set(dists)), "most_common": common,
                         "final_lm_loss": res.metrics[-1].get("lm") if res.metrics else None,
                         "train_cpu_s": round(train_cpu, 1), "examples": rep["examples"][:4]}
        path.write_text(json.dumps({"steps": args.steps, "max_episodes": args.max_episodes,
                                    "frame_step": args.frame_step, "variants": results}, indent=2))
        print(name, json.dumps({k: results[name][k] for k in ("readout", "generated_text", "distinct_distances",
                                                              "most_common", "train_cpu_s")}), flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
