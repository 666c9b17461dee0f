"""Ground truth that exercises the lift: hands tilted toward the camera, close and far, of many sizes.

The synthetic generator's articulated hand (:mod:`annotators.hand_model`) is posed in the camera
frame (OpenCV, metres) with its fingers tilted ``tilt_deg`` out of the image plane toward the
camera (0 = fingers across the image, 90 = fingers pointing at the camera: the fist / thumbs-up
seen end-on), its wrist at ``depth`` metres, its size ``scale`` times the mean hand. The lift's
inputs are then made the way a detector makes them:

* 2D joints (pixels, corner convention) = projection + Gaussian noise ``noise_px`` per coordinate;
* hand-centred metric landmarks (``world``, metres) in one of two models (``world_model``):
  ``"exact"`` -- the true 3D hand minus its centroid (the person's own size and pose: what an
  ideal 3D detector gives); ``"mediapipe"`` -- what MediaPipe's world landmarks are like on real
  hands: the *mean-size* hand (scale 1, one size for everyone; ``mean_size=False`` keeps the
  person's size to isolate the other errors), its depth along the camera axis flattened by
  ``flatten`` (MediaPipe's landmarks are nearly parallel to the image) and 3D noise
  ``world_noise_m`` per coordinate.

:func:`tilted_hand_frames` draws independent frames (for per-frame lift scoring);
:func:`tilted_hand_episode` a short smooth episode as a :class:`vipa.data.episode.Episode` (for
temporal choice and hand-size estimation; optional metric sensor depth at the joints' pixels);
:func:`score_wrist` scores lifted joints against the truth (collapse = wrist depth off > 20 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from annotators.hand_model import HandShape, hand_rotation, local_joints, place
from vipa import geometry
from vipa.conventions import NUM_JOINTS, WRIST

COLLAPSE_FRACTION = 0.2  # a wrist depth off by more than this fraction counts as collapsed
WORLD_MODELS = ("exact", "mediapipe")


@dataclass
class HandFrames:
    """N independent hand frames: truth and the lift's inputs (camera frame, metres; pixels)."""

    joints: np.ndarray  # (N, 21, 3) float32 true camera-frame joints
    joints_2d: np.ndarray  # (N, 21, 2) float32 px, with noise
    world: np.ndarray  # (N, 21, 3) float32 hand-centred metric landmarks (see world_model)
    tilt_deg: np.ndarray  # (N,) fingers' angle out of the image plane toward the camera
    scale: np.ndarray  # (N,) true hand size / mean hand size
    K: np.ndarray  # (3, 3)
    width: int
    height: int


def _tilted_forward(rng: np.random.Generator, tilt_deg: float) -> np.ndarray:
    """Unit finger direction, ``tilt_deg`` out of the image plane toward the camera (-z)."""
    phi = rng.uniform(0.0, 2.0 * np.pi)
    t = np.deg2rad(tilt_deg)
    return np.array([np.cos(t) * np.cos(phi), np.cos(t) * np.sin(phi), -np.sin(t)], np.float32)


def _palm_normal(rng: np.random.Generator, forward: np.ndarray) -> np.ndarray:
    n = rng.normal(size=3).astype(np.float32)
    n -= np.dot(n, forward) * forward
    return (n / np.linalg.norm(n)).astype(np.float32)


def detector_world(joints: np.ndarray, shape: HandShape, grip: float | np.ndarray, rotation: np.ndarray,
                   world_model: str, rng: np.random.Generator, *, flatten: float = 0.5,
                   world_noise_m: float = 0.004, mean_size: bool = True) -> np.ndarray:
    """Hand-centred landmarks (..., 21, 3) a detector reports for true camera-frame ``joints``.

    ``rotation`` (..., 3, 3) is the hand's local -> camera rotation (``hand_model.hand_rotation``).
    See the module docstring for the two models.
    """
    if world_model == "exact":
        w = np.asarray(joints, np.float32)
    elif world_model == "mediapipe":
        mean_hand = HandShape(1.0, shape.side) if mean_size else shape
        w = place(local_joints(grip, mean_hand), np.zeros(3, np.float32), rotation)
        c = w.mean(axis=-2, keepdims=True)
        w = c + (w - c) * np.array([1.0, 1.0, flatten], np.float32)
        w = w + rng.normal(0.0, world_noise_m, w.shape).astype(np.float32)
    else:
        raise ValueError(f"world_model must be one of {WORLD_MODELS}, got {world_model!r}")
    return (w - w.mean(axis=-2, keepdims=True)).astype(np.float32)


def default_camera(width: int = 640, height: int = 480, fov_deg: float = 60.0) -> np.ndarray:
    """(3, 3) K of a ``fov_deg`` horizontal field of view, principal point at the centre."""
    return geometry.fov_intrinsics(width, height, fov_deg)


def tilted_hand_frames(
    n: int,
    seed: int = 0,
    *,
    tilt_deg: tuple[float, float] = (0.0, 90.0),
    depth_m: tuple[float, float] = (0.25, 0.8),
    scale: tuple[float, float] = (0.75, 1.25),
    grip: tuple[float, float] = (0.0, 1.0),
    noise_px: float = 2.0,
    world_model: str = "exact",
    flatten: float = 0.5,
    world_noise_m: float = 0.004,
    mean_size: bool = True,
    width: int = 640,
    height: int = 480,
    fov_deg: float = 60.0,
) -> HandFrames:
    """``n`` independent hands, uniform in tilt, wrist depth, size and grip; all joints in view.

    The wrist's pixel is uniform over the central 60 % of the image; a draw with any joint
    outside the image or nearer than 5 cm is redrawn.
    """
    if world_model not in WORLD_MODELS:
        raise ValueError(f"world_model must be one of {WORLD_MODELS}, got {world_model!r}")
    rng = np.random.default_rng(seed)
    K = default_camera(width, height, fov_deg)
    Kinv = np.linalg.inv(K.astype(np.float64))
    out_j, out_2d, out_w, out_t, out_s = [], [], [], [], []
    while len(out_j) < n:
        tilt = rng.uniform(*tilt_deg)
        s = rng.uniform(*scale)
        g = rng.uniform(*grip)
        z = rng.uniform(*depth_m)
        shape = HandShape(float(s), "left" if rng.random() < 0.5 else "right")
        uv = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height, 1.0])
        wrist = (Kinv @ uv * z).astype(np.float32)
        fwd = _tilted_forward(rng, tilt)
        R = hand_rotation(fwd, _palm_normal(rng, fwd))
        j = place(local_joints(g, shape), wrist, R)
        if not (j[:, 2] > 0.05).all():
            continue
        p = geometry.project(j, K)
        if not ((p[:, 0] > 0) & (p[:, 0] < width) & (p[:, 1] > 0) & (p[:, 1] < height)).all():
            continue
        out_j.append(j)
        out_2d.append((p + rng.normal(0.0, noise_px, p.shape)).astype(np.float32))
        out_w.append(detector_world(j, shape, g, R, world_model, rng, flatten=flatten, world_noise_m=world_noise_m,
                                    mean_size=mean_size))
        out_t.append(tilt)
        out_s.append(s)
    return HandFrames(np.stack(out_j), np.stack(out_2d), np.stack(out_w), np.asarray(out_t, np.float32),
                      np.asarray(out_s, np.float32), K, width, height)


@dataclass
class TiltedEpisode:
    """A smooth synthetic episode and what the lift is given for it."""

    episode: "object"  # vipa.data.episode.Episode: 2D joints with noise, no 3D yet (present hand: ``side``)
    side: str
    world: np.ndarray  # (T, 21, 3) float32 hand-centred landmarks (detector model)
    joints: np.ndarray  # (T, 21, 3) float32 true camera-frame joints
    scale: float  # true hand size / mean hand
    tilt_deg: np.ndarray  # (T,)


def tilted_hand_episode(
    seed: int = 0,
    *,
    num_frames: int = 30,
    fps: float = 15.0,
    tilt_deg: tuple[float, float] = (45.0, 90.0),
    depth_m: tuple[float, float] = (0.25, 0.8),
    scale: float | None = None,
    scale_range: tuple[float, float] = (0.75, 1.25),
    noise_px: float = 2.0,
    world_model: str = "exact",
    flatten: float = 0.5,
    world_noise_m: float = 0.004,
    mean_size: bool = True,
    sensor_depth: bool = False,
    sensor_noise_m: float = 0.003,
    width: int = 640,
    height: int = 480,
    fov_deg: float = 60.0,
) -> TiltedEpisode:
    """A ``num_frames`` episode (default 2 s at 15 fps) of one hand moving smoothly.

    Wrist depth, tilt, roll and grip move along smooth random paths inside the given ranges
    (depth changes by at most 40 % over the clip); the hand's size is ``scale`` (None: uniform
    in ``scale_range``) for the whole episode. With ``sensor_depth`` the episode carries metric
    depth (millimetre counts, ``depth_unit`` 0.001) of the hand's skin around each joint's pixel
    (plus ``sensor_noise_m`` noise), NaN elsewhere, marked metric in ``extra["depth_backend"]``.
    """
    from vipa.data.episode import Episode, HandTrack

    rng = np.random.default_rng(seed)
    K = default_camera(width, height, fov_deg)
    Kinv = np.linalg.inv(K.astype(np.float64))
    s = float(rng.uniform(*scale_range) if scale is None else scale)
    side = "left" if rng.random() < 0.5 else "right"
    shape = HandShape(s, side)
    u = np.linspace(0.0, 1.0, num_frames)

    def path(lo: float, hi: float) -> np.ndarray:
        a, b = rng.uniform(lo, hi, 2)
        return a + (b - a) * (0.5 - 0.5 * np.cos(np.pi * u))

    for _ in range(200):
        z0 = rng.uniform(*depth_m)
        z1 = float(np.clip(z0 * rng.uniform(0.75, 1.3), *depth_m))
        z = z0 + (z1 - z0) * (0.5 - 0.5 * np.cos(np.pi * u))
        tilt = path(*tilt_deg)
        grip = path(0.0, 1.0)
        px, py = path(0.3 * width, 0.7 * width), path(0.3 * height, 0.7 * height)
        phi = rng.uniform(0, 2 * np.pi) + np.linspace(0.0, rng.uniform(-0.6, 0.6), num_frames)
        roll = rng.uniform(0, 2 * np.pi) + np.linspace(0.0, rng.uniform(-0.8, 0.8), num_frames)
        joints, rots = [], []
        for t in range(num_frames):
            tt = np.deg2rad(tilt[t])
            fwd = np.array([np.cos(tt) * np.cos(phi[t]), np.cos(tt) * np.sin(phi[t]), -np.sin(tt)], np.float32)
            e1 = np.cross(fwd, [0.0, 0.0, 1.0]) if abs(fwd[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
            e1 = e1 / np.linalg.norm(e1)
            e2 = np.cross(fwd, e1)
            normal = np.cos(roll[t]) * e1 + np.sin(roll[t]) * e2
            R = hand_rotation(fwd, normal)
            wrist = (Kinv @ np.array([px[t], py[t], 1.0]) * z[t]).astype(np.float32)
            joints.append(place(local_joints(grip[t], shape), wrist, R))
            rots.append(R)
        j = np.stack(joints)
        p = geometry.project(j.reshape(-1, 3), K).reshape(num_frames, NUM_JOINTS, 2)
        inside = (p[..., 0] > 0) & (p[..., 0] < width) & (p[..., 1] > 0) & (p[..., 1] < height)
        if (j[..., 2] > 0.05).all() and inside.all():
            break
    else:
        raise RuntimeError(f"tilted_hand_episode: no in-view path found for seed {seed}")
    world = np.stack([detector_world(j[t], shape, grip[t], rots[t], world_model, rng, flatten=flatten,
                                     world_noise_m=world_noise_m, mean_size=mean_size) for t in range(num_frames)])
    tr = HandTrack.empty(side, num_frames)
    tr.joints_2d = (p + rng.normal(0.0, noise_px, p.shape)).astype(np.float32)
    tr.present[:] = True
    tr.valid[:] = True
    tr.confidence[:] = 1.0
    ep = Episode(episode_id=f"tilted_{seed}", fps=float(fps), width=width, height=height, K=K,
                 hands={sd: (tr if sd == side else HandTrack.empty(sd, num_frames)) for sd in ("left", "right")},
                 num_frames=num_frames, timestamps=np.arange(num_frames) / float(fps))
    if sensor_depth:
        from annotators.hand_model import joint_radius

        d = np.full((num_frames, height, width), np.nan, np.float32)
        skin = j[..., 2] - joint_radius(shape)[None, :] * 0.5
        for t in range(num_frames):
            for k in np.argsort(-skin[t]):  # far first, so nearer joints overwrite
                c, r = np.floor(p[t, k]).astype(int)
                d[t, max(r - 2, 0):r + 3, max(c - 2, 0):c + 3] = skin[t, k] + rng.normal(0.0, sensor_noise_m)
        ep.depth_raw = d / np.float32(0.001)
        ep.depth_unit = 0.001
        ep.extra["depth_backend"] = {"spec": "sensor", "metric": True}
    return TiltedEpisode(ep, side, world.astype(np.float32), j, s, tilt.astype(np.float32))


@dataclass
class WristScore:
    """Wrist errors of lifted hands against the truth (metres; fractions)."""

    n: int  # frames scored (truth present)
    lifted: int  # frames with a finite lifted wrist
    collapsed: int  # lifted frames whose wrist depth is off by more than COLLAPSE_FRACTION
    collapsed_unflagged: int  # of those, not flagged ambiguous
    flagged: int  # lifted frames flagged ambiguous
    median_wrist_m: float  # median 3D wrist error over lifted frames
    median_depth_ratio_collapsed: float  # median lifted/true wrist depth over collapsed frames (NaN if none)

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def score_wrist(pred: np.ndarray, truth: np.ndarray, flagged: np.ndarray | None = None,
                collapse: float = COLLAPSE_FRACTION) -> WristScore:
    """Score (N, 21, 3) lifted joints against (N, 21, 3) true ones; ``flagged`` (N,) bool."""
    pred = np.asarray(pred, np.float64)
    truth = np.asarray(truth, np.float64)
    fl = np.zeros(len(pred), bool) if flagged is None else np.asarray(flagged, bool)
    ok = np.isfinite(pred[:, WRIST]).all(-1)
    ratio = pred[:, WRIST, 2] / truth[:, WRIST, 2]
    bad = ok & (np.abs(ratio - 1.0) > collapse)
    err = np.linalg.norm(pred[:, WRIST] - truth[:, WRIST], axis=-1)
    return WristScore(
        n=len(pred), lifted=int(ok.sum()), collapsed=int(bad.sum()), collapsed_unflagged=int((bad & ~fl).sum()),
        flagged=int((ok & fl).sum()),
        median_wrist_m=float(np.median(err[ok])) if ok.any() else float("nan"),
        median_depth_ratio_collapsed=float(np.median(ratio[bad])) if bad.any() else float("nan"),
    )
