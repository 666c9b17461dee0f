"""The training loop for stage 1, stage 2 and post-training (the losses are the model's own:
``VIPAModel.compute_loss``).

AdamW, linear warm-up then cosine decay, gradient clipping, seeds, JSON-lines metrics (the
fusion alpha included), safetensors checkpoints with config + tokenizer (+ action statistics),
resume from the latest checkpoint, tqdm progress on rank 0, and PyTorch DDP when launched by
``torchrun`` (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from vipa.conventions import MOTION_BINS
from vipa.model.batch import Batch
from vipa.model.checkpoint import load_checkpoint, load_weights, load_with_new_part, save_checkpoint, unwrap
from vipa.model.config import STAGES, TrainConfig, VIPAConfig, adds_geometry_token, init_fits, same_config
from vipa.model.processor import collate
from vipa.model.tokenizer import VIPATokenizer
from vipa.model.vla import VIPAModel


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


class LossModule(torch.nn.Module):
    """``VIPAModel.compute_loss`` as a module's forward, so that DistributedDataParallel (which
    synchronises gradients of what runs through its forward) can wrap it."""

    def __init__(self, model: VIPAModel):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch, stage: str, weights: TrainConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.model.compute_loss(batch, stage, weights)


@dataclass
class RunResult:
    run_dir: Path
    final: Path
    steps: int
    metrics: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(device: str = "auto") -> torch.device:
    """The training device: "auto" = this rank's GPU (LOCAL_RANK under torchrun) when CUDA is
    available, else the CPU. A CUDA device asked for on a machine without one is an error."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine")
        torch.cuda.set_device(dev.index or 0)
        dev = torch.device("cuda", dev.index or 0)
    return dev


def _dist_info() -> tuple[bool, int, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True, dist.get_rank(), dist.get_world_size()
    return False, 0, 1


def latest_checkpoint(run_dir: Path) -> Path | None:
    ck = sorted((run_dir / "checkpoints").glob("step_*[0-9]"))
    return ck[-1] if ck else None


def param_checksum(model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().sum() * (i + 1) for i, p in enumerate(unwrap(model).parameters())))


def train(cfg: VIPAConfig, stage: str, train_set: Dataset, tok: VIPATokenizer, run_dir: str | Path,
          steps: int | None = None, resume: bool = False, init: str | Path | None = None,
          meta: dict[str, Any] | None = None, action_stats: dict[str, list] | None = None,
          progress: bool = True, num_threads: int | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None, device: str = "auto") -> RunResult:
    """Train ``stage`` on ``train_set`` and write checkpoints under ``run_dir``; returns the final
    checkpoint. ``init``: start from another run's checkpoint (e.g. stage 1 -> stage 2).
    ``device``: "auto" (CUDA when available, under torchrun the rank's LOCAL_RANK GPU), "cpu",
    "cuda" or "cuda:N"."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    distributed, rank, world = _dist_info()
    if num_threads:
        torch.set_num_threads(num_threads)
    run_dir = Path(run_dir)
    tc = cfg.train
    total = int(steps if steps is not None else tc.steps[stage])
    if total <= 0:
        total = max(1, len(train_set) // (tc.batch_size[stage] * world))  # one epoch
    seed_everything(tc.seed)
    dev = resolve_device(device)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)
    start = 0
    ckpt = latest_checkpoint(run_dir) if resume else None
    if init is not None and ckpt is None:
        m0, c0, t0, _ = load_checkpoint(init)
        if t0.vocab_size != tok.vocab_size or not init_fits(c0.model, cfg.model, stage):
            raise ValueError(f"--init {init}: its config/tokenizer differ from this run's")
        if same_config(c0.model, cfg.model):
            model.load_state_dict(m0.state_dict())
        elif adds_geometry_token(c0.model, cfg.model):  # the new token's embedding starts fresh
            load_with_new_part(model, m0.state_dict(), "geo_embed.", f"--init {init}")
        else:  # post-training with another action head than the init's: everything but the head
            sd = {k: v for k, v in m0.state_dict().items() if not k.startswith("action_head.")}
            model.load_state_dict(sd, strict=False)
    ms = tok.motion_start[0]
    if list(tok.motion_start) != [ms + a * MOTION_BINS for a in range(3)]:
        raise ValueError(f"tokenizer: the x, y, z motion-token ranges are not consecutive ({tok.motion_start})")
    model.motion_start = ms
    model.to(dev)
    model.set_trainable(tc.trainable[stage])
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{stage}: no trainable parameters (trainable groups {tc.trainable[stage]})")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr[stage])
    if ckpt is not None:
        load_weights(model, ckpt / "model.safetensors")
        state = torch.load(ckpt / "train_state.pt", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
    loss_module: torch.nn.Module = LossModule(model)
    if distributed:
        loss_module = torch.nn.parallel.DistributedDataParallel(
            loss_module, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)
    bs = tc.batch_size[stage]
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=tc.seed) if distributed else \
        RandomSampler(train_set, replacement=True, num_samples=10**9, generator=torch.Generator().manual_seed(tc.seed + start))
    loader = DataLoader(train_set, batch_size=bs, sampler=sampler, collate_fn=lambda b: collate(b, tok.pad_id),
                        drop_last=True, num_workers=0)
    warmup = min(tc.warmup_steps, max(1, total // 10))  # short runs still decay
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        cfg.save(run_dir / "config.json")
    log_path = run_dir / "metrics.jsonl"
    info = {"stage": stage, **(meta or {})}

    def save(step: int, final: bool = False) -> Path:
        p = run_dir / ("final" if final else f"checkpoints/step_{step:07d}")
        save_checkpoint(p, model, cfg, tok, {**info, "step": step}, action_stats)
        if not final:
            torch.save({"optimizer": opt.state_dict(), "step": step, "torch_rng": torch.get_rng_state()},
                       p / "train_state.pt")
        return p

    bar = None
    if progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=total, initial=start, desc=f"{cfg.name} {stage}", dynamic_ncols=True)
    metrics: list[dict[str, Any]] = []
    model.train()
    step, epoch, t_last, n_seen = start, 0, time.time(), 0
    while step < total:
        if distributed:
            sampler.set_epoch(epoch)
        for batch in loader:
            if step >= total:
                break
            for g in opt.param_groups:
                g["lr"] = tc.lr[stage] * lr_factor(step, total, warmup, tc.min_lr_ratio)
            if dev.type != "cpu":
                batch = batch.to(dev, non_blocking=True)
            loss, parts = loss_module(batch, stage, tc)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{stage} step {step}: loss is {loss.item()}")
            losses = {"loss": loss, **parts}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
            opt.step()
            step += 1
            n_seen += bs * world
            if rank == 0 and (step % tc.log_every == 0 or step == total):
                now = time.time()
                rec = {"step": step, "stage": stage, **{k: round(float(v.detach()), 5) for k, v in losses.items()},
                       "grad_norm": round(float(gnorm), 4), "lr": opt.param_groups[0]["lr"],
                       "alpha": round(float(model.fusion.alpha.detach()), 5),
                       "samples_per_s": round(n_seen / max(1e-9, now - t_last), 2), "time": now}
                t_last, n_seen = now, 0
                metrics.append(rec)
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if on_step:
                    on_step(rec)
                if bar:
                    bar.set_postfix(loss=rec["loss"], alpha=rec["alpha"])
            if bar:
                bar.update(1)
            if rank == 0 and tc.ckpt_every and step % tc.ckpt_every == 0 and step < total:
                save(step)
        epoch += 1
    if bar:
        bar.close()
    final = run_dir / "final"
    if distributed:
        sums = [None] * world
        dist.all_gather_object(sums, param_checksum(model))
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps({"step": step, "ddp_param_checksums": sums}) + "\n")
        dist.barrier()
    if rank == 0:
        save(step)
        final = save(step, final=True)
    if distributed:
        dist.barrier()
    return RunResult(run_dir, final, step, metrics)
