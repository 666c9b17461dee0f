"""Pretrain `tiny` through stage 1 then stage 2 on synthetic human-video episodes generated in
memory (annotators.synthetic; exact 3D hand/object ground truth), for condition (a) of the
simulator experiment. Same data path as `vipa train stage1|stage2` (FrameCache -> Hand3D torch
dataset -> vipa.train.loop.train), without writing the episodes to disk (no video codec needed).

    python scripts/sim_pretrain.py --out RUN --episodes 200 --steps1 300 --steps2 300 --workers 8
writes RUN/stage1/final and RUN/stage2/final (the --init checkpoint for post-training).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cache(args: tuple[int, int, int]):
    import torch

    torch.set_num_threads(1)
    from annotators.synthetic import generate_episode
    from vipa.train.datasets import cache_episode

    seed, res, size = args
    return cache_episode(generate_episode(seed, width=res, height=res, num_frames=32), size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="tiny")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--resolution", type=int, default=128, help="rendered synthetic frame size (px)")
    p.add_argument("--steps1", type=int, default=300)
    p.add_argument("--steps2", type=int, default=300)
    p.add_argument("--budget-s", type=float, default=None,
                   help="instead of --steps1/--steps2: split this many seconds of training equally between the stages "
                        "(steps from a 5-step calibration under the same load)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)

    from vipa.model.config import get_config
    from vipa.train.data import build_tokenizer, stage_dataset
    from vipa.train.loop import train

    cfg = get_config(a.config)
    cfg.train.seed = a.seed
    t0 = time.time()
    jobs = [(a.seed * 100_000 + i, a.resolution, cfg.model.image_size) for i in range(a.episodes)]
    with ProcessPoolExecutor(a.workers) as ex:
        caches = list(ex.map(_cache, jobs, chunksize=4))
    print(f"sim_pretrain: {len(caches)} synthetic episodes in {time.time() - t0:.0f} s", file=sys.stderr)
    tok = build_tokenizer(caches, cfg)
    out = Path(a.out)
    if a.budget_s:
        t1 = time.time()
        train(cfg, "stage1", stage_dataset(caches, tok, cfg, "stage1"), tok, out / "calibration", steps=5,
              progress=False, num_threads=a.threads)
        per_step = (time.time() - t1) / 5
        a.steps1 = a.steps2 = max(5, int(a.budget_s / 2 / per_step))
        print(f"sim_pretrain: {per_step:.3f} s/step -> {a.steps1} steps per stage", file=sys.stderr)
    s1 = train(cfg, "stage1", stage_dataset(caches, tok, cfg, "stage1"), tok, out / "stage1", steps=a.steps1,
               meta={"data": "annotators.synthetic in memory", "episodes": a.episodes}, progress=False,
               num_threads=a.threads)
    s2 = train(cfg, "stage2", stage_dataset(caches, tok, cfg, "stage2"), tok, out / "stage2", steps=a.steps2,
               init=s1.final, meta={"data": "annotators.synthetic in memory", "episodes": a.episodes}, progress=False,
               num_threads=a.threads)
    summary = {"stage1": {"final": str(s1.final), "first": s1.metrics[0] if s1.metrics else None,
                          "last": s1.metrics[-1] if s1.metrics else None},
               "stage2": {"final": str(s2.final), "first": s2.metrics[0] if s2.metrics else None,
                          "last": s2.metrics[-1] if s2.metrics else None},
               "steps": [a.steps1, a.steps2], "seconds": round(time.time() - t0, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
