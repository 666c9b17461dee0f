"""The Hand3D on-disk dataset: one folder, documented in docs/FORMAT.md.

    <root>/meta/info.json                 format_version, created, fps, conventions, features
    <root>/meta/episodes.parquet          one row per episode (index; written last, atomically)
    <root>/episodes/<id>/episode.json     that episode's row (the folder describes itself)
    <root>/episodes/<id>/frames.parquet   one row per frame: hands, depth scale, camera pose
    <root>/episodes/<id>/objects.parquet  one row per (object, frame)
    <root>/episodes/<id>/rgb.mp4          H.264 yuv420p (lossy), original size after decoding
    <root>/episodes/<id>/depth/000000.png 16-bit PNG raw counts; metric = raw * depth_unit * s
    <root>/episodes/<id>/derived/<name>.jsonl  regenerable products ("qa", "motion")
    <root>/corrections.sqlite             the correction layer (vipa.data.corrections)

Writes are atomic: files go to a temporary name and are renamed; an episode is written into a
temporary folder and renamed into place; the episodes table is replaced last. A crash at any
point leaves a readable dataset holding either the old or the new episode.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vipa.conventions import DEFAULT_FOV_DEG, HANDS, JOINT_NAMES, NUM_JOINTS
from vipa.data._io import (
    TMP_PREFIX,
    PathEscapeError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    defer_sigint,
    file_lock,
    resolve_inside,
    to_json,
)
from vipa.data._io import encode_h264 as encode_rgb
from vipa.data.episode import REVIEW_STATUSES, Episode, HandTrack, ObjectTrack, SchemaError

if TYPE_CHECKING:
    from vipa.data.corrections import CorrectionLog

__all__ = [
    "FORMAT_VERSION",
    "FEATURES",
    "MIGRATIONS",
    "Hand3DDataset",
    "PathEscapeError",
    "SchemaError",
    "register_migration",
    "resolve_inside",
    "validate_episode_id",
]

FORMAT_VERSION = 1
OLD_PREFIX = ".old-"
DERIVED_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
MAX_UINT16 = 65535

CONVENTIONS: dict[str, Any] = {
    "camera_frame": "OpenCV: x right, y down, z forward; metres; float32",
    "pixels": "(u, v) px, origin at the top-left corner of the top-left pixel; pixel (row i, col j) has centre (j + 0.5, i + 0.5)",
    "camera_pose": "world_from_camera 4x4, row-major, metres",
    "joint_order": "mediapipe21",
    "joint_names": list(JOINT_NAMES),
    "handedness": "anatomical (the person's left/right)",
    "depth": "metric depth (m) = raw count * depth_unit * depth_scale; raw count 0 = invalid",
    "default_fov_deg": DEFAULT_FOV_DEG,
}


def _feat(file: str, dtype: str, shape: list, unit: str, frame: str | None, doc: str) -> dict:
    return {"file": file, "dtype": dtype, "shape": shape, "unit": unit, "frame": frame, "description": doc}


def _build_features() -> dict[str, dict]:
    f = "frames.parquet"
    feats = {
        "frame_index": _feat(f, "int64", [], "index", None, "0..T-1"),
        "timestamp": _feat(f, "float64", [], "s", None, "seconds from the episode start"),
        "frame_valid": _feat(f, "bool", [], "", None, "False = frame dropped or marked bad"),
        "depth_scale": _feat(f, "float32", [], "1", None, "calibration scale s (NaN = unknown, read as 1)"),
        "camera_pose": _feat(f, "float32", [4, 4], "m", "world_from_camera", "row-major 4x4"),
    }
    for side in HANDS:
        p = f"{side}."
        feats.update({
            p + "present": _feat(f, "bool", [], "", None, f"{side} hand detected in the frame"),
            p + "joints_2d": _feat(f, "float32", [NUM_JOINTS, 2], "px", "image", "(u, v) per joint; NaN = unknown"),
            p + "joints_3d": _feat(f, "float32", [NUM_JOINTS, 3], "m", "camera", "(x, y, z) per joint; NaN = unknown"),
            p + "confidence": _feat(f, "float32", [NUM_JOINTS], "1", None, "0..1"),
            p + "valid": _feat(f, "bool", [NUM_JOINTS], "", None, "joint visible and usable"),
            p + "reproj_error": _feat(f, "float32", [NUM_JOINTS], "px", "image", "lift residual per joint"),
            p + "provenance": _feat(f, "string", [], "", None, "stage or person that made this frame's values"),
        })
    o = "objects.parquet"
    feats.update({
        "object.object_index": _feat(o, "int32", [], "index", None, "order of the object in the episode"),
        "object.object_id": _feat(o, "string", [], "", None, "unique within the episode"),
        "object.name": _feat(o, "string", [], "", None, "category or description"),
        "object.provenance": _feat(o, "string", [], "", None, "stage or person"),
        "object.frame_index": _feat(o, "int64", [], "index", None, "frame of this row"),
        "object.center": _feat(o, "float32", [3], "m", "camera", "box centre; NaN = unknown"),
        "object.size": _feat(o, "float32", [3], "m", "camera", "box extents along x, y, z (same every frame)"),
        "object.box_2d": _feat(o, "float32", [4], "px", "image", "x0, y0, x1, y1; NaN = unknown"),
        "rgb": _feat("rgb.mp4", "uint8", ["height", "width", 3], "", "image", "H.264 yuv420p, lossy; decoded RGB"),
        "depth": _feat("depth/{frame_index:06d}.png", "uint16", ["height", "width"], "depth_unit (m/count)", "image",
                       "lossless 16-bit PNG raw counts; 0 = invalid; metric = raw * depth_unit * depth_scale"),
    })
    return feats


FEATURES: dict[str, dict] = _build_features()

_ARROW = {
    "int64": pa.int64(), "int32": pa.int32(), "float64": pa.float64(), "float32": pa.float32(),
    "bool": pa.bool_(), "string": pa.string(), "uint8": pa.uint8(), "uint16": pa.uint16(),
}

EPISODE_SCHEMA = pa.schema([
    ("episode_id", pa.string()),
    ("source", pa.string()),
    ("num_frames", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("fps", pa.float64()),
    ("K", pa.list_(pa.float32(), 9)),
    ("K_is_estimate", pa.bool_()),
    ("instruction", pa.string()),
    ("depth_unit", pa.float64()),
    ("has_depth", pa.bool_()),
    ("has_rgb", pa.bool_()),
    ("quality", pa.map_(pa.string(), pa.float64())),
    ("review_status", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("extra", pa.string()),
    ("updated", pa.string()),
])

# --------------------------------------------------------------------------- migrations

Migration = Callable[[Path, dict], dict]
MIGRATIONS: dict[int, Migration] = {}
"""from_version -> fn(root, info) -> info at from_version + 1 (may rewrite files under root)."""


def register_migration(from_version: int) -> Callable[[Migration], Migration]:
    """Decorator: register the migration of a dataset from ``from_version`` to the next."""

    def deco(fn: Migration) -> Migration:
        MIGRATIONS[from_version] = fn
        return fn

    return deco


# --------------------------------------------------------------------------- small helpers


def validate_episode_id(episode_id: Any) -> str:
    """Return ``episode_id`` if it is a safe folder name; raise SchemaError naming the problem."""
    if not isinstance(episode_id, str) or not episode_id:
        raise SchemaError(f"episode_id: must be a non-empty string, got {episode_id!r}")
    if len(episode_id) > 200:
        raise SchemaError(f"episode_id: longer than 200 characters ({len(episode_id)})")
    if any(c in episode_id for c in "/\\\x00") or episode_id in (".", ".."):
        raise SchemaError(f"episode_id: {episode_id!r} must not contain path separators")
    if episode_id.startswith("."):
        raise SchemaError(f"episode_id: {episode_id!r} must not start with '.'")
    if any(ord(c) < 32 for c in episode_id):
        raise SchemaError(f"episode_id: {episode_id!r} contains control characters")
    return episode_id


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _stat_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _arrow_column(values: np.ndarray, dtype: str, shape: list) -> pa.Array:
    """(N, *shape) numpy -> Arrow (fixed-size list of the flattened shape when not scalar)."""
    n = values.shape[0]
    typ = _ARROW[dtype]
    if dtype == "string":
        return pa.array(["" if v is None else str(v) for v in values], type=typ)
    size = int(np.prod(shape)) if shape else 1
    flat = np.ascontiguousarray(values, dtype=np.dtype(dtype)).reshape(n, size)
    if not shape:
        return pa.array(flat.reshape(n), type=typ)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1), type=typ), size)


def _numpy_column(table: pa.Table, name: str, dtype: str, shape: list, where: str) -> np.ndarray:
    """Arrow column -> (N, *shape) numpy of ``dtype``; SchemaError naming file and column."""
    if name not in table.column_names:
        raise SchemaError(f"{where}: missing column {name!r}")
    col = table.column(name)
    n = table.num_rows
    try:
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if dtype == "string":
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                raise SchemaError(f"{where}: column {name!r}: expected string, got {arr.type}")
            return np.array(["" if v is None else v for v in arr.to_pylist()], dtype=object)
        if not shape:
            if pa.types.is_nested(arr.type):
                raise SchemaError(f"{where}: column {name!r}: expected a scalar {dtype}, got {arr.type}")
            if arr.null_count:
                raise SchemaError(f"{where}: column {name!r}: {arr.null_count} null values")
            return np.array(arr.to_numpy(zero_copy_only=False), dtype=np.dtype(dtype))  # writable copy
        size = int(np.prod(shape))
        if not (pa.types.is_fixed_size_list(arr.type) or pa.types.is_list(arr.type)
                or pa.types.is_large_list(arr.type)):
            raise SchemaError(f"{where}: column {name!r}: expected a list of {size} {dtype} per row "
                              f"(shape {shape}), got {arr.type}")
        if arr.null_count:
            raise SchemaError(f"{where}: column {name!r}: {arr.null_count} null rows")
        if pa.types.is_fixed_size_list(arr.type):
            if arr.type.list_size != size:
                raise SchemaError(f"{where}: column {name!r}: {arr.type.list_size} values per row, "
                                  f"expected {size} (shape {shape})")
        else:
            lengths = np.asarray(arr.value_lengths().to_numpy(zero_copy_only=False))
            if lengths.size and not np.all(lengths == size):
                bad = int(np.flatnonzero(lengths != size)[0])
                raise SchemaError(f"{where}: column {name!r}: row {bad} has {lengths[bad]} values, "
                                  f"expected {size} (shape {shape})")
        flat = np.asarray(arr.flatten().to_numpy(zero_copy_only=False))
        return np.array(flat, dtype=np.dtype(dtype)).reshape(n, *shape)  # writable copy, not Arrow's buffer
    except SchemaError:
        raise
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise SchemaError(f"{where}: column {name!r}: cannot read as {dtype} {shape} ({exc})") from None


def _read_parquet(path: Path, where: str) -> pa.Table:
    if not path.is_file():
        raise SchemaError(f"{where}: missing file")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{where}: not a readable Parquet file ({exc})") from None


def _nice_unit(needed: float) -> float:
    """Smallest 1, 2 or 5 x 10^k that is >= ``needed``."""
    k = math.floor(math.log10(needed))
    for m in (1.0, 2.0, 5.0, 10.0):
        c = m * 10.0**k
        if c >= needed * (1 - 1e-12):
            return float(f"{c:.12g}")
    return float(10.0 ** (k + 1))


def quantize_depth(depth_raw: np.ndarray, depth_unit: float) -> tuple[np.ndarray, float]:
    """(T, H, W) raw depth in ``depth_unit`` -> (uint16 counts, unit of one count in metres).

    Integer raw values that fit in uint16 are kept exactly with the same unit. Otherwise a
    unit of the form {1, 2, 5} x 10^k is chosen so the largest value fits in 65535 counts.
    NaN, inf and values <= 0 become 0 (invalid); positive values never round to 0.
    """
    d = np.asarray(depth_raw, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        return np.zeros(d.shape, np.uint16), float(depth_unit)
    vals = d[valid]
    mx = float(vals.max())
    if mx <= MAX_UINT16 and np.all(vals == np.round(vals)):
        return np.where(valid, d, 0).astype(np.uint16), float(depth_unit)
    unit = _nice_unit(mx * depth_unit / MAX_UINT16)
    counts = np.rint(np.where(valid, d, 0) * (depth_unit / unit))
    counts = np.where(valid, np.clip(counts, 1, MAX_UINT16), 0)
    return counts.astype(np.uint16), unit


# --------------------------------------------------------------------------- media


class _FrameCache:
    """Thread-safe LRU of decoded frames, bounded in bytes (shared by all datasets)."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> np.ndarray | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: tuple, value: np.ndarray) -> None:
        with self._lock:
            if key in self._d:
                self._bytes -= self._d.pop(key).nbytes
            self._d[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._d) > 1:
                _, old = self._d.popitem(last=False)
                self._bytes -= old.nbytes


FRAME_CACHE = _FrameCache()


class _VideoIndex:
    """Presentation timestamps of every frame and the keyframes of one mp4 (demuxed, not decoded)."""

    def __init__(self, path: Path) -> None:
        import av

        pts, keys = [], []
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            for pkt in c.demux(stream):
                if pkt.pts is None or pkt.size == 0:
                    continue
                pts.append(pkt.pts)
                if pkt.is_keyframe:
                    keys.append(pkt.pts)
        self.pts = np.sort(np.asarray(pts, np.int64))
        self.index_of = {int(p): i for i, p in enumerate(self.pts)}
        self.key_frames = np.sort(np.asarray([self.index_of[int(k)] for k in keys], np.int64))
        self.lock = threading.Lock()

    def keyframe_before(self, i: int) -> int:
        j = np.searchsorted(self.key_frames, i, side="right") - 1
        return int(self.key_frames[max(j, 0)]) if self.key_frames.size else 0


# --------------------------------------------------------------------------- the dataset


class Hand3DDataset:
    """A Hand3D dataset folder. Use ``create`` or ``open``; both validate the metadata."""

    PREFETCH = 8  # frames decoded past a random-access request (sequential playback is common)
    LOOKBEHIND = 2  # frames before it kept too (stepping back one frame is common)

    def __init__(self, root: Path, info: dict) -> None:
        self.root = Path(root)
        self.info = info
        self._lock_path = self.root / "meta" / ".lock"
        self._table_cache: tuple[tuple | None, list[dict]] | None = None
        self._frames_cache: dict[str, tuple[tuple | None, pa.Table]] = {}
        self._meta_cache: dict[str, tuple[tuple | None, dict]] = {}
        self._video_index: dict[str, tuple[tuple | None, _VideoIndex]] = {}
        self._corrections: CorrectionLog | None = None
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ create / open

    @classmethod
    def create(cls, root: str | os.PathLike, fps: float | None = None, exist_ok: bool = True) -> "Hand3DDataset":
        """Create an empty dataset at ``root`` (or open the one already there if ``exist_ok``)."""
        root = Path(root)
        if (root / "meta" / "info.json").exists():
            if not exist_ok:
                raise FileExistsError(f"{root}: a Hand3D dataset already exists here")
            return cls.open(root)
        if root.exists() and not root.is_dir():
            raise NotADirectoryError(f"{root}: exists and is not a folder")
        if root.exists() and any(p for p in root.iterdir() if p.name not in ("meta", "episodes")):
            raise FileExistsError(f"{root}: folder is not empty and holds no Hand3D dataset (meta/info.json)")
        if fps is not None and not (float(fps) > 0):
            raise ValueError(f"fps: must be > 0, got {fps!r}")
        info = {
            "format_version": FORMAT_VERSION,
            "created": _now(),
            "fps": None if fps is None else float(fps),
            "conventions": CONVENTIONS,
            "features": FEATURES,
        }
        (root / "episodes").mkdir(parents=True, exist_ok=True)
        with file_lock(root / "meta" / ".lock"):
            if not (root / "meta" / "episodes.parquet").exists():
                atomic_write_parquet(root / "meta" / "episodes.parquet", EPISODE_SCHEMA.empty_table(), fsync=True)
            if not (root / "meta" / "info.json").exists():
                atomic_write_json(root / "meta" / "info.json", info, fsync=True)
        return cls.open(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Hand3DDataset":
        """Open and validate a dataset; older format versions are migrated in place."""
        root = Path(root)
        info_path = root / "meta" / "info.json"
        if not root.is_dir():
            raise SchemaError(f"{root}: no such dataset folder")
        if not info_path.is_file():
            raise SchemaError(f"meta/info.json: missing in {root} (not a Hand3D dataset)")
        info = _read_info(info_path)
        version = info["format_version"]
        if version > FORMAT_VERSION:
            raise SchemaError(f"meta/info.json: format_version {version} is newer than this library "
                              f"supports ({FORMAT_VERSION}); upgrade vipa")
        if version < FORMAT_VERSION:
            with file_lock(root / "meta" / ".lock"):
                info = _read_info(info_path)
                info = _migrate(root, info)
                atomic_write_json(info_path, info, fsync=True)
        _validate_info(info)
        ds = cls(root, info)
        ds._recover()
        ds.episodes_table()  # validates the episodes table
        return ds

    def _recover(self) -> None:
        """Undo a swap interrupted between its two renames (restore ``.old-<id>-*``)."""
        ep_root = self.root / "episodes"
        if not ep_root.is_dir():
            raise SchemaError("episodes/: missing folder")
        olds = [p for p in ep_root.iterdir() if p.name.startswith(OLD_PREFIX)]
        if not olds:
            return
        with contextlib.suppress(OSError), file_lock(self._lock_path):
            for p in olds:
                if not p.exists():
                    continue
                episode_id = p.name[len(OLD_PREFIX):-9]
                target = ep_root / episode_id
                if target.exists():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.rename(p, target)

    def cleanup(self, max_age_s: float = 3600.0) -> int:
        """Remove temporary files and folders older than ``max_age_s`` left by crashed writers."""
        import time

        n = 0
        now = time.time()
        for folder in [self.root / "meta", self.root / "episodes"]:
            for p in folder.iterdir():
                if p.name.startswith(TMP_PREFIX) and now - p.stat().st_mtime > max_age_s:
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                    n += 1
        return n

    @property
    def format_version(self) -> int:
        return int(self.info["format_version"])

    @property
    def fps(self) -> float | None:
        return self.info.get("fps")

    def __repr__(self) -> str:
        return f"Hand3DDataset({str(self.root)!r}, episodes={len(self.episode_ids())})"

    def __len__(self) -> int:
        return len(self.episode_ids())

    # ------------------------------------------------------------------ paths

    def resolve(self, rel: str | os.PathLike) -> Path:
        """A path inside the dataset root; refuses anything that escapes it (PathEscapeError)."""
        return resolve_inside(self.root, rel)

    def episode_dir(self, episode_id: str) -> Path:
        validate_episode_id(episode_id)
        return self.resolve(Path("episodes") / episode_id)

    # ------------------------------------------------------------------ episodes table

    def episodes_table(self, corrected: bool = False) -> list[dict]:
        """One dict per episode row (see docs/FORMAT.md), in insertion order.

        With ``corrected``, instruction and review_status carry the correction layer's values.
        """
        path = self.root / "meta" / "episodes.parquet"
        key = _stat_key(path)
        cached = self._table_cache
        if cached is None or cached[0] != key or key is None:
            rows = _read_episode_rows(path)
            self._table_cache = (key, rows)
        else:
            rows = cached[1]
        rows = [dict(r, quality=dict(r["quality"]), K=list(r["K"])) for r in rows]
        if corrected and rows and _log_exists(self.root / "corrections.sqlite"):
            overrides = self.corrections.episode_overrides()
            for r in rows:
                r.update(overrides.get(r["episode_id"], {}))
        return rows

    def _row(self, episode_id: str) -> dict | None:
        for r in self.episodes_table():
            if r["episode_id"] == episode_id:
                return r
        return None

    def episode_ids(self, include_failed: bool = False) -> list[str]:
        """Ids of written episodes (status "ok"), in insertion order; failed ones on request."""
        return [r["episode_id"] for r in self.episodes_table() if include_failed or r["status"] == "ok"]

    def status(self, episode_id: str) -> str | None:
        """"ok", "failed", or None when the id is unknown."""
        r = self._row(validate_episode_id(episode_id))
        return None if r is None else r["status"]

    def is_finished(self, episode_id: str) -> bool:
        """True when the episode was written successfully (failures are retried by reruns)."""
        r = self._row(validate_episode_id(episode_id))
        return bool(r is not None and r["status"] == "ok" and (self.root / "episodes" / episode_id).is_dir())

    def error(self, episode_id: str) -> str:
        r = self._row(validate_episode_id(episode_id))
        return "" if r is None else r["error"]

    def _update_table(self, row: dict) -> None:
        """Replace or append ``row`` in meta/episodes.parquet (caller holds the dataset lock)."""
        path = self.root / "meta" / "episodes.parquet"
        rows = _read_episode_rows(path)
        for i, r in enumerate(rows):
            if r["episode_id"] == row["episode_id"]:
                rows[i] = row
                break
        else:
            rows.append(row)
        atomic_write_parquet(path, _rows_to_table(rows), fsync=True)
        self._table_cache = None

    def record_failure(self, episode_id: str, source: str, error: str) -> None:
        """Record that annotating ``episode_id`` failed; nothing already written is removed."""
        validate_episode_id(episode_id)
        with file_lock(self._lock_path):
            prev = self._row(episode_id)
            row = dict(prev) if prev else _empty_row(episode_id)
            row.update(source=str(source), status="failed", error=str(error)[:10000], updated=_now())
            self._update_table(row)

    def rebuild_index(self) -> int:
        """Rebuild meta/episodes.parquet from the episode folders (keeps failure rows)."""
        with file_lock(self._lock_path):
            old = _read_episode_rows(self.root / "meta" / "episodes.parquet")
            order = [r["episode_id"] for r in old]
            rows = {r["episode_id"]: r for r in old if r["status"] == "failed"}
            for d in sorted((self.root / "episodes").iterdir()):
                if d.name.startswith(".") or not (d / "episode.json").is_file():
                    continue
                rows[d.name] = _row_from_episode_json(d / "episode.json", f"episodes/{d.name}/episode.json")
            ids = [i for i in order if i in rows] + [i for i in rows if i not in order]
            atomic_write_parquet(self.root / "meta" / "episodes.parquet",
                                 _rows_to_table([rows[i] for i in ids]), fsync=True)
            self._table_cache = None
            return len(ids)

    # ------------------------------------------------------------------ writing

    def write_episode(self, ep: Episode, *, _media_from: Path | None = None) -> None:
        """Write (or replace) one episode atomically; ep.rgb and ep.depth_raw when present.

        The episode is validated first (SchemaError naming the field); nothing on disk changes
        unless the whole episode was written.
        """
        ep.validate()
        validate_episode_id(ep.episode_id)
        ep_root = self.root / "episodes"
        tmp = ep_root / f"{TMP_PREFIX}{ep.episode_id}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            row = self._write_episode_files(ep, tmp, _media_from)
            with defer_sigint(), file_lock(self._lock_path):  # the folder and its index row, or neither
                self._swap_in(tmp, ep_root / ep.episode_id)
                self._update_table(row)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._forget(ep.episode_id)

    def _swap_in(self, tmp: Path, target: Path) -> None:
        if target.exists():
            old = target.parent / f"{OLD_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)

    def _forget(self, episode_id: str) -> None:
        self._frames_cache.pop(episode_id, None)
        self._meta_cache.pop(episode_id, None)
        self._video_index.pop(episode_id, None)

    def _write_episode_files(self, ep: Episode, folder: Path, media_from: Path | None) -> dict:
        atomic_write_parquet(folder / "frames.parquet", _frames_table(ep))
        atomic_write_parquet(folder / "objects.parquet", _objects_table(ep))
        has_rgb = has_depth = False
        depth_unit = float(ep.depth_unit)
        if media_from is not None:
            src = json.loads((media_from / "episode.json").read_text())
            if src.get("has_rgb"):
                shutil.copy2(media_from / "rgb.mp4", folder / "rgb.mp4")
                has_rgb = True
            if src.get("has_depth"):
                shutil.copytree(media_from / "depth", folder / "depth")
                has_depth = True
                depth_unit = float(src["depth_unit"])
        if ep.rgb is not None and not has_rgb and ep.num_frames > 0:
            tmp_mp4 = folder / f"{TMP_PREFIX}rgb.mp4"
            encode_rgb(ep.rgb, tmp_mp4, ep.fps)
            os.replace(tmp_mp4, folder / "rgb.mp4")
            has_rgb = True
        if ep.depth_raw is not None and not has_depth and ep.num_frames > 0:
            import cv2

            counts, depth_unit = quantize_depth(ep.depth_raw, ep.depth_unit)
            (folder / "depth").mkdir()
            for i in range(ep.num_frames):
                ok, buf = cv2.imencode(".png", counts[i], [cv2.IMWRITE_PNG_COMPRESSION, 1])
                if not ok:
                    raise OSError(f"depth frame {i}: PNG encoding failed")
                atomic_write_bytes(folder / "depth" / f"{i:06d}.png", buf.tobytes())
            has_depth = True
        row = _episode_row(ep, depth_unit=depth_unit, has_rgb=has_rgb, has_depth=has_depth)
        quality = {k: (v if math.isfinite(v) else str(v)) for k, v in row["quality"].items()}  # "inf", "nan"
        atomic_write_json(folder / "episode.json",
                          dict(row, quality=quality, extra=ep.extra, format_version=FORMAT_VERSION))
        return row

    # ------------------------------------------------------------------ reading

    def _require(self, episode_id: str) -> Path:
        d = self.episode_dir(episode_id)
        if not (d / "episode.json").is_file():
            raise KeyError(f"episode {episode_id!r}: not in dataset {self.root}")
        return d

    def _episode_meta(self, episode_id: str) -> dict:
        d = self._require(episode_id)
        path = d / "episode.json"
        key = _stat_key(path)
        hit = self._meta_cache.get(episode_id)
        if hit is not None and hit[0] == key and key is not None:
            return dict(hit[1])
        meta = _row_from_episode_json(path, f"episodes/{episode_id}/episode.json")
        self._meta_cache[episode_id] = (key, meta)
        return dict(meta)

    def _frames(self, episode_id: str) -> pa.Table:
        d = self._require(episode_id)
        path = d / "frames.parquet"
        key = _stat_key(path)
        hit = self._frames_cache.get(episode_id)
        if hit is not None and hit[0] == key and key is not None:
            return hit[1]
        table = _read_parquet(path, f"episodes/{episode_id}/frames.parquet")
        self._frames_cache[episode_id] = (key, table)
        return table

    def load_episode(self, episode_id: str, media: bool = False, corrected: bool = True) -> Episode:
        """The episode as an Episode; ``media`` loads rgb and depth_raw; ``corrected`` applies the
        correction layer (base annotation + edits). Raises KeyError for an unknown id and
        SchemaError naming the file and field when the stored data is malformed."""
        meta = self._episode_meta(episode_id)
        where = f"episodes/{episode_id}"
        d = self.episode_dir(episode_id)
        ep = _episode_from_tables(meta, self._frames(episode_id),
                                  _read_parquet(d / "objects.parquet", f"{where}/objects.parquet"), where)
        if media:
            if meta["has_rgb"]:
                ep.rgb = self.rgb_frames(episode_id)
            if meta["has_depth"]:
                ep.depth_raw = np.stack([self._depth_counts(episode_id, i, meta).astype(np.float32)
                                         for i in range(ep.num_frames)]) if ep.num_frames else None
        try:
            ep.validate()
        except SchemaError as exc:
            raise SchemaError(f"{where}: {exc}") from None
        if corrected and _log_exists(self.root / "corrections.sqlite"):
            ep = self.corrections.apply_to(ep)
        return ep

    def has_depth(self, episode_id: str) -> bool:
        return bool(self._episode_meta(episode_id)["has_depth"])

    def has_rgb(self, episode_id: str) -> bool:
        return bool(self._episode_meta(episode_id)["has_rgb"])

    def num_frames(self, episode_id: str) -> int:
        return int(self._episode_meta(episode_id)["num_frames"])

    def _check_frame(self, episode_id: str, i: int, meta: dict) -> int:
        n = int(meta["num_frames"])
        if not isinstance(i, (int, np.integer)) or not 0 <= int(i) < n:
            raise IndexError(f"episode {episode_id!r}: frame {i!r} out of range 0..{n - 1}")
        return int(i)

    def _video(self, episode_id: str) -> tuple[Path, tuple, _VideoIndex]:
        path = self.episode_dir(episode_id) / "rgb.mp4"
        key = _stat_key(path)
        if key is None:
            raise FileNotFoundError(f"episode {episode_id!r}: has no RGB video")
        with self._guard:
            hit = self._video_index.get(episode_id)
        if hit is not None and hit[0] == key:
            return path, key, hit[1]
        try:
            index = _VideoIndex(path)
        except Exception as exc:  # av raises its own error classes
            raise SchemaError(f"episodes/{episode_id}/rgb.mp4: cannot read video ({exc})") from None
        with self._guard:
            self._video_index[episode_id] = (key, index)
        return path, key, index

    def rgb_frame(self, episode_id: str, i: int) -> np.ndarray:
        """Frame ``i`` as (H, W, 3) uint8 RGB. Seeks to the keyframe before ``i`` and caches the
        decoded frames (LRU), so random access never decodes the whole video. The caller owns
        the returned array (a copy of the cached frame)."""
        import av

        meta = self._episode_meta(episode_id)
        i = self._check_frame(episode_id, i, meta)
        path, key, index = self._video(episode_id)
        cached = FRAME_CACHE.get((key, i))
        if cached is not None:
            return cached.copy()
        if i >= index.pts.size:
            raise SchemaError(f"episodes/{episode_id}/rgb.mp4: has {index.pts.size} frames, "
                              f"episode has {meta['num_frames']}")
        h, w = int(meta["height"]), int(meta["width"])
        start = index.keyframe_before(i)
        stop = min(i + self.PREFETCH, index.pts.size - 1)
        with index.lock, av.open(str(path)) as c:
            stream = c.streams.video[0]
            c.seek(int(index.pts[start]), stream=stream, backward=True, any_frame=False)
            for frame in c.decode(stream):
                j = index.index_of.get(frame.pts) if frame.pts is not None else None
                if j is None or j < max(start, i - self.LOOKBEHIND):
                    continue  # decoded (needed to reach i) but not converted: RGB conversion costs
                arr = frame.to_ndarray(format="rgb24")[:h, :w]
                FRAME_CACHE.put((key, j), arr)
                if j >= stop:
                    break
        out = FRAME_CACHE.get((key, i))
        if out is None:
            raise SchemaError(f"episodes/{episode_id}/rgb.mp4: frame {i} could not be decoded")
        return out.copy()

    def rgb_frames(self, episode_id: str) -> np.ndarray:
        """All frames as (T, H, W, 3) uint8 RGB (one sequential decode)."""
        import av

        meta = self._episode_meta(episode_id)
        t, h, w = int(meta["num_frames"]), int(meta["height"]), int(meta["width"])
        path = self.episode_dir(episode_id) / "rgb.mp4"
        if not meta["has_rgb"] or not path.is_file():
            raise FileNotFoundError(f"episode {episode_id!r}: has no RGB video")
        out = np.empty((t, h, w, 3), np.uint8)
        n = 0
        try:
            with av.open(str(path)) as c:
                stream = c.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in c.decode(stream):
                    if n >= t:
                        n += 1
                        break
                    out[n] = frame.to_ndarray(format="rgb24")[:h, :w]
                    n += 1
        except Exception as exc:  # av raises its own error classes
            raise SchemaError(f"episodes/{episode_id}/rgb.mp4: cannot decode ({exc})") from None
        if n != t:
            raise SchemaError(f"episodes/{episode_id}/rgb.mp4: has {'more than ' if n > t else ''}{n} "
                              f"frames, episode has {t}")
        return out

    def _depth_counts(self, episode_id: str, i: int, meta: dict) -> np.ndarray:
        import cv2

        path = self.episode_dir(episode_id) / "depth" / f"{i:06d}.png"
        if not path.is_file():
            raise SchemaError(f"episodes/{episode_id}/depth/{i:06d}.png: missing")
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None or img.dtype != np.uint16 or img.shape != (meta["height"], meta["width"]):
            got = "unreadable" if img is None else f"{img.dtype} {img.shape}"
            raise SchemaError(f"episodes/{episode_id}/depth/{i:06d}.png: expected uint16 "
                              f"({meta['height']}, {meta['width']}), got {got}")
        return img

    def depth_scale(self, episode_id: str, corrected: bool = True) -> np.ndarray:
        """(T,) float32 calibration scale per frame (NaN = unknown), corrections applied."""
        frames = self._frames(episode_id)
        s = _numpy_column(frames, "depth_scale", "float32", [], f"episodes/{episode_id}/frames.parquet").copy()
        if corrected and _log_exists(self.root / "corrections.sqlite"):
            v = self.corrections.scale(episode_id)
            if v is not None:
                s[:] = v
        return s

    def depth_frame(self, episode_id: str, i: int, corrected: bool = True) -> np.ndarray | None:
        """(H, W) float32 metric depth in metres (raw * depth_unit * s; NaN invalid), or None."""
        meta = self._episode_meta(episode_id)
        if not meta["has_depth"]:
            return None
        i = self._check_frame(episode_id, i, meta)
        counts = self._depth_counts(episode_id, i, meta)
        s = float(self.depth_scale(episode_id, corrected)[i])
        s = 1.0 if not math.isfinite(s) else s
        out = counts.astype(np.float32) * np.float32(meta["depth_unit"] * s)
        out[counts == 0] = np.nan
        return out

    # ------------------------------------------------------------------ derived products

    def _derived_path(self, episode_id: str, name: str) -> Path:
        if not isinstance(name, str) or not DERIVED_NAME.match(name):
            raise ValueError(f"derived name {name!r}: use letters, digits, '_' or '-'")
        d = self._require(episode_id)
        return d / "derived" / f"{name}.jsonl"

    def write_derived(self, episode_id: str, name: str, records: list[dict]) -> None:
        """Replace episodes/<id>/derived/<name>.jsonl atomically (one JSON object a line)."""
        path = self._derived_path(episode_id, name)
        lines = []
        for k, r in enumerate(records):
            if not isinstance(r, dict):
                raise TypeError(f"derived {name!r} record {k}: expected a dict, got {type(r).__name__}")
            lines.append(to_json(r))
        atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())

    def read_derived(self, episode_id: str, name: str) -> list[dict] | None:
        """The records written by ``write_derived``, or None when there are none yet."""
        path = self._derived_path(episode_id, name)
        if not path.is_file():
            return None
        out = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SchemaError(f"episodes/{episode_id}/derived/{name}.jsonl: line {n}: {exc.msg}") from None
        return out

    # ------------------------------------------------------------------ corrections

    @property
    def corrections(self) -> "CorrectionLog":
        """The correction layer (SQLite at <root>/corrections.sqlite)."""
        if self._corrections is None:
            from vipa.data.corrections import CorrectionLog

            self._corrections = CorrectionLog(
                self.root / "corrections.sqlite",
                base_loader=lambda eid: self.load_episode(eid, media=False, corrected=False),
            )
        return self._corrections

    def export(self, out: str | os.PathLike, corrected: bool = True) -> "Hand3DDataset":
        """Write the merged (base + corrections) dataset to a new folder ``out``; media copied."""
        out_ds = Hand3DDataset.create(out, fps=self.fps, exist_ok=False)
        for row in self.episodes_table():
            eid = row["episode_id"]
            if row["status"] != "ok":
                out_ds.record_failure(eid, row["source"], row["error"])
                continue
            ep = self.load_episode(eid, media=False, corrected=corrected)
            src = self.episode_dir(eid)
            out_ds.write_episode(ep, _media_from=src)
            for f in sorted((src / "derived").glob("*.jsonl")) if (src / "derived").is_dir() else []:
                atomic_write_bytes(out_ds.episode_dir(eid) / "derived" / f.name, f.read_bytes())
        return out_ds


def _log_exists(path: Path) -> bool:
    """A correction log to apply (LogIdentityError when the recorded one is missing or replaced)."""
    from vipa.data.corrections import log_exists

    return log_exists(path)


# --------------------------------------------------------------------------- info.json


def _read_info(path: Path) -> dict:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"meta/info.json: unreadable ({exc})") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"meta/info.json: not valid JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}); the file may be truncated") from None
    if not isinstance(info, dict):
        raise SchemaError(f"meta/info.json: expected a JSON object, got {type(info).__name__}")
    v = info.get("format_version")
    if "format_version" not in info:
        raise SchemaError("meta/info.json: format_version: missing")
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise SchemaError(f"meta/info.json: format_version: expected a non-negative integer, got {v!r}")
    return info


def _migrate(root: Path, info: dict) -> dict:
    while info["format_version"] < FORMAT_VERSION:
        v = info["format_version"]
        fn = MIGRATIONS.get(v)
        if fn is None:
            raise SchemaError(f"meta/info.json: format_version {v}: no migration to {v + 1} is registered")
        info = fn(root, dict(info))
        if not isinstance(info, dict) or info.get("format_version") != v + 1:
            raise SchemaError(f"migration from format_version {v} did not produce version {v + 1}")
    return info


def _validate_info(info: dict) -> None:
    def need(key: str, types: tuple, what: str, allow_none: bool = False) -> Any:
        if key not in info:
            raise SchemaError(f"meta/info.json: {key}: missing")
        v = info[key]
        if v is None and allow_none:
            return v
        if not isinstance(v, types) or isinstance(v, bool):
            raise SchemaError(f"meta/info.json: {key}: expected {what}, got {v!r}")
        return v

    need("created", (str,), "an ISO date string")
    fps = need("fps", (int, float), "a number > 0 or null", allow_none=True)
    if fps is not None and not fps > 0:
        raise SchemaError(f"meta/info.json: fps: must be > 0, got {fps!r}")
    need("conventions", (dict,), "an object")
    feats = need("features", (dict,), "an object")
    for name, ref in FEATURES.items():
        f = feats.get(name)
        if f is None:
            raise SchemaError(f"meta/info.json: features.{name}: missing")
        if not isinstance(f, dict):
            raise SchemaError(f"meta/info.json: features.{name}: expected an object, got {f!r}")
        for k in ("dtype", "shape"):
            if f.get(k) != ref[k]:
                raise SchemaError(f"meta/info.json: features.{name}.{k}: expected {ref[k]!r}, got {f.get(k)!r}")


# --------------------------------------------------------------------------- episode rows


def _empty_row(episode_id: str) -> dict:
    return {
        "episode_id": episode_id, "source": "", "num_frames": 0, "width": 0, "height": 0,
        "fps": float("nan"), "K": [float("nan")] * 9, "K_is_estimate": False, "instruction": "",
        "depth_unit": float("nan"), "has_depth": False, "has_rgb": False, "quality": {},
        "review_status": "todo", "status": "ok", "error": "", "extra": "{}", "updated": _now(),
    }


def _episode_row(ep: Episode, depth_unit: float, has_rgb: bool, has_depth: bool) -> dict:
    quality = {}
    for k, v in ep.quality.items():
        try:
            quality[str(k)] = float(v)
        except (TypeError, ValueError):
            raise SchemaError(f"quality.{k}: expected a number, got {v!r}") from None
    return {
        "episode_id": ep.episode_id, "source": str(ep.source), "num_frames": int(ep.num_frames),
        "width": int(ep.width), "height": int(ep.height), "fps": float(ep.fps),
        "K": [float(x) for x in np.asarray(ep.K, np.float32).reshape(9)],
        "K_is_estimate": bool(ep.K_is_estimate), "instruction": str(ep.instruction),
        "depth_unit": float(depth_unit), "has_depth": bool(has_depth), "has_rgb": bool(has_rgb),
        "quality": quality, "review_status": ep.review_status, "status": "ok", "error": "",
        "extra": to_json(ep.extra), "updated": _now(),
    }


def _rows_to_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist([{k: r[k] for k in EPISODE_SCHEMA.names} for r in rows], schema=EPISODE_SCHEMA)


def _read_episode_rows(path: Path) -> list[dict]:
    where = "meta/episodes.parquet"
    table = _read_parquet(path, where)
    for f in EPISODE_SCHEMA:
        if f.name not in table.column_names:
            raise SchemaError(f"{where}: missing column {f.name!r}")
    n = table.num_rows
    ids = _numpy_column(table, "episode_id", "string", [], where)
    k = _numpy_column(table, "K", "float32", [9], where)
    try:
        table = table.select(EPISODE_SCHEMA.names).cast(EPISODE_SCHEMA)
    except (pa.ArrowException, ValueError) as exc:
        bad = [f.name for f in EPISODE_SCHEMA if table.schema.field(f.name).type != f.type]
        raise SchemaError(f"{where}: column {bad[0] if bad else '?'!r}: wrong type ({exc})") from None
    rows = table.to_pylist()
    for i, r in enumerate(rows):
        r["episode_id"] = str(ids[i])
        r["K"] = [float(x) for x in k[i]]
        r["quality"] = dict(r["quality"] or [])
        if r["status"] not in ("ok", "failed"):
            raise SchemaError(f"{where}: row {i} ({r['episode_id']}): status: expected 'ok' or 'failed', "
                              f"got {r['status']!r}")
    assert len(rows) == n
    return rows


def _row_from_episode_json(path: Path, where: str) -> dict:
    try:
        row = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{where}: unreadable ({exc})") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{where}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(row, dict):
        raise SchemaError(f"{where}: expected a JSON object")
    checks: dict[str, tuple] = {
        "episode_id": (str,), "num_frames": (int,), "width": (int,), "height": (int,),
        "fps": (int, float), "K": (list,), "depth_unit": (int, float), "has_depth": (bool,),
        "has_rgb": (bool,), "review_status": (str,), "quality": (dict,),
    }
    for key, types in checks.items():
        if key not in row:
            raise SchemaError(f"{where}: {key}: missing")
        if not isinstance(row[key], types) or (bool not in types and isinstance(row[key], bool)):
            raise SchemaError(f"{where}: {key}: expected {'/'.join(t.__name__ for t in types)}, got {row[key]!r}")
    if len(row["K"]) != 9 or not all(isinstance(x, (int, float)) for x in row["K"]):
        raise SchemaError(f"{where}: K: expected 9 numbers (row-major 3x3), got {row['K']!r}")
    if row["num_frames"] < 0:
        raise SchemaError(f"{where}: num_frames: must be >= 0, got {row['num_frames']}")
    if row["review_status"] not in REVIEW_STATUSES:
        raise SchemaError(f"{where}: review_status: expected one of {REVIEW_STATUSES}, got {row['review_status']!r}")
    row.setdefault("source", "")
    row.setdefault("instruction", "")
    row.setdefault("K_is_estimate", False)
    row.setdefault("status", "ok")
    row.setdefault("error", "")
    row.setdefault("updated", "")
    extra = row.get("extra", {})
    row["extra"] = extra if isinstance(extra, str) else to_json(extra or {})
    quality = {}
    for k, v in row["quality"].items():
        try:
            quality[str(k)] = float("nan") if v is None else float(v)
        except (TypeError, ValueError):
            raise SchemaError(f"{where}: quality.{k}: expected a number, got {v!r}") from None
    row["quality"] = quality
    return row


# --------------------------------------------------------------------------- episode tables


def _frames_table(ep: Episode) -> pa.Table:
    t = ep.num_frames
    cols: dict[str, pa.Array] = {}

    def put(name: str, values: np.ndarray) -> None:
        f = FEATURES[name]
        cols[name] = _arrow_column(values, f["dtype"], f["shape"])

    put("frame_index", np.arange(t, dtype=np.int64))
    put("timestamp", ep.timestamps)
    put("frame_valid", ep.frame_valid)
    put("depth_scale", ep.depth_scale)
    put("camera_pose", ep.camera_pose)
    for side in HANDS:
        h = ep.hands[side]
        p = f"{side}."
        put(p + "present", h.present)
        put(p + "joints_2d", h.joints_2d)
        put(p + "joints_3d", h.joints_3d)
        put(p + "confidence", h.confidence)
        put(p + "valid", h.valid)
        put(p + "reproj_error", h.reproj_error if h.reproj_error is not None
            else np.full((t, NUM_JOINTS), np.nan, np.float32))
        put(p + "provenance", h.provenance if h.provenance is not None else np.array([""] * t, dtype=object))
    return pa.table(cols)


_OBJECT_COLS = ("object_index", "object_id", "name", "provenance", "frame_index", "center", "size", "box_2d")


def _objects_table(ep: Episode) -> pa.Table:
    t = ep.num_frames
    ids = [o.object_id for o in ep.objects]
    if len(set(ids)) != len(ids):
        raise SchemaError(f"objects: duplicate object_id in {ids}")
    n = len(ep.objects)
    vals = {
        "object_index": np.repeat(np.arange(n, dtype=np.int32), t),
        "object_id": np.array([o.object_id for o in ep.objects for _ in range(t)], dtype=object),
        "name": np.array([o.name for o in ep.objects for _ in range(t)], dtype=object),
        "provenance": np.array([o.provenance for o in ep.objects for _ in range(t)], dtype=object),
        "frame_index": np.tile(np.arange(t, dtype=np.int64), n),
        "center": np.concatenate([o.center for o in ep.objects]) if n else np.zeros((0, 3), np.float32),
        "size": np.repeat(np.stack([o.size for o in ep.objects]), t, axis=0) if n else np.zeros((0, 3), np.float32),
        "box_2d": np.concatenate([o.box_2d for o in ep.objects]) if n else np.zeros((0, 4), np.float32),
    }
    cols = {}
    for c in _OBJECT_COLS:
        f = FEATURES["object." + c]
        cols[c] = _arrow_column(vals[c], f["dtype"], f["shape"])
    return pa.table(cols)


def _episode_from_tables(meta: dict, frames: pa.Table, objects: pa.Table, where: str) -> Episode:
    t = int(meta["num_frames"])
    fw = f"{where}/frames.parquet"
    if frames.num_rows != t:
        raise SchemaError(f"{fw}: has {frames.num_rows} rows, episode.json says num_frames={t}")

    def col(name: str) -> np.ndarray:
        f = FEATURES[name]
        return _numpy_column(frames, name, f["dtype"], f["shape"], fw)

    fi = col("frame_index")
    if not np.array_equal(fi, np.arange(t)):
        raise SchemaError(f"{fw}: frame_index: expected 0..{t - 1} in order")
    hands = {}
    for side in HANDS:
        p = f"{side}."
        hands[side] = HandTrack(
            side=side, joints_2d=col(p + "joints_2d"), joints_3d=col(p + "joints_3d"),
            confidence=col(p + "confidence"), valid=col(p + "valid"), present=col(p + "present"),
            reproj_error=col(p + "reproj_error"), provenance=col(p + "provenance"),
        )
    ow = f"{where}/objects.parquet"

    def ocol(name: str) -> np.ndarray:
        f = FEATURES["object." + name]
        return _numpy_column(objects, name, f["dtype"], f["shape"], ow)

    objs: list[ObjectTrack] = []
    if objects.num_rows:
        oidx, ofi = ocol("object_index"), ocol("frame_index")
        oid, name, prov = ocol("object_id"), ocol("name"), ocol("provenance")
        center, size, box = ocol("center"), ocol("size"), ocol("box_2d")
        for k in np.unique(oidx):
            rows = np.flatnonzero(oidx == k)
            rows = rows[np.argsort(ofi[rows], kind="stable")]
            if not np.array_equal(ofi[rows], np.arange(t)):
                raise SchemaError(f"{ow}: object_index {k}: expected one row per frame 0..{t - 1}")
            r0 = rows[0]
            objs.append(ObjectTrack(object_id=str(oid[r0]), name=str(name[r0]), center=center[rows].copy(),
                                    size=size[r0].copy(), box_2d=box[rows].copy(), provenance=str(prov[r0])))
    try:
        extra = json.loads(meta.get("extra") or "{}")
    except json.JSONDecodeError:
        raise SchemaError(f"{where}/episode.json: extra: not valid JSON") from None
    return Episode(
        episode_id=meta["episode_id"], fps=float(meta["fps"]), width=int(meta["width"]),
        height=int(meta["height"]), K=np.asarray(meta["K"], np.float32).reshape(3, 3), hands=hands,
        num_frames=t, K_is_estimate=bool(meta["K_is_estimate"]), instruction=meta["instruction"],
        source=meta["source"], objects=objs, depth_unit=float(meta["depth_unit"]),
        depth_scale=col("depth_scale"), camera_pose=col("camera_pose"), frame_valid=col("frame_valid"),
        timestamps=col("timestamp"), quality=dict(meta["quality"]), review_status=meta["review_status"],
        extra=extra,
    )
