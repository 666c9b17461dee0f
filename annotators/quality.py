"""Quality figures of an annotated episode, per frame and per episode.

Episode figures go to ``Episode.quality`` (a flat ``dict[str, float]``, NaN when a figure
cannot be computed); per-frame arrays are returned by :func:`assess` and written by the
pipeline as the derived product ``quality_frames`` (one record per frame) for the app.

Episode keys:
    ``detection_rate``        fraction of frames with at least one hand present
    ``detection_rate_left`` / ``detection_rate_right``
    ``reproj_median_px`` / ``reproj_p95_px``  over all lifted joints of all frames (pixels)
    ``reproj_median_px.<joint>``              per joint, MediaPipe joint names
    ``calib_scale`` / ``calib_residual``       episode scale s and median relative residual
    ``jitter_median_mps2`` / ``jitter_p95_mps2``  norm of the 3D joint acceleration (m/s^2),
                              central second difference over three consecutive valid frames
    ``dropped_frames`` / ``dropped_fraction``  frames flagged invalid (hand out of view, bad)
    ``num_frames``
    ``lift_ambiguous_fraction``  lifted hand-frames whose depth choice the lift left open
    ``hand_scale.<side>`` / ``hand_scale_sigma.<side>``  the hand's size / mean hand and the sd
                              of its log (``annotators.lift.estimate_hand_scale``), NaN if not lifted
Per-frame keys: ``detected`` (0/1), ``reproj_median_px``, ``calib_residual``, ``calib_scale``,
``jitter_mps2`` (median over joints and hands), ``lift_ambiguous`` (0/1: a hand's depth is
open between poses that explain the 2D, from ``ep.extra["lift"]["ambiguous"]``) and
``lift_depth_ratio`` (the best other pose's wrist depth / the chosen one; NaN when not ambiguous).
"""

from __future__ import annotations

import numpy as np

from vipa.conventions import HANDS, JOINT_NAMES, NUM_JOINTS
from vipa.data.episode import Episode

FRAMES_PRODUCT = "quality_frames"


def joint_acceleration(joints: np.ndarray, fps: float) -> np.ndarray:
    """(T, J) norm of the central second difference of (T, J, 3) joints in m/s^2; NaN at the ends/gaps."""
    t_count = joints.shape[0]
    acc = np.full(joints.shape[:2], np.nan, np.float32)
    if t_count < 3:
        return acc
    a = (joints[2:] - 2.0 * joints[1:-1] + joints[:-2]) * np.float32(fps) ** 2
    acc[1:-1] = np.linalg.norm(a, axis=-1)
    return acc


def frame_quality(ep: Episode, calib_frame_scale: np.ndarray | None = None,
                  calib_frame_residual: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-frame arrays (T,) float32 described in the module docstring."""
    t_count = ep.num_frames
    detected = np.zeros(t_count, bool)
    errs, accs = [], []
    for side in HANDS:
        tr = ep.hands[side]
        detected |= tr.present
        if tr.reproj_error is not None:
            errs.append(np.where(tr.present[:, None] & tr.valid, tr.reproj_error, np.nan))
        j = np.where((tr.present[:, None] & tr.valid)[..., None], tr.joints_3d, np.nan)
        accs.append(joint_acceleration(j, ep.fps))
    nan = np.full(t_count, np.nan, np.float32)
    amb, ratio = ambiguous_frames(ep)
    return {
        "detected": detected.astype(np.float32),
        "lift_ambiguous": amb,
        "lift_depth_ratio": ratio,
        "reproj_median_px": _nanmedian_rows(np.concatenate(errs, 1)) if errs else nan,
        "jitter_mps2": _nanmedian_rows(np.concatenate(accs, 1)),
        "calib_scale": nan if calib_frame_scale is None else np.asarray(calib_frame_scale, np.float32),
        "calib_residual": nan if calib_frame_residual is None else np.asarray(calib_frame_residual, np.float32),
    }


def ambiguous_frames(ep: Episode) -> tuple[np.ndarray, np.ndarray]:
    """(T,) float32 0/1 ambiguous and (T,) depth ratio (NaN elsewhere) from ``ep.extra["lift"]["ambiguous"]``.

    With both hands ambiguous in a frame the ratio farthest from 1 is kept.
    """
    amb = np.zeros(ep.num_frames, np.float32)
    ratio = np.full(ep.num_frames, np.nan, np.float32)
    for a in ep.extra.get("lift", {}).get("ambiguous", []) or []:
        t, r = int(a["frame"]), float(a.get("depth_ratio", np.nan))
        if not 0 <= t < ep.num_frames:
            raise ValueError(f"episode {ep.episode_id}: extra.lift.ambiguous names frame {t} of {ep.num_frames}")
        amb[t] = 1.0
        if np.isfinite(r) and not (abs(np.log(ratio[t])) >= abs(np.log(r)) if np.isfinite(ratio[t]) else False):
            ratio[t] = r
    return amb, ratio


def episode_quality(ep: Episode, calib_scale: float = float("nan"),
                    calib_residual: float = float("nan")) -> dict[str, float]:
    """Flat dict of episode figures described in the module docstring."""
    t_count = max(ep.num_frames, 1)
    q: dict[str, float] = {"num_frames": float(ep.num_frames)}
    any_present = np.zeros(ep.num_frames, bool)
    err_all, acc_all = [], []
    for side in HANDS:
        tr = ep.hands[side]
        any_present |= tr.present
        q[f"detection_rate_{side}"] = float(tr.present.sum()) / t_count
        ok = tr.present[:, None] & tr.valid
        if tr.reproj_error is not None:
            err_all.append(np.where(ok, tr.reproj_error, np.nan))
        acc_all.append(joint_acceleration(np.where(ok[..., None], tr.joints_3d, np.nan), ep.fps))
    q["detection_rate"] = float(any_present.sum()) / t_count
    err = np.concatenate(err_all, 0) if err_all else np.full((0, NUM_JOINTS), np.nan)
    flat = err[np.isfinite(err)]
    q["reproj_median_px"] = float(np.median(flat)) if flat.size else float("nan")
    q["reproj_p95_px"] = float(np.percentile(flat, 95)) if flat.size else float("nan")
    for k, name in enumerate(JOINT_NAMES):
        col = err[:, k][np.isfinite(err[:, k])] if err.size else np.empty(0)
        q[f"reproj_median_px.{name}"] = float(np.median(col)) if col.size else float("nan")
    acc = np.concatenate(acc_all, 0)
    acc = acc[np.isfinite(acc)]
    q["jitter_median_mps2"] = float(np.median(acc)) if acc.size else float("nan")
    q["jitter_p95_mps2"] = float(np.percentile(acc, 95)) if acc.size else float("nan")
    q["calib_scale"] = float(calib_scale)
    q["calib_residual"] = float(calib_residual)
    dropped = ~np.asarray(ep.frame_valid, bool)
    lifted = sum(int((ep.hands[sd].present & np.isfinite(ep.hands[sd].joints_3d).all(-1).any(-1)).sum()) for sd in HANDS)
    n_amb = len(ep.extra.get("lift", {}).get("ambiguous", []) or [])
    q["lift_ambiguous_fraction"] = float(n_amb) / lifted if lifted else float("nan")
    scales = ep.extra.get("hand_scale", {}) or {}
    for sd in HANDS:
        hs = scales.get(sd) or {}
        q[f"hand_scale.{sd}"] = float(hs["scale"]) if hs.get("scale") is not None else float("nan")
        q[f"hand_scale_sigma.{sd}"] = float(hs["sigma_log"]) if hs.get("sigma_log") is not None else float("nan")
    q["dropped_frames"] = float(dropped.sum())
    q["dropped_fraction"] = float(dropped.sum()) / t_count
    return q


def assess(ep: Episode, calibration=None) -> dict[str, np.ndarray]:
    """Store the episode figures in ``ep.quality``; return the per-frame arrays.

    ``calibration`` is an ``annotators.lift.Calibration`` (or None when there is no depth).
    The pipeline writes the per-frame arrays as the derived product ``quality_frames``.
    """
    fs = getattr(calibration, "frame_scale", None)
    fr = getattr(calibration, "frame_residual", None)
    scale = getattr(calibration, "scale", float("nan"))
    resid = getattr(calibration, "residual", float("nan"))
    ep.quality.update(episode_quality(ep, scale, resid))
    return frame_quality(ep, fs, fr)


def frame_records(frames: dict[str, np.ndarray]) -> list[dict]:
    """Per-frame arrays -> one JSON-ready dict per frame ({"frame": i, name: value|None})."""
    names = sorted(frames)
    t_count = len(next(iter(frames.values()))) if frames else 0
    cols = {n: _json_list(frames[n]) for n in names}
    return [{"frame": i, **{n: cols[n][i] for n in names}} for i in range(t_count)]


def _nanmedian_rows(a: np.ndarray) -> np.ndarray:
    out = np.full(a.shape[0], np.nan, np.float32)
    ok = np.isfinite(a).any(1)
    if ok.any():
        out[ok] = np.nanmedian(a[ok], axis=1)
    return out


def _json_list(a: np.ndarray) -> list:
    a = np.asarray(a, np.float64)
    return [float(x) if np.isfinite(x) else None for x in a]
