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
    The cloud inherits the hands' size (``extra.hand_scale``): its uncertainty is recorded as
    ``extra.calibration.scale_sigma_log`` (:func:`calibration_uncertainty`).
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

from annotators.smoothing import SkeletonSmoothConfig, SmoothConfig, one_euro, smooth_joints, smooth_skeleton  # noqa: F401 (re-exported)
from vipa.conventions import HANDS, NUM_JOINTS
from vipa.data.episode import Episode
from vipa import geometry

CALIB_KEY = "calibration"
LIFT_KEY = "lift"
HAND_SCALE_KEY = "hand_scale"
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
    method: str = "episode",
    config: "LiftConfig | None" = None,
    max_reproj_rel: float | None = None,
) -> Episode:
    """Fill ``joints_3d`` (camera frame, metres) and ``reproj_error`` (px) of every present hand.

    ``world_landmarks[side]`` is (T, 21, 3) hand-centred metric landmarks (MediaPipe world
    landmarks or ground truth minus its centroid), NaN where unknown. A frame whose PnP fails,
    or whose median reprojection error exceeds ``max_reproj_px``, keeps its 2D values but gets
    NaN 3D joints and ``valid`` False.

    ``method="episode"`` (default, :func:`lift_track`): the landmarks' depth is restored from
    the episode's bone lengths, every PnP pose that explains the 2D is kept per frame, and one
    pose per frame is chosen over the whole track (reprojection, depth and orientation
    continuity, sensor depth when metric); the hand's size is estimated per episode
    (:func:`estimate_hand_scale`, ``ep.extra["hand_scale"]``) and applied; frames whose choice
    stays open are listed in ``ep.extra["lift"]["ambiguous"]`` (per-frame quality
    ``lift_ambiguous`` / ``lift_depth_ratio``). ``method="pnp"``: one PnP per frame, the
    landmarks taken as they are (the lift before issue 14).

    ``max_reproj_rel``: also reject a frame whose median reprojection error exceeds this fraction
    of the hand's 2D size (the longer side of its landmarks' box): a fixed pixel gate is lax for
    small hands and strict for large ones (:data:`REPROJ_GATE_REL` is the evidence-based value).

    With metric depth (``metric_depth``; None reads ``ep.extra["depth_backend"]["metric"]``,
    set by the pipeline for the ``sensor`` backend) each PnP hand is then moved along the
    viewing ray of its centroid to agree with the sensor (:func:`depth_correct`): PnP fixes
    the hand's direction well but its distance only through the hand's apparent size, which
    2D noise blurs. Relative/estimated depth never moves the hand (the calibration scales the
    cloud to it instead). Corrected frames get provenance ``provenance + ":depth"``; the
    summary goes to ``ep.extra["lift"]`` (see :func:`depth_correct`).
    """
    if method not in ("episode", "pnp"):
        raise ValueError(f"lift: method must be 'episode' or 'pnp', got {method!r}")
    cfg = config or config_for_backend(ep.extra.get("hands_backend", {}).get("name"))
    K = geometry.validate_intrinsics(ep.K)
    t_count = ep.num_frames
    if metric_depth is None:
        metric_depth = bool(ep.extra.get("depth_backend", {}).get("metric", False))
    use_depth = bool(metric_depth and ep.depth_raw is not None)
    ambiguous: list[dict] = []
    scales: dict[str, dict] = {}
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
        if method == "episode":
            res = lift_track(ep, side, world, cfg, use_depth=use_depth)
            scales[side] = res.scale.to_json()
            ambiguous += [{"frame": int(t), "side": side, "depth_ratio": round(float(r), 4)}
                          for t, r in zip(res.ambiguous_frames, res.ambiguous_ratio)]
            frames = {int(t): (j, e, ok) for t, j, e, ok in zip(res.frames, res.joints, res.errors, res.ok)}
        else:
            frames = {}
            for t in np.flatnonzero(track.present):
                r = lift_frame(world[t], track.joints_2d[t], K, track.valid[t])
                frames[int(t)] = (r.joints_cam, r.reproj_error, r.ok)
        amb_t = {a["frame"] for a in ambiguous if a["side"] == side}
        for t, (joints, err, ok) in frames.items():
            err = np.asarray(err, np.float32)
            bad = not ok or (max_reproj_px is not None and not (np.nanmedian(err) <= max_reproj_px))
            if not bad and max_reproj_rel is not None:
                uv = track.joints_2d[t][np.isfinite(track.joints_2d[t]).all(-1)]
                extent = float(np.ptp(uv, axis=0).max()) if len(uv) >= 2 else float("nan")
                bad = not (np.nanmedian(err) <= max_reproj_rel * extent)
            if bad:
                track.joints_3d[t] = np.nan
                track.reproj_error[t] = err if err.shape == (NUM_JOINTS,) else np.nan
                track.valid[t] = False
                continue
            track.joints_3d[t] = np.asarray(joints, np.float32)
            track.reproj_error[t] = err
            track.provenance[t] = provenance + (":ambiguous" if t in amb_t else "")
            if t in amb_t:  # an open depth choice weighs less in the smoothing
                track.confidence[t] = track.confidence[t] * np.float32(cfg.ambiguous_confidence)
    if scales:
        ep.extra[HAND_SCALE_KEY] = scales
    if use_depth:
        depth_correct(ep, max_disagreement=max_depth_disagreement, provenance=provenance + ":depth")
    else:
        why = "no depth" if ep.depth_raw is None else "depth is relative (not metric): the calibration scales it"
        ep.extra[LIFT_KEY] = {"depth_used": False, "reason": why}
    ep.extra[LIFT_KEY]["method"] = method
    if method == "episode":
        ep.extra[LIFT_KEY]["ambiguous"] = ambiguous
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


# ----------------------------------------------------------------------- episode lift (issue 14)

# Kinematic parent of each joint (MediaPipe order): wrist -> each finger's base -> ... -> tip.
PARENT = np.array([-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19])
# Plausible hand sizes relative to the mean hand: a sensor depth that makes the hand smaller or
# larger is a wrong depth unit, not a hand (children's ~0.75, large adults and gloves ~1.25).
HAND_SCALE_RANGE = (0.7, 1.35)
# Population prior of the hand size (log scale): adult hand length sd is ~5 % within a sex,
# ~8 % across sexes; 10 % leaves room for teenagers and gloves.
HAND_SCALE_PRIOR_SIGMA = 0.10
# Bone lengths (m, joint k to its parent) of MediaPipe 0.10.14's world landmarks, which have one
# fixed hand for everyone: per bone the 95th percentile over frames (the bone seen across the
# image), mean of two real videos (the bundled webcam video, 300 hands; real_clips hand_reach,
# 202 hands), which agreed within 10 % per bone (median 6 %). Their proportions differ from
# ``hand_model``'s (MediaPipe's tips sit further out), hence a table of their own.
# Palm segments (``PALM_SEGMENTS``) of the same landmarks, measured the same way. MediaPipe's hand is
# not quite one size: its palm's median is 0.9x (webcam) to 0.98x (hand_reach) of these, and the two
# videos differ by up to 20 % per segment, so each frame rescales the bones by its palm (see
# ``frame_bone_scale``).
PALM_SEGMENTS = ((0, 5), (0, 9), (0, 13), (0, 17), (5, 9), (9, 13), (13, 17), (5, 17), (1, 5))
MEDIAPIPE_PALM = (0.1041, 0.1013, 0.0988, 0.0886, 0.0253, 0.0222, 0.0247, 0.0654, 0.0755)
MEDIAPIPE_BONES = (0.0, 0.0422, 0.035, 0.0385, 0.0346, 0.1041, 0.0297, 0.0249, 0.0308, 0.1013, 0.0377, 0.0279,
                   0.0291, 0.0988, 0.0318, 0.0251, 0.0254, 0.0886, 0.0241, 0.024, 0.0225)


def template_bones() -> np.ndarray:
    """(21,) bone lengths (m) of the mean hand (``annotators.hand_model``), joint k to its parent; 0 at the wrist."""
    from annotators.hand_model import local_joints

    j = local_joints(0.0)
    out = np.zeros(NUM_JOINTS, np.float32)
    out[1:] = np.linalg.norm(j[1:] - j[PARENT[1:]], axis=-1)
    return out


def bone_lengths(world: np.ndarray) -> np.ndarray:
    """(..., 21) length (m) of each joint's bone to its parent in hand-centred landmarks (NaN where unknown)."""
    w = np.asarray(world, np.float32)
    out = np.zeros(w.shape[:-1], np.float32)
    out[..., 1:] = np.linalg.norm(w[..., 1:, :] - w[..., PARENT[1:], :], axis=-1)
    return out


def episode_bone_lengths(world: np.ndarray, size: float | None = None, percentile: float = 75.0) -> np.ndarray:
    """(21,) bone lengths (m) of a (T, 21, 3) track of hand-centred landmarks, in their own size.

    ``size``: the landmarks' size relative to the mean hand (``template_bones``) when the
    detector has a fixed one (MediaPipe: ``MEDIAPIPE_LANDMARK_SIZE``); None estimates it as the
    median over frames of each frame's ``percentile`` over bones of length / template length
    (right for landmarks that are not depth-flattened). Each bone gets the larger of the
    template at that size and its own median length over the frames.
    """
    w = np.asarray(world, np.float32).reshape(-1, NUM_JOINTS, 3)
    L = bone_lengths(w)[:, 1:]
    tmpl = template_bones()[1:]
    if size is None:
        ratio = L / tmpl
        per_frame = np.array([np.percentile(r[np.isfinite(r)], percentile) for r in ratio
                              if np.isfinite(r).sum() >= 5])
        size = float(np.median(per_frame)) if per_frame.size else 1.0
    own = np.array([np.median(L[np.isfinite(L[:, k]), k]) if np.isfinite(L[:, k]).any() else 0.0
                    for k in range(NUM_JOINTS - 1)], np.float32)
    return np.concatenate([[0.0], np.maximum(tmpl * size, own)]).astype(np.float32)


def landmark_size(bones: np.ndarray) -> float:
    """Size of landmarks with bone lengths ``bones`` (21,) relative to the mean hand (median ratio)."""
    r = np.asarray(bones[1:], np.float64) / template_bones()[1:]
    r = r[np.isfinite(r) & (r > 0)]
    return float(np.median(r)) if r.size else 1.0


def palm_lengths(world: np.ndarray) -> np.ndarray:
    """(..., 9) lengths (m) of the ``PALM_SEGMENTS`` of hand-centred landmarks (..., 21, 3)."""
    w = np.asarray(world, np.float32)
    return np.stack([np.linalg.norm(w[..., a, :] - w[..., b, :], axis=-1) for a, b in PALM_SEGMENTS], -1)


def frame_bone_scale(world: np.ndarray, palm: np.ndarray, limits: tuple[float, float] = (1.0, 1.25)) -> float:
    """How much larger this frame's landmarks are than the reference ``palm`` segment lengths (9,).

    A palm segment's (x, y) length never exceeds its true length, so the largest (x, y) length /
    reference length over the segments above 1 says the landmarks are larger than the reference
    in this frame; below 1 it cannot tell a smaller hand from a tilted palm (a 90 deg tilt about
    a diagonal leaves every segment at ~0.7), so ``limits`` (default 1 to 1.25) clip it.
    """
    w = np.asarray(world, np.float32)
    xy = np.stack([np.linalg.norm(w[a, :2] - w[b, :2]) for a, b in PALM_SEGMENTS])
    r = xy / np.asarray(palm, np.float32)
    r = r[np.isfinite(r)]
    return float(np.clip(r.max(), *limits)) if r.size else 1.0


def restore_depth(world: np.ndarray, bones: np.ndarray, *, force: np.ndarray | None = None,
                  sign_tolerance: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Undo the depth flattening of hand-centred landmarks (21, 3) with known bone lengths (21,).

    Walking from the wrist to the tips, each bone keeps its (x, y) (the landmarks' axes are
    roughly the camera's) and gets |dz| = sqrt(L^2 - dx^2 - dy^2), signed as in the landmarks;
    ``force`` (21,) of -1 / 0 / +1 sets chosen bones' sign (+1: away from the camera). Returns the restored landmarks (centred)
    and (21,) bool: bones whose sign the landmarks leave open (|dz| given < ``sign_tolerance``
    of the restored |dz|).
    """
    w = np.asarray(world, np.float64)
    out = w.copy()
    open_sign = np.zeros(NUM_JOINTS, bool)
    for k in range(1, NUM_JOINTS):
        p = PARENT[k]
        d = w[k] - w[p]
        if not (np.isfinite(d).all() and np.isfinite(out[p]).all()):
            out[k] = np.nan
            continue
        dz = float(np.sqrt(max(float(bones[k]) ** 2 - d[0] ** 2 - d[1] ** 2, 0.0)))
        dz = max(dz, abs(d[2])) if dz < abs(d[2]) else dz
        open_sign[k] = abs(d[2]) < sign_tolerance * dz
        sgn = 1.0 if d[2] >= 0 else -1.0
        if force is not None and force[k] != 0:
            sgn = float(np.sign(force[k]))
        out[k] = out[p] + np.array([d[0], d[1], sgn * dz])
    ok = np.isfinite(out).all(-1)
    if ok.any():
        out -= out[ok].mean(0)
    return out.astype(np.float32), open_sign


@dataclass(frozen=True)
class LiftConfig:
    """Settings of the episode lift (pixels, metres; costs in units of -log likelihood)."""

    restore_depth: bool = True  # rebuild the landmarks' depth from the episode's bone lengths
    keep_raw: bool = True  # the landmarks as given compete with the restored ones (when restoring) ...
    raw_cost: float = 1.5  # ... at this cost: the detector's depth is known to be flattened
    landmark_size: float | None = None  # the detector's fixed hand size / mean hand; None: estimate
    bones: tuple[float, ...] | None = None  # the detector's fixed bone lengths (21,), m; None: estimate
    palm: tuple[float, ...] | None = None  # the detector's palm segment lengths (9,), m; None: estimate
    fixed_size: bool = False  # the landmarks have one hand size for everyone (MediaPipe), not the person's
    tolerance_rel: float = 1.5  # a pose "explains the 2D" if its median error <= best * rel ...
    tolerance_px: float = 2.0  # ... or <= best + px
    pixel_sigma: float = 2.0  # px, floor of the 2D noise used to weigh reprojection errors
    depth_sigma: float = 0.08  # log wrist depth change per frame at 15 fps (hand motion)
    rotation_sigma_deg: float = 25.0  # hand rotation per frame at 15 fps
    sensor_sigma: float = 0.03  # log sensor/PnP depth disagreement of a right pose
    sensor_shape_sigma: float = 0.01  # m, median |sensor - skin| of a right pose beyond the best one's
    max_gap: int = 5  # frames; a longer gap breaks the temporal chain
    ambiguous_margin: float = 2.0  # cost gap below which another depth is as good: frame flagged
    ambiguous_depth: float = 0.1  # relative wrist-depth difference that makes poses "different"
    ambiguous_confidence: float = 0.5  # confidence factor of flagged frames' joints


def config_for_backend(name: str | None) -> LiftConfig:
    """The lift's settings for landmarks of the named hand backend (MediaPipe: its fixed hand)."""
    if name == "mediapipe":
        return LiftConfig(bones=MEDIAPIPE_BONES, palm=MEDIAPIPE_PALM,
                          landmark_size=landmark_size(np.asarray(MEDIAPIPE_BONES)), fixed_size=True)
    if name == "mano_regressor":  # full-depth MANO joints at the person's size (betas): nothing to restore
        return LiftConfig(restore_depth=False)
    return LiftConfig()


@dataclass
class HandScale:
    """One hand's size over an episode: ``scale`` times the mean hand (``annotators.hand_model``).

    ``sigma_log``: standard deviation of log(scale); ``source``: "sensor" (metric depth) or
    "prior" (population prior only: the 2D fixes shape and direction, never the size);
    ``n_frames``: frames that measured it; ``applied``: factor applied to the landmarks' size.
    """

    scale: float
    sigma_log: float
    source: str
    n_frames: int
    applied: float = 1.0

    def to_json(self) -> dict:
        return {"scale": round(float(self.scale), 5), "sigma_log": round(float(self.sigma_log), 5),
                "source": self.source, "n_frames": int(self.n_frames), "applied": round(float(self.applied), 5)}


@dataclass
class TrackLift:
    """Result of :func:`lift_track` for one hand (frames with a pose; camera frame, metres)."""

    frames: np.ndarray  # (N,) frame indices
    joints: np.ndarray  # (N, 21, 3) float32 chosen pose, hand scale applied
    errors: np.ndarray  # (N, 21) float32 px
    ok: np.ndarray  # (N,) bool
    n_candidates: np.ndarray  # (N,) poses that explained the 2D
    ambiguous_frames: np.ndarray  # frames whose depth choice stays open
    ambiguous_ratio: np.ndarray  # their best other wrist depth / chosen wrist depth
    scale: HandScale


def frame_candidates(world: np.ndarray, image: np.ndarray, K: np.ndarray, valid: np.ndarray | None,
                     bones: np.ndarray | None, cfg: LiftConfig, palm: np.ndarray | None = None
                     ) -> list["geometry.LiftResult"]:
    """Poses of one hand in one frame that explain the 2D, best first (see :class:`LiftConfig`).

    With ``bones``, the landmarks' depth is restored (:func:`restore_depth`) with the bones
    rescaled to this frame's palm (:func:`frame_bone_scale`, when ``palm`` is given), and with
    ``cfg.keep_raw`` the landmarks as given compete too (tagged ``raw_landmarks``; on real clips
    they sometimes fit the 2D better than the restored ones); where bone signs
    are left open (the landmarks' depth too flat to tell toward or away from the camera), the
    landmarks with all those bones turned toward the camera, and all away, are tried too.
    """
    import cv2

    cv2.setRNGSeed(0)
    worlds = [np.asarray(world, np.float32)]
    if bones is not None:
        if palm is not None:
            bones = bones * np.float32(frame_bone_scale(world, palm))
        w0, open_sign = restore_depth(world, bones)
        worlds = [w0, np.asarray(world, np.float32)] if cfg.keep_raw else [w0]
        if open_sign.any():
            for sign in (-1, 1):
                worlds.append(restore_depth(world, bones, force=open_sign.astype(np.int8) * sign)[0])
    cands: list = []
    for i, w in enumerate(worlds):  # the sign alternatives: no RANSAC, no tilted starts (their signs tilt them)
        found = geometry.lift_hand_candidates(w, image, K, valid, ransac=i < 2, tilt_deg=45.0 if i < 2 else 0.0)
        for c in found:
            c.raw_landmarks = bones is not None and cfg.keep_raw and i == 1
        cands += found
    ok = [c for c in cands if c.ok and np.isfinite(pose_error(c))]
    if not ok:
        return cands[:1]
    ok.sort(key=pose_error)
    e0 = pose_error(ok[0])
    limit = max(e0 * cfg.tolerance_rel, e0 + cfg.tolerance_px)
    keep: list = []
    for c in ok:
        if pose_error(c) > limit:
            continue
        z = _wrist_depth(c.joints_cam)
        if any(abs(z / _wrist_depth(k.joints_cam) - 1.0) < 0.03 for k in keep):
            continue
        keep.append(c)
    return keep


def pose_error(c: "geometry.LiftResult") -> float:
    """Median reprojection error (px) of a pose over every joint with a 2D landmark, outliers of its
    RANSAC included: poses fitted on different inlier sets are compared on the same joints."""
    e = np.asarray(c.reproj_error, np.float64)
    return float(np.nanmedian(e)) if np.isfinite(e).any() else float("nan")


def _wrist_depth(j: np.ndarray) -> float:
    z = float(j[0, 2])
    return z if np.isfinite(z) else float(np.nanmedian(j[:, 2]))


def _rot_angle(ra: np.ndarray, rb: np.ndarray) -> float:
    Ra, Rb = geometry.axis_angle_to_matrix(ra.astype(np.float64)), geometry.axis_angle_to_matrix(rb.astype(np.float64))
    c = (np.trace(Ra.T @ Rb) - 1.0) / 2.0
    return float(np.arccos(np.clip(c, -1.0, 1.0)))


def _sensor_log_ratio(ep: Episode, t: int, side: str, joints: np.ndarray) -> tuple[float, float]:
    """(log(sensor depth / pose depth), median |sensor - skin| (m) after the shift) of a pose at
    frame t; NaNs without enough sensor joints. The residual judges the pose's shape in depth."""
    z_skin, cloud, v = joint_depth_pairs(ep, t, side, joints)
    fix = frame_depth_fix(z_skin, cloud, v)
    zc = float(np.nanmean(joints[:, 2]))
    if not np.isfinite(fix.shift) or zc <= 0 or zc + fix.shift <= 0:
        return float("nan"), float("nan")
    return float(np.log((zc + fix.shift) / zc)), float(fix.residual)


def lift_track(ep: Episode, side: str, world: np.ndarray, cfg: LiftConfig = LiftConfig(), *,
               use_depth: bool = False) -> TrackLift:
    """Lift one hand over the episode: candidate poses per frame, one chosen for the whole track.

    The choice minimises, over the track (Viterbi), the sum of each pose's reprojection cost
    (n_joints/2 * (e^2 - e_best^2) / sigma^2 on median errors over all joints, :func:`pose_error`), the change of log wrist depth
    and of rotation between consecutive frames, and with metric depth the pose's disagreement
    with the sensor (its depth after the hand scale, and its shape: the joints' residual). A frame is ambiguous when a pose whose wrist depth
    differs by more than ``cfg.ambiguous_depth`` costs less than ``cfg.ambiguous_margin`` more
    than the chosen path (min-marginals). The hand scale (:func:`estimate_hand_scale`) then
    multiplies the chosen joints about the camera centre (the 2D fit is unchanged).
    """
    K = geometry.validate_intrinsics(ep.K)
    tr = ep.hands[side]
    frames = np.flatnonzero(tr.present)
    world = np.asarray(world, np.float32)
    bones = None
    if cfg.restore_depth and len(frames):
        bones = (np.asarray(cfg.bones, np.float32) if cfg.bones is not None
                 else episode_bone_lengths(world[frames], cfg.landmark_size))
    palm = None
    if bones is not None:
        if cfg.palm is not None:
            palm = np.asarray(cfg.palm, np.float32)
        else:
            pl = palm_lengths(world[frames])
            palm = np.array([np.percentile(c[np.isfinite(c)], 90) if np.isfinite(c).any() else np.nan for c in pl.T],
                            np.float32)
    cands = [frame_candidates(world[t], tr.joints_2d[t], K, tr.valid[t], bones, cfg, palm) for t in frames]
    world_size = cfg.landmark_size or (landmark_size(
        bones if bones is not None else episode_bone_lengths(world[frames])) if len(frames) else 1.0)
    if cfg.bones is not None and bones is not None:  # fixed-size landmarks: their xy keep that size
        world_size = landmark_size(bones)
    # Sensor: per candidate log ratio; the episode's hand scale from the best candidates first.
    sensor: list[list[float]] = [[np.nan] * len(c) for c in cands]
    shape_res: list[list[float]] = [[np.nan] * len(c) for c in cands]
    log_s0 = float("nan")
    if use_depth:
        for i, (t, cs) in enumerate(zip(frames, cands)):
            pairs = [_sensor_log_ratio(ep, int(t), side, c.joints_cam) if c.ok else (np.nan, np.nan) for c in cs]
            sensor[i] = [p[0] for p in pairs]
            shape_res[i] = [p[1] for p in pairs]
        best = np.array([s_[0] for s_ in sensor if len(s_)], np.float64)
        best = best[np.isfinite(best)]
        # a sensor the hand-size check refuses (a wrong depth unit) takes no part in the choice either
        if best.size and estimate_hand_scale(best, world_size, fixed_size=cfg.fixed_size).source == "sensor":
            log_s0 = float(np.median(best))
        else:
            shape_res = [[np.nan] * len(c) for c in cands]
    fps_factor = 15.0 / float(ep.fps)
    unary = []
    for i, cs in enumerate(cands):
        if not cs or not cs[0].ok:
            unary.append(np.zeros(len(cs)))
            continue
        e0 = pose_error(cs[0])
        sig = max(cfg.pixel_sigma, e0)
        n_2d = int(np.isfinite(cs[0].reproj_error).sum())
        u = np.array([0.5 * n_2d * (pose_error(c) ** 2 - e0 ** 2) / sig ** 2
                      + (cfg.raw_cost if getattr(c, "raw_landmarks", False) else 0.0) for c in cs])
        if np.isfinite(log_s0):
            sr = np.array(sensor[i], np.float64)
            u = u + np.where(np.isfinite(sr), 0.5 * ((sr - log_s0) / cfg.sensor_sigma) ** 2, 0.0)
            rr = np.array(shape_res[i], np.float64)
            if np.isfinite(rr).any():
                u = u + np.where(np.isfinite(rr), 0.5 * ((rr - np.nanmin(rr)) / cfg.sensor_shape_sigma) ** 2, 0.0)
        unary.append(u)
    choice, margins = _viterbi(frames, cands, unary, cfg, fps_factor)
    scale = estimate_hand_scale(
        [sensor[i][choice[i]] for i in range(len(cands)) if cands[i] and cands[i][0].ok], world_size,
        fixed_size=cfg.fixed_size)
    n = len(frames)
    joints = np.full((n, NUM_JOINTS, 3), np.nan, np.float32)
    errors = np.full((n, NUM_JOINTS), np.nan, np.float32)
    ok = np.zeros(n, bool)
    amb_t, amb_r = [], []
    for i, cs in enumerate(cands):
        c = cs[choice[i]] if cs else None
        if c is None or not c.ok:
            if c is not None:
                errors[i] = c.reproj_error
            continue
        joints[i] = c.joints_cam * np.float32(scale.applied)
        errors[i] = c.reproj_error
        ok[i] = True
        z = _wrist_depth(c.joints_cam)
        alt = [(margins[i][k], _wrist_depth(o.joints_cam) / z) for k, o in enumerate(cs)
               if k != choice[i] and abs(_wrist_depth(o.joints_cam) / z - 1.0) > cfg.ambiguous_depth]
        if alt:
            m, r = min(alt)
            if m < cfg.ambiguous_margin:
                amb_t.append(int(frames[i]))
                amb_r.append(float(r))
    return TrackLift(frames, joints, errors, ok, np.array([len(c) for c in cands], np.int32),
                     np.asarray(amb_t, np.int64), np.asarray(amb_r, np.float32), scale)


def _viterbi(frames: np.ndarray, cands: list, unary: list, cfg: LiftConfig, fps_factor: float
             ) -> tuple[list[int], list[np.ndarray]]:
    """Min-sum over the track: chosen candidate per frame and each candidate's min-marginal gap."""
    n = len(frames)
    if n == 0:
        return [], []
    sd = cfg.depth_sigma / fps_factor
    sr = np.deg2rad(cfg.rotation_sigma_deg) / fps_factor

    def pair(i: int) -> np.ndarray | None:
        """(len(cands[i-1]), len(cands[i])) transition cost, None when the chain breaks."""
        gap = int(frames[i] - frames[i - 1])
        a, b = cands[i - 1], cands[i]
        if gap > cfg.max_gap + 1 or not a or not b or not a[0].ok or not b[0].ok:
            return None
        P = np.zeros((len(a), len(b)))
        for x, ca in enumerate(a):
            for y, cb in enumerate(b):
                dz = np.log(_wrist_depth(cb.joints_cam) / _wrist_depth(ca.joints_cam))
                dr = _rot_angle(ca.rvec, cb.rvec)
                P[x, y] = 0.5 * (dz / (sd * gap)) ** 2 + 0.5 * (dr / (sr * gap)) ** 2
        return P

    pairs = [None] + [pair(i) for i in range(1, n)]
    fwd = [np.asarray(unary[0], np.float64)]
    back: list[np.ndarray | None] = [None]
    for i in range(1, n):
        u = np.asarray(unary[i], np.float64)
        if pairs[i] is None:
            fwd.append(u + (fwd[-1].min() if fwd[-1].size else 0.0))
            back.append(None)
        else:
            tot = fwd[-1][:, None] + pairs[i]
            back.append(tot.argmin(0))
            fwd.append(u + tot.min(0))
    bwd = [np.zeros(len(unary[i])) for i in range(n)]
    for i in range(n - 2, -1, -1):
        nxt = bwd[i + 1] + np.asarray(unary[i + 1], np.float64)
        if pairs[i + 1] is None:
            bwd[i] = np.full(len(unary[i]), nxt.min() if nxt.size else 0.0)
        else:
            bwd[i] = (pairs[i + 1] + nxt[None, :]).min(1)
    marg = [fwd[i] + bwd[i] for i in range(n)]
    choice = [int(np.argmin(m)) if m.size else 0 for m in marg]
    gaps = [m - m.min() if m.size else m for m in marg]
    return choice, gaps


def estimate_hand_scale(sensor_log_ratio: list[float] | np.ndarray, world_size: float = 1.0, *,
                        fixed_size: bool = False, prior_sigma: float = HAND_SCALE_PRIOR_SIGMA,
                        plausible: tuple[float, float] = HAND_SCALE_RANGE,
                        max_disagreement: float = MAX_DEPTH_DISAGREEMENT) -> HandScale:
    """One hand's size over an episode, relative to the mean hand, with its uncertainty.

    ``sensor_log_ratio``: per frame log(sensor depth / lifted depth) of the chosen pose (NaN
    where the sensor did not see the hand); ``world_size``: size of the landmarks the lift used,
    relative to the mean hand. ``fixed_size``: the landmarks have one size for everyone
    (MediaPipe), so the sensor measures the person's size, accepted when it is a plausible hand
    (``plausible``); otherwise the landmarks claim the person's size and the sensor may only
    disagree by ``max_disagreement``. Beyond either the depth unit is wrong: the sensor is
    ignored here. With >= 3 sensor frames: scale = world_size * median ratio, its log's sd
    1.25 * 1.4826 * MAD / sqrt(n), combined with a log-normal prior (sd ``prior_sigma``) around
    ``world_size``. Otherwise the 2D alone cannot fix a hand's size (a hand k times larger k
    times farther projects identically): the prior, scale = world_size, source "prior",
    nothing applied.
    """
    r = np.asarray(sensor_log_ratio, np.float64)
    r = r[np.isfinite(r)]
    if r.size >= 3:
        med = float(np.median(r))
        ok = (plausible[0] <= world_size * np.exp(med) <= plausible[1]) if fixed_size else (
            abs(np.exp(med) - 1.0) <= max_disagreement)
        if ok:
            mad = float(np.median(np.abs(r - med))) * 1.4826
            sig = max(1.25 * mad / np.sqrt(r.size), 0.005)
            w = 1.0 / sig ** 2 + 1.0 / prior_sigma ** 2
            log_s = (med / sig ** 2) / w
            return HandScale(float(world_size * np.exp(log_s)), float(1.0 / np.sqrt(w)), "sensor", int(r.size),
                             applied=float(np.exp(log_s)))
    return HandScale(float(world_size), float(prior_sigma), "prior", int(r.size), applied=1.0)


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
    ep.extra[CALIB_KEY].update(calibration_uncertainty(ep, frame_scale))
    return cal


def calibration_uncertainty(ep: Episode, frame_scale: np.ndarray) -> dict:
    """The cloud scale's uncertainty: the hands fix it, so it inherits their size's (``extra.hand_scale``).

    Returns {"hand_scale_sigma_log": sd of log hand size of the hands present (largest; None
    when the lift recorded none), "scale_sigma_log": that combined with the spread of the
    per-frame scales (1.4826 * MAD / sqrt(n) of their logs)}.
    """
    sig_h = [float(v["sigma_log"]) for sd, v in (ep.extra.get(HAND_SCALE_KEY) or {}).items()
             if ep.hands[sd].present.any() and v.get("sigma_log") is not None]
    fs = np.log(frame_scale[np.isfinite(frame_scale) & (frame_scale > 0)].astype(np.float64))
    stat = 1.4826 * float(np.median(np.abs(fs - np.median(fs)))) / np.sqrt(fs.size) if fs.size else float("nan")
    hand = max(sig_h) if sig_h else None
    total = float(np.sqrt((hand or 0.0) ** 2 + stat ** 2)) if np.isfinite(stat) else None
    return {"hand_scale_sigma_log": None if hand is None else round(hand, 5),
            "scale_sigma_log": None if total is None else round(total, 5)}


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


def smooth(ep: Episode, cfg: SmoothConfig | SkeletonSmoothConfig = SkeletonSmoothConfig(), *,
           enabled: bool = True) -> dict[str, np.ndarray]:
    """Filter each present hand's ``joints_3d`` in place; return the raw joints {side: (T, 21, 3)}.

    ``cfg`` picks the filter: ``SkeletonSmoothConfig`` (the default: wrist and bone directions by a
    zero-phase local fit, bone lengths kept, ``annotators.smoothing``) or ``SmoothConfig`` (zero-phase
    One-Euro per joint, which shrinks bones by a few percent on fast motion). The raw joints are
    returned rather than stored in the episode (the pipeline writes them as the derived product
    ``joints_raw``, see ``annotators.pipeline``); the filter settings go to ``ep.extra["smoothing"]``.
    Joints the filter skipped keep their raw value.
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
        if isinstance(cfg, SkeletonSmoothConfig):
            filtered = smooth_skeleton(tr.joints_3d, conf, ep.fps, cfg)
        else:
            filtered = smooth_joints(tr.joints_3d, conf, ep.fps, cfg)
        tr.joints_3d = np.where(np.isfinite(filtered), filtered, tr.joints_3d).astype(np.float32)
    if isinstance(cfg, SkeletonSmoothConfig):
        ep.extra["smoothing"] = {"method": "skeleton_local_poly", "half_window": cfg.half_window,
                                 "degree": cfg.degree, "smooth_lengths": cfg.smooth_lengths,
                                 "raw_product": "joints_raw"}
        return raw
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
