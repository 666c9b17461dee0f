"""Reading a Hand3D dataset: ``Hand3DDataset`` opens (and validates, migrates) a dataset folder and
reads its episodes, frames, video and depth, with the correction layer applied on request.

Its write methods hand off to ``vipa.data.writer``; the format itself lives in
``vipa.data.schema``, video decoding in ``vipa.data.video``, depth counts in ``vipa.data.depth``.
What is read is cached per file version (stat key), so a file replaced by a writer, in this
process or another, is read again.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa

from vipa.conventions import HANDS
from vipa.data import writer
from vipa.data._io import atomic_write_bytes, atomic_write_json, file_lock, resolve_inside, stat_key
from vipa.data.corrections import CorrectionLog
from vipa.data.corrections import log_exists as _log_exists  # a vanished or replaced log is an error, not "no edits"
from vipa.data.depth import counts_to_metres, read_depth_png
from vipa.data.episode import Episode, HandTrack, ObjectTrack, SchemaError
from vipa.data.schema import (
    FEATURES,
    FORMAT_VERSION,
    check_derived_name,
    migrate,
    numpy_column,
    read_episode_rows,
    read_info,
    read_parquet,
    row_from_episode_json,
    validate_episode_id,
    validate_info,
)
from vipa.data.video import VideoIndex, decode_all, decode_frame

__all__ = ["Hand3DDataset", "episode_from_tables"]


class Hand3DDataset:
    """A Hand3D dataset folder. Use ``create`` or ``open``; both validate the metadata."""

    PREFETCH = 8  # frames decoded past a random-access request (sequential playback is common)
    LOOKBEHIND = 2  # frames before it kept too (stepping back one frame is common)

    def __init__(self, root: Path, info: dict) -> None:
        self.root = Path(root)
        self.info = info
        self._table_cache: tuple[tuple | None, list[dict]] | None = None
        self._frames_cache: dict[str, tuple[tuple | None, pa.Table]] = {}
        self._meta_cache: dict[str, tuple[tuple | None, dict]] = {}
        self._video_index: dict[str, tuple[tuple | None, VideoIndex]] = {}
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
        writer.create_dataset(root, fps)
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
        info = read_info(info_path)
        version = info["format_version"]
        if version > FORMAT_VERSION:
            raise SchemaError(f"meta/info.json: format_version {version} is newer than this library "
                              f"supports ({FORMAT_VERSION}); upgrade vipa")
        if version < FORMAT_VERSION:
            with file_lock(writer.lock_path(root)):
                info = read_info(info_path)
                info = migrate(root, info)
                atomic_write_json(info_path, info, fsync=True)
        validate_info(info)
        ds = cls(root, info)
        writer.recover(root)
        ds.episodes_table()  # validates the episodes table
        return ds

    def cleanup(self, max_age_s: float = 3600.0) -> int:
        """Remove temporary files and folders older than ``max_age_s`` left by crashed writers."""
        return writer.cleanup(self.root, max_age_s)

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
        key = stat_key(path)
        cached = self._table_cache
        if cached is None or cached[0] != key or key is None:
            rows = read_episode_rows(path)
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
        """True when the episode was written successfully with all its files (its completion marker,
        ``vipa.data.writer.is_complete``); failures and half-written episodes are redone by reruns."""
        r = self._row(validate_episode_id(episode_id))
        return bool(r is not None and r["status"] == "ok" and writer.is_complete(self.root / "episodes" / episode_id))

    def error(self, episode_id: str) -> str:
        r = self._row(validate_episode_id(episode_id))
        return "" if r is None else r["error"]

    # ------------------------------------------------------------------ writing (vipa.data.writer)

    def write_episode(self, ep: Episode, *, complete: bool = True, _media_from: Path | None = None) -> None:
        """Write (or replace) one episode atomically; ep.rgb and ep.depth_raw when present.

        The episode is validated first (SchemaError naming the field); nothing on disk changes
        unless the whole episode was written. ``complete=False``: no completion marker yet (add
        the episode's other files, then ``mark_complete``); until then ``is_finished`` is False.
        """
        try:
            writer.write_episode(self.root, ep, media_from=_media_from, complete=complete)
        finally:
            self._table_cache = None
        self._forget(ep.episode_id)

    def mark_complete(self, episode_id: str) -> None:
        """Write the episode's completion marker (after all its files; see ``vipa.data.writer``)."""
        writer.mark_complete(self.root, episode_id)

    def record_failure(self, episode_id: str, source: str, error: str) -> None:
        """Record that annotating ``episode_id`` failed; nothing already written is removed."""
        writer.record_failure(self.root, episode_id, source, error)
        self._table_cache = None

    def rebuild_index(self) -> int:
        """Rebuild meta/episodes.parquet from the episode folders (keeps failure rows)."""
        n = writer.rebuild_index(self.root)
        self._table_cache = None
        return n

    def _forget(self, episode_id: str) -> None:
        self._frames_cache.pop(episode_id, None)
        self._meta_cache.pop(episode_id, None)
        self._video_index.pop(episode_id, None)

    # ------------------------------------------------------------------ reading

    def _require(self, episode_id: str) -> Path:
        d = self.episode_dir(episode_id)
        if not (d / "episode.json").is_file():
            raise KeyError(f"episode {episode_id!r}: not in dataset {self.root}")
        return d

    def _episode_meta(self, episode_id: str) -> dict:
        d = self._require(episode_id)
        path = d / "episode.json"
        key = stat_key(path)
        hit = self._meta_cache.get(episode_id)
        if hit is not None and hit[0] == key and key is not None:
            return dict(hit[1])
        meta = row_from_episode_json(path, f"episodes/{episode_id}/episode.json")
        self._meta_cache[episode_id] = (key, meta)
        return dict(meta)

    def _frames(self, episode_id: str) -> pa.Table:
        d = self._require(episode_id)
        path = d / "frames.parquet"
        key = stat_key(path)
        hit = self._frames_cache.get(episode_id)
        if hit is not None and hit[0] == key and key is not None:
            return hit[1]
        table = read_parquet(path, f"episodes/{episode_id}/frames.parquet")
        self._frames_cache[episode_id] = (key, table)
        return table

    def load_episode(self, episode_id: str, media: bool = False, corrected: bool = True) -> Episode:
        """The episode as an Episode; ``media`` loads rgb and depth_raw; ``corrected`` applies the
        correction layer (base annotation + edits). Raises KeyError for an unknown id and
        SchemaError naming the file and field when the stored data is malformed."""
        meta = self._episode_meta(episode_id)
        where = f"episodes/{episode_id}"
        d = self.episode_dir(episode_id)
        ep = episode_from_tables(meta, self._frames(episode_id),
                                 read_parquet(d / "objects.parquet", f"{where}/objects.parquet"), where)
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

    def _video(self, episode_id: str) -> tuple[Path, tuple, VideoIndex]:
        path = self.episode_dir(episode_id) / "rgb.mp4"
        key = stat_key(path)
        if key is None:
            raise FileNotFoundError(f"episode {episode_id!r}: has no RGB video")
        with self._guard:
            hit = self._video_index.get(episode_id)
        if hit is not None and hit[0] == key:
            return path, key, hit[1]
        try:
            index = VideoIndex(path)
        except Exception as exc:  # av raises its own error classes
            raise SchemaError(f"episodes/{episode_id}/rgb.mp4: cannot read video ({exc})") from None
        with self._guard:
            self._video_index[episode_id] = (key, index)
        return path, key, index

    def rgb_frame(self, episode_id: str, i: int) -> np.ndarray:
        """Frame ``i`` as (H, W, 3) uint8 RGB. Seeks to the keyframe before ``i`` and caches the
        decoded frames (LRU), so random access never decodes the whole video. The caller owns
        the returned array (a copy of the cached frame)."""
        meta = self._episode_meta(episode_id)
        i = self._check_frame(episode_id, i, meta)
        path, key, index = self._video(episode_id)
        where = f"episodes/{episode_id}/rgb.mp4"
        if i >= index.pts.size:
            raise SchemaError(f"{where}: has {index.pts.size} frames, episode has {meta['num_frames']}")
        return decode_frame(path, key, index, i, int(meta["height"]), int(meta["width"]),
                            prefetch=self.PREFETCH, lookbehind=self.LOOKBEHIND, where=where)

    def rgb_frames(self, episode_id: str) -> np.ndarray:
        """All frames as (T, H, W, 3) uint8 RGB (one sequential decode)."""
        meta = self._episode_meta(episode_id)
        path = self.episode_dir(episode_id) / "rgb.mp4"
        if not meta["has_rgb"] or not path.is_file():
            raise FileNotFoundError(f"episode {episode_id!r}: has no RGB video")
        return decode_all(path, int(meta["num_frames"]), int(meta["height"]), int(meta["width"]),
                          f"episodes/{episode_id}/rgb.mp4")

    def _depth_counts(self, episode_id: str, i: int, meta: dict) -> np.ndarray:
        path = self.episode_dir(episode_id) / "depth" / f"{i:06d}.png"
        return read_depth_png(path, meta["height"], meta["width"], f"episodes/{episode_id}/depth/{i:06d}.png")

    def depth_scale(self, episode_id: str, corrected: bool = True) -> np.ndarray:
        """(T,) float32 calibration scale per frame (NaN = unknown), corrections applied."""
        frames = self._frames(episode_id)
        s = numpy_column(frames, "depth_scale", "float32", [], f"episodes/{episode_id}/frames.parquet").copy()
        if corrected and _log_exists(self.root / "corrections.sqlite"):
            v = self.corrections.scale(episode_id)
            if v is not None:
                s[:] = v
            elif self.corrections.hand_scales(episode_id):  # a corrected hand size may rescale the cloud
                s = self.load_episode(episode_id, corrected=True).depth_scale.astype(np.float32)
        return s

    def depth_frame(self, episode_id: str, i: int, corrected: bool = True) -> np.ndarray | None:
        """(H, W) float32 metric depth in metres (raw * depth_unit * s; NaN invalid), or None."""
        meta = self._episode_meta(episode_id)
        if not meta["has_depth"]:
            return None
        i = self._check_frame(episode_id, i, meta)
        counts = self._depth_counts(episode_id, i, meta)
        return counts_to_metres(counts, meta["depth_unit"], float(self.depth_scale(episode_id, corrected)[i]))

    # ------------------------------------------------------------------ derived products

    def _derived_path(self, episode_id: str, name: str) -> Path:
        check_derived_name(name)
        return self._require(episode_id) / "derived" / f"{name}.jsonl"

    def write_derived(self, episode_id: str, name: str, records: list[dict]) -> None:
        """Replace episodes/<id>/derived/<name>.jsonl atomically (one JSON object a line)."""
        writer.write_derived(self._derived_path(episode_id, name), name, records)

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
    def corrections(self) -> CorrectionLog:
        """The correction layer (SQLite at <root>/corrections.sqlite)."""
        if self._corrections is None:
            self._corrections = CorrectionLog(
                self.root / "corrections.sqlite",
                base_loader=lambda eid: self.load_episode(eid, media=False, corrected=False),
            )
        return self._corrections

    def export(self, out: str | os.PathLike, corrected: bool = True) -> "Hand3DDataset":
        """Write the merged (base + corrections) dataset to a new folder ``out``; media copied."""
        out_ds = type(self).create(out, fps=self.fps, exist_ok=False)
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


# --------------------------------------------------------------------------- episode tables


def episode_from_tables(meta: dict, frames: pa.Table, objects: pa.Table, where: str) -> Episode:
    """An Episode (no media) from its episode.json row and its two tables; SchemaError naming the
    file and field when they disagree."""
    t = int(meta["num_frames"])
    fw = f"{where}/frames.parquet"
    if frames.num_rows != t:
        raise SchemaError(f"{fw}: has {frames.num_rows} rows, episode.json says num_frames={t}")

    def col(name: str) -> np.ndarray:
        f = FEATURES[name]
        return numpy_column(frames, name, f["dtype"], f["shape"], fw)

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
        return numpy_column(objects, name, f["dtype"], f["shape"], ow)

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
