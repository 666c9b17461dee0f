"""Episode -> Rerun recording (an .rrd) with the default blueprint.

Lean by construction: the episode's own H.264 video is embedded once (``AssetVideo``) and each
frame refers to it (``VideoFrameReference``) instead of re-encoding frames; depth is logged as
16-bit PNG depth images under the camera's ``Pinhole`` (the viewer unprojects them into a
cloud) instead of a point cloud; hand skeletons are keypoints of an ``AnnotationContext`` whose
class descriptions carry the 21-joint connections (the viewer draws the bones).

Everything temporal is logged in columns with ``rr.send_columns`` (one call per entity for the
whole episode); ``log_episode_per_frame`` is the one-``rr.log``-per-frame baseline kept for the
viewer-load benchmark. ``log_frames`` re-logs only some frames' annotations into an existing
recording (the workbench's update after an edit).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from vipa.conventions import HAND_EDGES, HANDS, JOINT_NAMES, NUM_JOINTS, WRIST
from vipa.data.episode import Episode
from vipa.data.trajectory import wrist_world
from vipa.viz import paths

APP_ID = "vipa"
HAND_COLORS = {"left": (66, 135, 245), "right": (245, 96, 66)}  # RGB per anatomical side
HAND_CLASS_IDS = {"left": 1, "right": 2}  # AnnotationContext class of each hand's keypoints
OBJECT_COLOR = (60, 200, 90)
PREDICTION_COLOR = (220, 60, 220)


@dataclass
class ViewOptions:
    """What to put in a recording: the RGB video (``with_images``) and the depth images
    (``with_depth``); ``depth_fill``: size of each unprojected depth pixel in the viewer's cloud
    (fraction of the pixel footprint)."""

    with_images: bool = True
    with_depth: bool = True
    depth_fill: float = 0.5


@dataclass
class EpisodeMedia:
    """The media a recording embeds, as stored (media never change with corrections, so cache
    this): the H.264 mp4 bytes and the depth frames as 16-bit PNG bytes (raw counts)."""

    video: bytes | None
    depth_png: list[bytes] | None

    @property
    def nbytes(self) -> int:
        return len(self.video or b"") + sum(len(b) for b in self.depth_png or [])


def media_from_files(video: Path | None, depth_pngs: Sequence[Path] | None) -> EpisodeMedia:
    """EpisodeMedia read from an episode folder's rgb.mp4 and depth/*.png (no decoding)."""
    return EpisodeMedia(Path(video).read_bytes() if video is not None else None,
                        [Path(p).read_bytes() for p in depth_pngs] if depth_pngs else None)


def media_from_episode(ep: Episode) -> EpisodeMedia:
    """EpisodeMedia encoded from an in-memory episode (H.264 video, 16-bit PNG depth)."""
    from vipa.data.video import encode_h264

    video = None
    if ep.rgb is not None and ep.num_frames:
        with tempfile.TemporaryDirectory(prefix="vipa-rec-") as tmp:
            p = Path(tmp) / "rgb.mp4"
            encode_h264(ep.rgb, p, ep.fps)
            video = p.read_bytes()
    depth = None
    if ep.depth_raw is not None:
        raw = np.nan_to_num(ep.depth_raw, nan=0.0, posinf=0.0, neginf=0.0)
        counts = np.clip(np.rint(raw), 0, 65535).astype(np.uint16)
        depth = [cv2.imencode(".png", d)[1].tobytes() for d in counts]
    return EpisodeMedia(video, depth)


def default_blueprint(title: str = "") -> rrb.Blueprint:
    """3D view (the depth as a cloud, frustum with the video frame, skeletons, trajectories,
    boxes) beside a 2D view of the frame with projected joints and the time series, one shared
    ``frame`` timeline. (The blueprint has no field for the time cursor; the app moves it.)"""
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(origin=paths.WORLD, name="3D" + (f" · {title}" if title else "")),
            rrb.Vertical(
                rrb.Spatial2DView(origin=paths.IMAGE, name="frame", contents=["+ $origin/**", f"- /{paths.DEPTH}"]),
                rrb.TimeSeriesView(origin=paths.PLOTS, name="time series"),
                row_shares=[3, 2],
            ),
            column_shares=[3, 2],
        ),
        rrb.TimePanel(timeline=paths.FRAME_TIMELINE),
        collapse_panels=True,
    )


def hand_annotation_context() -> rr.AnnotationContext:
    """One class per hand (label, colour) whose 21 keypoints are the joints in conventions order,
    connected by ``HAND_EDGES``: the viewer draws the skeleton of any keypoint-labelled points."""
    return rr.AnnotationContext([
        rr.ClassDescription(
            info=rr.AnnotationInfo(id=HAND_CLASS_IDS[s], label=f"{s} hand", color=HAND_COLORS[s]),
            keypoint_annotations=[rr.AnnotationInfo(id=j, label=name) for j, name in enumerate(JOINT_NAMES)],
            keypoint_connections=[(int(a), int(b)) for a, b in HAND_EDGES],
        )
        for s in HANDS
    ])


def _time_indexes(ep: Episode, frames: np.ndarray) -> list[rr.TimeColumn]:
    return [
        rr.TimeColumn(paths.FRAME_TIMELINE, sequence=frames.astype(np.int64)),
        rr.TimeColumn(paths.TIME_TIMELINE, duration=np.asarray(ep.timestamps, np.float64)[frames]),
    ]


def _color(side: str) -> np.ndarray:
    return np.asarray(HAND_COLORS[side], np.uint8)


def _joint_mask(ep: Episode, side: str, dim: int) -> np.ndarray:
    tr = ep.hands[side]
    pts = tr.joints_3d if dim == 3 else tr.joints_2d
    return tr.valid & tr.present[:, None] & np.isfinite(pts).all(axis=-1) & ep.frame_valid[:, None]


def depth_meter(ep: Episode) -> np.ndarray:
    """(T,) float32 raw depth counts per metre with the calibration scale s (NaN -> 1):
    metric = raw * depth_unit * s."""
    s = np.where(np.isfinite(ep.depth_scale), ep.depth_scale, 1.0).astype(np.float64)
    return (1.0 / (float(ep.depth_unit) * s)).astype(np.float32)


def video_timestamps_ns(video: bytes) -> np.ndarray:
    """Presentation time (ns) of each frame of an mp4, in decode order of presentation."""
    return np.asarray(rr.AssetVideo(contents=video, media_type="video/mp4").read_frame_timestamps_nanos(), np.int64)


def _static_setup(rec: rr.RecordingStream, ep: Episode) -> None:
    rr.log(paths.WORLD, rr.ViewCoordinates.RDF, static=True, recording=rec)
    rr.log(paths.WORLD, hand_annotation_context(), static=True, recording=rec)
    rr.log(
        paths.IMAGE,
        rr.Pinhole(image_from_camera=ep.K.astype(np.float32), resolution=[ep.width, ep.height],
                   camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=0.15),
        static=True,
        recording=rec,
    )
    for side in HANDS:
        c = _color(side)
        cls = [HAND_CLASS_IDS[side]]
        rr.log(paths.wrist_plot(side), rr.SeriesLines(names=[f"{side} x", f"{side} y", f"{side} z"]),
               static=True, recording=rec)
        rr.log(paths.confidence_plot(side), rr.SeriesLines(names=[f"{side} confidence"], colors=[c]),
               static=True, recording=rec)
        rr.log(paths.reproj_plot(side), rr.SeriesLines(names=[f"{side} reproj px"], colors=[c]),
               static=True, recording=rec)
        # joint names stay in the hover/selection panel; drawn labels would cover the hand
        rr.log(paths.hand_joints_3d(side), rr.Points3D.from_fields(class_ids=cls, radii=[0.004], show_labels=False),
               static=True, recording=rec)
        rr.log(paths.hand_joints_2d(side), rr.Points2D.from_fields(class_ids=cls, radii=[3.0], show_labels=False),
               static=True, recording=rec)
    rr.log(paths.DEPTH_SCALE_PLOT, rr.SeriesLines(names=["depth scale s"]), static=True, recording=rec)


def _log_media(rec: rr.RecordingStream, ep: Episode, opts: ViewOptions, media: EpisodeMedia) -> None:
    t = ep.num_frames
    if opts.with_images and media.video and t:
        rr.log(paths.IMAGE, rr.AssetVideo(contents=media.video, media_type="video/mp4"), static=True, recording=rec)
        ts = video_timestamps_ns(media.video)[:t]
        rr.send_columns(paths.IMAGE, indexes=_time_indexes(ep, np.arange(len(ts))),
                        columns=rr.VideoFrameReference.columns_nanos(ts), recording=rec)
    if opts.with_depth and media.depth_png and t:
        if len(media.depth_png) != t:
            raise ValueError(f"depth: {len(media.depth_png)} frames for a {t}-frame episode")
        rr.log(paths.DEPTH, rr.EncodedDepthImage.from_fields(media_type="image/png", point_fill_ratio=opts.depth_fill),
               static=True, recording=rec)
        rr.send_columns(paths.DEPTH, indexes=_time_indexes(ep, np.arange(t)),
                        columns=rr.EncodedDepthImage.columns(blob=media.depth_png, meter=depth_meter(ep)),
                        recording=rec)


def _log_depth_meter(rec: rr.RecordingStream, ep: Episode) -> None:
    """Only the depth images' scale (after a calibration-scale correction)."""
    rr.send_columns(paths.DEPTH, indexes=_time_indexes(ep, np.arange(ep.num_frames)),
                    columns=rr.EncodedDepthImage.columns(meter=depth_meter(ep)), recording=rec)


def _log_hands(rec: rr.RecordingStream, ep: Episode, frames: np.ndarray) -> None:
    """Keypoints of both hands in 3D (camera frame, m) and 2D (pixels) at ``frames``; a frame
    where a hand is absent, or marked bad, gets an empty batch (nothing drawn)."""
    idx = _time_indexes(ep, frames)
    for side in HANDS:
        tr = ep.hands[side]
        if not tr.present.any():
            continue
        for dim in (3, 2):
            ok = _joint_mask(ep, side, dim)[frames]  # (F, 21)
            joints = (tr.joints_3d if dim == 3 else tr.joints_2d)[frames]
            kids = np.broadcast_to(np.arange(NUM_JOINTS, dtype=np.uint16), ok.shape)[ok]
            arche, path = (rr.Points3D, paths.hand_joints_3d(side)) if dim == 3 else (rr.Points2D, paths.hand_joints_2d(side))
            rr.send_columns(path, indexes=idx,
                            columns=arche.columns(positions=joints[ok].astype(np.float32), keypoint_ids=kids
                                                  ).partition(ok.sum(axis=1)),
                            recording=rec)
        w = wrist_world(ep, side)
        okw = np.isfinite(w).all(axis=1)
        if okw.any():
            rr.log(paths.trajectory(side), rr.LineStrips3D([w[okw]], colors=[_color(side)], radii=[0.003]),
                   static=True, recording=rec)


def _log_objects(rec: rr.RecordingStream, ep: Episode, frames: np.ndarray) -> None:
    idx = _time_indexes(ep, frames)
    for obj in ep.objects:
        ok = (np.isfinite(obj.center).all(axis=1) & ep.frame_valid)[frames]
        half = np.broadcast_to(obj.size.astype(np.float32) / 2, (int(ok.sum()), 3))
        rr.log(paths.object_box(obj.object_id),
               rr.Boxes3D.from_fields(colors=[OBJECT_COLOR], labels=[obj.name or obj.object_id]),
               static=True, recording=rec)
        rr.send_columns(paths.object_box(obj.object_id), indexes=idx,
                        columns=rr.Boxes3D.columns(centers=obj.center[frames][ok], half_sizes=half
                                                   ).partition(ok.astype(np.int64)),
                        recording=rec)


def _log_plots(rec: rr.RecordingStream, ep: Episode) -> None:
    frames = np.arange(ep.num_frames)
    for side in HANDS:
        tr = ep.hands[side]
        if not tr.present.any():
            continue
        okw = np.isfinite(wrist_world(ep, side)).all(axis=1)
        if okw.any():
            wc = tr.joints_3d[:, WRIST][okw].astype(np.float64)
            rr.send_columns(paths.wrist_plot(side), indexes=_time_indexes(ep, frames[okw]),
                            columns=rr.Scalars.columns(scalars=wc.reshape(-1)).partition(np.full(len(wc), 3)),
                            recording=rec)
        present = tr.present & ep.frame_valid
        if present.any():
            conf = np.where(tr.valid, tr.confidence, np.nan)[present]
            rr.send_columns(paths.confidence_plot(side), indexes=_time_indexes(ep, frames[present]),
                            columns=rr.Scalars.columns(scalars=_nanmean_rows(conf)), recording=rec)
            if tr.reproj_error is not None:
                m = _nanmean_rows(np.where(tr.valid, tr.reproj_error, np.nan)[present])
                keep = np.isfinite(m)
                if keep.any():
                    rr.send_columns(paths.reproj_plot(side), indexes=_time_indexes(ep, frames[present][keep]),
                                    columns=rr.Scalars.columns(scalars=m[keep]), recording=rec)
    s = ep.depth_scale
    oks = np.isfinite(s)
    if oks.any():
        rr.send_columns(paths.DEPTH_SCALE_PLOT, indexes=_time_indexes(ep, frames[oks]),
                        columns=rr.Scalars.columns(scalars=s[oks].astype(np.float64)), recording=rec)


def log_episode(rec: rr.RecordingStream, ep: Episode, opts: ViewOptions | None = None,
                media: EpisodeMedia | None = None) -> None:
    """Log a whole episode into ``rec`` in columns (one send_columns per entity). ``media``:
    the episode's stored video and depth (``media_from_files``); encoded from ``ep`` when None."""
    opts = opts or ViewOptions()
    t = ep.num_frames
    frames = np.arange(t)
    _static_setup(rec, ep)
    if t:
        pose = ep.camera_pose.astype(np.float32)
        rr.send_columns(paths.CAMERA, indexes=_time_indexes(ep, frames),
                        columns=rr.Transform3D.columns(translation=pose[:, :3, 3], mat3x3=pose[:, :3, :3]),
                        recording=rec)
    _log_media(rec, ep, opts, media if media is not None else media_from_episode(ep))
    if t:
        _log_hands(rec, ep, frames)
        _log_objects(rec, ep, frames)
        _log_plots(rec, ep)


def log_frames(rec: rr.RecordingStream, ep: Episode, frames: Sequence[int] | None, depth_scale: bool = False) -> None:
    """Re-log the annotations (hands, trajectories, object boxes) of ``frames`` (all when None)
    of the corrected ``ep`` into a recording that already holds the episode; the newer rows win
    at those times. ``depth_scale``: the calibration scale changed (depth images re-scaled)."""
    f = np.arange(ep.num_frames) if frames is None else np.unique(np.asarray(list(frames), np.int64))
    f = f[(f >= 0) & (f < ep.num_frames)]
    if depth_scale:
        _log_depth_meter(rec, ep)
    if f.size:
        _log_hands(rec, ep, f)
        _log_objects(rec, ep, f)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    n = np.isfinite(a).sum(axis=1)
    tot = np.nansum(a, axis=1)
    out = np.full(len(a), np.nan, np.float64)
    out[n > 0] = tot[n > 0] / n[n > 0]
    return out


def log_episode_per_frame(rec: rr.RecordingStream, ep: Episode, opts: ViewOptions | None = None,
                          media: EpisodeMedia | None = None) -> None:
    """Baseline: the same content with one ``rr.log`` per entity per frame (same media)."""
    opts = opts or ViewOptions()
    media = media if media is not None else media_from_episode(ep)
    _static_setup(rec, ep)
    ts = None
    if opts.with_images and media.video:
        rr.log(paths.IMAGE, rr.AssetVideo(contents=media.video, media_type="video/mp4"), static=True, recording=rec)
        ts = video_timestamps_ns(media.video)
    depth = media.depth_png if opts.with_depth else None
    if depth:
        rr.log(paths.DEPTH, rr.EncodedDepthImage.from_fields(media_type="image/png", point_fill_ratio=opts.depth_fill),
               static=True, recording=rec)
    meter = depth_meter(ep)
    masks = {(s, d): _joint_mask(ep, s, d) for s in HANDS for d in (2, 3)}
    for i in range(ep.num_frames):
        rec.set_time(paths.FRAME_TIMELINE, sequence=i)
        rec.set_time(paths.TIME_TIMELINE, duration=float(ep.timestamps[i]))
        pose = ep.camera_pose[i]
        rr.log(paths.CAMERA, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]), recording=rec)
        if ts is not None and i < len(ts):
            rr.log(paths.IMAGE, rr.VideoFrameReference(nanoseconds=int(ts[i])), recording=rec)
        if depth:
            rr.log(paths.DEPTH, rr.EncodedDepthImage.from_fields(blob=depth[i], meter=float(meter[i])), recording=rec)
        for side in HANDS:
            tr = ep.hands[side]
            if not tr.present.any():
                continue
            for dim in (3, 2):
                ok = masks[(side, dim)][i]
                kids = np.nonzero(ok)[0].astype(np.uint16)
                if dim == 3:
                    rr.log(paths.hand_joints_3d(side), rr.Points3D(tr.joints_3d[i][ok], keypoint_ids=kids), recording=rec)
                else:
                    rr.log(paths.hand_joints_2d(side), rr.Points2D(tr.joints_2d[i][ok], keypoint_ids=kids), recording=rec)
            if tr.present[i] and tr.valid[i, WRIST] and np.isfinite(tr.joints_3d[i, WRIST]).all():
                rr.log(paths.wrist_plot(side), rr.Scalars(tr.joints_3d[i, WRIST].astype(np.float64)), recording=rec)
            if tr.present[i]:
                c = tr.confidence[i][tr.valid[i]]
                if c.size:
                    rr.log(paths.confidence_plot(side), rr.Scalars(float(c.mean())), recording=rec)
        for obj in ep.objects:
            if np.isfinite(obj.center[i]).all():
                rr.log(paths.object_box(obj.object_id),
                       rr.Boxes3D(centers=[obj.center[i]], half_sizes=[obj.size / 2]), recording=rec)
        if np.isfinite(ep.depth_scale[i]):
            rr.log(paths.DEPTH_SCALE_PLOT, rr.Scalars(float(ep.depth_scale[i])), recording=rec)
    for side in HANDS:
        w = wrist_world(ep, side)
        okw = np.isfinite(w).all(axis=1)
        if okw.any():
            rr.log(paths.trajectory(side), rr.LineStrips3D([w[okw]], colors=[_color(side)]), static=True, recording=rec)


def log_prediction(rec: rr.RecordingStream, name: str, wrist_world_xyz: np.ndarray) -> None:
    """A predicted wrist trajectory (N, 3) metres, world frame, as a static line."""
    pts = np.asarray(wrist_world_xyz, np.float32).reshape(-1, 3)
    pts = pts[np.isfinite(pts).all(axis=1)]
    rr.log(paths.prediction(name), rr.LineStrips3D([pts], colors=[PREDICTION_COLOR], radii=[0.004]),
           static=True, recording=rec)
    rr.log(paths.prediction(name) + "/points", rr.Points3D(pts, colors=[PREDICTION_COLOR], radii=[0.006]),
           static=True, recording=rec)


def new_recording(ep: Episode, recording_id: str | None = None, blueprint: bool = True
                  ) -> tuple[rr.RecordingStream, rr.MemoryRecording]:
    """A fresh in-memory recording (not global), with the default blueprint unless told not to
    (an update of a recording the viewer already holds carries none)."""
    rec = rr.RecordingStream(APP_ID, recording_id=recording_id or f"{ep.episode_id}")
    mem = rr.memory_recording(recording=rec)
    if blueprint:
        rec.send_blueprint(default_blueprint(ep.episode_id), make_active=True, make_default=True)
    return rec, mem


def episode_rrd_bytes(
    ep: Episode,
    opts: ViewOptions | None = None,
    *,
    columnar: bool = True,
    predictions: dict[str, np.ndarray] | None = None,
    recording_id: str | None = None,
    media: EpisodeMedia | None = None,
) -> bytes:
    """The whole episode as .rrd bytes (blueprint included); ``predictions`` maps a name to an
    (N, 3) world-frame wrist trajectory."""
    rec, mem = new_recording(ep, recording_id)
    if columnar:
        log_episode(rec, ep, opts, media=media)
    else:
        log_episode_per_frame(rec, ep, opts, media=media)
    for name, traj in (predictions or {}).items():
        log_prediction(rec, name, traj)
    rec.flush()
    return mem.drain_as_bytes()


def frames_rrd_bytes(ep: Episode, recording_id: str, frames: Sequence[int] | None,
                     depth_scale: bool = False) -> bytes:
    """An .rrd chunk that updates recording ``recording_id`` (already in the viewer) with the
    corrected annotations of ``frames`` (see ``log_frames``); no media, no blueprint."""
    rec, mem = new_recording(ep, recording_id, blueprint=False)
    log_frames(rec, ep, frames, depth_scale=depth_scale)
    rec.flush()
    return mem.drain_as_bytes()


def save_episode_rrd(ep: Episode, path: str | Path, opts: ViewOptions | None = None, **kw) -> Path:
    """Write the episode's recording to ``path`` (.rrd), atomically; returns the path."""
    path = Path(path)
    from vipa.data._io import atomic_write_bytes

    atomic_write_bytes(path, episode_rrd_bytes(ep, opts, **kw))  # 0644 whatever the umask
    return path
