"""The Hand3D on-disk dataset (docs/FORMAT.md): the public names, gathered from the modules that
hold them, so ``from vipa.data.dataset import Hand3DDataset`` keeps working.

    <root>/meta/info.json                 format_version, created, fps, conventions, features
    <root>/meta/episodes.parquet          one row per episode (index; written last, atomically)
    <root>/episodes/<id>/episode.json     that episode's row (the folder describes itself)
    <root>/episodes/<id>/frames.parquet   one row per frame: hands, depth scale, camera pose
    <root>/episodes/<id>/objects.parquet  one row per (object, frame)
    <root>/episodes/<id>/rgb.mp4          H.264 yuv420p (lossy), original size after decoding
    <root>/episodes/<id>/depth/000000.png 16-bit PNG raw counts; metric = raw * depth_unit * s
    <root>/episodes/<id>/derived/<name>.jsonl  regenerable products ("qa", "motion")
    <root>/corrections.sqlite             the correction layer (vipa.data.corrections)

Split by role (as LeRobot's dataset code is):
    vipa.data.schema   format version, conventions, features, migrations, validation
    vipa.data.reader   Hand3DDataset: open, read episodes / frames / depth, corrections applied
    vipa.data.writer   atomic episode writes, the episodes index, failures, crash recovery
    vipa.data.video    H.264 encoding, keyframe seeking, the decoded-frame cache
    vipa.data.depth    depth quantisation to 16-bit PNG counts and back to metres
Code inside ``vipa`` imports from those modules; this one is for callers outside.
"""

from __future__ import annotations

from vipa.data._io import PathEscapeError, resolve_inside
from vipa.data.depth import quantize_depth
from vipa.data.episode import SchemaError
from vipa.data.reader import Hand3DDataset
from vipa.data.schema import (
    CONVENTIONS,
    EPISODE_SCHEMA,
    FEATURES,
    FORMAT_VERSION,
    MIGRATIONS,
    register_migration,
    validate_episode_id,
)
from vipa.data.video import FRAME_CACHE

__all__ = [
    "CONVENTIONS",
    "EPISODE_SCHEMA",
    "FEATURES",
    "FORMAT_VERSION",
    "FRAME_CACHE",
    "MIGRATIONS",
    "Hand3DDataset",
    "PathEscapeError",
    "SchemaError",
    "quantize_depth",
    "register_migration",
    "resolve_inside",
    "validate_episode_id",
]
