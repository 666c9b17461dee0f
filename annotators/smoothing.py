"""Temporal smoothing of 3D hand joints that keeps the hand's shape: smooth the skeleton, not the points.

Filtering each joint on its own (``smooth_joints``, One-Euro; re-exported by ``annotators.lift``) shrinks bones: a bone's length is
a convex function of its end points, so averaging noisy end points shortens it (measured: 5th
percentile of smoothed / raw length 0.957). ``smooth_skeleton`` instead filters

* the wrist position (metres, camera frame), and
* each bone's unit direction (child joint minus parent joint, renormalised after filtering),

with a zero-phase, confidence-weighted local quadratic fit over ``2 * half_window + 1`` frames
(Savitzky-Golay-like: a quadratic follows steady motion without lag, the window averages the noise),
and rebuilds the joints from the wrist outwards with each bone's length fitted the same way (the fit
of the lengths, not the length of fitted points: no shrinking; ``smooth_lengths=False`` keeps each
frame's raw length exactly). Missing joints (NaN or confidence below ``min_confidence``)
are skipped by the fit and stay as they were.

``smooth_bones_one_euro`` (the pipeline's default, ``smooth.method=bone_one_euro``) filters the wrist
and the bone directions with the zero-phase One-Euro filter and gives each bone the median of its raw
lengths over about a second: bones neither shrink nor follow the lift's single-frame size jumps.
``FILTERS`` names the methods; ``apply_filter`` runs one as the pipeline's smooth stage does.

``smoothing_figures`` measures what the issue asks of a smoother: bone-length ratio smoothed / raw
(percentiles), lag (frames, from the cross-correlation of raw and smoothed joint paths) and the
p95 of the joint acceleration ("jitter", m/s^2) before and after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# parent of each joint in the 21-joint MediaPipe order (wrist = root)
PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19)


@dataclass(frozen=True)
class SkeletonSmoothConfig:
    """``half_window``: frames on each side of the local fit; ``degree``: 1 or 2 (local line or
    quadratic); ``min_confidence``: below it a joint counts as missing."""

    half_window: int = 4
    degree: int = 2
    min_confidence: float = 0.05
    smooth_lengths: bool = True  # False: every bone keeps its raw length of each frame exactly


def local_poly(y: np.ndarray, w: np.ndarray, half_window: int, degree: int = 2) -> np.ndarray:
    """Zero-phase weighted local polynomial fit along axis 0.

    ``y`` (T, ...) values (NaN allowed where ``w`` is 0), ``w`` (T, ...) weights >= 0 broadcastable to
    ``y`` without its last axis. Returns the fit's value at each frame, (T, ...) float64; NaN where the
    window holds too few weighted samples (a lower degree is used where possible).
    """
    t_count = y.shape[0]
    y = np.where(np.isfinite(y), y, 0.0).astype(np.float64)
    w = np.asarray(w, np.float64)[..., None]
    n_pow = 2 * degree + 1
    s = np.zeros((n_pow, *w.shape))  # sum w * o^n
    b = np.zeros((degree + 1, *y.shape))  # sum w * o^n * y
    for o in range(-half_window, half_window + 1):
        lo, hi = max(0, -o), min(t_count, t_count - o)
        if hi <= lo:
            continue
        ws = w[lo + o:hi + o]
        ys = y[lo + o:hi + o]
        for n in range(n_pow):
            s[n, lo:hi] += ws * float(o) ** n
        for n in range(degree + 1):
            b[n, lo:hi] += ws * float(o) ** n * ys
    out = np.full(y.shape, np.nan)
    # solve per element; fall back to lower degrees where the system is singular (few samples)
    for deg in range(degree, -1, -1):
        m = np.stack([np.stack([s[i + j] for j in range(deg + 1)], -1) for i in range(deg + 1)], -2)
        m = np.broadcast_to(m, (*y.shape, deg + 1, deg + 1)) if m.shape[:-2] != y.shape else m
        rhs = np.stack([b[i] for i in range(deg + 1)], -1)
        det = np.linalg.det(m)
        ok = np.isnan(out) & (np.abs(det) > 1e-9 * np.maximum(1.0, np.abs(s[0]) ** (deg + 1)))
        if ok.any():
            coef = np.linalg.solve(m[ok], rhs[ok][..., None])[..., 0]
            out[ok] = coef[:, 0]
    return out


def smooth_skeleton(x: np.ndarray, conf: np.ndarray, fps: float,
                    cfg: SkeletonSmoothConfig = SkeletonSmoothConfig()) -> np.ndarray:
    """(T, 21, 3) metres -> (T, 21, 3) float32 smoothed joints (see the module docstring). ``conf`` (T, 21).
    ``fps`` is accepted for interface symmetry with ``lift.smooth_joints`` (the window is in frames)."""
    x = np.asarray(x, np.float64)
    conf = np.asarray(conf, np.float64)
    if x.ndim != 3 or x.shape[1:] != (len(PARENTS), 3) or conf.shape != x.shape[:2]:
        raise ValueError(f"x must be (T, 21, 3) and conf (T, 21), got {x.shape} and {conf.shape}")
    ok = np.isfinite(x).all(-1) & (conf >= cfg.min_confidence)
    out = x.copy()
    root_w = np.where(ok[:, 0], conf[:, 0], 0.0)
    root = local_poly(x[:, 0], root_w, cfg.half_window, cfg.degree)
    root_ok = ok[:, 0] & np.isfinite(root).all(-1)
    out[root_ok, 0] = root[root_ok]
    for c in range(1, len(PARENTS)):
        p = PARENTS[c]
        bone = x[:, c] - x[:, p]
        length = np.linalg.norm(bone, axis=-1)
        b_ok = ok[:, c] & ok[:, p] & (length > 1e-9)
        unit = np.where(b_ok[:, None], bone / np.where(length > 1e-9, length, 1.0)[:, None], np.nan)
        wb = np.where(b_ok, np.minimum(conf[:, c], conf[:, p]), 0.0)
        d = local_poly(unit, wb, cfg.half_window, cfg.degree)
        if cfg.smooth_lengths:  # the fit of the lengths themselves: unbiased, unlike the length of fitted points
            fl = local_poly(np.where(b_ok, length, np.nan)[:, None], wb, cfg.half_window, cfg.degree)[:, 0]
            length = np.where(np.isfinite(fl) & (fl > 0), fl, length)
        dn = np.linalg.norm(d, axis=-1)
        good = b_ok & np.isfinite(dn) & (dn > 1e-6) & np.isfinite(out[:, p]).all(-1)
        out[good, c] = out[good, p] + (d[good] / dn[good, None]) * length[good, None]
        # a joint whose bone could not be rebuilt keeps its raw offset from its (smoothed) parent
        keep = ok[:, c] & ~good & np.isfinite(out[:, p]).all(-1) & ok[:, p]
        out[keep, c] = out[keep, p] + bone[keep]
    return out.astype(np.float32)


def _accel(j: np.ndarray, fps: float) -> np.ndarray:
    a = (j[2:] - 2.0 * j[1:-1] + j[:-2]) * float(fps) ** 2
    n = np.linalg.norm(a, axis=-1)
    return n[np.isfinite(n)]


def smoothing_figures(raw: np.ndarray, smoothed: np.ndarray, fps: float, max_lag: int = 5) -> dict[str, float]:
    """Bone ratios (smoothed / raw length: p5, median, p95 over bones and frames; ``bone_median_ratio_min`` /
    ``_max``: the extreme per-bone median ratios, i.e. the systematic shrinking or growing), lag in frames
    (argmax of the summed cross-correlation of raw and smoothed joint positions, each joint's mean
    removed, within +-max_lag; positive: smoothed behind raw) and joint acceleration p95 before / after (m/s^2)."""
    raw = np.asarray(raw, np.float64)
    sm = np.asarray(smoothed, np.float64)
    ratios, medians = [], []
    for c in range(1, len(PARENTS)):
        lr = np.linalg.norm(raw[:, c] - raw[:, PARENTS[c]], axis=-1)
        ls = np.linalg.norm(sm[:, c] - sm[:, PARENTS[c]], axis=-1)
        ok = np.isfinite(lr) & np.isfinite(ls) & (lr > 1e-6)
        ratios.append(ls[ok] / lr[ok])
        if ok.any():
            medians.append(float(np.median(ls[ok] / lr[ok])))
    r = np.concatenate(ratios) if ratios else np.empty(0)
    # lag: the shift that best aligns the smoothed joint paths with the raw ones (positions, per joint
    # mean removed; velocities would be dominated by the very noise the filter removes)
    ok = np.isfinite(raw).all(-1) & np.isfinite(sm).all(-1)
    cnt = np.maximum(ok.sum(0), 1)[:, None]
    pr = np.where(ok[..., None], raw, 0.0)
    ps = np.where(ok[..., None], sm, 0.0)
    pr = np.where(ok[..., None], pr - pr.sum(0) / cnt, 0.0)
    ps = np.where(ok[..., None], ps - ps.sum(0) / cnt, 0.0)
    corr = {}
    for lag in range(-max_lag, max_lag + 1):
        a = pr[: len(pr) - lag] if lag >= 0 else pr[-lag:]
        b = ps[lag:] if lag >= 0 else ps[: len(ps) + lag]
        m = (ok[: len(ok) - lag] & ok[lag:]) if lag >= 0 else (ok[-lag:] & ok[: len(ok) + lag])
        a = np.where(m[..., None], a - (a * m[..., None]).sum(0) / np.maximum(m.sum(0), 1)[:, None], 0.0)
        b = np.where(m[..., None], b - (b * m[..., None]).sum(0) / np.maximum(m.sum(0), 1)[:, None], 0.0)
        corr[lag] = float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))  # Pearson
    lag = max(corr, key=corr.get)
    ar, asm = _accel(raw, fps), _accel(sm, fps)
    return {
        "bone_ratio_p5": float(np.percentile(r, 5)) if r.size else float("nan"),
        "bone_ratio_median": float(np.median(r)) if r.size else float("nan"),
        "bone_ratio_p95": float(np.percentile(r, 95)) if r.size else float("nan"),
        "bone_median_ratio_min": min(medians) if medians else float("nan"),
        "bone_median_ratio_max": max(medians) if medians else float("nan"),
        "lag_frames": float(lag),
        "jitter_p95_raw_mps2": float(np.percentile(ar, 95)) if ar.size else float("nan"),
        "jitter_p95_mps2": float(np.percentile(asm, 95)) if asm.size else float("nan"),
    }


# ------------------------------------------------------------------ One-Euro per joint (moved from annotators.lift)


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



# ------------------------------------------------------------------ One-Euro on the skeleton


@dataclass(frozen=True)
class BoneOneEuroConfig:
    """One-Euro on the skeleton: the wrist (metres) and each bone's unit direction are filtered by the
    zero-phase One-Euro filter ``smooth_joints`` (``min_cutoff`` Hz, ``beta`` in 1/m for the wrist,
    ``beta * direction_scale_m`` for directions, whose speed is in 1/s), and each bone gets a length
    from the raw lengths themselves: their median over ``2 * length_half_window + 1`` frames
    (0: each frame's raw length). The hand's shape is rebuilt from the wrist outwards.

    Why: per-joint One-Euro shrinks bones (the length of averaged end points is shorter; real clips:
    a bone's median length down by up to 16 %), while a bone's length is a constant of the hand that
    the monocular lift gets wrong in single frames (size jumps): the median over about a second keeps
    each bone at its raw typical length (per-bone median ratio 1.000-1.001 on the real clips) and
    drops the jumps (bundled webcam video: wrist to middle MCP in 7-11 cm in 100 % of frames, raw
    91.9 %, One-Euro 97.9 %). Lag 0 frames, p95 jitter x0.14-0.46 of the raw (docs/SMOOTHING_RESULTS.md)."""

    min_cutoff: float = 3.0
    beta: float = 4.0
    d_cutoff: float = 1.0
    max_gap: int = 5
    min_confidence: float = 0.05
    direction_scale_m: float = 0.04  # a typical bone length: turns a direction's speed into metres
    length_half_window: int = 15  # 31 frames: about 1 s at 30 fps


def _running_median(v: np.ndarray, ok: np.ndarray, half_window: int) -> np.ndarray:
    """Median of ``v`` (T, B) over the ``ok`` samples within +-half_window frames (NaN where none)."""
    t_count = v.shape[0]
    if half_window <= 0:
        return np.where(ok, v, np.nan)
    vv = np.where(ok, v, np.nan)
    pad = np.full((half_window, *v.shape[1:]), np.nan)
    stacked = np.concatenate([pad, vv, pad])
    win = np.stack([stacked[o:o + t_count] for o in range(2 * half_window + 1)])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmedian(win, axis=0)


def smooth_bones_one_euro(x: np.ndarray, conf: np.ndarray, fps: float,
                          cfg: BoneOneEuroConfig = BoneOneEuroConfig()) -> np.ndarray:
    """(T, 21, 3) metres -> (T, 21, 3) float32: One-Euro on the wrist and the bone directions, bone
    lengths from the raw ones (see ``BoneOneEuroConfig``). Joints missing in the input stay NaN."""
    x = np.asarray(x, np.float64)
    conf = np.asarray(conf, np.float64)
    if x.ndim != 3 or x.shape[1:] != (len(PARENTS), 3) or conf.shape != x.shape[:2]:
        raise ValueError(f"x must be (T, 21, 3) and conf (T, 21), got {x.shape} and {conf.shape}")
    ok = np.isfinite(x).all(-1) & (conf >= cfg.min_confidence)
    root_cfg = SmoothConfig(cfg.min_cutoff, cfg.beta, cfg.d_cutoff, cfg.max_gap, cfg.min_confidence)
    dir_cfg = SmoothConfig(cfg.min_cutoff, cfg.beta * cfg.direction_scale_m, cfg.d_cutoff, cfg.max_gap,
                           cfg.min_confidence)
    out = np.full_like(x, np.nan)
    root = smooth_joints(np.where(ok[:, :1, None], x[:, :1], np.nan), np.where(ok[:, :1], conf[:, :1], 0.0),
                         fps, root_cfg)[:, 0].astype(np.float64)
    out[ok[:, 0], 0] = root[ok[:, 0]]
    child = np.arange(1, len(PARENTS))
    par = np.array(PARENTS[1:])
    bone = x[:, child] - x[:, par]  # (T, 20, 3)
    length = np.linalg.norm(bone, axis=-1)
    b_ok = ok[:, child] & ok[:, par] & (length > 1e-9)
    unit = np.where(b_ok[..., None], bone / np.where(length > 1e-9, length, 1.0)[..., None], np.nan)
    wb = np.where(b_ok, np.minimum(conf[:, child], conf[:, par]), 0.0)
    d = smooth_joints(unit, wb, fps, dir_cfg).astype(np.float64)
    med = _running_median(length, b_ok, cfg.length_half_window)
    dn = np.linalg.norm(d, axis=-1)
    for k, c in enumerate(child):
        p = PARENTS[c]
        good = b_ok[:, k] & np.isfinite(dn[:, k]) & (dn[:, k] > 1e-6) & np.isfinite(out[:, p]).all(-1)
        out[good, c] = out[good, p] + d[good, k] / dn[good, k, None] * med[good, k, None]
        keep = ok[:, c] & ~good & np.isfinite(out[:, p]).all(-1) & ok[:, p]  # raw offset from the smoothed parent
        out[keep, c] = out[keep, p] + bone[keep, k]
    return out.astype(np.float32)


FILTERS = {
    "one_euro": "zero-phase One-Euro per joint (smooth_joints)",
    "bone_one_euro": "One-Euro on the wrist and the bone directions, each bone's length the median of its "
                     "raw lengths over 31 frames (smooth_bones_one_euro; the default)",
    "skeleton": "local quadratic fit of the wrist, the bone directions and the bone lengths over 9 frames "
                "(smooth_skeleton)",
}


def filter_config(method: str, params: dict | None = None):
    """The config object of a smoothing method (``FILTERS``) built from ``params``."""
    kinds = {"one_euro": SmoothConfig, "bone_one_euro": BoneOneEuroConfig, "skeleton": SkeletonSmoothConfig}
    if method not in kinds:
        raise ValueError(f"smooth.method: {method!r} is not one of {', '.join(kinds)}")
    try:
        return kinds[method](**(params or {}))
    except TypeError as exc:
        raise ValueError(f"smooth.params ({method}): {exc}") from None


def apply_filter(method: str, x: np.ndarray, conf: np.ndarray, fps: float, params: dict | None = None) -> np.ndarray:
    """Filter (T, 21, 3) joints with a ``FILTERS`` method; joints the filter left NaN keep their input value."""
    cfg = filter_config(method, params)
    fn = {"one_euro": smooth_joints, "bone_one_euro": smooth_bones_one_euro, "skeleton": smooth_skeleton}[method]
    out = fn(x, conf, fps, cfg)
    return np.where(np.isfinite(out), out, x).astype(np.float32)


def smooth_episode_bones(ep, cfg: BoneOneEuroConfig = BoneOneEuroConfig(), *, enabled: bool = True) -> dict[str, np.ndarray]:
    """``annotators.lift.smooth`` with ``smooth_bones_one_euro``: filter each present hand's ``joints_3d``
    in place, return the raw joints {side: (T, 21, 3)}, record the settings in ``ep.extra["smoothing"]``."""
    from dataclasses import asdict

    raw: dict[str, np.ndarray] = {}
    if not enabled:
        ep.extra["smoothing"] = {"method": "none"}
        return raw
    for side, tr in ep.hands.items():
        if not tr.present.any():
            continue
        raw[side] = tr.joints_3d.copy()
        conf = np.where(tr.valid & tr.present[:, None], tr.confidence, 0.0).astype(np.float32)
        filtered = smooth_bones_one_euro(tr.joints_3d, conf, ep.fps, cfg)
        tr.joints_3d = np.where(np.isfinite(filtered), filtered, tr.joints_3d).astype(np.float32)
    ep.extra["smoothing"] = {"method": "bone_one_euro", **asdict(cfg), "raw_product": "joints_raw"}
    return raw
