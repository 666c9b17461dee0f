"""Robot post-training data for ``vipa train post``: LeRobot v3 demonstrations (or their .npz array
export) as model-ready samples with normalised states and action chunks, and the post-training run.

``load_robot_data(root, cfg, tok)`` returns (torch dataset, tokenizer, action statistics, run
metadata). Samples are made by ``vipa.model.processor``: image (3, S, S) float32 in [0, 1]; xyz
(3, S, S) float32 camera-frame metres from the rendered metric depth and K (0 where no surface) and
valid (1, S, S) (only when the model has its 3D encoder); prompt_ids / prompt_mask (the task
instruction); state (4,) normalised; actions (chunk, 4) normalised (the frame's action and the next
chunk-1, the last repeated past the episode end); action_mask (chunk,) False where repeated.

Demonstrations can also travel as one compressed ``.npz`` of raw arrays (``export_arrays``,
``vipa train post --data ... --export-npz FILE``): 64 px RGB uint8, depth uint16 mm, K, state,
action, episode index and instruction, which needs only numpy + torch to train from (no video
decoder).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from vipa.data.qa import encode_direction_distance
from vipa.model.config import VIPAConfig, get_config, init_fits
from vipa.model.processor import encode_prompt, point_map_from_depth, prepare_image, resize_point_map
from vipa.model.tokenizer import VIPATokenizer

IMAGE_KEY = "observation.images.main"
DEPTH_KEY = "observation.depth"
DEPTH_UNIT_M = 0.001  # observation.depth counts are millimetres (vipa.sim.collect)
ARRAY_KEYS = ("rgb", "depth_mm", "K", "state", "action", "episode", "task_index")
POSE_KEY = "observation.camera_pose"  # optional: world_from_camera (4, 4); enables the spatial targets
TRAJ_STRIDE = 4  # control steps between the future end-effector waypoints of the trajectory target


def _roots(data: str | Path | Sequence[str | Path]) -> list[Path]:
    """One LeRobot root, several (a list or comma-separated), or a folder of LeRobot roots."""
    items = [data] if isinstance(data, (str, Path)) else list(data)
    parts = [Path(p) for d in items for p in str(d).split(",") if p]
    roots: list[Path] = []
    for p in parts:
        if p.suffix == ".npz":
            roots.append(p)
        elif (p / "meta" / "info.json").is_file():
            roots.append(p)
        elif p.is_dir() and any((c / "meta" / "info.json").is_file() for c in p.iterdir()):
            roots += sorted(c for c in p.iterdir() if (c / "meta" / "info.json").is_file())
        else:
            raise FileNotFoundError(f"{p}: not a LeRobot v3 dataset (no meta/info.json), a folder of them, or an .npz")
    return roots


def read_arrays(data: str | Path | Sequence[str | Path]) -> dict[str, Any]:
    """All frames of one or more LeRobot v3 datasets (or exported .npz files) as flat arrays:
    rgb (N, H, W, 3) uint8, depth_mm (N, H, W) uint16 (0 = none; zeros if the data has no depth),
    K (N, 3, 3), state (N, S), action (N, A), episode (N,) int64 (global), task_index (N,) into
    ``instructions``; camera_pose (N, 4, 4) world_from_camera when every input has it."""
    parts: list[dict[str, Any]] = []
    for root in _roots(data):
        if root.suffix == ".npz":
            z = np.load(root, allow_pickle=False)
            part = {**{k: z[k] for k in ARRAY_KEYS}, "instructions": [str(s) for s in z["instructions"]]}
            if "camera_pose" in z.files:
                part["camera_pose"] = z["camera_pose"]
            parts.append(part)
            continue
        from vipa.data.lerobot import LeRobotDataset, LeRobotFormatError

        ds = LeRobotDataset(root)
        feats = ds.features
        for key in (IMAGE_KEY, "observation.state", "action", "observation.camera_intrinsics"):
            if key not in feats:
                raise LeRobotFormatError(f"{root}: post-training needs feature {key!r}; has {sorted(feats)}")
        cols: dict[str, list] = {k: [] for k in ARRAY_KEYS}
        if POSE_KEY in feats:
            cols["camera_pose"] = []
        instructions: list[str] = []
        for e in range(len(ds)):
            ep = ds.episode(e)
            n = len(ep["action"])
            if ep["task"] not in instructions:
                instructions.append(ep["task"])
            cols["rgb"].append(ep[IMAGE_KEY])
            depth = ep[DEPTH_KEY] if DEPTH_KEY in feats else np.zeros(ep[IMAGE_KEY].shape[:3], np.uint16)
            cols["depth_mm"].append(depth.astype(np.uint16))
            cols["K"].append(ep["observation.camera_intrinsics"].astype(np.float32))
            cols["state"].append(ep["observation.state"].astype(np.float32))
            cols["action"].append(ep["action"].astype(np.float32))
            if "camera_pose" in cols:
                cols["camera_pose"].append(ep[POSE_KEY].astype(np.float32))
            cols["episode"].append(np.full(n, e, np.int64))
            cols["task_index"].append(np.full(n, instructions.index(ep["task"]), np.int64))
        parts.append({**{k: np.concatenate(v) for k, v in cols.items()}, "instructions": instructions})
    if not parts:
        raise ValueError(f"{data}: no demonstrations")
    instructions = sorted({s for p in parts for s in p["instructions"]})
    keys = ARRAY_KEYS + (("camera_pose",) if all("camera_pose" in p for p in parts) else ())
    out: dict[str, list] = {k: [] for k in keys}
    ep_offset = 0
    for p in parts:
        remap = np.array([instructions.index(s) for s in p["instructions"]], np.int64)
        for k in keys:
            v = p[k]
            if k == "episode":
                v = v + ep_offset
            elif k == "task_index":
                v = remap[v]
            out[k].append(v)
        ep_offset += int(p["episode"].max()) + 1 if len(p["episode"]) else 0
    shapes = {tuple(a.shape[1:]) for a in out["rgb"]}
    if len(shapes) != 1:
        raise ValueError(f"{data}: datasets have different image sizes {sorted(shapes)}")
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    arrays["instructions"] = instructions
    return arrays


def export_arrays(data: str | Path | Sequence[str | Path], path: str | Path) -> Path:
    """Write ``read_arrays(data)`` to one compressed .npz (readable with numpy alone)."""
    a = read_arrays(data)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"camera_pose": a["camera_pose"]} if "camera_pose" in a else {}
    np.savez_compressed(path, **{k: a[k] for k in ARRAY_KEYS}, **extra, instructions=np.array(a["instructions"]))
    return path


def normalizer_stats(state: np.ndarray, action: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension mean/std (std floored at 1e-3) of states and actions, as saved with a checkpoint."""
    return {"state_mean": state.mean(0).astype(np.float64).tolist(),
            "state_std": (state.std(0) + 1e-3).astype(np.float64).tolist(),
            "action_mean": action.mean(0).astype(np.float64).tolist(),
            "action_std": (action.std(0) + 1e-3).astype(np.float64).tolist()}


def robot_tokenizer(instructions: Sequence[str], cfg: VIPAConfig) -> VIPATokenizer:
    """A project tokenizer for a from-scratch post-training run: the robot instructions plus the
    Hand3D prompt templates and answers, so it has the same form as a pretrained run's."""
    from vipa.tasks import corpus_texts

    rng = np.random.default_rng(0)
    texts = list(instructions) * 4
    for i in instructions:
        texts += corpus_texts(i, ["object"])
    texts += [encode_direction_distance(v) for v in rng.normal(0, 0.2, (2000, 3))]
    return VIPATokenizer.for_config(cfg, texts)


def episode_last_frame(episode: np.ndarray) -> np.ndarray:
    """(N,) int64: for each frame, the index of the last frame of its episode (frames of one episode
    are contiguous)."""
    n = len(episode)
    starts = np.r_[0, np.flatnonzero(np.diff(episode)) + 1]
    ends = np.r_[starts[1:], n]
    return np.repeat(ends - 1, ends - starts).astype(np.int64)


def spatial_targets(state: np.ndarray, camera_pose: np.ndarray, episode: np.ndarray, horizon: int,
                    stride: int = TRAJ_STRIDE) -> dict[str, np.ndarray]:
    """End-effector readout targets per frame, camera-frame metres (OpenCV axes), from the robot state
    (xyz in metres, world frame) and world_from_camera: ``point_a`` (N, 3) the end effector now,
    ``point_b`` (N, 3) where it ends its episode, ``traj`` (N, horizon, 3) its positions ``stride``,
    2*stride, ... steps ahead (held at the episode's last frame), ``traj_mask`` (N,) 1 where the first
    waypoint is still inside the episode."""
    n = len(state)
    cam_from_world = np.linalg.inv(camera_pose.astype(np.float64))
    ee = np.einsum("nij,nj->ni", cam_from_world[:, :3, :3], state[:, :3].astype(np.float64)) + cam_from_world[:, :3, 3]
    last = episode_last_frame(episode)
    idx = np.minimum(np.arange(n)[:, None] + stride * np.arange(1, horizon + 1)[None], last[:, None])
    return {"point_a": ee.astype(np.float32), "point_b": ee[last].astype(np.float32),
            "traj": ee[idx].astype(np.float32), "traj_mask": (np.arange(n) + stride <= last).astype(np.float32)}


class RobotFrames(Dataset):
    """Every demonstration frame, model-ready and held in memory (uint8 images, float16 XYZ).

    ``shift``: random-shift augmentation (pixels, image and point map moved together, edges
    replicated); 0 turns it off. With camera poses in ``arrays``, items carry the spatial readout
    targets of ``spatial_targets``."""

    def __init__(self, arrays: dict[str, Any], cfg: VIPAConfig, tok: VIPATokenizer, stats: dict[str, list[float]],
                 shift: int = 0, seed: int = 0):
        m = cfg.model
        n = len(arrays["action"])
        if n == 0:
            raise ValueError("no demonstration frames")
        if arrays["state"].shape[1] != m.state_dim or arrays["action"].shape[1] != m.action_dim:
            raise ValueError(f"demonstrations have state {arrays['state'].shape[1]} / action {arrays['action'].shape[1]} "
                             f"dims; config {cfg.name!r} expects {m.state_dim} / {m.action_dim}")
        self.chunk, self.use_3d, s = m.chunk_len, m.use_3d, m.image_size
        self.images = torch.stack([prepare_image(f, s) for f in arrays["rgb"]])  # (N, 3, S, S) uint8
        if self.use_3d:
            if not (arrays["depth_mm"] > 0).any():
                raise ValueError("this model has a 3D encoder but the demonstrations have no depth")
            xyz = np.empty((n, 3, s, s), np.float16)
            valid = np.empty((n, 1, s, s), np.float16)
            for i in range(n):
                d = arrays["depth_mm"][i].astype(np.float32) * DEPTH_UNIT_M
                d[d <= 0] = np.nan
                xyz[i], valid[i] = resize_point_map(point_map_from_depth(d, arrays["K"][i]), s)
            self.xyz, self.valid = torch.from_numpy(xyz), torch.from_numpy(valid)
        sm, ss = np.asarray(stats["state_mean"], np.float32), np.asarray(stats["state_std"], np.float32)
        am, as_ = np.asarray(stats["action_mean"], np.float32), np.asarray(stats["action_std"], np.float32)
        self.state = torch.from_numpy(((arrays["state"] - sm) / ss).astype(np.float32))
        self.action = torch.from_numpy(((arrays["action"] - am) / as_).astype(np.float32))
        ep = np.asarray(arrays["episode"], np.int64)
        self.last = torch.from_numpy(episode_last_frame(ep))
        self.prompts = [encode_prompt(tok, i, m.max_prompt_len) for i in arrays["instructions"]]
        self.task_index = np.asarray(arrays["task_index"], np.int64)
        self.targets = None
        if "camera_pose" in arrays:
            t = spatial_targets(arrays["state"], arrays["camera_pose"], ep, m.traj_horizon)
            self.targets = {k: torch.from_numpy(v) for k, v in t.items()}
        self.shift = int(shift)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.action)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = torch.arange(i, i + self.chunk)
        mask = idx <= self.last[i]
        item = dict(self.prompts[int(self.task_index[i])])
        image = self.images[i].float() / 255.0
        xyz = valid = None
        if self.use_3d:
            xyz, valid = self.xyz[i].float(), self.valid[i].float()
        if self.shift:
            dy, dx = (int(v) for v in self._rng.integers(-self.shift, self.shift + 1, 2))
            image = _shift(image, dy, dx)
            if xyz is not None:
                xyz, valid = _shift(xyz, dy, dx), _shift(valid, dy, dx)
        item.update(image=image, state=self.state[i], actions=self.action[torch.minimum(idx, self.last[i])],
                    action_mask=mask)
        if xyz is not None:
            item.update(xyz=xyz, valid=valid)
        if self.targets is not None:
            t = self.targets
            item.update(point_a=t["point_a"][i], point_b=t["point_b"][i], point_a_mask=torch.tensor(1.0),
                        traj=t["traj"][i], traj_mask=t["traj_mask"][i])
        return item


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(C, H, W) moved by (dy, dx) pixels, the border replicated into the uncovered part."""
    h, w = x.shape[1:]
    ys = torch.clamp(torch.arange(h) - dy, 0, h - 1)
    xs = torch.clamp(torch.arange(w) - dx, 0, w - 1)
    return x[:, ys][:, :, xs]


def load_robot_data(data: str | Path | Sequence[str | Path], cfg: VIPAConfig, tok: VIPATokenizer | None = None,
                    shift: int = 4) -> tuple[RobotFrames, VIPATokenizer, dict[str, list[float]], dict[str, Any]]:
    """(dataset, tokenizer, action statistics, run metadata) for ``vipa train post``. A given
    ``tok`` (from an --init checkpoint) is kept; otherwise one is trained on the instructions.
    ``shift``: random-shift augmentation in pixels (0 = off)."""
    arrays = read_arrays(data)
    tok = tok or robot_tokenizer(arrays["instructions"], cfg)
    stats = normalizer_stats(arrays["state"], arrays["action"])
    ds = RobotFrames(arrays, cfg, tok, stats, shift=shift, seed=cfg.train.seed)
    meta = {"data": [str(p.resolve()) for p in _roots(data)], "frames": len(ds),
            "episodes": int(len(np.unique(arrays["episode"]))), "instructions": arrays["instructions"],
            "image_size": list(arrays["rgb"].shape[1:3]), "shift_augmentation_px": shift,
            "spatial_targets": ds.targets is not None}
    return ds, tok, stats, meta


def train_post(cfg: VIPAConfig, data: str | Path | Sequence[str | Path], out: str | Path,
               tok: VIPATokenizer | None = None, init: str | Path | None = None, steps: int | None = None,
               budget_s: float | None = None, calibrate_steps: int = 10, resume: bool = False,
               threads: int | None = None, progress: bool = True, device: str = "auto"):
    """Post-train ``cfg`` on demonstrations ``data`` into ``out``; returns vipa.train.loop.RunResult
    (``final`` is the checkpoint folder, with action statistics). ``tok``: the --init checkpoint's
    tokenizer (None: one is trained on the instructions).

    ``budget_s``: instead of ``steps``, train as many steps as fit in this many seconds, measured
    by a ``calibrate_steps`` run (written to OUT/calibration) under the same machine load."""
    from vipa.train.loop import train

    ds, tok, stats, meta = load_robot_data(data, cfg, tok)
    meta["init"] = str(init) if init else None
    if budget_s is not None:
        t0 = time.perf_counter()
        train(cfg, "post", ds, tok, Path(out) / "calibration", steps=calibrate_steps, init=init, meta=meta,
              action_stats=stats, progress=False, num_threads=threads, device=device)
        per_step = (time.perf_counter() - t0) / calibrate_steps
        steps = max(calibrate_steps, int(budget_s / per_step))
        meta["budget"] = {"seconds": budget_s, "calibration_s_per_step": round(per_step, 4), "steps": steps}
        print(f"post-train: {per_step:.3f} s/step -> {steps} steps in {budget_s:.0f} s", file=sys.stderr)
    return train(cfg, "post", ds, tok, out, steps=steps, resume=resume, init=init, meta=meta, action_stats=stats,
                 progress=progress, num_threads=threads, device=device)


def post_train(data: str | Path | Sequence[str | Path], out: str | Path, config: str = "tiny",
               init: str | Path | None = None, use_3d: bool = True, steps: int | None = None,
               batch_size: int | None = None, lr: float | None = None, seed: int = 0,
               threads: int | None = None, progress: bool = True, log_every: int | None = None,
               budget_s: float | None = None, calibrate_steps: int = 10):
    """``train_post`` from a config name and options (the Python form of ``vipa train post``)."""
    from vipa.model.checkpoint import checkpoint_config, read_checkpoint_info
    from vipa.model.config import ACTION_HEAD_FIELDS, adopt_init_parts, config_diff

    cfg = get_config(config, **({} if use_3d else {"use_3d": False}))
    if batch_size:
        cfg.train.batch_size["post"] = batch_size
    if lr:
        cfg.train.lr["post"] = lr
    cfg.train.seed = seed
    if log_every:
        cfg.train.log_every = log_every
    tok = None
    if init is not None:
        info = read_checkpoint_info(init)
        # through VIPAConfig so JSON lists compare equal to the config's tuples (stem_channels)
        init_model = checkpoint_config(init, info).model
        adopt_init_parts(cfg.model, init_model)
        if not init_fits(init_model, cfg.model, "post"):
            diff = config_diff(init_model, cfg.model, ACTION_HEAD_FIELDS + ("motion_decoding",))
            raise ValueError(f"init {init}: trained with a different model config than {config!r}"
                             f"{'' if use_3d else ' without 3D'} ({'; '.join(diff)})")
        tok = VIPATokenizer.load(Path(init) / "tokenizer.json")
    return train_post(cfg, data, out, tok, init, steps, budget_s, calibrate_steps, threads=threads, progress=progress)
