"""Episode -> Rerun recording (an .rrd) with the default blueprint.

Everything is logged in columns with ``rr.send_columns``: one call per entity for the whole
episode, ragged per-frame batches (point clouds, visible joints, bones) via
``ComponentColumnList.partition``. ``log_episode_per_frame`` is the one-``rr.log``-per-frame
baseline kept for the viewer-load benchmark.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from vipa.conventions import HAND_EDGES, HANDS, WRIST
from vipa.data.episode import Episode
from vipa.data.trajectory import wrist_world
from vipa.viz import paths

APP_ID = "vipa"
HAND_COLORS = {"left": (66, 135, 245), "right": (245, 96, 66)}  # RGB per anatomical side
OBJECT_COLOR = (60, 200, 90)
PREDICTION_COLOR = (220, 60, 220)
_EDGES = np.asarray(HAND_EDGES, np.int64)  # (E, 2)


@dataclass
class ViewOptions:
    """What to put in a recording. ``cloud_stride``: keep every n-th pixel in u and v;
    ``max_cloud_points``: cap per frame; ``image_width``: frames are downscaled to this width
    (pixels) and JPEG-encoded; joints stay in full-resolution pixel units."""

    cloud_stride: int = 4
    max_cloud_points: int = 6000
    image_width: int = 640
    jpeg_quality: int = 80
    with_images: bool = True
    with_cloud: bool = True


def default_blueprint(title: str = "") -> rrb.Blueprint:
    """3D view (cloud, frustum with image, skeletons, trajectories, boxes) beside a 2D view of
    the frame with projected joints and the time series, one shared ``frame`` timeline.
    (The blueprint has no field for the time cursor; the app moves it in the viewer.)"""
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Spatial3DView(origin=paths.WORLD, name="3D" + (f" · {title}" if title else "")),
            rrb.Vertical(
                rrb.Spatial2DView(origin=paths.IMAGE, name="frame"),
                rrb.TimeSeriesView(origin=paths.PLOTS, name="time series"),
                row_shares=[3, 2],
            ),
            column_shares=[3, 2],
        ),
        rrb.TimePanel(timeline=paths.FRAME_TIMELINE),
        collapse_panels=True,
    )


def _time_indexes(ep: Episode, frames: np.ndarray) -> list[rr.TimeColumn]:
    return [
        rr.TimeColumn(paths.FRAME_TIMELINE, sequence=frames.astype(np.int64)),
        rr.TimeColumn(paths.TIME_TIMELINE, duration=np.asarray(ep.timestamps, np.float64)[frames]),
    ]


def _color(side: str) -> np.ndarray:
    return np.asarray(HAND_COLORS[side], np.uint8)


def _bone_strips(joints: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame skeleton segments where both ends are valid.

    joints (T, 21, D), valid (T, 21) -> (segments (S, 2, D), counts (T,))."""
    ok = valid[:, _EDGES[:, 0]] & valid[:, _EDGES[:, 1]]  # (T, E)
    seg = np.stack([joints[:, _EDGES[:, 0]], joints[:, _EDGES[:, 1]]], axis=2)  # (T, E, 2, D)
    return seg[ok].astype(np.float32), ok.sum(axis=1)


def _joint_mask(ep: Episode, side: str, dim: int) -> np.ndarray:
    tr = ep.hands[side]
    pts = tr.joints_3d if dim == 3 else tr.joints_2d
    return tr.valid & tr.present[:, None] & np.isfinite(pts).all(axis=-1) & ep.frame_valid[:, None]


def _encode_frames(rgb: np.ndarray, scale: float, quality: int) -> list[bytes]:
    """(T, H, W, 3) uint8 RGB -> JPEG bytes per frame, downscaled by ``scale`` (<= 1)."""
    t, h, w, _ = rgb.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def one(i: int) -> bytes:
        img = rgb[i] if scale == 1.0 else cv2.resize(rgb[i], size, interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError(f"frame {i}: JPEG encoding failed")
        return buf.tobytes()

    with ThreadPoolExecutor(max_workers=2) as pool:  # cv2 releases the GIL
        return list(pool.map(one, range(t)))


def cloud_columns(
    ep: Episode, stride: int, max_points: int, apply_scale: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Downsampled coloured point clouds of every frame, camera frame, metres, with the
    episode's calibration scale applied (metric = raw * depth_unit * s); ``apply_scale=False``
    leaves s out (cache that and scale with ``scale_cloud`` after a scale correction).

    Returns (points (N, 3) float32, colors (N, 3) uint8, counts (T,)) or None without depth."""
    if ep.depth_raw is None:
        return None
    t, H, W = ep.depth_raw.shape
    if max_points:  # widen the stride so a full frame stays under the cap
        stride = max(stride, int(np.ceil(np.sqrt(H * W / float(max_points)))))
    d = ep.depth_raw[:, ::stride, ::stride]  # (T, h, w) raw units
    s = np.where(np.isfinite(ep.depth_scale), ep.depth_scale, 1.0).astype(np.float32)
    if not apply_scale:
        s = np.ones_like(s)
    valid = np.isfinite(d) & (d > 0)
    ti, vi, ui = np.nonzero(valid)
    z = d[ti, vi, ui].astype(np.float32) * (np.float32(ep.depth_unit) * s[ti])
    K = ep.K.astype(np.float32)
    u = ui.astype(np.float32) * stride + 0.5
    v = vi.astype(np.float32) * stride + 0.5
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    counts = np.bincount(ti, minlength=t)
    if ep.rgb is not None:
        cols = ep.rgb[ti, vi * stride, ui * stride]
    else:
        cols = np.full((len(pts), 3), 180, np.uint8)
    return pts.astype(np.float32), cols.astype(np.uint8), counts


def scale_cloud(cloud: tuple[np.ndarray, np.ndarray, np.ndarray], ep: Episode
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the episode's per-frame scale s (NaN -> 1) to an unscaled ``cloud_columns``
    result and drop frames marked bad."""
    pts, cols, counts = cloud
    s = np.where(np.isfinite(ep.depth_scale), ep.depth_scale, 1.0).astype(np.float32)
    keep = np.repeat(ep.frame_valid, counts)
    pts = pts * np.repeat(s, counts)[:, None]
    return pts[keep], cols[keep], np.where(ep.frame_valid, counts, 0)


def image_scale(ep: Episode, opts: ViewOptions) -> float:
    """Factor from the episode's pixels to the logged image's pixels (<= 1)."""
    return min(1.0, opts.image_width / float(ep.width))


def _static_setup(rec: rr.RecordingStream, ep: Episode, opts: ViewOptions) -> None:
    f = image_scale(ep, opts)
    K = ep.K.astype(np.float32) * np.array([[f], [f], [1.0]], np.float32)
    rr.log(paths.WORLD, rr.ViewCoordinates.RDF, static=True, recording=rec)
    rr.log(
        paths.IMAGE,
        rr.Pinhole(image_from_camera=K, resolution=[round(ep.width * f), round(ep.height * f)],
                   camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=0.15),
        static=True,
        recording=rec,
    )
    for side in HANDS:
        c = _color(side)
        rr.log(paths.wrist_plot(side), rr.SeriesLines(names=[f"{side} x", f"{side} y", f"{side} z"]),
               static=True, recording=rec)
        rr.log(paths.confidence_plot(side), rr.SeriesLines(names=[f"{side} confidence"], colors=[c]),
               static=True, recording=rec)
        rr.log(paths.reproj_plot(side), rr.SeriesLines(names=[f"{side} reproj px"], colors=[c]),
               static=True, recording=rec)
        rr.log(paths.hand_joints_3d(side), rr.Points3D.from_fields(colors=[c], radii=[0.004]),
               static=True, recording=rec)
        rr.log(paths.hand_bones_3d(side), rr.LineStrips3D.from_fields(colors=[c], radii=[0.002]),
               static=True, recording=rec)
        rr.log(paths.hand_joints_2d(side), rr.Points2D.from_fields(colors=[c], radii=[3.0]),
               static=True, recording=rec)
        rr.log(paths.hand_bones_2d(side), rr.LineStrips2D.from_fields(colors=[c], radii=[1.5]),
               static=True, recording=rec)
    rr.log(paths.DEPTH_SCALE_PLOT, rr.SeriesLines(names=["depth scale s"]), static=True, recording=rec)


def encode_images(ep: Episode, opts: ViewOptions | None = None) -> list[bytes] | None:
    """The episode's frames as the JPEG blobs a recording logs (cache them: media never
    changes with corrections)."""
    opts = opts or ViewOptions()
    if ep.rgb is None or not opts.with_images:
        return None
    return _encode_frames(ep.rgb, image_scale(ep, opts), opts.jpeg_quality)


def log_episode(rec: rr.RecordingStream, ep: Episode, opts: ViewOptions | None = None,
                image_blobs: list[bytes] | None = None,
                cloud: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
    """Log a whole episode into ``rec`` in columns (one send_columns per entity).
    ``image_blobs``: precomputed ``encode_images(ep, opts)``; ``cloud``: precomputed
    ``cloud_columns(ep, ..., apply_scale=False)`` (the scale is applied here)."""
    opts = opts or ViewOptions()
    t = ep.num_frames
    frames = np.arange(t)
    idx = _time_indexes(ep, frames)
    _static_setup(rec, ep, opts)

    pose = ep.camera_pose.astype(np.float32)
    rr.send_columns(paths.CAMERA, indexes=idx,
                    columns=rr.Transform3D.columns(translation=pose[:, :3, 3], mat3x3=pose[:, :3, :3]),
                    recording=rec)

    blobs = image_blobs if image_blobs is not None else encode_images(ep, opts)
    if blobs and t:
        if len(blobs) != t:
            raise ValueError(f"image_blobs: {len(blobs)} frames for a {t}-frame episode")
        rr.log(paths.IMAGE, rr.EncodedImage.from_fields(media_type="image/jpeg"), static=True, recording=rec)
        rr.send_columns(paths.IMAGE, indexes=idx, columns=rr.EncodedImage.columns(blob=blobs), recording=rec)

    if opts.with_cloud and t:
        if cloud is None:
            cloud = cloud_columns(ep, opts.cloud_stride, opts.max_cloud_points, apply_scale=False)
        if cloud is not None:
            pts, cols, counts = scale_cloud(cloud, ep)
            rr.send_columns(paths.CLOUD, indexes=idx,
                            columns=rr.Points3D.columns(positions=pts, colors=cols).partition(counts),
                            recording=rec)

    for side in HANDS:
        tr = ep.hands[side]
        if not tr.present.any():
            continue
        for dim in (3, 2):
            ok = _joint_mask(ep, side, dim)
            joints = tr.joints_3d if dim == 3 else tr.joints_2d * np.float32(image_scale(ep, opts))
            pts = joints[ok].astype(np.float32)
            counts = ok.sum(axis=1)
            segs, nseg = _bone_strips(joints, ok)
            arche_p, arche_l = (rr.Points3D, rr.LineStrips3D) if dim == 3 else (rr.Points2D, rr.LineStrips2D)
            path_p = paths.hand_joints_3d(side) if dim == 3 else paths.hand_joints_2d(side)
            path_l = paths.hand_bones_3d(side) if dim == 3 else paths.hand_bones_2d(side)
            rr.send_columns(path_p, indexes=idx, columns=arche_p.columns(positions=pts).partition(counts),
                            recording=rec)
            rr.send_columns(path_l, indexes=idx, columns=arche_l.columns(strips=segs).partition(nseg),
                            recording=rec)

        w = wrist_world(ep, side)
        okw = np.isfinite(w).all(axis=1)
        if okw.any():
            rr.log(paths.trajectory(side), rr.LineStrips3D([w[okw]], colors=[_color(side)], radii=[0.003]),
                   static=True, recording=rec)
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
                err = np.where(tr.valid, tr.reproj_error, np.nan)[present]
                m = _nanmean_rows(err)
                keep = np.isfinite(m)
                if keep.any():
                    rr.send_columns(paths.reproj_plot(side), indexes=_time_indexes(ep, frames[present][keep]),
                                    columns=rr.Scalars.columns(scalars=m[keep]), recording=rec)

    for obj in ep.objects:
        ok = np.isfinite(obj.center).all(axis=1) & ep.frame_valid
        half = np.broadcast_to(obj.size.astype(np.float32) / 2, (int(ok.sum()), 3))
        rr.log(paths.object_box(obj.object_id),
               rr.Boxes3D.from_fields(colors=[OBJECT_COLOR], labels=[obj.name or obj.object_id]),
               static=True, recording=rec)
        rr.send_columns(paths.object_box(obj.object_id), indexes=idx,
                        columns=rr.Boxes3D.columns(centers=obj.center[ok], half_sizes=half).partition(ok.astype(np.int64)),
                        recording=rec)

    s = ep.depth_scale
    oks = np.isfinite(s)
    if oks.any():
        rr.send_columns(paths.DEPTH_SCALE_PLOT, indexes=_time_indexes(ep, frames[oks]),
                        columns=rr.Scalars.columns(scalars=s[oks].astype(np.float64)), recording=rec)


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    n = np.isfinite(a).sum(axis=1)
    tot = np.nansum(a, axis=1)
    out = np.full(len(a), np.nan, np.float64)
    out[n > 0] = tot[n > 0] / n[n > 0]
    return out


def log_episode_per_frame(rec: rr.RecordingStream, ep: Episode, opts: ViewOptions | None = None,
                          image_blobs: list[bytes] | None = None,
                          cloud: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
    """Baseline: the same content with one ``rr.log`` per entity per frame (same caches)."""
    opts = opts or ViewOptions()
    _static_setup(rec, ep, opts)
    if opts.with_cloud and cloud is None:
        cloud = cloud_columns(ep, opts.cloud_stride, opts.max_cloud_points, apply_scale=False)
    cloud = scale_cloud(cloud, ep) if (opts.with_cloud and cloud is not None) else None
    cstart = np.concatenate([[0], np.cumsum(cloud[2])]) if cloud is not None else None
    blobs = image_blobs if image_blobs is not None else encode_images(ep, opts)
    masks = {(s, d): _joint_mask(ep, s, d) for s in HANDS for d in (2, 3)}
    f = np.float32(image_scale(ep, opts))
    j2 = {s: ep.hands[s].joints_2d * f for s in HANDS}
    for i in range(ep.num_frames):
        rec.set_time(paths.FRAME_TIMELINE, sequence=i)
        rec.set_time(paths.TIME_TIMELINE, duration=float(ep.timestamps[i]))
        pose = ep.camera_pose[i]
        rr.log(paths.CAMERA, rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]), recording=rec)
        if blobs is not None:
            rr.log(paths.IMAGE, rr.EncodedImage(contents=blobs[i], media_type="image/jpeg"), recording=rec)
        if cloud is not None:
            a, b = cstart[i], cstart[i + 1]
            rr.log(paths.CLOUD, rr.Points3D(cloud[0][a:b], colors=cloud[1][a:b]), recording=rec)
        for side in HANDS:
            tr = ep.hands[side]
            for dim in (3, 2):
                ok = masks[(side, dim)][i : i + 1]
                joints = (tr.joints_3d if dim == 3 else j2[side])[i : i + 1]
                segs, _ = _bone_strips(joints, ok)
                if dim == 3:
                    rr.log(paths.hand_joints_3d(side), rr.Points3D(joints[0][ok[0]]), recording=rec)
                    rr.log(paths.hand_bones_3d(side), rr.LineStrips3D(list(segs)), recording=rec)
                else:
                    rr.log(paths.hand_joints_2d(side), rr.Points2D(joints[0][ok[0]]), recording=rec)
                    rr.log(paths.hand_bones_2d(side), rr.LineStrips2D(list(segs)), recording=rec)
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


def new_recording(ep: Episode, recording_id: str | None = None) -> tuple[rr.RecordingStream, rr.MemoryRecording]:
    """A fresh in-memory recording (not global) with the default blueprint."""
    rec = rr.RecordingStream(APP_ID, recording_id=recording_id or f"{ep.episode_id}")
    mem = rr.memory_recording(recording=rec)
    rec.send_blueprint(default_blueprint(ep.episode_id), make_active=True, make_default=True)
    return rec, mem


def episode_rrd_bytes(
    ep: Episode,
    opts: ViewOptions | None = None,
    *,
    columnar: bool = True,
    predictions: dict[str, np.ndarray] | None = None,
    recording_id: str | None = None,
    image_blobs: list[bytes] | None = None,
    cloud: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> bytes:
    """The whole episode as .rrd bytes (blueprint included); ``predictions`` maps a name to an
    (N, 3) world-frame wrist trajectory."""
    rec, mem = new_recording(ep, recording_id)
    if columnar:
        log_episode(rec, ep, opts, image_blobs=image_blobs, cloud=cloud)
    else:
        log_episode_per_frame(rec, ep, opts, image_blobs=image_blobs, cloud=cloud)
    for name, traj in (predictions or {}).items():
        log_prediction(rec, name, traj)
    rec.flush()
    return mem.drain_as_bytes()


def save_episode_rrd(ep: Episode, path: str | Path, opts: ViewOptions | None = None, **kw) -> Path:
    """Write the episode's recording to ``path`` (.rrd), atomically; returns the path."""
    path = Path(path)
    data = episode_rrd_bytes(ep, opts, **kw)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path
