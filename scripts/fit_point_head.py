"""Give a checkpoint made without the RGB point-estimate head (``mono_points``) one, trained alone.

The head maps the semantic encoder's fine map to camera-frame points (metres); everything else is
frozen and unchanged, so the checkpoint's figures with depth or a point map stay exactly as they
were, and with RGB only its readout points at estimated instead of missing points. Trains on the
training split's frames (L1 against the point map cells, valid cells only) and writes a new
checkpoint folder (``mono_points`` on; ``pointmap_dropout`` stays what the rest was trained with).

    python scripts/fit_point_head.py checkpoints/tiny_sample --data runs/tiny_sample/data --out runs/mono
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from vipa.model.checkpoint import load_checkpoint, load_with_new_part, save_derived_checkpoint
from vipa.model.encoders import pool_points
from vipa.model.vla import VIPAModel
from vipa.train.data import load_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", required=True, help="the Hand3D dataset the checkpoint was trained on")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-if-present", action="store_true",
                    help="a checkpoint that already has the head (trained jointly in stages 1 and 2, the default "
                         "since mono_points is on) is copied to --out unchanged instead of refused")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    old, cfg, tok, info = load_checkpoint(args.checkpoint)
    if args.keep_if_present and cfg.model.use_3d and cfg.model.mono_points:
        shutil.copytree(args.checkpoint, args.out, dirs_exist_ok=True)
        (Path(args.out) / "metrics_point_head.jsonl").write_text(
            json.dumps({"stage": "point_head", "fitted": False,
                        "reason": "the checkpoint already has the head, trained jointly in stages 1 and 2"}) + "\n")
        print(f"{args.checkpoint}: already has the point head (trained jointly); copied to {args.out} unchanged")
        return
    if not cfg.model.use_3d or cfg.model.mono_points:
        raise SystemExit(f"{args.checkpoint}: has no 3D encoder or already has the point head")
    cfg.model = dataclasses.replace(cfg.model, mono_points=True)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id, load_pretrained=False)
    try:
        load_with_new_part(model, old.state_dict(), "point_head.", str(args.checkpoint))
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.point_head.parameters():
        p.requires_grad_(True)
    caches, ids = load_split(args.data, cfg, "train", info.get("test_fraction", 0.2), 0)
    train_ids = info.get("train_episodes")
    if train_ids and set(ids) - set(train_ids):
        raise SystemExit("the training split differs from the checkpoint's training episodes")
    frames = [(c, t) for c in caches for t in range(len(c.images)) if float(c.valid[t].max()) > 0]
    opt = torch.optim.AdamW(model.point_head.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr * 0.05)
    g = torch.Generator().manual_seed(args.seed)
    t0, log = time.time(), []
    for step in range(1, args.steps + 1):
        pick = torch.randint(len(frames), (args.batch_size,), generator=g).tolist()
        image = torch.stack([frames[i][0].images[frames[i][1]] for i in pick]).float() / 255.0
        xyz = torch.stack([frames[i][0].xyz[frames[i][1]] for i in pick]).float()
        valid = torch.stack([frames[i][0].valid[frames[i][1]] for i in pick]).float()
        with torch.no_grad():
            sem_fine, _ = model.semantic(image)
            cells, cv = pool_points(xyz, valid, cfg.model.fine_grid)
        est = model.point_head(sem_fine).flatten(2).transpose(1, 2)
        loss = ((est - cells).abs().sum(-1) * cv).sum() / cv.sum().clamp_min(1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == 1:
            log.append({"step": step, "stage": "point_head", "mono": round(loss.item(), 5),
                        "time": round(time.time() - t0, 1)})
            print(json.dumps(log[-1]), flush=True)
    record = {"from": str(args.checkpoint), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
              "final_l1_m": log[-1]["mono"], "seconds": round(time.time() - t0, 1)}
    out = save_derived_checkpoint(args.out, model, cfg, tok, info, "point_head", record, log)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
