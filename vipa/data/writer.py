"""Writing a Hand3D dataset: creating it, atomic episode writes, the episodes index, failures,
derived products, and recovery from a writer that crashed.

Writes are atomic: files go to a temporary name and are renamed; an episode is written into a
temporary folder and renamed into place; the episodes table is replaced last, under the
dataset's lock (``meta/.lock``). A crash at any point leaves a readable dataset holding either
the old or the new episode. Functions here take the dataset root; ``Hand3DDataset``'s write
methods call them.

Completion marker: an episode is *finished* when ``episodes/<id>/complete.json`` is there and
every file it lists is in place. ``write_episode(..., complete=True)`` writes the marker inside
the episode's temporary folder (it appears with the folder); a writer that adds files after the
folder (the annotators' derived products) passes ``complete=False`` and calls
``mark_complete`` last, so a crash in between leaves an episode that a resume redoes. Such an
episode's ``episode.json`` says ``"completion_marker": true``; folders written before markers
existed (no such key) count as finished as they are.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from vipa.conventions import HANDS, NUM_JOINTS
from vipa.data._io import (
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    defer_sigint,
    file_lock,
    to_json,
)
from vipa.data.depth import quantize_depth, write_depth_pngs
from vipa.data.episode import Episode, SchemaError
from vipa.data.schema import (
    CONVENTIONS,
    EPISODE_SCHEMA,
    FEATURES,
    FORMAT_VERSION,
    arrow_column,
    read_episode_rows,
    row_from_episode_json,
    validate_episode_id,
)
from vipa.data.video import encode_h264, source_bytes_per_frame

__all__ = [
    "COMPLETE_MARKER",
    "cleanup",
    "create_dataset",
    "is_complete",
    "mark_complete",
    "record_failure",
    "rebuild_index",
    "recover",
    "write_derived",
    "write_episode",
]

OLD_PREFIX = ".old-"
COMPLETE_MARKER = "complete.json"  # written last into an episode folder: all its files are in place


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def lock_path(root: Path) -> Path:
    """The dataset's inter-process lock file; held while the index or an episode folder changes."""
    return root / "meta" / ".lock"


# --------------------------------------------------------------------------- the dataset folder


def create_dataset(root: Path, fps: float | None) -> None:
    """Create an empty dataset at ``root``: meta/info.json, an empty index, episodes/."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root}: exists and is not a folder")
    if root.exists() and any(p for p in root.iterdir() if p.name not in ("meta", "episodes")):
        raise FileExistsError(f"{root}: folder is not empty and holds no Hand3D dataset (meta/info.json)")
    if fps is not None and not (float(fps) > 0):
        raise ValueError(f"fps: must be > 0, got {fps!r}")
    info = {
        "format_version": FORMAT_VERSION,
        "created": now_iso(),
        "fps": None if fps is None else float(fps),
        "conventions": CONVENTIONS,
        "features": FEATURES,
    }
    (root / "episodes").mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path(root)):
        if not (root / "meta" / "episodes.parquet").exists():
            atomic_write_parquet(root / "meta" / "episodes.parquet", EPISODE_SCHEMA.empty_table(), fsync=True)
        if not (root / "meta" / "info.json").exists():
            atomic_write_json(root / "meta" / "info.json", info, fsync=True)


def recover(root: Path) -> None:
    """Undo a swap interrupted between its two renames (restore ``.old-<id>-*``)."""
    ep_root = root / "episodes"
    if not ep_root.is_dir():
        raise SchemaError("episodes/: missing folder")
    olds = [p for p in ep_root.iterdir() if p.name.startswith(OLD_PREFIX)]
    if not olds:
        return
    with contextlib.suppress(OSError), file_lock(lock_path(root)):
        for p in olds:
            if not p.exists():
                continue
            episode_id = p.name[len(OLD_PREFIX):-9]
            target = ep_root / episode_id
            if target.exists():
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.rename(p, target)


def cleanup(root: Path, max_age_s: float = 3600.0) -> int:
    """Remove temporary files and folders older than ``max_age_s`` left by crashed writers."""
    n = 0
    now = time.time()
    for folder in [root / "meta", root / "episodes"]:
        for p in folder.iterdir():
            if p.name.startswith(TMP_PREFIX) and now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                n += 1
    return n


# --------------------------------------------------------------------------- the episodes index


def update_index(root: Path, row: dict) -> None:
    """Replace or append ``row`` in meta/episodes.parquet (the caller holds the dataset lock)."""
    path = root / "meta" / "episodes.parquet"
    rows = read_episode_rows(path)
    for i, r in enumerate(rows):
        if r["episode_id"] == row["episode_id"]:
            rows[i] = row
            break
    else:
        rows.append(row)
    atomic_write_parquet(path, rows_to_table(rows), fsync=True)


def record_failure(root: Path, episode_id: str, source: str, error: str) -> None:
    """Record that annotating ``episode_id`` failed; nothing already written is removed."""
    validate_episode_id(episode_id)
    with file_lock(lock_path(root)):
        prev = next((r for r in read_episode_rows(root / "meta" / "episodes.parquet")
                     if r["episode_id"] == episode_id), None)
        row = dict(prev) if prev else empty_row(episode_id)
        row.update(source=str(source), status="failed", error=str(error)[:10000], updated=now_iso())
        update_index(root, row)


def rebuild_index(root: Path) -> int:
    """Rebuild meta/episodes.parquet from the episode folders (keeps failure rows); the count."""
    with file_lock(lock_path(root)):
        old = read_episode_rows(root / "meta" / "episodes.parquet")
        order = [r["episode_id"] for r in old]
        rows = {r["episode_id"]: r for r in old if r["status"] == "failed"}
        for d in sorted((root / "episodes").iterdir()):
            if d.name.startswith(".") or not (d / "episode.json").is_file():
                continue
            rows[d.name] = row_from_episode_json(d / "episode.json", f"episodes/{d.name}/episode.json")
        ids = [i for i in order if i in rows] + [i for i in rows if i not in order]
        atomic_write_parquet(root / "meta" / "episodes.parquet", rows_to_table([rows[i] for i in ids]), fsync=True)
        return len(ids)


# --------------------------------------------------------------------------- episodes


def write_episode(root: Path, ep: Episode, media_from: Path | None = None, complete: bool = True) -> None:
    """Write (or replace) one episode atomically; ep.rgb and ep.depth_raw when present.

    ``media_from`` (an episode folder) supplies rgb.mp4 and depth/ by copy instead. The episode
    is validated first (SchemaError naming the field); nothing on disk changes unless the whole
    episode, folder and index row, was written. ``complete=False``: the folder goes in without
    its completion marker; the caller adds its other files and then calls :func:`mark_complete`.
    """
    ep.validate()
    validate_episode_id(ep.episode_id)
    ep_root = root / "episodes"
    tmp = ep_root / f"{TMP_PREFIX}{ep.episode_id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        row = _write_episode_files(ep, tmp, media_from)
        if complete:
            _write_marker(tmp)
        with defer_sigint(), file_lock(lock_path(root)):  # the folder and its index row, or neither
            _swap_in(tmp, ep_root / ep.episode_id)
            update_index(root, row)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, target: Path) -> None:
    if target.exists():
        old = target.parent / f"{OLD_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def _write_episode_files(ep: Episode, folder: Path, media_from: Path | None) -> dict:
    atomic_write_parquet(folder / "frames.parquet", frames_table(ep))
    atomic_write_parquet(folder / "objects.parquet", objects_table(ep))
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
        # never more bytes per frame than the compressed source had (crf 18 alone made 1.76x of it)
        encode_h264(ep.rgb, tmp_mp4, ep.fps, max_bytes_per_frame=source_bytes_per_frame(ep.extra.get("source_info")))
        os.replace(tmp_mp4, folder / "rgb.mp4")
        has_rgb = True
    if ep.depth_raw is not None and not has_depth and ep.num_frames > 0:
        counts, depth_unit = quantize_depth(ep.depth_raw, ep.depth_unit)
        write_depth_pngs(counts, folder / "depth")
        has_depth = True
    row = episode_row(ep, depth_unit=depth_unit, has_rgb=has_rgb, has_depth=has_depth)
    quality = {k: (v if math.isfinite(v) else str(v)) for k, v in row["quality"].items()}  # "inf", "nan"
    atomic_write_json(folder / "episode.json",
                      dict(row, quality=quality, extra=ep.extra, format_version=FORMAT_VERSION,
                           completion_marker=True))
    return row


def _write_marker(folder: Path) -> None:
    files = {}
    depth_pngs = 0
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel == COMPLETE_MARKER or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if rel.startswith("depth/"):
            depth_pngs += 1
        else:
            files[rel] = p.stat().st_size
    atomic_write_json(folder / COMPLETE_MARKER, {"completed": now_iso(), "files": files, "depth_files": depth_pngs},
                      fsync=True)


def mark_complete(root: Path, episode_id: str) -> None:
    """Write ``episodes/<id>/complete.json`` listing the folder's files (call it last)."""
    folder = root / "episodes" / validate_episode_id(episode_id)
    if not (folder / "episode.json").is_file():
        raise FileNotFoundError(f"{folder / 'episode.json'}: no such episode to mark complete")
    _write_marker(folder)


def is_complete(folder: Path) -> bool:
    """True when the episode folder's files are all in place: its marker and every file the
    marker lists (derived products rewritten later may change size; legacy folders without
    ``completion_marker`` in episode.json need only that file)."""
    meta_path = folder / "episode.json"
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        if not meta_path.is_file():
            return False
        try:
            return not json.loads(meta_path.read_text()).get("completion_marker", False)
        except (OSError, ValueError):
            return False
    try:
        m = json.loads(marker.read_text())
        if not all((folder / rel).is_file() for rel in m.get("files", {})):
            return False
        n_depth = int(m.get("depth_files", 0))
        if n_depth and sum(1 for _ in (folder / "depth").iterdir()) < n_depth:
            return False
    except (OSError, ValueError, TypeError, AttributeError):
        return False
    return True


def write_derived(path: Path, name: str, records: list[dict]) -> None:
    """Replace the derived product ``name`` at ``path`` atomically (one JSON object a line)."""
    lines = []
    for k, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise TypeError(f"derived {name!r} record {k}: expected a dict, got {type(rec).__name__}")
        lines.append(to_json(rec))
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())


# --------------------------------------------------------------------------- rows and tables


def empty_row(episode_id: str) -> dict:
    """The index row of an episode that has none yet (e.g. one whose annotation failed)."""
    return {
        "episode_id": episode_id, "source": "", "num_frames": 0, "width": 0, "height": 0,
        "fps": float("nan"), "K": [float("nan")] * 9, "K_is_estimate": False, "instruction": "",
        "depth_unit": float("nan"), "has_depth": False, "has_rgb": False, "quality": {},
        "review_status": "todo", "status": "ok", "error": "", "extra": "{}", "updated": now_iso(),
    }


def episode_row(ep: Episode, depth_unit: float, has_rgb: bool, has_depth: bool) -> dict:
    """The index row (EPISODE_SCHEMA) of a written episode."""
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
        "extra": to_json(ep.extra), "updated": now_iso(),
    }


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Index rows -> the meta/episodes.parquet table."""
    return pa.Table.from_pylist([{k: r[k] for k in EPISODE_SCHEMA.names} for r in rows], schema=EPISODE_SCHEMA)


def frames_table(ep: Episode) -> pa.Table:
    """frames.parquet of ``ep``: one row per frame (FEATURES of that file)."""
    t = ep.num_frames
    cols: dict[str, pa.Array] = {}

    def put(name: str, values: np.ndarray) -> None:
        f = FEATURES[name]
        cols[name] = arrow_column(values, f["dtype"], f["shape"])

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


def objects_table(ep: Episode) -> pa.Table:
    """objects.parquet of ``ep``: one row per (object, frame)."""
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
        cols[c] = arrow_column(vals[c], f["dtype"], f["shape"])
    return pa.table(cols)

