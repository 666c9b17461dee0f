"""Skeleton smoothing (annotators.smoothing): bones keep their length, no lag, jitter at least halved;
on a synthetic noisy hand with known truth and on the raw lifted joints of a real clip."""

from __future__ import annotations

import numpy as np
import pytest

from annotators.smoothing import PARENTS, SkeletonSmoothConfig, local_poly, smooth_skeleton, smoothing_figures

CLIP = "samples/real_clips/mediapipe_samples/hand_reach.mp4"


def _moving_hand(t_count: int = 200, fps: float = 30.0) -> np.ndarray:
    """(T, 21, 3) m: a fan-shaped hand turning and drifting in front of the camera."""
    tmpl = np.zeros((21, 3))
    for c in range(1, 21):
        ang = ((c - 1) // 4 - 2) * 0.3
        d = np.array([np.sin(ang), -np.cos(ang), 0.1])
        tmpl[c] = tmpl[PARENTS[c]] + 0.035 * d / np.linalg.norm(d)
    x = np.zeros((t_count, 21, 3))
    for i in range(t_count):
        t = i / fps
        a = 0.8 * np.sin(2 * np.pi * 0.5 * t)
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        x[i] = tmpl @ rot.T + np.array([0.1 * np.sin(2 * np.pi * 0.3 * t), 0.05 * t, 0.5])
    return x


def _check(fig: dict) -> None:
    assert 0.98 <= fig["bone_median_ratio_min"] and fig["bone_median_ratio_max"] <= 1.02, fig
    assert abs(fig["lag_frames"]) <= 1, fig
    assert fig["jitter_p95_mps2"] <= 0.5 * fig["jitter_p95_raw_mps2"], fig


def test_local_poly_follows_a_quadratic_exactly_and_skips_missing():
    t = np.arange(40, dtype=float)
    y = (0.5 * t**2 - 3 * t + 2)[:, None]
    w = np.ones(40)
    w[10:13] = 0.0
    y_in = y.copy()
    y_in[10:13] = np.nan
    np.testing.assert_allclose(local_poly(y_in, w, 4, 2), y, atol=1e-6)


def test_synthetic_hand():
    x = _moving_hand()
    rng = np.random.default_rng(0)
    noisy = x + rng.normal(0.0, 0.003, x.shape)
    conf = np.ones(x.shape[:2])
    conf[50:53, 8] = 0.0  # a few missing samples
    sm = smooth_skeleton(noisy, conf, 30.0)
    fig = smoothing_figures(noisy, sm, 30.0)
    print("synthetic:", fig)
    _check(fig)
    late = np.concatenate([np.repeat(sm[:1], 3, 0), sm[:-3]])  # the same path 3 frames late
    assert smoothing_figures(noisy, late, 30.0)["lag_frames"] == 3
    err_raw = np.linalg.norm(noisy - x, axis=-1).mean()
    err_sm = np.linalg.norm(sm - x, axis=-1).mean()
    assert err_sm < 0.7 * err_raw  # closer to the truth, not only smoother
    exact = smooth_skeleton(noisy, conf, 30.0, SkeletonSmoothConfig(smooth_lengths=False))
    ok = conf[:, 1:].astype(bool) & conf[:, list(PARENTS[1:])].astype(bool)
    lr = np.linalg.norm(noisy[:, 1:] - noisy[:, list(PARENTS[1:])], axis=-1)
    le = np.linalg.norm(exact[:, 1:] - exact[:, list(PARENTS[1:])], axis=-1)
    np.testing.assert_allclose(le[ok], lr[ok], rtol=1e-4)  # raw lengths kept exactly on request


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(T, 21, 3\)"):
        smooth_skeleton(np.zeros((5, 20, 3)), np.ones((5, 20)), 30.0)


def test_real_clip_raw_joints():
    """The raw lifted joints of a real clip (the pipeline's ``joints_raw``) against what the pipeline
    wrote with ``smooth.method=skeleton``."""
    from annotators.pipeline import AnnotateConfig, run_pipeline
    from vipa.resources import REPO_ROOT

    cfg = AnnotateConfig(decode={"max_frames": 120}, objects={"backends": ()}, qa={"enabled": False},
                         motion={"enabled": False}, smooth={"method": "skeleton"})
    ann = run_pipeline(REPO_ROOT / CLIP, cfg)
    ep = ann.episode
    assert ep.extra["smoothing"]["method"] == "skeleton_local_poly"
    figs = []
    for side, raw in ann.raw_joints.items():
        tr = ep.hands[side]
        ok = tr.valid & tr.present[:, None]
        if ok[:, 0].sum() < 60:
            continue
        conf = np.where(ok, tr.confidence, 0.0)
        rawm = np.where(ok[..., None], raw, np.nan)
        fig = smoothing_figures(rawm, np.where(ok[..., None], tr.joints_3d, np.nan), ep.fps)
        print(CLIP, side, fig)
        _check(fig)
        figs.append(fig)
    assert figs  # the clip's reaching hand is there


# ------------------------------------------------------------------ One-Euro on the skeleton (bone_one_euro)


def _lifted_like(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Noise shaped like the monocular lift's: the whole hand jitters rigidly (3 mm, ~2 degrees), bone
    lengths by 1 %, and 5 % of the frames have the hand's size off by -20..+25 %."""
    rng = np.random.default_rng(seed)
    out = x.copy()
    for t in range(len(x)):
        a = rng.normal(0.0, 0.03, 3)
        rot = np.eye(3) + np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
        w = x[t, 0]
        out[t] = (x[t] - w) @ rot.T * (1 + rng.normal(0.0, 0.01)) + w + rng.normal(0.0, 0.003, 3)
    jump = rng.random(len(x)) < 0.05
    out[jump] = (out[jump] - out[jump][:, :1]) * rng.uniform(0.8, 1.25, (jump.sum(), 1, 1)) + out[jump][:, :1]
    return out


def test_bone_one_euro_keeps_bones_and_halves_jitter_without_lag():
    from annotators.smoothing import BoneOneEuroConfig, apply_filter, smooth_bones_one_euro

    x = _moving_hand()
    noisy = _lifted_like(x)
    conf = np.ones(x.shape[:2])
    conf[80:83, 12] = 0.0  # a few missing samples: skipped, kept as they were
    sm = smooth_bones_one_euro(noisy, conf, 30.0)
    fig = smoothing_figures(noisy, sm, 30.0)
    print("bone_one_euro:", fig)
    _check(fig)
    assert 0.98 <= fig["bone_ratio_p5"] and fig["bone_ratio_p95"] <= 1.025  # per frame too, not only per bone
    assert np.nanmean(np.linalg.norm(sm - x, axis=-1)) < np.linalg.norm(noisy - x, axis=-1).mean()  # nearer the truth
    # each bone's length is the median of its raw lengths: a frame with a size jump gets the neighbours' size
    lr = np.linalg.norm(noisy[:, 1:] - noisy[:, list(PARENTS[1:])], axis=-1)
    ls = np.linalg.norm(sm[:, 1:] - sm[:, list(PARENTS[1:])], axis=-1)
    t, hw = 100, BoneOneEuroConfig().length_half_window
    ok = conf[t - hw:t + hw + 1, 1:].astype(bool) & conf[t - hw:t + hw + 1, list(PARENTS[1:])].astype(bool)
    med = np.array([np.median(lr[t - hw:t + hw + 1, b][ok[:, b]]) for b in range(20)])
    np.testing.assert_allclose(ls[t], med, rtol=1e-5)
    # with no window, every bone keeps its raw length of each frame exactly
    exact = apply_filter("bone_one_euro", noisy, conf, 30.0, {"length_half_window": 0})
    le = np.linalg.norm(exact[:, 1:] - exact[:, list(PARENTS[1:])], axis=-1)
    both = conf[:, 1:].astype(bool) & conf[:, list(PARENTS[1:])].astype(bool)
    np.testing.assert_allclose(le[both], lr[both], rtol=1e-4)
    # a missing joint stays missing (NaN in, NaN out of the filter; apply_filter keeps the input)
    holes = noisy.copy()
    holes[40, 8] = np.nan
    assert np.isnan(smooth_bones_one_euro(holes, np.ones(x.shape[:2]), 30.0)[40, 8]).all()
    with pytest.raises(ValueError, match=r"\(T, 21, 3\)"):
        smooth_bones_one_euro(np.zeros((5, 20, 3)), np.ones((5, 20)), 30.0, BoneOneEuroConfig())


def test_bone_one_euro_is_selectable_in_the_pipeline():
    from annotators.pipeline import AnnotateConfig, run_pipeline
    from vipa.resources import REPO_ROOT

    cfg = AnnotateConfig(decode={"max_frames": 40}, objects={"backends": ()}, qa={"enabled": False},
                         motion={"enabled": False}, smooth={"method": "bone_one_euro", "params": {"length_half_window": 3}})
    ann = run_pipeline(REPO_ROOT / CLIP, cfg)
    ep = ann.episode
    assert ep.extra["smoothing"]["method"] == "bone_one_euro" and ep.extra["smoothing"]["length_half_window"] == 3
    side = max(ann.raw_joints, key=lambda s: ep.hands[s].present.sum())
    tr, raw = ep.hands[side], ann.raw_joints[side]
    assert tr.present.sum() >= 20
    moved = np.isfinite(raw).all(-1) & np.isfinite(tr.joints_3d).all(-1)
    assert np.abs(tr.joints_3d[moved] - raw[moved]).max() > 1e-4  # filtered, with the raw joints kept beside
    with pytest.raises(ValueError, match="smooth.params"):
        AnnotateConfig(smooth={"method": "bone_one_euro", "params": {"half_window": 3}}).validate()


def test_default_filter_keeps_bones_where_one_euro_shrinks_them():
    """A hand turning fast (2 rad at 1.5 Hz): per-joint One-Euro averages end points that move on arcs,
    so bones come out shorter; the default filter (bone_one_euro) keeps each bone's median length."""
    from annotators.pipeline import SmoothingConfig
    from annotators.smoothing import BoneOneEuroConfig, apply_filter

    assert SmoothingConfig().method == "bone_one_euro" and isinstance(SmoothingConfig().filter_config(), BoneOneEuroConfig)
    tmpl = _moving_hand(1)[0] - _moving_hand(1)[0, :1]
    x = np.zeros((150, 21, 3))
    for i in range(150):
        a = 2.0 * np.sin(2 * np.pi * 1.5 * i / 30.0)
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        x[i] = tmpl @ rot.T + np.array([0.0, 0.0, 0.5])
    noisy = _lifted_like(x, seed=1)
    conf = np.ones(x.shape[:2])
    one = smoothing_figures(noisy, apply_filter("one_euro", noisy, conf, 30.0), 30.0)
    ours = smoothing_figures(noisy, apply_filter(SmoothingConfig().method, noisy, conf, 30.0), 30.0)
    assert one["bone_median_ratio_min"] < 0.95  # One-Euro shrinks some bone by more than 5 %
    assert 0.98 <= ours["bone_median_ratio_min"] and ours["bone_median_ratio_max"] <= 1.02
    assert abs(ours["lag_frames"]) <= 1 and ours["jitter_p95_mps2"] < ours["jitter_p95_raw_mps2"]
