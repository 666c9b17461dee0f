"""Plotly figures and the per-frame alignment figures behind them (Inspect and Align panels).

All 3D values are camera-frame metres; pixels follow ``vipa.conventions``.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from vipa.conventions import HANDS, JOINT_NAMES, WRIST
from vipa.data.episode import Episode
from vipa.geometry import sample_depth
from vipa.viz.recording import HAND_COLORS

_AXIS_COLORS = ("#e45756", "#54a24b", "#4c78a8")


def _rgb(side: str) -> str:
    r, g, b = HAND_COLORS[side]
    return f"rgb({r},{g},{b})"


def _layout(fig: go.Figure, title: str, xlabel: str, ylabel: str, frame: int | None = None) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=300,
                      margin=dict(l=50, r=10, t=40, b=40), legend=dict(orientation="h", y=-0.25))
    if frame is not None:
        fig.add_vline(x=frame, line_dash="dot", line_color="gray")
    return fig


def note_figure(title: str, note: str) -> go.Figure:
    """An empty panel that says why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=14))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=300, margin=dict(l=50, r=10, t=40, b=40))
    return fig


NO_DEPTH_RESIDUAL = "no point cloud for this episode (no depth), so no calibration residual"
NO_DEPTH_SCALE = "no point cloud for this episode (no depth), so no scale to compare"


def wrist_xyz_figure(ep: Episode, frame: int | None = None) -> go.Figure:
    """Wrist x, y, z (camera frame, metres) over frames, both hands."""
    fig = go.Figure()
    t = np.arange(ep.num_frames)
    for side in HANDS:
        tr = ep.hands[side]
        ok = tr.present & tr.valid[:, WRIST] & ep.frame_valid
        if not ok.any():
            continue
        for a, name in enumerate("xyz"):
            y = np.where(ok, tr.joints_3d[:, WRIST, a], np.nan)
            fig.add_trace(go.Scatter(x=t, y=y, mode="lines", name=f"{side} {name}",
                                     line=dict(color=_AXIS_COLORS[a], dash="solid" if side == "right" else "dash")))
    return _layout(fig, "wrist position", "frame", "metres (camera frame)", frame)


def confidence_figure(ep: Episode, frame: int | None = None) -> go.Figure:
    """Per-joint confidence over frames (heatmap, one row per hand and joint)."""
    rows, labels = [], []
    for side in HANDS:
        tr = ep.hands[side]
        if not tr.present.any():
            continue
        c = np.where(tr.valid & tr.present[:, None], tr.confidence, np.nan).T  # (21, T)
        rows.append(c)
        labels += [f"{side[0].upper()} {n}" for n in JOINT_NAMES]
    z = np.concatenate(rows, 0) if rows else np.zeros((0, ep.num_frames))
    fig = go.Figure(go.Heatmap(z=z, y=labels, colorscale="Viridis", zmin=0, zmax=1,
                               colorbar=dict(title="conf")))
    fig = _layout(fig, "per-joint confidence", "frame", "", frame)
    fig.update_layout(height=max(300, 10 * len(labels) + 80))
    return fig


def lift_ambiguity(ep: Episode) -> dict[int, float]:
    """{frame: depth ratio} of the frames whose lift left a hand's depth open (issue 14): the
    best other pose's wrist depth / the chosen one's, the one furthest from 1 when both hands are
    open. From ``ep.extra["lift"]["ambiguous"]`` (``annotators.lift.lift``); {} when not recorded."""
    out: dict[int, float] = {}
    for i, a in enumerate((ep.extra.get("lift") or {}).get("ambiguous") or []):
        try:
            f, r = int(a["frame"]), float(a.get("depth_ratio", np.nan))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"episode {ep.episode_id}: extra.lift.ambiguous[{i}]: expected "
                             f"{{'frame': int, 'side': str, 'depth_ratio': float}}, got {a!r}") from None
        if not 0 <= f < ep.num_frames:
            raise ValueError(f"episode {ep.episode_id}: extra.lift.ambiguous[{i}].frame: {f} out of range "
                             f"0..{ep.num_frames - 1}")
        if f not in out or abs(np.log(r)) > abs(np.log(out[f])):
            out[f] = r
    return out


def _mark_ambiguous(fig: go.Figure, ep: Episode, y: object) -> None:
    """Triangles at y=``y`` over the frames whose lift depth is ambiguous (hover: the depth ratio)."""
    amb = lift_ambiguity(ep)
    if not amb:
        return
    f = sorted(amb)
    fig.add_trace(go.Scatter(x=f, y=[y] * len(f), mode="markers", name=f"lift depth ambiguous ({len(f)} frames)",
                             marker=dict(symbol="triangle-down", size=9, color="#ff9f1c", line=dict(width=1, color="black")),
                             text=[f"frame {t}: another pose at {amb[t]:.2f}x the depth" for t in f],
                             hoverinfo="text"))


def reproj_error_figure(ep: Episode, frame: int | None = None) -> go.Figure:
    """Per-joint reprojection error (pixels) over frames (heatmap) for the hands that have it;
    frames whose lift depth is ambiguous are marked above it."""
    rows, labels = [], []
    for side in HANDS:
        tr = ep.hands[side]
        if tr.reproj_error is None or not tr.present.any():
            continue
        rows.append(np.where(tr.valid & tr.present[:, None], tr.reproj_error, np.nan).T)
        labels += [f"{side[0].upper()} {n}" for n in JOINT_NAMES]
    z = np.concatenate(rows, 0) if rows else np.zeros((0, ep.num_frames))
    fig = go.Figure(go.Heatmap(z=z, y=labels, colorscale="Inferno", colorbar=dict(title="px")))
    if labels:
        _mark_ambiguous(fig, ep, labels[-1])
    fig = _layout(fig, "per-joint reprojection error", "frame", "", frame)
    fig.update_layout(height=max(300, 10 * len(labels) + 80))
    return fig


def calibration_residual(ep: Episode, scale: np.ndarray | float | None = None) -> np.ndarray:
    """(T,) float32 median relative residual |j_z - s * cloud_z(uv)| / j_z over the valid
    joints of both hands per frame; NaN where no depth or no valid joint. ``scale``: the
    calibration scale to test (default: the episode's per-frame ``depth_scale``)."""
    t = ep.num_frames
    out = np.full(t, np.nan, np.float32)
    if ep.depth_raw is None:
        return out
    s = np.broadcast_to(np.asarray(ep.depth_scale if scale is None else scale, np.float32), (t,))
    for i in range(t):
        jz, cz = _joint_and_cloud_depth(ep, i)
        si = float(s[i]) if np.isfinite(s[i]) else 1.0
        if jz.size:
            r = np.abs(jz - si * cz) / jz
            r = r[np.isfinite(r)]
            if r.size:
                out[i] = np.median(r)
    return out


def _joint_and_cloud_depth(ep: Episode, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Metric joint depth and unscaled cloud depth (raw * depth_unit) at the joints' pixels."""
    jz, cz = [], []
    raw = ep.depth_raw[i].astype(np.float32) * np.float32(ep.depth_unit)
    for side in HANDS:
        tr = ep.hands[side]
        if not (tr.present[i] and ep.frame_valid[i]):
            continue
        ok = tr.valid[i] & np.isfinite(tr.joints_2d[i]).all(1) & np.isfinite(tr.joints_3d[i, :, 2])
        if not ok.any():
            continue
        jz.append(tr.joints_3d[i, ok, 2])
        cz.append(sample_depth(raw, tr.joints_2d[i, ok]))
    if not jz:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(jz).astype(np.float32), np.concatenate(cz).astype(np.float32)


def frame_reproj_error(ep: Episode) -> np.ndarray:
    """(T,) float32 mean reprojection error (pixels) over valid joints of both hands."""
    tot = np.zeros(ep.num_frames, np.float64)
    n = np.zeros(ep.num_frames, np.int64)
    for side in HANDS:
        tr = ep.hands[side]
        if tr.reproj_error is None:
            continue
        ok = tr.valid & tr.present[:, None] & np.isfinite(tr.reproj_error)
        tot += np.where(ok, tr.reproj_error, 0).sum(1)
        n += ok.sum(1)
    out = np.full(ep.num_frames, np.nan, np.float32)
    out[n > 0] = (tot[n > 0] / n[n > 0]).astype(np.float32)
    return out


def worst_frames(ep: Episode, k: int = 10, residual: np.ndarray | None = None) -> list[dict]:
    """The k frames to look at first: rows with frame, mean reprojection error (px),
    calibration residual, the lift's depth ratio when its depth is ambiguous (else None), and
    what ranked the frame. Up to half the rows are the lift-ambiguous frames (the lift says it
    does not know their depth), most different alternative depth first; the rest are the
    largest alignment errors, worst first."""
    err = frame_reproj_error(ep)
    res = calibration_residual(ep) if residual is None else residual
    amb = lift_ambiguity(ep)
    # rank by each measure normalised by its median so both count
    def norm(a: np.ndarray) -> np.ndarray:
        m = np.nanmedian(a) if np.isfinite(a).any() else np.nan
        return a / m if (np.isfinite(m) and m > 0) else np.where(np.isfinite(a), a, np.nan)

    ne, nr = norm(err), norm(res)
    score = np.fmax(ne, nr)
    first = sorted(amb, key=lambda f: -abs(np.log(amb[f])))[:(k + 1) // 2] if k > 0 else []
    order = first + [int(i) for i in np.argsort(-np.nan_to_num(score, nan=-np.inf))
                     if np.isfinite(score[i]) and int(i) not in first][:k - len(first)]

    def by(i: int) -> str:
        if i in first:
            return "lift ambiguous"
        return "reprojection" if np.nan_to_num(ne[i], nan=-1) >= np.nan_to_num(nr[i], nan=-1) else "calibration"

    return [{"frame": i, "reproj_px": _r(err[i]), "calib_residual": _r(res[i]),
             "lift_depth_ratio": _r(amb[i]) if i in amb else None, "by": by(i)} for i in order]


def _r(x: float) -> float | None:
    return round(float(x), 4) if np.isfinite(x) else None


def align_timeseries_figure(ep: Episode, residual: np.ndarray | None = None, frame: int | None = None) -> go.Figure:
    """Mean reprojection error (px, left axis) and calibration residual (right axis) over frames."""
    t = np.arange(ep.num_frames)
    res = calibration_residual(ep) if residual is None else residual
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t, y=frame_reproj_error(ep), name="reprojection error (px)", mode="lines"))
    fig.add_trace(go.Scatter(x=t, y=res, name="calibration residual (relative)", mode="lines", yaxis="y2"))
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", title="relative"))
    _mark_ambiguous(fig, ep, 0.0)
    return _layout(fig, "alignment over time", "frame", "pixels", frame)


def calibration_residual_figure(ep: Episode, residual: np.ndarray | None = None, frame: int | None = None) -> go.Figure:
    """Calibration residual (median |j_z - s·cloud_z| / j_z) per frame, with the scale s."""
    t = np.arange(ep.num_frames)
    res = calibration_residual(ep) if residual is None else residual
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=t, y=res, name="residual", mode="lines+markers", marker=dict(size=3)))
    fig.add_trace(go.Scatter(x=t, y=ep.depth_scale, name="scale s", mode="lines", yaxis="y2"))
    fig.update_layout(yaxis2=dict(overlaying="y", side="right", title="s"))
    return _layout(fig, "calibration residual", "frame", "relative residual", frame)


def scale_change_figure(ep: Episode, frame: int, new_scale: float) -> go.Figure:
    """Before/after a scale change at one frame: metric joint depth against the cloud depth at
    the joint pixels with the current and the proposed scale; on the diagonal is perfect."""
    jz, cz = _joint_and_cloud_depth(ep, frame) if ep.depth_raw is not None else (np.zeros(0), np.zeros(0))
    s_old = float(ep.depth_scale[frame]) if np.isfinite(ep.depth_scale[frame]) else 1.0
    fig = go.Figure()
    for s, name, color in ((s_old, f"before s={s_old:.3f}", "#888"), (new_scale, f"after s={new_scale:.3f}", "#d62728")):
        r = np.nanmedian(np.abs(jz - s * cz) / jz) if jz.size else np.nan
        fig.add_trace(go.Scatter(x=jz, y=s * cz, mode="markers", name=f"{name} (residual {r:.3f})",
                                 marker=dict(color=color, size=7)))
    if jz.size:
        lo, hi = float(np.nanmin(jz)) * 0.9, float(np.nanmax(jz)) * 1.1
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="ideal", line=dict(dash="dot", color="black")))
    return _layout(fig, f"scale change at frame {frame}", "metric joint depth (m)", "scaled cloud depth (m)")
