"""PyTorch datasets for the training stages, read from the task records of Hand3D episodes.

Every sample holds one RGB frame resized to the model's ``image_size``, its scale-calibrated
camera-frame point map (from metric depth and K, NaN-aware area-resized, metres) with a
validity map, a text prompt and target, and numeric targets (camera frame, metres).

The samples are the records of the kinds ``vipa.tasks`` declares trained for the stage
("stage1" QA, "stage2" motion): the ones the annotators and the workbench write to
``derived/qa.jsonl`` and ``derived/motion.jsonl`` (read through a Hand3D dataset, so they
are those of the corrected annotations), or, for an episode without them (older datasets) or
whose records were made with another motion stride, the same records derived in memory by
``vipa.tasks.build_records``. A record is used when its frame is usable here (frame valid,
wrist known, depth valid, on the ``frame_step`` grid).

Episodes without depth (annotated real RGB clips) are read with ``rgb_only=True``: their frames
are usable without depth, with an all-zero point map and validity, so the model runs them with
its 3D branch masked out and the point-estimate head gets no loss on them; their trajectory,
motion-token and pointer targets are the annotation's (camera frame, metres).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vipa import tasks
from vipa.data.episode import Episode
from vipa.model.config import ModelConfig
from vipa.model.processor import collate, encode_prompt, point_map_from_depth, prepare_image, prepare_points
from vipa.model.tokenizer import VIPATokenizer

CACHE_VERSION = 2


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
    """Model-ready frames of one episode plus its task records (``vipa.tasks``)."""

    episode_id: str
    instruction: str
    side: str
    images: torch.Tensor  # (T, 3, S, S) uint8
    xyz: torch.Tensor  # (T, 3, S, S) float16 metres
    valid: torch.Tensor  # (T, 1, S, S) float16
    wrist: np.ndarray  # (T, 3) float32 metres (NaN where unknown)
    usable: np.ndarray  # (T,) bool: frame valid, hand present, wrist valid, depth valid (or RGB only)
    objects: list[tuple[str, np.ndarray]]  # (name, (T, 3) centre)
    records: list[dict] = field(default_factory=list)  # task records of both stages, sample order


def cache_episode(ep: Episode, size: int, rgb_frames: np.ndarray | None = None,
                  depth_frames: Iterable[np.ndarray | None] | None = None, frame_step: int = 1,
                  records: list[dict] | None = None, params: tasks.TaskParams | None = None,
                  rgb_only: bool = False) -> FrameCache:
    """Resize an episode's frames for the model. Media come from ``ep.rgb``/``ep.metric_depth``
    unless given (``rgb_frames`` (T, H, W, 3) uint8 or any sequence of such frames,
    ``depth_frames`` metric metres per frame); ``records`` default to
    ``vipa.tasks.build_records(ep, params=params)``. ``rgb_only``: frames without depth stay
    usable with an all-zero point map and validity (otherwise they are dropped)."""
    t = ep.num_frames
    rgb = rgb_frames if rgb_frames is not None else ep.rgb
    if rgb is None:
        raise ValueError(f"episode {ep.episode_id}: no RGB frames")
    if depth_frames is not None:
        depths = list(depth_frames)
    elif rgb_only and ep.depth_raw is None:
        depths = [None] * t
    else:
        depths = [ep.metric_depth(i) for i in range(t)]
    view = tasks.episode_view(ep)
    wrist = view.wrist
    keep = np.zeros(t, bool)
    keep[::frame_step] = True
    usable = ep.frame_valid & np.isfinite(wrist).all(1) & keep
    imgs = torch.zeros(t, 3, size, size, dtype=torch.uint8)
    xyz = torch.zeros(t, 3, size, size, dtype=torch.float16)
    val = torch.zeros(t, 1, size, size, dtype=torch.float16)
    for i in np.flatnonzero(usable):
        d = depths[i]
        if d is None or not np.isfinite(d).any():
            if rgb_only:
                imgs[i] = prepare_image(rgb[i], size)
            else:
                usable[i] = False
            continue
        imgs[i] = prepare_image(rgb[i], size)
        p, v = prepare_points(point_map_from_depth(d, ep.K), size)
        xyz[i], val[i] = p.half(), v.half()
    recs = records if records is not None else tasks.build_records(ep, params=params)
    return FrameCache(ep.episode_id, view.instruction, view.hand, imgs, xyz, val, wrist, usable, view.objects, recs)


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


def episode_records(ds: Any, episode_id: str, params: tasks.TaskParams | None = None,
                    episode: Episode | None = None) -> tuple[list[dict], list[str]]:
    """(task records of both stages in sample order, the stages derived in memory) of one episode
    of a Hand3D dataset: those of ``derived/qa.jsonl`` (stage 1) and ``derived/motion.jsonl``
    (stage 2); a stage whose file holds no task record, or motion records made with another
    stride, is derived from the (corrected) episode by ``vipa.tasks.build_records``."""
    p = params or tasks.TaskParams()
    out: list[dict] = []
    derived: list[str] = []
    for stage, name in (("stage1", "qa"), ("stage2", "motion")):
        recs = [r for r in (ds.read_derived(episode_id, name) or []) if tasks.is_task_record(r)]
        where = f"episodes/{episode_id}/derived/{name}.jsonl"
        for r in recs:
            tasks.check_record(r, where)
        stale = stage == "stage2" and any(_other_params(r, p) for r in recs)
        if not recs or stale:
            ep = episode if episode is not None else ds.load_episode(episode_id, media=False)
            recs = tasks.build_records(ep, stage, p)
            derived.append(stage)
        out += tasks.sort_records(recs)
    return out, derived


def _other_params(r: dict, p: tasks.TaskParams) -> bool:
    """True when a motion record was made with another stride or horizon than ``p``."""
    if abs(float(r.get("stride_s", -1.0)) - p.stride_s) > 1e-6:
        return True
    return (r.get("waypoints") is not None and len(r["waypoints"]) != p.n_future) or \
        ("past_waypoints" in r and len(r["past_waypoints"]) != p.n_past)


def cache_from_dataset(ds: Any, episode_ids: Sequence[str], size: int, frame_step: int = 1,
                       cache_dir: str | Path | None = None,
                       params: tasks.TaskParams | None = None, rgb_only: bool = False) -> list[FrameCache]:
    """FrameCaches read through a ``vipa.data.dataset.Hand3DDataset`` (corrections applied), with
    their task records (``episode_records``). ``rgb_only``: episodes without depth (real RGB
    clips) are read RGB only (``cache_episode``) instead of raising.

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
        key = hashlib.sha1(f"{root.resolve()}|{eid}|{size}|{frame_step}|{stamp}|{int(rgb_only)}|{CACHE_VERSION}".encode()).hexdigest()[:20]
        path = cdir / f"{key}.npz"
        if path.is_file():
            try:
                c = _load_cache(path)
                c.records = episode_records(ds, eid, params)[0]
                out.append(c)
                continue
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)
        ep = ds.load_episode(eid, media=False)
        has_depth = ds.has_depth(eid)
        if not has_depth and not rgb_only:
            raise ValueError(f"episode {eid}: no depth; the 3D branch needs metric depth (RGB-only clips: rgb_only)")
        rgb = ds.rgb_frames(eid)
        depth = [ds.depth_frame(eid, i) if has_depth and ep.frame_valid[i] and i % frame_step == 0 else None
                 for i in range(ep.num_frames)]
        c = cache_episode(ep, size, rgb, depth, frame_step, episode_records(ds, eid, params, ep)[0], rgb_only=rgb_only)
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


def _point(v: Any) -> np.ndarray | None:
    return None if v is None else np.asarray(v, np.float32)


class Hand3DTorchDataset(Dataset):
    """Samples for ``stage`` ("stage1" QA or "stage2" motion) over cached episodes: their records
    of the kinds ``vipa.tasks.trained_kinds(stage)``, at usable frames. ``summary`` counts the
    samples per kind and those dropped for a prompt or answer longer than the model allows."""

    def __init__(self, caches: list[FrameCache], tokenizer: VIPATokenizer, cfg: ModelConfig, stage: str):
        kinds = tasks.trained_kinds(stage)
        self.caches, self.tok, self.cfg, self.stage = caches, tokenizer, cfg, stage
        self.samples: list[Sample] = []
        self.dropped_long = 0
        for ci, c in enumerate(caches):
            for r in c.records:
                t = int(r["frames"][0])
                if r["type"] not in kinds or not (0 <= t < len(c.usable) and c.usable[t]):
                    continue
                tgt = r.get("target") or {}
                traj = _point(r.get("waypoints"))
                if traj is not None and traj.shape != (cfg.traj_horizon, 3):
                    raise ValueError(f"episode {c.episode_id}: record {r.get('id')}: {traj.shape[0]} waypoints, "
                                     f"the model predicts {cfg.traj_horizon}; build the records with "
                                     f"vipa.train.data.task_params(cfg)")
                self._add(Sample(ci, t, r["type"], r["question"], r["answer"], _point(tgt.get("point_a")),
                                 _point(tgt.get("point_b")), traj))
        if not self.samples:
            raise ValueError(f"{stage}: no usable samples (need frames with a valid wrist and depth"
                             + (", objects" if stage == "stage1" else ", wrist motion above the low-motion threshold") + ")")

    def _add(self, s: Sample) -> None:
        p = self.tok.encode(s.prompt)
        if len(p) > self.cfg.max_prompt_len or len(self.tok.encode(s.target)) + 1 > self.cfg.max_target_len:
            self.dropped_long += 1
            return
        self.samples.append(s)

    @property
    def summary(self) -> dict[str, Any]:
        """{"stage", "samples", "by_kind": {kind: n}, "dropped_long"}."""
        return {"stage": self.stage, "samples": len(self.samples),
                "by_kind": dict(Counter(s.kind for s in self.samples)), "dropped_long": self.dropped_long}

    def __len__(self) -> int:
        return len(self.samples)

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
