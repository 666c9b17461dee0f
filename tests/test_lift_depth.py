"""Lift with metric depth: PnP places the hand, the sensor fixes its distance (224x224 synthetic ground truth).

Figures are printed (run with -s): median 3D wrist / joint errors with and without the sensor, and the
cloud scale recovered when the depth comes at a wrong unit.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from annotators import lift as L
from annotators.synthetic import generate_episode
from vipa.conventions import HANDS, NUM_JOINTS, WRIST

SEEDS = (0, 1, 2, 3, 4, 5)
WRONG_SCALE = 1.37  # depth handed over at 1.37x its true unit
SENSOR = {"spec": "sensor", "metric": True}
RELATIVE = {"spec": "hf:model", "metric": False}


@pytest.fixture(scope="module")
def episodes():
    return [generate_episode(s, num_frames=32) for s in SEEDS]


def _side(ep) -> str:
    return next(s for s in HANDS if ep.hands[s].present.any())


def _detections(ep0, seed: int, noise_px: float = 2.0, depth_backend: dict | None = None, depth_unit_x: float = 1.0):
    """A copy of ``ep0`` as the lift stage sees it: GT 2D + noise, every joint reported, no 3D yet.

    Returns (episode, side, hand-centred GT landmarks (T, 21, 3), GT joints (T, 21, 3)).
    """
    ep = copy.deepcopy(ep0)
    side = _side(ep)
    tr = ep.hands[side]
    gt = tr.joints_3d.copy()
    rng = np.random.default_rng(seed)
    tr.joints_2d = (tr.joints_2d + rng.normal(0.0, noise_px, tr.joints_2d.shape)).astype(np.float32)
    tr.joints_3d[:] = np.nan
    tr.valid = tr.present[:, None] & np.ones((ep.num_frames, NUM_JOINTS), bool)
    ep.depth_unit = ep.depth_unit * depth_unit_x
    ep.extra.pop("depth_backend", None)
    if depth_backend is not None:
        ep.extra["depth_backend"] = dict(depth_backend)
    return ep, side, gt - gt.mean(axis=1, keepdims=True), gt


def _errors(ep, side, gt) -> np.ndarray:
    tr = ep.hands[side]
    return np.linalg.norm(tr.joints_3d - gt, axis=-1)[tr.present]


def test_sensor_depth_lift_accuracy_at_224(episodes):
    wrist, joint, wrist_pnp, joint_pnp, resid = [], [], [], [], []
    for ep0, seed in zip(episodes, SEEDS):
        ep, side, world, gt = _detections(ep0, seed, depth_backend=SENSOR)
        L.lift(ep, {side: world})
        info = ep.extra["lift"]
        assert info["depth_used"] and abs(info["depth_ratio"] - 1.0) < 0.05
        tr = ep.hands[side]
        assert (tr.provenance[tr.present] == "lift:depth").mean() > 0.9
        assert (tr.reproj_error[tr.present] < 15).mean() > 0.95  # moving along the centroid ray keeps the 2D fit
        resid.append(info["residual_m"])
        err = _errors(ep, side, gt)
        assert np.isfinite(err).mean() > 0.95
        wrist.append(err[:, WRIST])
        joint.append(err.ravel())

        base, side, world, gt = _detections(ep0, seed)  # same detections, no depth marked: PnP alone
        L.lift(base, {side: world})
        assert base.extra["lift"]["depth_used"] is False
        err = _errors(base, side, gt)
        wrist_pnp.append(err[:, WRIST])
        joint_pnp.append(err.ravel())
    w, j = np.nanmedian(np.concatenate(wrist)), np.nanmedian(np.concatenate(joint))
    w0, j0 = np.nanmedian(np.concatenate(wrist_pnp)), np.nanmedian(np.concatenate(joint_pnp))
    print(f"\nlift from GT 2D + 2 px noise, {len(SEEDS)} episodes at 224x224: median wrist error "
          f"{w0 * 100:.2f} cm (PnP only) -> {w * 100:.2f} cm (PnP + sensor depth); median joint error "
          f"{j0 * 100:.2f} -> {j * 100:.2f} cm; sensor residual median {np.median(resid) * 1000:.1f} mm")
    assert w <= 0.015
    assert j <= 0.02
    assert w < w0 and j < j0
    assert np.median(resid) < 0.01


@pytest.mark.parametrize("backend", [RELATIVE, SENSOR], ids=["marked_relative", "marked_metric_wrong_unit"])
def test_wrong_depth_scale_not_trusted_and_recovered(episodes, backend):
    """Depth at 1.37x its unit: relative depth is never used by the lift; 'metric' depth that disagrees
    with the hand's size over the episode is refused. Either way the hand is PnP's and the calibration
    recovers the cloud scale."""
    errs = []
    for ep0, seed in zip(episodes, SEEDS):
        ep, side, world, _ = _detections(ep0, seed, depth_backend=backend, depth_unit_x=WRONG_SCALE)
        L.lift(ep, {side: world})
        assert ep.extra["lift"]["depth_used"] is False
        if backend["metric"]:
            assert "not metric" in ep.extra["lift"]["reason"]
            assert ep.extra["lift"]["depth_ratio"] > 1.0 + L.MAX_DEPTH_DISAGREEMENT
        pnp, side, world, _ = _detections(ep0, seed)
        L.lift(pnp, {side: world})
        assert np.array_equal(ep.hands[side].joints_3d, pnp.hands[side].joints_3d, equal_nan=True)
        assert set(ep.hands[side].provenance[ep.hands[side].present]) == {"lift"}
        cal = L.calibrate(ep)
        errs.append(cal.scale * WRONG_SCALE - 1.0)
    print(f"\ncloud scale relative error, depth at x{WRONG_SCALE} ({backend['spec']}): "
          + ", ".join(f"{e * 100:+.2f}%" for e in errs))
    assert max(abs(e) for e in errs) <= 0.03


def test_relative_depth_never_moves_the_hand(episodes):
    ep0 = episodes[0]
    ref, side, world, _ = _detections(ep0, 0)
    ref.depth_raw = None
    L.lift(ref, {side: world})
    for unit_x in (1.0, 0.5, 3.0):
        ep, side, world, _ = _detections(ep0, 0, depth_backend=RELATIVE, depth_unit_x=unit_x)
        L.lift(ep, {side: world})
        assert np.array_equal(ep.hands[side].joints_3d, ref.hands[side].joints_3d, equal_nan=True)
        assert ep.extra["lift"] == {"depth_used": False,
                                    "reason": "depth is relative (not metric): the calibration scales it"}
    # an explicit argument overrides the episode's marking
    ep, side, world, _ = _detections(ep0, 0, depth_backend=SENSOR)
    L.lift(ep, {side: world}, metric_depth=False)
    assert np.array_equal(ep.hands[side].joints_3d, ref.hands[side].joints_3d, equal_nan=True)


def test_occluder_in_front_of_joints_is_ignored(episodes):
    """An object 10 cm in front of five joints (sensor sees it, not the skin) does not pull the hand."""
    ep0 = episodes[1]
    clean, side, world, gt = _detections(ep0, 1, depth_backend=SENSOR)
    L.lift(clean, {side: world})
    ep, side, world, gt = _detections(ep0, 1, depth_backend=SENSOR)
    tr = ep.hands[side]
    for t in np.flatnonzero(tr.present):
        for k in (8, 12, 16, 20, 4):
            u, v = np.floor(tr.joints_2d[t, k]).astype(int)
            if 0 <= v < ep.height and 0 <= u < ep.width:
                ep.depth_raw[t, max(v - 2, 0):v + 3, max(u - 2, 0):u + 3] -= 100.0  # mm
    L.lift(ep, {side: world})
    assert ep.extra["lift"]["depth_used"]
    a, b = _errors(ep, side, gt), _errors(clean, side, gt)
    assert abs(np.nanmedian(a[:, WRIST]) - np.nanmedian(b[:, WRIST])) < 0.003


def test_frame_depth_fix_robust_shift():
    rng = np.random.default_rng(0)
    z = rng.uniform(0.45, 0.55, NUM_JOINTS).astype(np.float32)
    cloud = z + 0.03 + rng.normal(0, 0.001, NUM_JOINTS).astype(np.float32)
    cloud[:4] -= 0.15  # something in front
    cloud[4:6] += 0.4  # background past an edge
    valid = np.ones(NUM_JOINTS, bool)
    valid[6] = False
    cloud[7] = np.nan
    fix = L.frame_depth_fix(z, cloud, valid)
    assert fix.shift == pytest.approx(0.03, abs=0.001) and fix.n_valid == NUM_JOINTS - 8
    assert fix.residual < 0.002
    few = L.frame_depth_fix(z, cloud, np.eye(NUM_JOINTS, dtype=bool)[0] | np.eye(NUM_JOINTS, dtype=bool)[10])
    assert np.isnan(few.shift) and few.n_valid == 2


def test_pipeline_with_metric_sensor_depth(tmp_path, episodes):
    """End to end from an RGB-D folder at the true depth unit: the hands are placed on the sensor depth."""
    from test_pipeline import GroundTruthHands, write_rgbd_folder

    from annotators.pipeline import AnnotateConfig, run_pipeline

    gt_ep = episodes[2]
    src = write_rgbd_folder(gt_ep, tmp_path / "clip_metric")
    ann = run_pipeline(src, AnnotateConfig(depth={"backend": "sensor"}, decode={"depth_factor": 1000.0},
                                           objects={"backends": ()}, qa={"enabled": False}, motion={"enabled": False}),
                       hand_backend=GroundTruthHands(gt_ep))
    ep = ann.episode
    side = _side(gt_ep)
    assert ep.extra["lift"]["depth_used"] and ep.quality["lift_depth_used"] == 1.0
    assert 0 < ep.quality["lift_depth_residual_m"] < 0.01
    err = np.linalg.norm(ep.hands[side].joints_3d - gt_ep.hands[side].joints_3d, axis=-1)[gt_ep.hands[side].present]
    print(f"\nend to end, metric sensor depth (224 px, 2 px noise, smoothed): median wrist error "
          f"{np.nanmedian(err[:, WRIST]) * 100:.2f} cm, scale {np.median(ep.depth_scale):.4f}")
    assert np.nanmedian(err[:, WRIST]) <= 0.015
    assert abs(float(np.median(ep.depth_scale)) - 1.0) <= 0.03

    from annotators.pipeline import write_annotation
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.create(tmp_path / "ds")
    write_annotation(ds, ann)
    back = ds.load_episode("clip_metric")
    assert back.extra["lift"] == ep.extra["lift"]
    assert back.quality["lift_depth_used"] == 1.0
    assert np.array_equal(back.hands[side].provenance, ep.hands[side].provenance)
