"""Lift, calibrate and smooth: 2D + hand-centred metric landmarks -> camera-frame 3D hands.

Three pipeline stages, each a plain function over an :class:`~vipa.data.episode.Episode`
(edited in place and returned):

``lift``
    Per frame and hand, ``vipa.geometry.lift_hand`` (PnP) places the detector's hand-centred
    metric landmarks in the camera frame (OpenCV, metres) so they reproject onto the 2D
    landmarks (pixels). Fills ``joints_3d`` and ``reproj_error`` (pixels). With metric depth
    (sensor) each hand is then moved along its centroid's viewing ray onto the depth
    (``depth_correct``), unless the depth disagrees with the hand's size over the episode.
``calibrate``
    The paper's scale calibration: per frame, s = median over valid joints k of
    j_k^z / j~_k^z, with j_k^z the metric joint depth (from ``lift``) and j~_k^z the cloud
    depth (``depth_raw * depth_unit``, before calibration) at the joint's pixel. The episode
    scale is the median of the per-frame scales (robust to frames whose lift went wrong).
    ``Episode.depth_scale`` receives the episode scale everywhere (``mode="episode"``, right
    for sensors and any estimator whose scale is stable over the clip) or each frame's own
    scale, gaps filled with the episode scale (``mode="frame"``, for per-frame relative depth).
    Frames in which no hand is present are flagged out of view (``frame_valid`` False): they
    stay in the episode so media and annotations keep the same frame indices.
``smooth``
    A zero-phase, confidence-aware One-Euro filter on the 3D joints (forward and backward
    passes averaged, so no lag); low-confidence joints are pulled harder towards the filtered
    track, missing ones are skipped and a gap longer than ``max_gap`` frames restarts the
    filter. ``smooth`` returns the unfiltered joints; the pipeline stores them beside the
    episode as the derived product ``joints_raw`` (``annotators.pipeline.read_raw_joints``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from vipa.conventions import HANDS, NUM_JOINTS
from vipa.data.episode import Episode
from vipa import geometry

CALIB_KEY = "calibration"
LIFT_KEY = "lift"
# Largest relative disagreement |sensor / PnP - 1| of hand depth accepted from metric depth, per
# episode (median over frames) and per frame. PnP alone is within ~5% per frame at 224 px with
# 2 px noise and MediaPipe's hand size is within ~15% of most adults': beyond this the depth is
# not metric as declared (a wrong depth unit) or the sensor does not see the hand.
MAX_DEPTH_DISAGREEMENT = 0.2


# ----------------------------------------------------------------------------------- lift


def lift(
    ep: Episode,
    world_landmarks: Mapping[str, np.ndarray],
    *,
    max_reproj_px: float | None = None,
    provenance: str = "lift",
    metric_depth: bool | None = None,
    max_depth_disagreement: float = MAX_DEPTH_DISAGREEMENT,
) -> Episode:
    """Fill ``joints_3d`` (camera frame, metres) and ``reproj_error`` (px) of every present hand.

    ``world_landmarks[side]`` is (T, 21, 3) hand-centred metric landmarks (MediaPipe world
    landmarks or ground truth minus its centroid), NaN where unknown. A frame whose PnP fails,
    or whose median reprojection error exceeds ``max_reproj_px``, keeps its 2D values but gets
    NaN 3D joints and ``valid`` False.

    With metric depth (``metric_depth``; None reads ``ep.extra["depth_backend"]["metric"]``,
    set by the pipeline for the ``sensor`` backend) each PnP hand is then moved along the
    viewing ray of its centroid to agree with the sensor (:func:`depth_correct`): PnP fixes
    the hand's direction well but its distance only through the hand's apparent size, which
    2D noise blurs. Relative/estimated depth never moves the hand (the calibration scales the
    cloud to it instead). Corrected frames get provenance ``provenance + ":depth"``; the
    summary goes to ``ep.extra["lift"]`` (see :func:`depth_correct`).
    """
    K = geometry.validate_intrinsics(ep.K)
    t_count = ep.num_frames
    for side in HANDS:
        track = ep.hands[side]
        world = world_landmarks.get(side)
        if world is None:
            continue
        world = np.asarray(world, np.float32)
        if world.shape != (t_count, NUM_JOINTS, 3):
            raise ValueError(
                f"lift: world_landmarks[{side!r}] must have shape ({t_count}, {NUM_JOINTS}, 3), got {world.shape}"
            )
        if track.reproj_error is None:
            track.reproj_error = np.full((t_count, NUM_JOINTS), np.nan, np.float32)
        if track.provenance is None:
            track.provenance = np.array([""] * t_count, dtype=object)
        for t in np.flatnonzero(track.present):
            res = lift_frame(world[t], track.joints_2d[t], K, track.valid[t])
            err = np.asarray(res.reproj_error, np.float32)
            bad = not res.ok or (
                max_reproj_px is not None and not (np.nanmedian(err) <= max_reproj_px)
            )
            if bad:
                track.joints_3d[t] = np.nan
                track.reproj_error[t] = err if err.shape == (NUM_JOINTS,) else np.nan
                track.valid[t] = False
                continue
            track.joints_3d[t] = np.asarray(res.joints_cam, np.float32)
            track.reproj_error[t] = err
            track.provenance[t] = provenance
    if metric_depth is None:
        metric_depth = bool(ep.extra.get("depth_backend", {}).get("metric", False))
    if metric_depth and ep.depth_raw is not None:
        depth_correct(ep, max_disagreement=max_depth_disagreement, provenance=provenance + ":depth")
    else:
        why = "no depth" if ep.depth_raw is None else "depth is relative (not metric): the calibration scales it"
        ep.extra[LIFT_KEY] = {"depth_used": False, "reason": why}
    return ep


def lift_frame(
    world: np.ndarray, image: np.ndarray, K: np.ndarray, valid: np.ndarray | None = None
) -> "geometry.LiftResult":
    """One hand in one frame: (21, 3) hand-centred metres + (21, 2) px + K -> LiftResult.

    NaN landmarks and ``valid`` False joints are left out of the PnP fit (see
    ``vipa.geometry.lift_hand``).
    """
    import cv2

    cv2.setRNGSeed(0)  # PnP RANSAC draws from OpenCV's RNG: same input, same annotation
    return geometry.lift_hand(world, image, K, valid=valid)


# ------------------------------------------------------------------------------ calibrate


@dataclass
class Calibration:
    """Result of :func:`calibrate` (all scales are metric depth / cloud depth)."""

    scale: float  # episode scale (median of frame scales); NaN if no frame could be calibrated
    residual: float  # median relative residual |s*cloud - joint| / joint over frames
    frame_scale: np.ndarray  # (T,) float32, NaN where the frame had too few valid joints
    frame_residual: np.ndarray  # (T,) float32, median relative residual of each frame
    n_valid: np.ndarray  # (T,) int32 joints used per frame
    mode: str  # "episode" or "frame"

    def to_json(self) -> dict:
        return {
            "scale": _f(self.scale),
            "residual": _f(self.residual),
            "mode": self.mode,
            "frame_scale": _list(self.frame_scale),
            "frame_residual": _list(self.frame_residual),
            "n_valid": self.n_valid.astype(int).tolist(),
        }


def cloud_depths_at_joints(ep: Episode, frame: int, side: str) -> np.ndarray:
    """(21,) uncalibrated cloud depth (``depth_raw * depth_unit``) at the joints' pixels; NaN if none."""
    if ep.depth_raw is None:
        return np.full(NUM_JOINTS, np.nan, np.float32)
    uv = ep.hands[side].joints_2d[frame]
    d = ep.depth_raw[frame].astype(np.float32) * np.float32(ep.depth_unit)
    ok = np.isfinite(uv).all(-1)
    out = np.full(NUM_JOINTS, np.nan, np.float32)
    if ok.any():
        out[ok] = geometry.sample_depth(d, uv[ok])
    return out


# Distance (m) from a joint centre to the skin the camera sees: palm joints (wrist, MCPs) sit
# in the thick palm, finger joints in thin fingers. Measured hands: palm ~3 cm, fingers ~1.8 cm.
SURFACE_OFFSET = np.array([0.015, 0.012, 0.010, 0.009, 0.008, 0.013, 0.009, 0.009, 0.008,
                           0.013, 0.009, 0.009, 0.008, 0.013, 0.009, 0.009, 0.008,
                           0.013, 0.008, 0.008, 0.007], np.float32)
BONE_RADIUS = 0.011  # m, radius of the hand's bones for the self-occlusion test


def self_occluded(joints: np.ndarray, K: np.ndarray, radius: float = BONE_RADIUS) -> np.ndarray:
    """(21,) bool: joints hidden behind another bone of the same hand (camera frame joints).

    A joint is hidden when the ray through it passes within ``radius`` of a bone not touching
    it, at a point nearer the camera by more than ``radius``; a cloud sampled at its pixel then
    sees that bone, not the joint, and would bias the calibration.
    """
    from vipa.conventions import HAND_EDGES

    j = np.asarray(joints, np.float64)
    out = np.zeros(len(j), bool)
    ok = np.isfinite(j).all(-1) & (j[:, 2] > 1e-3)
    edges = np.array([e for e in HAND_EDGES if ok[e[0]] and ok[e[1]]])
    if len(edges) == 0:
        return out
    a, b = j[edges[:, 0]], j[edges[:, 1]]
    for k in np.flatnonzero(ok):
        ray = j[k] / np.linalg.norm(j[k])
        m = (edges[:, 0] != k) & (edges[:, 1] != k)
        if not m.any():
            continue
        # closest points between the ray (origin 0, direction ray) and each segment a->b
        aa, bb = a[m], b[m]
        d = bb - aa
        s_grid = np.linspace(0.0, 1.0, 9)
        pts = aa[:, None, :] + s_grid[None, :, None] * d[:, None, :]  # (E, 9, 3)
        along = pts @ ray
        perp = np.linalg.norm(pts - along[..., None] * ray, axis=-1)
        hit = (perp < radius) & (along < np.dot(j[k], ray) - radius)
        out[k] = bool(hit.any())
    return out


def calibrate(
    ep: Episode,
    *,
    mode: str = "episode",
    surface_offset: float | np.ndarray = SURFACE_OFFSET,
    exclude_self_occluded: bool = True,
    occluder_margin: float | None = 0.02,
    min_joints: int = 3,
    drop_out_of_view: bool = True,
) -> Calibration:
    """Estimate the cloud scale s (paper, Sec. Hand3D) and write it to ``ep.depth_scale``.

    ``surface_offset`` (metres, scalar or (21,)) is subtracted from each joint depth before the
    ratio: the cloud sees the skin, not the joint centre (``SURFACE_OFFSET``: palm ~1.5 cm,
    fingertips ~0.8 cm); 0 with ``exclude_self_occluded=False`` and ``occluder_margin=None``
    is the paper's formula verbatim. ``exclude_self_occluded`` leaves out joints hidden
    behind the hand's own bones (:func:`self_occluded`); after a first estimate, joints whose
    scaled cloud depth lies more than ``occluder_margin`` (m) in front of the skin (an object or
    the other hand in front) are left out and s is estimated again. Stores a summary in
    ``ep.extra["calibration"]``. Without depth (``ep.depth_raw`` None) the scale stays NaN.
    """
    if mode not in ("episode", "frame"):
        raise ValueError(f"calibrate: mode must be 'episode' or 'frame', got {mode!r}")
    t_count = ep.num_frames
    if drop_out_of_view:
        flag_out_of_view(ep)
    frame_scale = np.full(t_count, np.nan, np.float32)
    frame_res = np.full(t_count, np.nan, np.float32)
    n_valid = np.zeros(t_count, np.int32)
    if ep.depth_raw is not None:
        for t in range(t_count):
            metric, cloud, valid = [], [], []
            for side in HANDS:
                tr = ep.hands[side]
                if not tr.present[t]:
                    continue
                z, c, v = joint_depth_pairs(ep, t, side, surface_offset=surface_offset,
                                            exclude_self_occluded=exclude_self_occluded)
                metric.append(z)
                cloud.append(c)
                valid.append(v)
            if not valid:
                continue
            v = np.concatenate(valid)
            if v.sum() < min_joints:
                continue
            m_all, c_all = np.concatenate(metric), np.concatenate(cloud)
            res = geometry.calibrate_scale(m_all, c_all, valid=v)
            if occluder_margin is not None and np.isfinite(res.scale):
                v2 = v & ~(res.scale * c_all < m_all - occluder_margin)
                if v2.sum() >= min_joints:
                    res = geometry.calibrate_scale(m_all, c_all, valid=v2)
            if np.isfinite(res.scale) and res.scale > 0:
                frame_scale[t] = res.scale
                frame_res[t] = res.residual
                n_valid[t] = res.n_valid
    ok = np.isfinite(frame_scale)
    scale = float(np.median(frame_scale[ok])) if ok.any() else float("nan")
    residual = float(np.median(frame_res[ok])) if ok.any() else float("nan")
    if mode == "episode":
        ep.depth_scale = np.full(t_count, scale, np.float32)
    else:
        ep.depth_scale = np.where(ok, frame_scale, np.float32(scale)).astype(np.float32)
    cal = Calibration(scale, residual, frame_scale, frame_res, n_valid, mode)
    ep.extra[CALIB_KEY] = {k: v for k, v in cal.to_json().items() if k in ("scale", "residual", "mode")}
    return cal


def joint_depth_pairs(
    ep: Episode,
    frame: int,
    side: str,
    joints: np.ndarray | None = None,
    *,
    surface_offset: float | np.ndarray = SURFACE_OFFSET,
    exclude_self_occluded: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skin depth of the joints vs the cloud at their pixels, for one hand in one frame.

    Returns (21,) float32 ``z_skin`` = joint z - ``surface_offset`` (metres, camera frame;
    ``joints`` default the track's ``joints_3d``), (21,) ``cloud`` = uncalibrated cloud depth
    at the joints' 2D pixels (:func:`cloud_depths_at_joints`) and (21,) bool ``valid``: joints
    the detector marks valid, with finite positive depths, not hidden behind the hand's own
    bones (:func:`self_occluded`, when ``exclude_self_occluded``).
    """
    tr = ep.hands[side]
    j = tr.joints_3d[frame] if joints is None else np.asarray(joints, np.float32)
    z = j[:, 2] - np.asarray(surface_offset, np.float32)
    c = cloud_depths_at_joints(ep, frame, side)
    v = tr.valid[frame] & np.isfinite(z) & (z > 0) & np.isfinite(c) & (c > 0)
    if exclude_self_occluded:
        v &= ~self_occluded(j, ep.K)
    return z.astype(np.float32), c, v


@dataclass
class DepthFix:
    """Hand depth from metric depth for one hand in one frame (metres, camera frame)."""

    shift: float  # z shift of the hand (sensor skin depth + offset - PnP joint z, robust median); NaN = none
    residual: float  # median |sensor - corrected skin depth| over the joints used
    n_valid: int  # joints used


def frame_depth_fix(
    z_skin: np.ndarray, cloud: np.ndarray, valid: np.ndarray, *,
    occluder_margin: float = 0.02, min_joints: int = 3,
) -> DepthFix:
    """Robust z shift that brings the joints' skin depths onto metric cloud depths.

    First the median of ``cloud - z_skin`` over ``valid`` joints; then joints whose cloud
    depth lies more than ``occluder_margin`` (m) off the shifted skin (an object or the other
    hand in front, background seen past a finger's edge) are left out and the median is taken
    again, as in :func:`calibrate`.
    """
    v = valid & np.isfinite(z_skin) & np.isfinite(cloud)
    if v.sum() < min_joints:
        return DepthFix(float("nan"), float("nan"), int(v.sum()))
    d = (cloud - z_skin).astype(np.float64)
    shift = float(np.median(d[v]))
    v2 = v & (np.abs(d - shift) <= occluder_margin)
    if v2.sum() >= min_joints:
        shift = float(np.median(d[v2]))
        v = v2
    return DepthFix(shift, float(np.median(np.abs(d[v] - shift))), int(v.sum()))


def depth_correct(
    ep: Episode,
    *,
    max_disagreement: float = MAX_DEPTH_DISAGREEMENT,
    surface_offset: float | np.ndarray = SURFACE_OFFSET,
    occluder_margin: float = 0.02,
    min_joints: int = 3,
    provenance: str = "lift:depth",
) -> dict:
    """Move each lifted hand along the viewing ray of its centroid onto metric depth (in place).

    Per frame and hand, :func:`frame_depth_fix` gives the z shift from the sensor depth
    (``depth_raw * depth_unit``, taken as metric) at the visible joints; the hand is translated
    by ``shift / z_centroid * centroid`` (direction and shape unchanged, reprojection error
    updated). A frame whose shift exceeds ``max_disagreement`` of its depth keeps PnP. If the
    median over the episode's frames of the sensor/PnP depth ratio is off 1 by more than
    ``max_disagreement``, the depth is not metric as declared and no hand is moved (the
    calibration then recovers its scale). Returns and stores in ``ep.extra["lift"]``:
    ``depth_used``, ``reason``, ``depth_ratio`` (episode median), ``frames_lifted``,
    ``frames_corrected``, ``median_shift_m``, ``median_abs_shift_m``, ``residual_m`` (median of
    per-frame median |sensor - skin| after the shift).
    """
    K = geometry.validate_intrinsics(ep.K)
    fixes: list[tuple[str, int, np.ndarray, DepthFix]] = []
    lifted = 0
    for side in HANDS:
        tr = ep.hands[side]
        for t in np.flatnonzero(tr.present):
            j = tr.joints_3d[t]
            if not np.isfinite(j).all(-1).any():
                continue
            lifted += 1
            centroid = np.nanmean(j.astype(np.float64), axis=0)
            z_skin, cloud, v = joint_depth_pairs(ep, t, side, surface_offset=surface_offset)
            fix = frame_depth_fix(z_skin, cloud, v, occluder_margin=occluder_margin, min_joints=min_joints)
            if np.isfinite(fix.shift) and centroid[2] > 0:
                fixes.append((side, int(t), centroid, fix))
    ratios = np.array([1.0 + f.shift / c[2] for _, _, c, f in fixes])
    info: dict = {"depth_used": False, "frames_lifted": lifted, "frames_with_depth": len(fixes),
                  "max_disagreement": float(max_disagreement)}
    if not fixes:
        info["reason"] = "too few visible joints with sensor depth"
        ep.extra[LIFT_KEY] = info
        return info
    ratio = float(np.median(ratios))
    info["depth_ratio"] = round(ratio, 5)
    if not abs(ratio - 1.0) <= max_disagreement:
        info["reason"] = (f"sensor depth disagrees with the hand's metric size by x{ratio:.3f} over the episode: "
                          f"not metric as declared (wrong depth unit?); PnP kept, the calibration scales the cloud")
        ep.extra[LIFT_KEY] = info
        return info
    shifts, residuals = [], []
    for (side, t, centroid, fix), r in zip(fixes, ratios):
        if not abs(r - 1.0) <= max_disagreement:
            continue
        tr = ep.hands[side]
        move = (fix.shift / centroid[2]) * centroid
        tr.joints_3d[t] = (tr.joints_3d[t] + move).astype(np.float32)
        uv = geometry.project(tr.joints_3d[t], K)
        tr.reproj_error[t] = np.linalg.norm(uv - tr.joints_2d[t], axis=-1).astype(np.float32)
        tr.provenance[t] = provenance
        shifts.append(fix.shift)
        residuals.append(fix.residual)
    sh = np.asarray(shifts)
    info.update({
        "depth_used": bool(len(sh)), "reason": "metric depth: hand moved along its centroid ray onto the sensor",
        "frames_corrected": len(sh),
        "median_shift_m": round(float(np.median(sh)), 5) if len(sh) else None,
        "median_abs_shift_m": round(float(np.median(np.abs(sh))), 5) if len(sh) else None,
        "residual_m": round(float(np.median(residuals)), 5) if len(sh) else None,
    })
    ep.extra[LIFT_KEY] = info
    return info


def flag_out_of_view(ep: Episode) -> np.ndarray:
    """Mark frames with no hand present as dropped (``frame_valid`` False); return the mask of dropped frames."""
    present = np.zeros(ep.num_frames, bool)
    for side in HANDS:
        present |= ep.hands[side].present
    ep.frame_valid = (ep.frame_valid & present).astype(bool)
    return ~present


# --------------------------------------------------------------------------------- smooth


@dataclass(frozen=True)
class SmoothConfig:
    """One-Euro parameters for 3D joints in metres (cutoffs in Hz, beta in 1/m)."""

    min_cutoff: float = 3.0
    beta: float = 4.0
    d_cutoff: float = 1.0
    max_gap: int = 5  # frames; a longer gap restarts the filter
    min_confidence: float = 0.05  # below this a joint counts as missing


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


def one_euro(
    x: np.ndarray, conf: np.ndarray, fps: float, cfg: SmoothConfig = SmoothConfig()
) -> np.ndarray:
    """Causal confidence-aware One-Euro over time for x (T, J, D); conf (T, J) in [0, 1].

    NaN or low-confidence samples are skipped (output NaN there); a joint's smoothing factor is
    scaled by its confidence so uncertain samples move the estimate less.
    """
    t_count, j_count, _ = x.shape
    dt = 1.0 / float(fps)
    out = np.full_like(x, np.nan, dtype=np.float64)
    x_hat = np.full((j_count, x.shape[2]), np.nan)
    dx_hat = np.zeros((j_count, x.shape[2]))
    last = np.full(j_count, -(10**9))
    a_d = _alpha(cfg.d_cutoff, dt)
    for t in range(t_count):
        obs = np.isfinite(x[t]).all(-1) & (conf[t] >= cfg.min_confidence)
        if not obs.any():
            continue
        gap = t - last
        restart = obs & ((gap > cfg.max_gap + 1) | ~np.isfinite(x_hat).all(-1))
        cont = obs & ~restart
        x_hat[restart] = x[t, restart]
        dx_hat[restart] = 0.0
        if cont.any():
            step = (gap[cont] * dt)[:, None]
            dx = (x[t, cont] - x_hat[cont]) / step
            dx_hat[cont] = dx_hat[cont] + a_d * (dx - dx_hat[cont])
            speed = np.linalg.norm(dx_hat[cont], axis=-1)
            a = _alpha(cfg.min_cutoff + cfg.beta * speed, dt)[:, None] * np.clip(conf[t, cont], 0.0, 1.0)[:, None]
            a = np.minimum(1.0, a * gap[cont][:, None])
            x_hat[cont] = x_hat[cont] + a * (x[t, cont] - x_hat[cont])
        last[obs] = t
        out[t, obs] = x_hat[obs]
    return out


def smooth_joints(
    x: np.ndarray, conf: np.ndarray, fps: float, cfg: SmoothConfig = SmoothConfig()
) -> np.ndarray:
    """Zero-phase One-Euro: mean of the forward and the time-reversed pass, (T, J, 3) float32."""
    fwd = one_euro(x, conf, fps, cfg)
    bwd = one_euro(x[::-1], conf[::-1], fps, cfg)[::-1]
    f_ok, b_ok = np.isfinite(fwd), np.isfinite(bwd)
    out = np.where(f_ok & b_ok, 0.5 * (fwd + bwd), np.where(f_ok, fwd, bwd))
    return out.astype(np.float32)


def smooth(ep: Episode, cfg: SmoothConfig = SmoothConfig(), *, enabled: bool = True) -> dict[str, np.ndarray]:
    """Filter each present hand's ``joints_3d`` in place; return the raw joints {side: (T, 21, 3)}.

    The raw joints are returned rather than stored in the episode (the pipeline writes them
    as the derived product ``joints_raw``, see ``annotators.pipeline``); the filter settings
    go to ``ep.extra["smoothing"]``. Joints the filter skipped keep their raw value.
    """
    raw: dict[str, np.ndarray] = {}
    if not enabled:
        ep.extra["smoothing"] = {"method": "none"}
        return raw
    for side in HANDS:
        tr = ep.hands[side]
        if not tr.present.any():
            continue
        raw[side] = tr.joints_3d.copy()
        conf = np.where(tr.valid & tr.present[:, None], tr.confidence, 0.0).astype(np.float32)
        filtered = smooth_joints(tr.joints_3d, conf, ep.fps, cfg)
        tr.joints_3d = np.where(np.isfinite(filtered), filtered, tr.joints_3d).astype(np.float32)
    ep.extra["smoothing"] = {
        "method": "one_euro_zero_phase",
        "min_cutoff_hz": cfg.min_cutoff,
        "beta": cfg.beta,
        "d_cutoff_hz": cfg.d_cutoff,
        "max_gap": cfg.max_gap,
        "raw_product": "joints_raw",
    }
    return raw


# ------------------------------------------------------------------------------- helpers


def _f(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _list(a: np.ndarray) -> list:
    """Nested list of Python floats, None for NaN (JSON-safe)."""
    a = np.asarray(a, np.float64)
    obj = np.where(np.isfinite(a), np.round(a, 6), np.nan).astype(object)
    obj[~np.isfinite(a)] = None
    return obj.tolist()
