"""Fit the RGB point-estimate head (``mono_points``) alone on a checkpoint made without it.

The head maps the semantic encoder's fine map to camera-frame points (metres); everything else is
frozen and unchanged, so the checkpoint's figures with depth or a point map stay exactly as they
were, and with RGB only its readout points at estimated instead of missing points. Trains on the
training split's frames (L1 against the point-map cells, valid cells only) and writes a new
checkpoint folder (``mono_points`` on; ``pointmap_dropout`` stays what the rest was trained with).
Used by ``scripts/fit_point_head.py`` and the ablation table's sample recipe (``vipa.evaluate``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from vipa.model.checkpoint import load_checkpoint, load_with_new_part, save_derived_checkpoint
from vipa.model.encoders import pool_points
from vipa.model.vla import VIPAModel
from vipa.train.data import load_split


def fit_point_head(checkpoint: str | Path, data: str | Path, out: str | Path, steps: int = 300,
                   batch_size: int = 64, lr: float = 3e-3, threads: int | None = None, seed: int = 0,
                   keep_if_present: bool = False, max_episodes: int | None = None,
                   log_fn: Callable[[dict], None] | None = None) -> Path:
    """Write OUT: ``checkpoint`` with the point head fitted for ``steps`` AdamW steps of ``batch_size``
    training frames (cosine learning rate from ``lr``). ``keep_if_present``: a checkpoint that already
    has the head (trained jointly) is copied unchanged instead of refused. ``max_episodes`` as the
    checkpoint's training used. Raises ValueError naming the problem (no 3D encoder, head present,
    weights that do not fit, a training split other than the checkpoint's)."""
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"point head: steps and batch_size must be >= 1 and lr > 0 (got {steps}, {batch_size}, {lr})")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    old, cfg, tok, info = load_checkpoint(checkpoint)
    out = Path(out)
    if keep_if_present and cfg.model.use_3d and cfg.model.mono_points:
        shutil.copytree(checkpoint, out, dirs_exist_ok=True)
        (out / "metrics_point_head.jsonl").write_text(
            json.dumps({"stage": "point_head", "fitted": False,
                        "reason": "the checkpoint already has the head, trained jointly"}) + "\n")
        return out
    if not cfg.model.use_3d:
        raise ValueError(f"{checkpoint}: has no 3D encoder, so no point head to fit")
    if cfg.model.mono_points:
        raise ValueError(f"{checkpoint}: already has the point head (keep_if_present copies it unchanged)")
    cfg.model = dataclasses.replace(cfg.model, mono_points=True)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id, load_pretrained=False)
    load_with_new_part(model, old.state_dict(), "point_head.", str(checkpoint))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.point_head.parameters():
        p.requires_grad_(True)
    caches, ids = load_split(data, cfg, "train", info.get("test_fraction", 0.2), 0, max_episodes=max_episodes)
    train_ids = info.get("train_episodes")
    if train_ids and set(ids) - set(train_ids):
        raise ValueError(f"{data}: the training split differs from {checkpoint}'s training episodes "
                         f"(e.g. {sorted(set(ids) - set(train_ids))[:3]})")
    frames = [(c, t) for c in caches for t in range(len(c.images)) if float(c.valid[t].max()) > 0]
    if not frames:
        raise ValueError(f"{data}: no training frame has a valid point map to fit the head on")
    opt = torch.optim.AdamW(model.point_head.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=lr * 0.05)
    g = torch.Generator().manual_seed(seed)
    t0, log = time.time(), []
    for step in range(1, steps + 1):
        pick = torch.randint(len(frames), (batch_size,), generator=g).tolist()
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
        if step % 50 == 0 or step == 1 or step == steps:
            log.append({"step": step, "stage": "point_head", "mono": round(loss.item(), 5),
                        "time": round(time.time() - t0, 1)})
            if log_fn:
                log_fn(log[-1])
    record = {"from": str(checkpoint), "steps": steps, "batch_size": batch_size, "lr": lr,
              "final_l1_m": log[-1]["mono"], "seconds": round(time.time() - t0, 1)}
    return save_derived_checkpoint(out, model, cfg, tok, info, "point_head", record, log)
