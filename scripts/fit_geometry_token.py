"""Give a trained checkpoint the geometry token (``geometry_token``, #13 item 3) and teach its LLM
to read it: the readout's pointers, their difference and distance and the trajectory enter the
sequence as one token before the text answer, so the generated numbers can say what the readout
measured. The encoders, fusion, query tokens and readout heads stay frozen; the LLM and the new
embedding train on stage-1 samples (QA and the other stage-1 texts) and, with ``--stage2-mix``,
stage-2 motion samples (motion tokens). The readout reads the LLM's hidden states, so training the
LLM on the text alone moves it (1200 steps: QA 0.040 -> 0.050 m); ``--keep-readout`` adds the
readout's L1 terms to the loss. ``--features`` picks the token's encoding (default "fourier").
Writes a new checkpoint folder.

    python scripts/fit_geometry_token.py checkpoints/tiny_sample --data runs/tiny_sample/data --out runs/geo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import torch

from vipa.model.checkpoint import load_checkpoint, load_with_new_part, save_derived_checkpoint
from vipa.model.config import GEOMETRY_FEATURES
from vipa.model.processor import collate
from vipa.model.vla import VIPAModel
from vipa.train.data import load_split, stage_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--stage2-mix", type=float, default=0.5, help="share of stage-2 (motion) samples per batch")
    ap.add_argument("--frame-step", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", choices=GEOMETRY_FEATURES, default="fourier",
                    help="the token's input: raw metres, or with sin / cos features (config geometry_features)")
    ap.add_argument("--keep-readout", action="store_true",
                    help="optimise the stages' whole loss (the readout's L1 terms too), not the text alone, so "
                         "the LLM's training does not move the readout it reads")
    ap.add_argument("--budget-s", type=float, default=None, help="stop after this many seconds of training")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    old, cfg, tok, info = load_checkpoint(args.checkpoint)
    if cfg.model.geometry_token:
        raise SystemExit(f"{args.checkpoint}: already has the geometry token")
    cfg.model = dataclasses.replace(cfg.model, geometry_token=True, geometry_features=args.features)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id, load_pretrained=False)
    try:
        load_with_new_part(model, old.state_dict(), "geo_embed.", str(args.checkpoint))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    model.set_trainable(["llm"])
    for p in model.geo_embed.parameters():
        p.requires_grad_(True)
    model.train()
    caches, ids = load_split(args.data, cfg, "train", info.get("test_fraction", 0.2), 0, args.frame_step)
    train_ids = info.get("train_episodes")
    if train_ids and set(ids) - set(train_ids):
        raise SystemExit("the training split differs from the checkpoint's training episodes")
    s1 = stage_dataset(caches, tok, cfg, "stage1")
    s2 = stage_dataset(caches, tok, cfg, "stage2")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / 30) * max(0.05, 1 - k / args.steps))
    rng = random.Random(args.seed)
    n2 = int(round(args.batch_size * args.stage2_mix))
    t0, c0, log = time.time(), time.process_time(), []
    for step in range(1, args.steps + 1):
        if args.budget_s is not None and time.time() - t0 > args.budget_s:
            step -= 1
            break
        losses = {}
        total = 0.0
        for stage, ds, k in (("stage1", s1, args.batch_size - n2), ("stage2", s2, n2)):
            if k <= 0:
                continue
            batch = collate([ds[rng.randrange(len(ds))] for _ in range(k)], tok.pad_id)
            loss, parts = model.compute_loss(batch, stage, cfg.train)
            # the text alone trains here, or with --keep-readout the whole loss (the readout's terms too)
            total = total + (loss if args.keep_readout else parts["lm"]) * k / args.batch_size
            losses[f"lm_{stage}"] = round(parts["lm"].item(), 4)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == 1:
            log.append({"step": step, "stage": "geometry_token", **losses, "time": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
    model.eval()
    record = {"from": str(args.checkpoint), "features": args.features, "steps": step, "batch_size": args.batch_size, "lr": args.lr,
              "stage2_mix": args.stage2_mix, "keep_readout": args.keep_readout, "frame_step": args.frame_step,
              "seconds": round(time.time() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}
    out = save_derived_checkpoint(args.out, model, cfg, tok, info, "geometry_token", record, log)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
