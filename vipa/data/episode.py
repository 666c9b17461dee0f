"""In-memory Hand3D episode: the contract between annotators, the dataset writer/reader,
the correction layer, the app and the model.

Every array is numpy. Frames are indexed 0..T-1. 3D values are in the camera frame of the
frame they belong to (OpenCV, metres, float32); 2D values are pixels (see
``vipa.conventions``). Missing values are NaN (floats) with the matching validity flag False.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vipa.conventions import HANDS, NUM_JOINTS

REVIEW_STATUSES = ("todo", "needs-fix", "approved")


class SchemaError(ValueError):
    """An episode or dataset does not match the Hand3D schema; the message names the field."""


def _check(name: str, arr: np.ndarray | None, shape: tuple, dtype: Any) -> None:
    if arr is None:
        raise SchemaError(f"{name}: missing")
    if not isinstance(arr, np.ndarray):
        raise SchemaError(f"{name}: expected a numpy array, got {type(arr).__name__}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        raise SchemaError(f"{name}: expected shape {shape}, got {arr.shape}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise SchemaError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")


@dataclass
class HandTrack:
    """One hand over an episode. ``side`` is anatomical ("left"/"right")."""

    side: str
    joints_2d: np.ndarray  # (T, 21, 2) float32, pixels
    joints_3d: np.ndarray  # (T, 21, 3) float32, metres, camera frame
    confidence: np.ndarray  # (T, 21) float32 in [0, 1]
    valid: np.ndarray  # (T, 21) bool: joint visible and its values usable
    present: np.ndarray  # (T,) bool: hand detected in the frame
    reproj_error: np.ndarray | None = None  # (T, 21) float32, pixels (lift residual)
    provenance: np.ndarray | None = None  # (T,) object (str): stage or person per frame

    @classmethod
    def empty(cls, side: str, num_frames: int) -> "HandTrack":
        t = num_frames
        return cls(
            side=side,
            joints_2d=np.full((t, NUM_JOINTS, 2), np.nan, np.float32),
            joints_3d=np.full((t, NUM_JOINTS, 3), np.nan, np.float32),
            confidence=np.zeros((t, NUM_JOINTS), np.float32),
            valid=np.zeros((t, NUM_JOINTS), bool),
            present=np.zeros(t, bool),
            reproj_error=np.full((t, NUM_JOINTS), np.nan, np.float32),
            provenance=np.array([""] * t, dtype=object),
        )

    def validate(self, num_frames: int) -> None:
        p = f"hands.{self.side}"
        if self.side not in HANDS:
            raise SchemaError(f"{p}.side: expected one of {HANDS}, got {self.side!r}")
        t = num_frames
        _check(f"{p}.joints_2d", self.joints_2d, (t, NUM_JOINTS, 2), np.float32)
        _check(f"{p}.joints_3d", self.joints_3d, (t, NUM_JOINTS, 3), np.float32)
        _check(f"{p}.confidence", self.confidence, (t, NUM_JOINTS), np.float32)
        _check(f"{p}.valid", self.valid, (t, NUM_JOINTS), bool)
        _check(f"{p}.present", self.present, (t,), bool)
        if self.reproj_error is not None:
            _check(f"{p}.reproj_error", self.reproj_error, (t, NUM_JOINTS), np.float32)
        if self.provenance is not None:
            _check(f"{p}.provenance", self.provenance, (t,), None)


@dataclass
class ObjectTrack:
    """A (rigid) object over an episode: axis-aligned 3D box in each frame's camera frame."""

    object_id: str
    name: str
    center: np.ndarray  # (T, 3) float32 metres, camera frame; NaN where unknown
    size: np.ndarray  # (3,) float32 metres (box extents along camera x, y, z)
    box_2d: np.ndarray  # (T, 4) float32 pixels x0, y0, x1, y1; NaN where unknown
    provenance: str = ""

    def validate(self, num_frames: int) -> None:
        p = f"objects[{self.object_id}]"
        _check(f"{p}.center", self.center, (num_frames, 3), np.float32)
        _check(f"{p}.size", self.size, (3,), np.float32)
        _check(f"{p}.box_2d", self.box_2d, (num_frames, 4), np.float32)


@dataclass
class Episode:
    """One Hand3D episode (one video clip or RGB-D sequence)."""

    episode_id: str
    fps: float
    width: int
    height: int
    K: np.ndarray  # (3, 3) float32 intrinsics
    hands: dict[str, HandTrack]
    num_frames: int
    K_is_estimate: bool = False
    instruction: str = ""
    source: str = ""
    objects: list[ObjectTrack] = field(default_factory=list)
    depth_unit: float = 0.001  # metres (or estimator units) per stored depth count
    depth_scale: np.ndarray | None = None  # (T,) float32 calibration scale s; NaN = unknown
    camera_pose: np.ndarray | None = None  # (T, 4, 4) float32 world_from_camera
    frame_valid: np.ndarray | None = None  # (T,) bool: False = dropped / marked bad
    timestamps: np.ndarray | None = None  # (T,) float64 seconds from the episode start
    quality: dict[str, float] = field(default_factory=dict)
    review_status: str = "todo"
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras
    # Media, only when held in memory (the dataset reads them lazily per frame):
    rgb: np.ndarray | None = None  # (T, H, W, 3) uint8
    depth_raw: np.ndarray | None = None  # (T, H, W) float32 in depth units; NaN/0 = invalid

    def __post_init__(self) -> None:
        t = self.num_frames
        if self.depth_scale is None:
            self.depth_scale = np.full(t, np.nan, np.float32)
        if self.camera_pose is None:
            self.camera_pose = np.tile(np.eye(4, dtype=np.float32), (t, 1, 1))
        if self.frame_valid is None:
            self.frame_valid = np.ones(t, bool)
        if self.timestamps is None:
            self.timestamps = np.arange(t, dtype=np.float64) / float(self.fps)
        for side in HANDS:
            self.hands.setdefault(side, HandTrack.empty(side, t))

    def validate(self) -> "Episode":
        """Raise SchemaError naming the first field that is wrong; return self."""
        t = self.num_frames
        if not isinstance(self.episode_id, str) or not self.episode_id:
            raise SchemaError("episode_id: must be a non-empty string")
        if any(c in self.episode_id for c in "/\\") or self.episode_id in (".", ".."):
            raise SchemaError(f"episode_id: {self.episode_id!r} must not contain path separators")
        if not (isinstance(t, (int, np.integer)) and t >= 0):
            raise SchemaError(f"num_frames: expected a non-negative int, got {t!r}")
        if not (self.fps > 0):
            raise SchemaError(f"fps: must be > 0, got {self.fps!r}")
        if self.width <= 0 or self.height <= 0:
            raise SchemaError(f"width/height: must be > 0, got {self.width}x{self.height}")
        _check("K", self.K, (3, 3), np.float32)
        if not (self.K[0, 0] > 0 and self.K[1, 1] > 0):
            raise SchemaError(f"K: focal lengths must be > 0, got fx={self.K[0, 0]}, fy={self.K[1, 1]}")
        if self.review_status not in REVIEW_STATUSES:
            raise SchemaError(f"review_status: expected one of {REVIEW_STATUSES}, got {self.review_status!r}")
        if set(self.hands) != set(HANDS):
            raise SchemaError(f"hands: expected keys {HANDS}, got {sorted(self.hands)}")
        for side, track in self.hands.items():
            if track.side != side:
                raise SchemaError(f"hands.{side}.side: is {track.side!r}")
            track.validate(t)
        for obj in self.objects:
            obj.validate(t)
        _check("depth_scale", self.depth_scale, (t,), np.float32)
        _check("camera_pose", self.camera_pose, (t, 4, 4), np.float32)
        _check("frame_valid", self.frame_valid, (t,), bool)
        _check("timestamps", self.timestamps, (t,), np.float64)
        if self.rgb is not None:
            _check("rgb", self.rgb, (t, self.height, self.width, 3), np.uint8)
        if self.depth_raw is not None:
            _check("depth_raw", self.depth_raw, (t, self.height, self.width), np.float32)
        return self

    def metric_depth(self, frame: int) -> np.ndarray | None:
        """(H, W) float32 metric depth of one in-memory frame (raw * unit * scale), or None."""
        if self.depth_raw is None:
            return None
        s = float(self.depth_scale[frame])
        s = 1.0 if not np.isfinite(s) else s
        return self.depth_raw[frame] * np.float32(self.depth_unit * s)
