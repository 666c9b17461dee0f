"""PyTorch datasets for the three training stages, built from Hand3D episodes.

Every sample holds one RGB frame resized to the model's ``image_size``, its scale-calibrated
camera-frame point map (from metric depth and K, NaN-aware area-resized, metres) with a
validity map, a text prompt and target, and numeric targets (camera frame, metres):

* stage 1 (Hand3D-visual QA, single frame): "spatial" (object centre minus wrist) and "task"
  (wrist at the episode's last valid frame minus the wrist now); answers use the paper's
  direction + distance codec (``vipa.data.qa``).
* stage 2 (Hand3D-action): instructional motion generation, motion translation and contextual
  motion prediction over wrist waypoints every ``motion_stride`` frames, as motion tokens;
  low-motion samples are filtered out (``vipa.data.motion.LowMotionFilter``).

Targets are derived from the episode's annotations (corrections applied when read through a
Hand3D dataset), so they are regenerated whenever annotations change.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vipa.conventions import WRIST
from vipa.data.episode import Episode
from vipa.data.motion import LowMotionFilter
from vipa.data.qa import encode_direction_distance
from vipa.model.config import ModelConfig
from vipa.model.processor import collate, encode_prompt, point_map_from_depth, prepare_image, prepare_points
from vipa.model.tokenizer import VIPATokenizer

IGNORE = -100
CACHE_VERSION = 1
QA_KINDS = ("spatial", "task")
MOTION_KINDS = ("gen", "translate", "context")


def split_ids(ids: Sequence[str], test_fraction: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic (train, test) split of episode ids: held-out whole episodes."""
    ids = sorted(ids)
    rng = random.Random(seed)
    order = ids[:]
    rng.shuffle(order)
    n_test = max(1, round(len(ids) * test_fraction)) if len(ids) > 1 else 0
    test = set(order[:n_test])
    return [i for i in ids if i not in test], [i for i in ids if i in test]


@dataclass
class FrameCache:
    """Model-ready frames of one episode plus the annotations the targets need."""

    episode_id: str
    instruction: str
    side: str
    images: torch.Tensor  # (T, 3, S, S) uint8
    xyz: torch.Tensor  # (T, 3, S, S) float16 metres
    valid: torch.Tensor  # (T, 1, S, S) float16
    wrist: np.ndarray  # (T, 3) float32 metres (NaN where unknown)
    usable: np.ndarray  # (T,) bool: frame valid, hand present, wrist valid, depth valid
    objects: list[tuple[str, np.ndarray]]  # (name, (T, 3) centre)


def _main_hand(ep: Episode) -> str:
    counts = {s: int((h.present & np.isfinite(h.joints_3d[:, WRIST]).all(1)).sum()) for s, h in ep.hands.items()}
    return max(counts, key=counts.get)


def cache_episode(ep: Episode, size: int, rgb_frames: np.ndarray | None = None,
                  depth_frames: Iterable[np.ndarray | None] | None = None, frame_step: int = 1) -> FrameCache:
    """Resize an episode's frames for the model. Media come from ``ep.rgb``/``ep.metric_depth``
    unless given (``rgb_frames`` (T, H, W, 3) uint8, ``depth_frames`` metric metres per frame)."""
    t = ep.num_frames
    rgb = rgb_frames if rgb_frames is not None else ep.rgb
    if rgb is None:
        raise ValueError(f"episode {ep.episode_id}: no RGB frames")
    depths = list(depth_frames) if depth_frames is not None else [ep.metric_depth(i) for i in range(t)]
    side = _main_hand(ep)
    hand = ep.hands[side]
    wrist = np.where(hand.present[:, None], hand.joints_3d[:, WRIST], np.nan).astype(np.float32)
    keep = np.zeros(t, bool)
    keep[::frame_step] = True
    usable = ep.frame_valid & np.isfinite(wrist).all(1) & keep
    imgs = torch.zeros(t, 3, size, size, dtype=torch.uint8)
    xyz = torch.zeros(t, 3, size, size, dtype=torch.float16)
    val = torch.zeros(t, 1, size, size, dtype=torch.float16)
    for i in np.flatnonzero(usable):
        d = depths[i]
        if d is None or not np.isfinite(d).any():
            usable[i] = False
            continue
        imgs[i] = prepare_image(rgb[i], size)
        p, v = prepare_points(point_map_from_depth(d, ep.K), size)
        xyz[i], val[i] = p.half(), v.half()
    objects = [(o.name or o.object_id, o.center.astype(np.float32)) for o in ep.objects]
    return FrameCache(ep.episode_id, ep.instruction or "do the task", side, imgs, xyz, val, wrist, usable, objects)


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIPA_CACHE_DIR", Path.home() / ".cache" / "vipa" / "frames"))


def _save_cache(path: Path, c: FrameCache) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=c.images.numpy(), xyz=c.xyz.numpy(), valid=c.valid.numpy(), wrist=c.wrist,
             usable=c.usable, obj_names=np.array([n for n, _ in c.objects], dtype=str),
             obj_centres=np.stack([o for _, o in c.objects]) if c.objects else np.zeros((0, len(c.wrist), 3), np.float32),
             meta=np.array(json.dumps({"episode_id": c.episode_id, "instruction": c.instruction, "side": c.side})))
    os.replace(tmp, path)


def _load_cache(path: Path) -> FrameCache:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return FrameCache(meta["episode_id"], meta["instruction"], meta["side"], torch.from_numpy(z["images"]),
                          torch.from_numpy(z["xyz"]), torch.from_numpy(z["valid"]), z["wrist"], z["usable"],
                          [(str(n), c) for n, c in zip(z["obj_names"], z["obj_centres"])])


def cache_from_dataset(ds: Any, episode_ids: Sequence[str], size: int, frame_step: int = 1,
                       cache_dir: str | Path | None = None) -> list[FrameCache]:
    """FrameCaches read through a ``vipa.data.dataset.Hand3DDataset`` (corrections applied).

    Resized frames are cached as .npz under ``cache_dir`` (default ``$VIPA_CACHE_DIR`` or
    ~/.cache/vipa/frames), keyed by dataset path, episode, size, frame step and the episode
    folder's and correction log's modification times, so edits invalidate the cache."""
    cdir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cdir.mkdir(parents=True, exist_ok=True)
    root = Path(getattr(ds, "root", "."))
    corr = [p for p in root.glob("corrections*") if p.is_file()]
    out = []
    for eid in episode_ids:
        try:
            edir = ds.episode_dir(eid)
            stamp = max([edir.stat().st_mtime_ns] + [p.stat().st_mtime_ns for p in edir.iterdir()]
                        + [p.stat().st_mtime_ns for p in corr])
        except (AttributeError, OSError):
            stamp = 0
        key = hashlib.sha1(f"{root.resolve()}|{eid}|{size}|{frame_step}|{stamp}|{CACHE_VERSION}".encode()).hexdigest()[:20]
        path = cdir / f"{key}.npz"
        if path.is_file():
            try:
                out.append(_load_cache(path))
                continue
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)
        ep = ds.load_episode(eid, media=False)
        if not ds.has_depth(eid):
            raise ValueError(f"episode {eid}: no depth; the 3D branch needs metric depth")
        rgb = ds.rgb_frames(eid)
        depth = [ds.depth_frame(eid, i) if ep.frame_valid[i] and i % frame_step == 0 else None
                 for i in range(ep.num_frames)]
        c = cache_episode(ep, size, rgb, depth, frame_step)
        _save_cache(path, c)
        out.append(c)
    return out


@dataclass
class Sample:
    cache: int
    frame: int
    kind: str
    prompt: str
    target: str  # text (motion tokens already as token strings)
    point_a: np.ndarray | None
    point_b: np.ndarray | None
    traj: np.ndarray | None


def _waypoints(c: FrameCache, t: int, stride: int, n: int, direction: int) -> np.ndarray | None:
    idx = [t + direction * stride * k for k in range(1, n + 1)]
    last = int(np.flatnonzero(np.isfinite(c.wrist).all(1))[-1]) if np.isfinite(c.wrist).any() else -1
    idx = [min(i, last) for i in idx] if direction > 0 else idx
    if any(i < 0 or i >= len(c.wrist) for i in idx):
        return None
    w = c.wrist[idx]
    if not np.isfinite(w).all():
        return None
    return w if direction > 0 else w[::-1].copy()


class Hand3DTorchDataset(Dataset):
    """Samples for ``stage`` ("stage1" QA or "stage2" motion) over cached episodes."""

    def __init__(self, caches: list[FrameCache], tokenizer: VIPATokenizer, cfg: ModelConfig, stage: str,
                 motion_stride: int = 2, low_motion: LowMotionFilter | None = None):
        if stage not in ("stage1", "stage2"):
            raise ValueError(f"stage: expected stage1 or stage2, got {stage!r}")
        self.caches, self.tok, self.cfg, self.stage = caches, tokenizer, cfg, stage
        self.samples: list[Sample] = []
        self.dropped_long = 0
        low = low_motion or LowMotionFilter()
        for ci, c in enumerate(caches):
            frames = np.flatnonzero(c.usable)
            if len(frames) == 0:
                continue
            end = c.wrist[int(np.flatnonzero(np.isfinite(c.wrist).all(1))[-1])]
            for t in frames:
                w = c.wrist[t]
                if stage == "stage1":
                    for name, centre in c.objects:
                        if np.isfinite(centre[t]).all():
                            v = centre[t] - w
                            self._add(Sample(ci, t, "spatial", f"Where is the {name} relative to the {c.side} hand?",
                                             encode_direction_distance(v), w, centre[t], None))
                    v = end - w
                    if np.linalg.norm(v) >= 0.01:
                        self._add(Sample(ci, t, "task", f"How should the {c.side} hand move to {c.instruction}?",
                                         encode_direction_distance(v), w, end, None))
                else:
                    fut = _waypoints(c, t, motion_stride, cfg.traj_horizon, +1)
                    if fut is None or low.is_low_motion(np.concatenate([w[None], fut])):
                        continue
                    fut_text = tokenizer.motion_text(fut)
                    self._add(Sample(ci, t, "gen", f"Predict the {c.side} wrist motion to {c.instruction}.",
                                     fut_text, w, None, fut))
                    self._add(Sample(ci, t, "translate", f"Describe this motion: {fut_text}", c.instruction,
                                     w, None, None))
                    past = _waypoints(c, t, motion_stride, cfg.past_horizon, -1)
                    if past is not None:
                        self._add(Sample(ci, t, "context",
                                         f"Past motion: {tokenizer.motion_text(past)}. Predict the next motion.",
                                         fut_text, w, None, fut))
        if not self.samples:
            raise ValueError(f"{stage}: no usable samples (need frames with a valid wrist and depth"
                             + (", objects" if stage == "stage1" else ", wrist motion above the low-motion threshold") + ")")

    def _add(self, s: Sample) -> None:
        p = self.tok.encode(s.prompt)
        if len(p) > self.cfg.max_prompt_len or len(self.tok.encode(s.target)) + 1 > self.cfg.max_target_len:
            self.dropped_long += 1
            return
        self.samples.append(s)

    def __len__(self) -> int:
        return len(self.samples)

    def texts(self) -> list[str]:
        return [s.prompt for s in self.samples] + [s.target for s in self.samples]

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        c = self.caches[s.cache]
        item = encode_prompt(self.tok, s.prompt, self.cfg.max_prompt_len)
        tgt = [self.tok.bos_id] + self.tok.encode(s.target) + [self.tok.eos_id]
        z3 = np.zeros(3, np.float32)
        item.update(
            image=c.images[s.frame].float() / 255.0,
            xyz=c.xyz[s.frame].float(),
            valid=c.valid[s.frame].float(),
            target=torch.tensor(tgt, dtype=torch.long),
            point_a=torch.from_numpy(s.point_a if s.point_a is not None else z3),
            point_a_mask=torch.tensor(float(s.point_a is not None)),
            point_b=torch.from_numpy(s.point_b if s.point_b is not None else z3),
            point_b_mask=torch.tensor(float(s.point_b is not None)),
            traj=torch.from_numpy(s.traj if s.traj is not None else np.zeros((self.cfg.traj_horizon, 3), np.float32)),
            traj_mask=torch.tensor(float(s.traj is not None)),
            index=torch.tensor(i),
        )
        return item
