"""The Hand3D format: version, conventions, features, the episode-table schema, migrations and
validation of what is read back (docs/FORMAT.md describes the same, for people).

Everything here is pure description and checking: no file is written. The reader
(``vipa.data.reader``) and the writer (``vipa.data.writer``) both import it, never the reverse.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vipa.conventions import DEFAULT_FOV_DEG, HANDS, JOINT_NAMES, NUM_JOINTS
from vipa.data._io import to_json
from vipa.data.episode import REVIEW_STATUSES, SchemaError

__all__ = [
    "CONVENTIONS",
    "EPISODE_SCHEMA",
    "FEATURES",
    "FORMAT_VERSION",
    "MIGRATIONS",
    "check_derived_name",
    "migrate",
    "numpy_column",
    "read_episode_rows",
    "read_info",
    "register_migration",
    "row_from_episode_json",
    "validate_episode_id",
    "validate_info",
]

FORMAT_VERSION = 1
DERIVED_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")

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


def read_info(path: Path) -> dict:
    """meta/info.json as a dict; SchemaError for unreadable JSON or a bad format_version."""
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


def migrate(root: Path, info: dict) -> dict:
    """Run the registered migrations until ``info`` is at FORMAT_VERSION (they may rewrite files)."""
    while info["format_version"] < FORMAT_VERSION:
        v = info["format_version"]
        fn = MIGRATIONS.get(v)
        if fn is None:
            raise SchemaError(f"meta/info.json: format_version {v}: no migration to {v + 1} is registered")
        info = fn(root, dict(info))
        if not isinstance(info, dict) or info.get("format_version") != v + 1:
            raise SchemaError(f"migration from format_version {v} did not produce version {v + 1}")
    return info


def validate_info(info: dict) -> None:
    """Check meta/info.json (current version): fields, types, and every feature's dtype and shape."""

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


# --------------------------------------------------------------------------- names


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



def check_derived_name(name: Any) -> str:
    """Return ``name`` if it may name a derived product (derived/<name>.jsonl); ValueError otherwise."""
    if not isinstance(name, str) or not DERIVED_NAME.match(name):
        raise ValueError(f"derived name {name!r}: use letters, digits, '_' or '-'")
    return name


# --------------------------------------------------------------------------- columns (Arrow <-> numpy)


def arrow_column(values: np.ndarray, dtype: str, shape: list) -> pa.Array:
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


def numpy_column(table: pa.Table, name: str, dtype: str, shape: list, where: str) -> np.ndarray:
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


def read_parquet(path: Path, where: str) -> pa.Table:
    """The Parquet table at ``path``; SchemaError naming ``where`` when missing or unreadable."""
    if not path.is_file():
        raise SchemaError(f"{where}: missing file")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise SchemaError(f"{where}: not a readable Parquet file ({exc})") from None


# --------------------------------------------------------------------------- episode rows (index and episode.json)


def read_episode_rows(path: Path) -> list[dict]:
    """The rows of meta/episodes.parquet as dicts, checked against EPISODE_SCHEMA."""
    where = "meta/episodes.parquet"
    table = read_parquet(path, where)
    for f in EPISODE_SCHEMA:
        if f.name not in table.column_names:
            raise SchemaError(f"{where}: missing column {f.name!r}")
    n = table.num_rows
    ids = numpy_column(table, "episode_id", "string", [], where)
    k = numpy_column(table, "K", "float32", [9], where)
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


def row_from_episode_json(path: Path, where: str) -> dict:
    """An episode's own episode.json as an index row, checked (SchemaError naming the field)."""
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

