"""Wrist trajectories of an episode in the world frame, and a predicted trajectory compared
with the demonstrated one (the workbench's Predict tab, evaluation scripts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vipa.conventions import HANDS, WRIST
from vipa.data.episode import Episode
from vipa.geometry import transform_points


def wrist_world(ep: Episode, side: str) -> np.ndarray:
    """(T, 3) float32 wrist positions in the world frame (camera_pose applied), metres; NaN
    where the hand is absent, the wrist invalid or the frame marked bad."""
    tr = ep.hands[side]
    p = tr.joints_3d[:, WRIST].astype(np.float32)
    ok = tr.present & tr.valid[:, WRIST] & ep.frame_valid & np.isfinite(p).all(axis=1)
    R = ep.camera_pose[:, :3, :3]
    tv = ep.camera_pose[:, :3, 3]
    w = np.einsum("tij,tj->ti", R, np.nan_to_num(p)) + tv
    w[~ok] = np.nan
    return w.astype(np.float32)


def main_hand(ep: Episode) -> str:
    """The hand present in the most frames."""
    return max(HANDS, key=lambda h: int(ep.hands[h].present.sum()))


@dataclass
class TrajectoryComparison:
    """``predicted_world`` (N, 3) m; ``demonstrated_world`` (N, 3) m, NaN past the episode end or
    where the demonstration has no wrist; ``error_m`` mean distance over the compared waypoints
    (None when none compare); ``side`` the demonstrating hand."""

    predicted_world: np.ndarray
    demonstrated_world: np.ndarray
    error_m: float | None
    side: str


def compare_to_demonstration(ep: Episode, frame: int, traj_cam: np.ndarray, stride: int = 2,
                             side: str | None = None) -> TrajectoryComparison:
    """Put predicted waypoints (N, 3), camera frame of ``frame``, metres, into the world frame and
    compare waypoint k with the demonstrated wrist ``stride * (k + 1)`` frames ahead."""
    traj = np.asarray(traj_cam, np.float32).reshape(-1, 3)
    side = side or main_hand(ep)
    world = transform_points(ep.camera_pose[frame], traj)
    idx = frame + stride * np.arange(1, len(traj) + 1)
    demo = np.full_like(world, np.nan)
    keep = idx < ep.num_frames
    demo[keep] = wrist_world(ep, side)[idx[keep]]
    ok = np.isfinite(demo).all(1)
    err = float(np.linalg.norm(world[ok] - demo[ok], axis=1).mean()) if ok.any() else None
    return TrajectoryComparison(world, demo, err, side)
