"""LeRobot v3 dataset layout: writer, reader and format checks (no dependency on `lerobot`).

Layout (codebase_version "v3.0"):

    meta/info.json                          fps, features (dtype, shape, names), path templates
    meta/tasks.parquet                      indexed by the task string (pandas index "task"), column task_index
    meta/episodes/chunk-000/file-000.parquet  one row per episode: index ranges, video spans
    meta/stats.json                         per feature: mean, std, min, max, q01..q99 in the feature's
                                            shape, count (1,); videos per channel (3, 1, 1) in [0, 1]
                                            as LeRobot computes them; none for bool and uint16
                                            features (LeRobot then passes them through); strict JSON
    data/chunk-000/file-000.parquet         one row per frame (non-video features)
    videos/<key>/chunk-000/file-000.mp4     all episodes of a camera, concatenated (H.264)

Features LeRobot has no field for (camera intrinsics, depth maps and their unit, hand joints)
are stored as declared features with a ``info`` entry giving their frame and unit.
Frames of a video feature are RGB uint8 (H, W, 3); numeric features are float32/int64/uint16/bool
arrays and must be finite: a missing value is filled and marked False in a validity feature (LeRobot
tools and policies cannot take NaN). The folder is written under a temporary name beside ``root``
and renamed into place when complete (an interrupted write leaves no normal-looking dataset);
files are 0644, folders 0755.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vipa.data._io import atomic_target, atomic_write_bytes, atomic_write_parquet, set_readable
from vipa.data.video import encode_h264

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot 0.4's DEFAULT_QUANTILES, keys q01 .. q99
PARTIAL_PREFIX = ".partial-"


def feature_stats(x: np.ndarray) -> dict[str, list]:
    """LeRobot's stats of a (N, *shape) numeric feature: each in the feature's shape (a (3, 3)
    feature gets (3, 3) means); a (N,) scalar feature gets shape (1,)."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    qs = np.quantile(x, QUANTILES, axis=0)
    for q, v in zip(QUANTILES, qs):
        out[f"q{int(round(q * 100)):02d}"] = v
    res = {k: np.asarray(v).tolist() for k, v in out.items()}
    res["count"] = [int(x.shape[0])]
    return res


def video_stats(frames: np.ndarray, max_frames: int = 100, side: int = 150) -> dict[str, list]:
    """LeRobot's image/video stats: per channel, shape (3, 1, 1), pixel values scaled to [0, 1],
    over up to ``max_frames`` evenly spaced frames downsampled to about ``side`` pixels (as LeRobot
    samples them); count is the number of frames used."""
    n = len(frames)
    idx = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    step = max(1, int(round(max(frames.shape[1:3]) / side)))
    x = frames[idx, ::step, ::step].astype(np.float64) / 255.0  # (N, h, w, 3)
    flat = x.reshape(-1, 3)
    out = {"min": flat.min(0), "max": flat.max(0), "mean": flat.mean(0), "std": flat.std(0)}
    qs = np.quantile(flat, QUANTILES, axis=0)
    for q, v in zip(QUANTILES, qs):
        out[f"q{int(round(q * 100)):02d}"] = v
    res = {k: np.asarray(v).reshape(3, 1, 1).tolist() for k, v in out.items()}
    res["count"] = [int(len(idx))]
    return res


def _strict_json(obj: Any) -> bytes:
    """Strict JSON (NaN or infinity anywhere is a LeRobotFormatError, never a literal)."""
    try:
        return json.dumps(obj, indent=2, allow_nan=False).encode()
    except ValueError as exc:
        raise LeRobotFormatError(f"refusing to write non-finite numbers to JSON ({exc})") from exc


def _publish(tmp: Path, root: Path) -> None:
    """0644 files, 0755 folders, then move the finished folder ``tmp`` onto ``root``."""
    set_readable(tmp)
    if root.exists():
        root.rmdir()  # empty (checked before writing); a non-empty folder raises OSError
    os.replace(tmp, root)


class LeRobotFormatError(ValueError):
    """A LeRobot v3 folder does not match its own declared format; the message names what."""


def _column(values: np.ndarray) -> pa.Array:
    """(N, *shape) array -> an Arrow column (fixed-size lists for non-scalar features)."""
    values = np.ascontiguousarray(values)
    n = values.shape[0]
    if values.ndim == 1:
        return pa.array(values)
    flat = pa.array(values.reshape(-1))
    arr: pa.Array = flat
    for dim in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, dim)
    assert len(arr) == n
    return arr


def _to_numpy(col: pa.ChunkedArray, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    arr = col.combine_chunks()
    n = len(arr)
    while pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type):
        arr = arr.flatten()
    out = arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if shape == (1,):
        return out.reshape(n)
    return out.reshape((n, *shape))


def encode_video(frames: np.ndarray, path: Path, fps: float, crf: int = 18) -> None:
    """Write (T, H, W, 3) uint8 RGB frames as H.264 (yuv420p) mp4, atomically."""
    with atomic_target(Path(path)) as tmp:
        encode_h264(frames, tmp, fps, crf=crf)


def decode_video(path: Path, height: int | None = None, width: int | None = None) -> np.ndarray:
    """Decode every frame of an mp4 to (T, H, W, 3) uint8 RGB (cropped to height x width)."""
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as exc:
        raise LeRobotFormatError(f"{path}: cannot decode video ({exc})") from exc
    if not frames:
        return np.zeros((0, height or 0, width or 0, 3), np.uint8)
    out = np.stack(frames)
    return out[:, : height or out.shape[1], : width or out.shape[2]]


@dataclass
class LeRobotWriter:
    """Accumulates episodes in memory and writes a LeRobot v3 folder on ``finalize()``.

    ``features`` maps a name to {"dtype": "float32"|"int64"|"video", "shape": [...],
    "names": [...] or None, "info": {...} (optional: unit, frame)}; the default columns
    (timestamp, frame_index, episode_index, index, task_index) are added.
    """

    root: Path
    fps: float
    features: dict[str, dict[str, Any]]
    robot_type: str = "unknown"
    _frames: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _videos: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _episodes: list[dict[str, Any]] = field(default_factory=list)
    _tasks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for name, ft in self.features.items():
            if "/" in name:
                raise LeRobotFormatError(f"feature {name!r}: names must not contain '/'")
            if ft.get("dtype") not in ("float32", "int64", "uint16", "bool", "video"):
                raise LeRobotFormatError(f"feature {name!r}: unsupported dtype {ft.get('dtype')!r}")

    def add_episode(self, data: dict[str, np.ndarray], task: str, extra: dict[str, Any] | None = None) -> int:
        """Add one episode: ``data[name]`` is (T, *shape) for every declared feature. Returns its index."""
        lengths = {k: len(v) for k, v in data.items()}
        missing = set(self.features) - set(data)
        if missing:
            raise LeRobotFormatError(f"episode is missing features: {sorted(missing)}")
        if len(set(lengths.values())) != 1:
            raise LeRobotFormatError(f"features have different lengths: {lengths}")
        t = next(iter(lengths.values()))
        if t == 0:
            raise LeRobotFormatError("episode has no frames")
        for name, ft in self.features.items():
            arr = np.asarray(data[name])
            want = tuple(ft["shape"])
            if ft["dtype"] == "video":
                if arr.dtype != np.uint8 or arr.shape[1:] != want:
                    raise LeRobotFormatError(f"{name}: expected (T, {want}) uint8, got {arr.shape} {arr.dtype}")
                self._videos.setdefault(name, []).append(arr)
            else:
                got = arr.shape[1:] if want != (1,) else (arr.shape[1:] or (1,))
                if tuple(got) != want:
                    raise LeRobotFormatError(f"{name}: expected per-frame shape {want}, got {arr.shape[1:]}")
                if arr.dtype.kind == "f" or ft["dtype"] == "float32":
                    cast = arr.astype(np.float32) if ft["dtype"] == "float32" else arr
                    bad = ~np.isfinite(cast) if cast.dtype.kind == "f" else np.zeros(1, bool)
                    if bad.any():
                        frame = int(np.argwhere(bad)[0][0])
                        raise LeRobotFormatError(
                            f"{name}: {int(bad.sum())} non-finite values (first in frame {frame}) in episode "
                            f"{len(self._episodes)}; LeRobot data must be finite: fill missing values and mark "
                            f"them in a validity feature")
                self._frames.setdefault(name, []).append(arr.reshape((t, *want)) if want != (1,) else arr.reshape(t))
        ep = len(self._episodes)
        task_index = self._tasks.setdefault(task, len(self._tasks))
        start = sum(e["length"] for e in self._episodes)
        self._episodes.append({"episode_index": ep, "tasks": [task], "task_index": task_index,
                               "length": t, "dataset_from_index": start, "dataset_to_index": start + t,
                               "extra": json.dumps(extra or {})})
        return ep

    def finalize(self) -> Path:
        """Write everything into a temporary folder beside ``root``, then move it onto ``root``
        (which must not exist or be empty). A failure or a kill leaves only a ``.partial-*`` folder."""
        if not self._episodes:
            raise LeRobotFormatError("no episodes to write")
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise LeRobotFormatError(f"{self.root}: exists and is not an empty folder")
        self.root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{self.root.name}-", dir=self.root.parent))
        try:
            self._write(tmp)
            _publish(tmp, self.root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.root

    def _write(self, dest: Path) -> None:
        total = sum(e["length"] for e in self._episodes)
        cols: dict[str, pa.Array] = {}
        for name, ft in self.features.items():
            if ft["dtype"] == "video":
                continue
            cols[name] = _column(np.concatenate(self._frames[name]).astype(ft["dtype"]))
        ep_idx = np.concatenate([np.full(e["length"], e["episode_index"], np.int64) for e in self._episodes])
        frame_idx = np.concatenate([np.arange(e["length"], dtype=np.int64) for e in self._episodes])
        cols["timestamp"] = pa.array((frame_idx / self.fps).astype(np.float32))
        cols["frame_index"] = pa.array(frame_idx)
        cols["episode_index"] = pa.array(ep_idx)
        cols["index"] = pa.array(np.arange(total, dtype=np.int64))
        cols["task_index"] = pa.array(np.concatenate(
            [np.full(e["length"], e["task_index"], np.int64) for e in self._episodes]))
        atomic_write_parquet(dest / DATA_PATH.format(chunk_index=0, file_index=0), pa.table(cols))

        ep_rows: dict[str, list] = {k: [] for k in ("episode_index", "tasks", "length", "dataset_from_index",
                                                     "dataset_to_index", "data/chunk_index", "data/file_index",
                                                     "meta/episodes/chunk_index", "meta/episodes/file_index",
                                                     "extra")}
        video_keys = [k for k, ft in self.features.items() if ft["dtype"] == "video"]
        for key in video_keys:
            for suffix in ("chunk_index", "file_index", "from_timestamp", "to_timestamp"):
                ep_rows[f"videos/{key}/{suffix}"] = []
        t0 = 0.0
        for e in self._episodes:
            for k in ("episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index", "extra"):
                ep_rows[k].append(e[k])
            for k in ("data/chunk_index", "data/file_index", "meta/episodes/chunk_index", "meta/episodes/file_index"):
                ep_rows[k].append(0)
            dur = e["length"] / self.fps
            for key in video_keys:
                ep_rows[f"videos/{key}/chunk_index"].append(0)
                ep_rows[f"videos/{key}/file_index"].append(0)
                ep_rows[f"videos/{key}/from_timestamp"].append(t0)
                ep_rows[f"videos/{key}/to_timestamp"].append(t0 + dur)
            t0 += dur
        atomic_write_parquet(dest / EPISODES_PATH.format(chunk_index=0, file_index=0), pa.table(ep_rows))
        tasks = sorted(self._tasks.items(), key=lambda kv: kv[1])
        import pandas as pd

        tasks_df = pd.DataFrame({"task_index": np.array([i for _, i in tasks], np.int64)},
                                index=pd.Index([t for t, _ in tasks], name="task"))
        atomic_write_parquet(dest / "meta/tasks.parquet", pa.Table.from_pandas(tasks_df, preserve_index=True))
        for key in video_keys:
            encode_video(np.concatenate(self._videos[key]),
                         dest / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), self.fps)

        stats = {}
        for name, ft in self.features.items():
            if ft["dtype"] == "video":
                stats[name] = video_stats(np.concatenate(self._videos[name]))
            elif ft["dtype"] in ("float32", "int64"):
                stats[name] = feature_stats(np.concatenate(self._frames[name]))
            # bool masks and uint16 depth counts get no stats: LeRobot's normaliser casts a feature's
            # stats to the feature's dtype (bool / uint16 arithmetic fails or wraps) and leaves a
            # feature without stats as it is
        default_cols = {"timestamp": cols["timestamp"], "frame_index": frame_idx, "episode_index": ep_idx,
                        "index": np.arange(total), "task_index": cols["task_index"]}
        for name, col in default_cols.items():
            stats[name] = feature_stats(np.asarray(col))
        atomic_write_bytes(dest / "meta/stats.json", _strict_json(stats))

        features = {}
        for name, ft in self.features.items():
            entry = {"dtype": ft["dtype"], "shape": list(ft["shape"]), "names": ft.get("names")}
            if ft["dtype"] == "video":
                h, w, c = ft["shape"]
                entry["info"] = {"video.height": h, "video.width": w, "video.codec": "h264",
                                 "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                                 "video.fps": self.fps, "video.channels": c, "has_audio": False}
            elif ft.get("info"):
                entry["info"] = ft["info"]
            features[name] = entry
        for name, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                            ("index", "int64"), ("task_index", "int64")):
            features[name] = {"dtype": dtype, "shape": [1], "names": None}
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
                "total_episodes": len(self._episodes), "total_frames": total, "total_tasks": len(self._tasks),
                "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
                "fps": self.fps, "splits": {"train": f"0:{len(self._episodes)}"},
                "data_path": DATA_PATH, "video_path": VIDEO_PATH if video_keys else None, "features": features}
        atomic_write_bytes(dest / "meta/info.json", _strict_json(info))


class LeRobotDataset:
    """Reads a LeRobot v3 folder (as written above or by LeRobot itself, single-file chunks and
    multi-file chunks alike). ``episode(i)`` returns every feature as (T, *shape) arrays, videos
    decoded to uint8 RGB."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        info_path = self.root / "meta/info.json"
        if not info_path.is_file():
            raise LeRobotFormatError(f"{self.root}: not a LeRobot dataset (no meta/info.json)")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise LeRobotFormatError(f"{info_path}: invalid JSON ({exc})") from exc
        for key in ("codebase_version", "fps", "features", "data_path"):
            if key not in self.info:
                raise LeRobotFormatError(f"{info_path}: missing field {key!r}")
        if not str(self.info["codebase_version"]).startswith("v3"):
            raise LeRobotFormatError(
                f"{info_path}: codebase_version {self.info['codebase_version']!r} is not v3.x")
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.fps = float(self.info["fps"])
        ep_files = sorted((self.root / "meta/episodes").glob("chunk-*/file-*.parquet"))
        if not ep_files:
            raise LeRobotFormatError(f"{self.root}: no meta/episodes/*/*.parquet")
        self.episodes = pa.concat_tables([pq.read_table(p) for p in ep_files]).to_pylist()
        self.episodes.sort(key=lambda e: e["episode_index"])
        tasks = pq.read_table(self.root / "meta/tasks.parquet").to_pydict()
        if "task" in tasks:
            self.tasks = dict(zip(tasks["task_index"], tasks["task"]))
        else:  # LeRobot writes the task string as the pandas index
            idx_col = [k for k in tasks if k != "task_index"][0]
            self.tasks = dict(zip(tasks["task_index"], tasks[idx_col]))
        self._data_cache: dict[tuple[int, int], pa.Table] = {}
        self._video_cache: dict[tuple[str, int, int], np.ndarray] = {}
        stats_path = self.root / "meta/stats.json"
        self.stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}

    @property
    def video_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft["dtype"] == "video"]

    def __len__(self) -> int:
        return len(self.episodes)

    def _data_table(self, chunk: int, file: int) -> pa.Table:
        key = (chunk, file)
        if key not in self._data_cache:
            path = self.root / self.info["data_path"].format(chunk_index=chunk, file_index=file)
            if not path.is_file():
                raise LeRobotFormatError(f"missing data file {path}")
            self._data_cache[key] = pq.read_table(path)
        return self._data_cache[key]

    def episode(self, i: int, videos: bool = True) -> dict[str, Any]:
        """Every feature of episode ``i`` as arrays, plus "task" (str)."""
        if not 0 <= i < len(self.episodes):
            raise IndexError(f"episode {i} out of range 0..{len(self.episodes) - 1}")
        ep = self.episodes[i]
        table = self._data_table(ep.get("data/chunk_index", 0), ep.get("data/file_index", 0))
        mask = np.asarray(table.column("episode_index").to_numpy()) == ep["episode_index"]
        rows = table.filter(pa.array(mask))
        out: dict[str, Any] = {}
        for name, ft in self.features.items():
            if ft["dtype"] == "video":
                if videos:
                    out[name] = self._episode_video(name, ep)
                continue
            out[name] = _to_numpy(rows.column(name), tuple(ft["shape"]), ft["dtype"])
        out["task"] = self.tasks.get(int(out["task_index"][0]), "") if len(out.get("task_index", [])) else ""
        return out

    def _episode_video(self, key: str, ep: dict[str, Any]) -> np.ndarray:
        chunk, file = ep[f"videos/{key}/chunk_index"], ep[f"videos/{key}/file_index"]
        cache_key = (key, chunk, file)
        if cache_key not in self._video_cache:
            h, w, _ = self.features[key]["shape"]
            path = self.root / self.info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
            self._video_cache = {cache_key: decode_video(path, h, w)}  # keep one file decoded
        frames = self._video_cache[cache_key]
        start = int(round(ep[f"videos/{key}/from_timestamp"] * self.fps))
        return frames[start:start + ep["length"]]


def check_lerobot_dataset(root: str | Path) -> list[str]:
    """The format's own consistency checks; returns a list of problems (empty = valid).

    info.json's non-video features match the parquet columns; episode indices are contiguous
    from 0; each episode's frame range matches its rows; totals agree; videos have the frames."""
    problems: list[str] = []
    try:
        ds = LeRobotDataset(root)
    except LeRobotFormatError as exc:
        return [str(exc)]
    table = pa.concat_tables([pq.read_table(p) for p in sorted((ds.root / "data").glob("chunk-*/file-*.parquet"))])
    declared = {k for k, ft in ds.features.items() if ft["dtype"] != "video"}
    columns = set(table.column_names)
    if declared != columns:
        problems.append(f"features vs parquet columns differ: only in info {sorted(declared - columns)}, "
                        f"only in parquet {sorted(columns - declared)}")
    idx = [e["episode_index"] for e in ds.episodes]
    if idx != list(range(len(idx))):
        problems.append(f"episode indices not contiguous from 0: {idx[:10]}...")
    if ds.info.get("total_episodes") != len(idx):
        problems.append(f"total_episodes {ds.info.get('total_episodes')} != {len(idx)} episodes")
    if ds.info.get("total_frames") != table.num_rows:
        problems.append(f"total_frames {ds.info.get('total_frames')} != {table.num_rows} rows")
    ep_col = table.column("episode_index").to_numpy() if "episode_index" in columns else None
    for e in ds.episodes:
        if ep_col is not None and int((ep_col == e["episode_index"]).sum()) != e["length"]:
            problems.append(f"episode {e['episode_index']}: length {e['length']} != its rows")
        if e["dataset_to_index"] - e["dataset_from_index"] != e["length"]:
            problems.append(f"episode {e['episode_index']}: index range does not match length")
    if "index" in columns and not np.array_equal(table.column("index").to_numpy(), np.arange(table.num_rows)):
        problems.append("global index column is not 0..N-1")
    for key in ds.video_keys:
        last = ds.episodes[-1]
        frames = ds._episode_video(key, last)
        if len(frames) != last["length"]:
            problems.append(f"video {key}: last episode has {len(frames)} frames, expected {last['length']}")
    return problems
