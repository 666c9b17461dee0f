"""Issue 13 item 4: why does the 3D branch hurt from scratch on Meta-World? Compare post-trained
checkpoints on the demonstrations they trained on and on expert demonstrations of unseen seeds.

For each checkpoint and each set of demonstrations (every K-th frame), with the checkpoint's own
tokenizer and action statistics, no augmentation, and the same noise for every checkpoint:
- ``flow``: the action head's flow-matching loss (normalised actions);
- ``action_l1``: the mean absolute error of the sampled action chunk (10 Euler steps, the policy's
  own sampler), in Meta-World action units ([-1, 1] deltas, first 8 actions of each chunk);
- ``point_a_cm`` / ``point_b_cm``: distance of pointer A from the end effector now and of pointer B
  from where the demonstration ends (camera frame, cm), and ``traj_cm`` (trajectory ADE);
- ``point_b_first_cm``: pointer B on each episode's first frame only (the goal seen from the start).
A model that fits its training seeds as well as another but is worse on unseen seeds generalises
worse; one that is already worse on its training seeds fits worse.

  python scripts/diagnose_post_3d.py --run b@s1=runs/sim_seeds/post_b@s1/final \\
      --run c@s1=runs/sim_seeds/post_c@s1/final --train runs/sim_seeds/demos/*.npz \\
      --heldout runs/sim_heldout/demos/*.npz --every 4 --out runs/diagnose_post_3d
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipa.model.checkpoint import load_checkpoint
from vipa.model.processor import collate
from vipa.train.robot import RobotFrames, episode_last_frame, read_arrays


def episode_starts(episode: np.ndarray) -> np.ndarray:
    """(N,) bool: True on each episode's first frame (from ``episode_last_frame``)."""
    last = episode_last_frame(np.asarray(episode))
    return np.r_[True, last[1:] != last[:-1]]


def kept_frames(episode: np.ndarray, every: int) -> np.ndarray:
    """Indices of every ``every``-th frame of each episode, its first frame included."""
    first = episode_starts(episode)
    i = np.arange(len(first))
    pos = i - np.maximum.accumulate(np.where(first, i, 0))
    return np.flatnonzero(pos % every == 0)


@torch.no_grad()
def measure(loaded: tuple, arrays: dict[str, Any], every: int, batch_size: int = 64, seed: int = 0,
            ) -> dict[str, Any]:
    """The figures of the module docstring for one checkpoint (``load_checkpoint``'s result) on one set
    of demonstrations (``read_arrays``: whole episodes, the spatial targets need them; only the kept
    frames are measured)."""
    model, cfg, tok, info = loaded
    stats = info["action_stats"]
    keep = kept_frames(arrays["episode"], every)
    ds = RobotFrames(arrays, cfg, tok, stats, shift=0)
    first = set(np.flatnonzero(episode_starts(arrays["episode"])).tolist())
    a_std = torch.tensor(stats["action_std"])
    sums: dict[str, list[float]] = {k: [] for k in ("flow", "action_l1", "point_a_cm", "point_b_cm", "traj_cm")}
    b_first: list[float] = []
    gen = torch.Generator().manual_seed(seed)  # the same sampling noise for every checkpoint
    for s in range(0, len(keep), batch_size):
        idx = keep[s:s + batch_size]
        batch = collate([ds[int(i)] for i in idx], tok.pad_id)
        torch.manual_seed(seed + s)  # the same flow noise and times for every checkpoint
        out = model(*batch.observation())
        geom = model.action_geometry(out)
        flow = model.action_head.loss(batch.actions, batch.state, out.queries, batch.action_mask, geom=geom)
        sums["flow"].append(float(flow) * len(idx))
        pred = model.action_head.sample(batch.state, out.queries, generator=gen, geom=geom)
        m = batch.action_mask[:, :8, None].float()
        err = ((pred[:, :8] - batch.actions[:, :8]).abs() * a_std) * m
        sums["action_l1"].extend((err.sum((1, 2)) / (m.sum((1, 2)) * pred.shape[-1]).clamp_min(1)).tolist())
        pa = (out.point_a - batch.point_a).norm(dim=-1) * 100
        pb = (out.point_b - batch.point_b).norm(dim=-1) * 100
        tr = (out.traj - batch.traj).norm(dim=-1).mean(1) * 100
        keep_t = batch.traj_mask > 0  # (B,): samples with a full trajectory ahead
        sums["point_a_cm"].extend(pa.tolist())
        sums["point_b_cm"].extend(pb.tolist())
        sums["traj_cm"].extend(tr[keep_t].tolist())
        b_first.extend(float(v) for i, v in zip(idx, pb) if int(i) in first)
    n = len(keep)
    res = {"frames": n, "flow": sum(sums["flow"]) / n}
    res.update({k: float(np.mean(v)) for k, v in sums.items() if k != "flow"})
    res["point_b_first_cm"] = float(np.mean(b_first))
    res["alpha"] = float(model.fusion.alpha) if model.spatial is not None else None
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="NAME=CHECKPOINT (repeat)")
    p.add_argument("--train", nargs="+", required=True, help="the demonstrations the runs trained on (.npz)")
    p.add_argument("--heldout", nargs="+", required=True, help="expert demonstrations of unseen seeds (.npz)")
    p.add_argument("--every", type=int, default=4, help="every K-th frame of each episode (plus its first)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": read_arrays(a.train), "heldout": read_arrays(a.heldout)}
    rows = []
    for spec in a.run:
        name, ckpt = spec.split("=", 1)
        loaded = load_checkpoint(ckpt)
        if loaded[3]["action_stats"] is None:
            raise SystemExit(f"{ckpt}: no action_stats.json (not a post-trained checkpoint)")
        for split, arrays in splits.items():
            r = {"run": name, "split": split, **measure(loaded, arrays, a.every)}
            print(json.dumps(r), flush=True)
            rows.append(r)
    (out / "diagnose_post_3d.json").write_text(json.dumps(rows, indent=2))
    cols = ["flow", "action_l1", "point_a_cm", "point_b_cm", "point_b_first_cm", "traj_cm"]
    lines = ["| run | split | frames | " + " | ".join(cols) + " |", "|---|---|---|" + "---|" * len(cols)]
    lines += [f"| {r['run']} | {r['split']} | {r['frames']} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |"
              for r in rows]
    (out / "diagnose_post_3d.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
