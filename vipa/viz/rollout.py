"""A saved simulator rollout (the .npz written by vipa.sim.evaluate.save_rollout) -> Rerun .rrd.

Shows the executed end-effector path against every predicted action chunk integrated into a
path from the state it was predicted at, in 3D (robot world frame, z up, metres) and projected
into the camera image, plus the executed actions over time. Logged in columns
(``rr.send_columns``: one call per entity for the whole rollout).

Entity paths come from vipa.viz.paths (its robot section):

    /robot/world                    view coordinates (right-handed, z up), simulator world frame
    /robot/world/camera             Transform3D world_from_camera (OpenCV axes) per frame
    /robot/world/camera/image       Pinhole (K) + the RGB frame
    /robot/world/camera/image/executed   LineStrips2D, the executed path projected (pixels)
    /robot/world/camera/image/predicted  LineStrips2D, the current predicted chunk projected
    /robot/world/executed           LineStrips3D, the whole executed end-effector path (static)
    /robot/world/end_effector       Points3D, the end effector per frame
    /robot/world/predicted          LineStrips3D, the current predicted chunk as a path
    /robot/plots/action             Scalars dx, dy, dz, grip of the executed action
    /robot/plots/gripper            Scalars, gripper opening (state)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from vipa.geometry import invert_transform, project, transform_points
from vipa.viz import paths
from vipa.viz.paths import (ACTION_PLOT, END_EFFECTOR, EXECUTED_2D, EXECUTED_PATH, GRIPPER_PLOT, PREDICTED_2D,
                             PREDICTED_PATH, ROBOT_CAMERA, ROBOT_IMAGE, ROBOT_PLOTS, ROBOT_WORLD)


ACTION_SCALE_M = 0.01  # Meta-World: an action of 1 moves the end-effector target 1 cm (SawyerXYZEnv.action_scale)
CONTROL_HZ = 80.0  # Meta-World control rate (MuJoCo dt 2.5 ms x frame_skip 5)
EXECUTED_COLOR = (60, 200, 90)
PREDICTED_COLOR = (220, 60, 220)
APP_ID = "vipa"


def integrate_chunk(start_xyz: np.ndarray, chunk: np.ndarray, scale: float = ACTION_SCALE_M) -> np.ndarray:
    """The path (C + 1, 3) world-frame metres that an action chunk (C, >=3) commands from
    ``start_xyz``: cumulative clipped xyz deltas times ``scale``, starting point included."""
    d = np.clip(np.asarray(chunk, np.float32)[:, :3], -1.0, 1.0) * scale
    return np.concatenate([np.asarray(start_xyz, np.float32).reshape(1, 3),
                           np.asarray(start_xyz, np.float32).reshape(1, 3) + np.cumsum(d, 0)]).astype(np.float32)


def load_rollout(path: str | Path) -> dict[str, np.ndarray]:
    """Read a rollout .npz and check the fields a recording needs (clear ValueError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rollout not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        r = {k: z[k] for k in z.files}
    missing = [k for k in ("state", "action", "chunk_steps", "chunks") if k not in r]
    if missing:
        raise ValueError(f"{path}: not a rollout file, missing {missing}")
    t = len(r["state"])
    if r["state"].ndim != 2 or r["state"].shape[1] < 3 or len(r["action"]) != t:
        raise ValueError(f"{path}: state {r['state'].shape} / action {r['action'].shape} do not describe one rollout")
    if "rgb" in r and (r["rgb"].ndim != 4 or len(r["rgb"]) != t):
        raise ValueError(f"{path}: rgb {r['rgb'].shape} does not have one frame per step ({t})")
    if len(r["chunk_steps"]) != len(r["chunks"]) or (len(r["chunk_steps"]) and r["chunk_steps"].max() >= t):
        raise ValueError(f"{path}: chunk_steps {r['chunk_steps'].tolist()} do not match {len(r['chunks'])} chunks "
                         f"of a {t}-step rollout")
    return r


def blueprint(title: str = "") -> rrb.Blueprint:
    """3D view of paths and camera beside the camera image with projected paths and the actions."""
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(origin=ROBOT_WORLD, name="3D" + (f" · {title}" if title else "")),
            rrb.Vertical(
                rrb.Spatial2DView(origin=ROBOT_IMAGE, name="camera"),
                rrb.TimeSeriesView(origin=ROBOT_PLOTS, name="actions"),
                row_shares=[3, 2],
            ),
            column_shares=[3, 2],
        ),
        rrb.TimePanel(timeline=paths.FRAME_TIMELINE),
        collapse_panels=True,
    )


def _indexes(frames: np.ndarray) -> list[rr.TimeColumn]:
    return [rr.TimeColumn(paths.FRAME_TIMELINE, sequence=frames.astype(np.int64)),
            rr.TimeColumn(paths.TIME_TIMELINE, duration=frames.astype(np.float64) / CONTROL_HZ)]


def _to_pixels(world_xyz: np.ndarray, K: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
    cam = transform_points(invert_transform(world_from_camera.astype(np.float32)), world_xyz.astype(np.float32))
    uv = project(cam, K.astype(np.float32)).astype(np.float32)
    return np.where((cam[:, 2:3] > 1e-3), uv, np.nan).astype(np.float32)


def log_rollout(rec: rr.RecordingStream, r: dict[str, np.ndarray]) -> None:
    """Log one rollout (as read by load_rollout) into ``rec``."""
    state = r["state"].astype(np.float32)
    t = len(state)
    frames = np.arange(t)
    idx = _indexes(frames)
    ee = state[:, :3]
    rr.log(ROBOT_WORLD, rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True, recording=rec)
    rr.log(EXECUTED_PATH, rr.LineStrips3D([ee], colors=[EXECUTED_COLOR], radii=[0.002]), static=True, recording=rec)
    rr.log(END_EFFECTOR, rr.Points3D.from_fields(colors=[EXECUTED_COLOR], radii=[0.008]), static=True, recording=rec)
    rr.send_columns(END_EFFECTOR, indexes=idx, columns=rr.Points3D.columns(positions=ee), recording=rec)

    starts = r["chunk_steps"].astype(np.int64)
    chunk_paths = [integrate_chunk(ee[s], c) for s, c in zip(starts, r["chunks"])]
    rr.log(PREDICTED_PATH, rr.LineStrips3D.from_fields(colors=[PREDICTED_COLOR], radii=[0.003]), static=True,
           recording=rec)
    if chunk_paths:
        rr.send_columns(PREDICTED_PATH, indexes=_indexes(starts),
                        columns=rr.LineStrips3D.columns(strips=chunk_paths).partition(np.ones(len(starts), np.int64)),
                        recording=rec)

    has_camera = "K" in r and "camera_pose" in r
    if has_camera:
        K, pose = r["K"].astype(np.float32), r["camera_pose"].astype(np.float32)
        h, w = (r["rgb"].shape[1:3] if "rgb" in r else (int(round(2 * K[1, 2])), int(round(2 * K[0, 2]))))
        rr.log(ROBOT_CAMERA, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]), static=True, recording=rec)
        rr.log(ROBOT_IMAGE, rr.Pinhole(image_from_camera=K, resolution=[w, h], camera_xyz=rr.ViewCoordinates.RDF,
                                       image_plane_distance=0.1), static=True, recording=rec)
        rr.log(EXECUTED_2D, rr.LineStrips2D([_to_pixels(ee, K, pose)], colors=[EXECUTED_COLOR], radii=[0.5]),
               static=True, recording=rec)
        rr.log(PREDICTED_2D, rr.LineStrips2D.from_fields(colors=[PREDICTED_COLOR], radii=[0.7]), static=True,
               recording=rec)
        if chunk_paths:
            rr.send_columns(PREDICTED_2D, indexes=_indexes(starts),
                            columns=rr.LineStrips2D.columns(strips=[_to_pixels(p, K, pose) for p in chunk_paths])
                            .partition(np.ones(len(starts), np.int64)), recording=rec)
    if "rgb" in r:
        blobs = [cv2.imencode(".png", np.ascontiguousarray(f[..., ::-1]))[1].tobytes() for f in r["rgb"]]
        rr.log(ROBOT_IMAGE, rr.EncodedImage.from_fields(media_type="image/png"), static=True, recording=rec)
        rr.send_columns(ROBOT_IMAGE, indexes=idx, columns=rr.EncodedImage.columns(blob=blobs), recording=rec)

    act = r["action"].astype(np.float64)
    names = ["dx", "dy", "dz", "grip"][: act.shape[1]]
    rr.log(ACTION_PLOT, rr.SeriesLines(names=names), static=True, recording=rec)
    rr.send_columns(ACTION_PLOT, indexes=idx,
                    columns=rr.Scalars.columns(scalars=act.reshape(-1)).partition(np.full(t, act.shape[1])), recording=rec)
    if state.shape[1] > 3:
        rr.log(GRIPPER_PLOT, rr.SeriesLines(names=["gripper"]), static=True, recording=rec)
        rr.send_columns(GRIPPER_PLOT, indexes=idx, columns=rr.Scalars.columns(scalars=state[:, 3].astype(np.float64)),
                        recording=rec)


def rollout_rrd_bytes(path: str | Path) -> bytes:
    """The rollout at ``path`` (.npz) as .rrd bytes with the rollout blueprint."""
    r = load_rollout(path)
    title = f"{r['task']} seed {int(r['seed'])}" if "task" in r and "seed" in r else Path(path).stem
    if "success" in r:
        title += " ok" if bool(r["success"]) else " fail"
    rec = rr.RecordingStream(APP_ID, recording_id=f"rollout-{Path(path).stem}")
    mem = rr.memory_recording(recording=rec)
    rec.send_blueprint(blueprint(title), make_active=True, make_default=True)
    log_rollout(rec, r)
    rec.flush()
    return mem.drain_as_bytes()


def save_rollout_rrd(path: str | Path, out: str | Path | None = None) -> Path:
    """Write the .rrd of the rollout .npz at ``path`` (default: beside it), atomically."""
    out = Path(out) if out is not None else Path(path).with_suffix(".rrd")
    data = rollout_rrd_bytes(path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return out
