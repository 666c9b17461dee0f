"""vipa.geometry: intrinsics, projection, depth to points, PnP lifting, scale calibration,
transforms; real-data check on the bundled TUM Kinect frame."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vipa import geometry as G
from vipa.resources import SAMPLE_RGBD

W, H = 640, 480
K_DEFAULT = G.fov_intrinsics(W, H, 60.0)
# TUM freiburg1 calibration (samples/rgbd_tum/SOURCE.md), given in OpenCV's pixel-centre convention
K_TUM_CV = np.array([[517.3, 0, 318.6], [0, 516.5, 255.3], [0, 0, 1]])
TUM_DEPTH_UNIT = 1.0 / 5000.0

# A plausible right hand in MediaPipe order, hand frame (x across the palm, y along the fingers,
# z out of the back of the hand), metres; wrist to middle tip 18 cm, fingers slightly flexed.
HAND = np.array(
    [
        [0.000, 0.000, 0.000],
        [0.025, 0.020, -0.010], [0.045, 0.040, -0.018], [0.060, 0.062, -0.024], [0.070, 0.082, -0.028],
        [0.025, 0.090, 0.000], [0.028, 0.128, -0.008], [0.030, 0.152, -0.016], [0.031, 0.172, -0.024],
        [0.005, 0.095, 0.000], [0.005, 0.138, -0.008], [0.005, 0.163, -0.016], [0.005, 0.180, -0.024],
        [-0.015, 0.090, 0.000], [-0.017, 0.128, -0.008], [-0.018, 0.152, -0.016], [-0.019, 0.170, -0.024],
        [-0.032, 0.080, 0.000], [-0.036, 0.108, -0.006], [-0.038, 0.126, -0.012], [-0.040, 0.142, -0.018],
    ],
    np.float64,
)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def hand_scene(rng: np.random.Generator, K: np.ndarray = K_DEFAULT):
    """(hand-centred metric landmarks (21,3), camera-frame joints (21,3)) with the hand's centre at
    about 0.5 m depth, anywhere it stays in view."""
    centred = HAND - HAND.mean(axis=0)  # MediaPipe world landmarks: origin near the hand centre
    while True:
        R = random_rotation(rng)
        t = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.08, 0.08), rng.uniform(0.45, 0.55)])
        cam = centred @ R.T + t
        uv = G.project(cam, K)
        if np.all(cam[:, 2] > 0.2) and np.all((uv >= 0) & (uv <= [W, H])):
            return centred, cam


# ---------------------------------------------------------------------------------------------
# intrinsics


@pytest.mark.parametrize(
    "K,match",
    [
        (np.eye(4), "3x3"),
        (np.eye(3)[:2], "3x3"),
        (np.array([[0.0, 0, 320], [0, 500, 240], [0, 0, 1]]), "focal"),
        (np.array([[500.0, 0, 320], [0, -500, 240], [0, 0, 1]]), "focal"),
        (np.array([[np.nan, 0, 320], [0, 500, 240], [0, 0, 1]]), "NaN"),
        (np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 2]]), r"\[0, 0, 1\]"),
        ("not a matrix", "numeric"),
    ],
)
def test_validate_intrinsics_rejects(K, match):
    with pytest.raises(ValueError, match=match):
        G.validate_intrinsics(K)
    with pytest.raises(ValueError, match=match):
        G.unproject(np.ones((4, 4), np.float32), K)


def test_fov_intrinsics_and_conventions():
    K = G.fov_intrinsics(W, H, 90.0)
    assert K.dtype == np.float32 and K.shape == (3, 3)
    # the image edge is at half the field of view; +x is right, +y is down
    uv = G.project(np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.1, 1.0]]), K)
    np.testing.assert_allclose(uv[0], [W, H / 2], atol=1e-3)
    np.testing.assert_allclose(uv[1], [W / 2, H / 2], atol=1e-4)
    assert uv[2, 1] > H / 2
    with pytest.raises(ValueError, match="fov_deg"):
        G.fov_intrinsics(W, H, 0.0)


def test_opencv_conversion_and_resize():
    Kcv = G.intrinsics_to_opencv(K_DEFAULT)
    np.testing.assert_allclose(Kcv[:2, 2], K_DEFAULT[:2, 2] - 0.5)
    np.testing.assert_allclose(G.intrinsics_from_opencv(Kcv), K_DEFAULT)
    # corner convention: halving the image halves K's first two rows, and the same 3D point lands
    # on the same relative image position
    K2 = G.scale_intrinsics(K_DEFAULT, 0.5)
    p = np.array([0.1, -0.05, 0.7])
    np.testing.assert_allclose(G.project(p, K2), G.project(p, K_DEFAULT) * 0.5, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# project / unproject / depth_to_points / sample_depth


@settings(max_examples=40, deadline=None)
@given(
    f=st.floats(100, 2000),
    cx=st.floats(10, 60),
    cy=st.floats(10, 50),
    skew=st.sampled_from([0.0, 1.5]),
    seed=st.integers(0, 2**31 - 1),
)
def test_project_unproject_round_trip(f, cx, cy, skew, seed):
    rng = np.random.default_rng(seed)
    K = np.array([[f, skew, cx], [0, f * 1.01, cy], [0, 0, 1]])
    depth = rng.uniform(0.1, 10.0, size=(48, 64)).astype(np.float32)
    pts = G.unproject(depth, K)
    assert pts.shape == (48, 64, 3) and pts.dtype == np.float32
    np.testing.assert_allclose(pts[..., 2], depth, rtol=1e-6)
    uv = G.project(pts, K)
    jj, ii = np.meshgrid(np.arange(64), np.arange(48))
    np.testing.assert_allclose(uv[..., 0], jj + 0.5, atol=2e-3)  # pixel (i, j) centre is (j+.5, i+.5)
    np.testing.assert_allclose(uv[..., 1], ii + 0.5, atol=2e-3)
    # and back: sampling the depth at the projections returns the same depth
    np.testing.assert_allclose(G.sample_depth(depth, uv.reshape(-1, 2)), depth.ravel(), rtol=1e-6)


def test_project_behind_camera_is_nan():
    uv = G.project(np.array([[0, 0, -1.0], [0, 0, 0.0], [np.nan, 0, 1], [0.1, 0.1, 1.0]]), K_DEFAULT)
    assert np.all(np.isnan(uv[:3])) and np.all(np.isfinite(uv[3]))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        G.project(np.zeros((5, 2)), K_DEFAULT)


def test_project_per_frame_intrinsics():
    Ks = np.stack([G.fov_intrinsics(W, H, fov) for fov in (40.0, 60.0, 90.0)])
    pts = np.random.default_rng(0).normal(0.0, 0.1, size=(3, 21, 3)) + [0.0, 0.0, 1.0]
    uv = G.project(pts, Ks)
    assert uv.shape == (3, 21, 2)
    for t in range(3):
        np.testing.assert_allclose(uv[t], G.project(pts[t], Ks[t]), rtol=1e-6)
    with pytest.raises(ValueError, match="batch dims"):
        G.project(pts[0], Ks)


def test_unproject_masks_bad_depth():
    depth = np.full((4, 5), 2.0, np.float32)
    bad = [(0, 0, np.nan), (1, 1, -1.0), (2, 2, 0.0), (3, 3, np.inf), (0, 4, -np.inf)]
    for i, j, v in bad:
        depth[i, j] = v
    pts = G.unproject(depth, G.fov_intrinsics(5, 4))
    nan = np.isnan(pts).all(axis=-1)
    assert nan.sum() == len(bad) and all(nan[i, j] for i, j, _ in bad)
    assert not np.isnan(pts[~nan]).any()
    cloud, _ = G.depth_to_points(depth, G.fov_intrinsics(5, 4))
    assert cloud.shape == (20 - len(bad), 3) and np.isfinite(cloud).all()
    batch = G.unproject(np.stack([depth, depth * 2]), G.fov_intrinsics(5, 4))
    assert batch.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(batch[1][~nan], 2 * pts[~nan])


@pytest.mark.parametrize("skew", [0.0, 2.5])
def test_unproject_pixels_inverts_project_and_matches_unproject(skew):
    K = np.array([[420.0, skew, 31.0], [0, 415.0, 22.5], [0, 0, 1]], np.float32)
    rng = np.random.default_rng(3)
    pts = rng.normal(0.0, 0.2, size=(7, 21, 3)) + [0.0, 0.0, 1.5]
    back = G.unproject_pixels(G.project(pts, K), pts[..., 2], K)
    assert back.shape == (7, 21, 3) and back.dtype == np.float32
    np.testing.assert_allclose(back, pts, rtol=1e-5, atol=1e-6)
    # the same rays as a depth map's unprojection, at pixel centres
    depth = rng.uniform(0.5, 4.0, size=(6, 9)).astype(np.float32)
    u, v = G.pixel_centers(6, 9)
    np.testing.assert_allclose(G.unproject_pixels(np.stack([u, v], -1), depth, K), G.unproject(depth, K),
                               rtol=1e-6, atol=1e-7)
    one = G.unproject_pixels([31.0, 22.5], 2.0, K)  # the principal point lies on the optical axis
    np.testing.assert_allclose(one, [0.0, 0.0, 2.0], atol=1e-7)


def test_unproject_pixels_unknown_inputs_are_nan():
    uv = np.array([[10.0, 10.0], [np.nan, 3.0], [10.0, 10.0], [10.0, 10.0], [5.0, 5.0]])
    z = np.array([1.0, 1.0, np.nan, 0.0, -2.0])
    out = G.unproject_pixels(uv, z, K_DEFAULT)
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()
    with pytest.raises(ValueError, match=r"uv: expected shape \(\.\.\., 2\)"):
        G.unproject_pixels(np.zeros((4, 3)), 1.0, K_DEFAULT)
    with pytest.raises(ValueError, match="z: shape"):
        G.unproject_pixels(np.zeros((4, 2)), np.ones(3), K_DEFAULT)
    with pytest.raises(ValueError, match="one \\(3, 3\\) K"):
        G.unproject_pixels(np.zeros((2, 2)), 1.0, np.stack([K_DEFAULT, K_DEFAULT]))


def test_depth_to_points_options():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.5, 3.0, size=(30, 40)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = 0.0
    K = G.fov_intrinsics(40, 30)
    colors = rng.integers(0, 255, size=(30, 40, 3), dtype=np.uint8)
    full = G.unproject(depth, K)
    pts, cols = G.depth_to_points(depth, K, colors=colors)
    keep = depth > 0
    np.testing.assert_allclose(pts, full[keep], rtol=1e-6)
    np.testing.assert_array_equal(cols, colors[keep])
    assert cols.dtype == np.uint8
    # stride, validity mask, max depth
    valid = np.zeros_like(keep)
    valid[:, :20] = True
    pts2, cols2 = G.depth_to_points(depth, K, colors=colors, stride=2, valid=valid, max_depth=2.0)
    sel = np.zeros_like(keep)
    sel[::2, ::2] = True
    sel &= keep & valid & (depth <= 2.0)
    np.testing.assert_allclose(pts2, full[sel], rtol=1e-6)
    np.testing.assert_array_equal(cols2, colors[sel])
    # raw integer counts with a depth unit equal the metric float map
    raw = np.round(depth * 1000).astype(np.uint16)
    pts3, _ = G.depth_to_points(raw, K, depth_unit=1e-3)
    pts4, _ = G.depth_to_points(raw.astype(np.float32) / 1000, K)
    np.testing.assert_allclose(pts3, pts4, rtol=1e-6)
    with pytest.raises(ValueError, match="stride"):
        G.depth_to_points(depth, K, stride=0)
    with pytest.raises(ValueError, match="colors"):
        G.depth_to_points(depth, K, colors=colors[:10])
    with pytest.raises(ValueError, match="depth_unit"):
        G.depth_to_points(raw, K, depth_unit=-1.0)


def test_depth_to_points_matches_open3d():
    o3d = pytest.importorskip("open3d")
    cv2 = pytest.importorskip("cv2")
    raw = cv2.imread(str(SAMPLE_RGBD / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    fx, fy, cx, cy = K_TUM_CV[0, 0], K_TUM_CV[1, 1], K_TUM_CV[0, 2], K_TUM_CV[1, 2]
    intr = o3d.camera.PinholeCameraIntrinsic(raw.shape[1], raw.shape[0], fx, fy, cx, cy)
    ref = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(raw), intr, depth_scale=5000.0, depth_trunc=1e6
    )
    ours, _ = G.depth_to_points(raw, G.intrinsics_from_opencv(K_TUM_CV), depth_unit=TUM_DEPTH_UNIT)
    np.testing.assert_allclose(ours, np.asarray(ref.points), atol=1e-5)


def test_sample_depth():
    depth = np.arange(12, dtype=np.float32).reshape(3, 4) + 1.0
    depth[1, 1] = np.nan
    uv = np.array(
        [[0.0, 0.0], [3.999, 2.999], [4.0, 1.0], [-0.01, 1.0], [1.5, 1.5], [np.nan, 1.0], [2.5, 0.5]]
    )
    got = G.sample_depth(depth, uv)
    np.testing.assert_array_equal(got[[0, 1, 6]], [1.0, 12.0, 3.0])
    assert np.isnan(got[[2, 3, 4, 5]]).all()  # outside, outside, invalid depth, NaN uv
    # a window median ignores an edge outlier and invalid pixels
    d = np.full((9, 9), 1.0, np.float32)
    d[4, 4] = 5.0
    d[3, 3] = 0.0
    assert G.sample_depth(d, np.array([[4.5, 4.5]]), radius=1)[0] == 1.0
    assert G.sample_depth(d, np.array([[4.5, 4.5]]))[0] == 5.0
    assert np.isnan(G.sample_depth(d, np.array([[20.0, 4.5]]), radius=2)[0])


# ---------------------------------------------------------------------------------------------
# lift_hand


def test_lift_hand_exact_without_noise():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(50):
        world, cam = hand_scene(rng)
        res = G.lift_hand(world, G.project(cam, K_DEFAULT), K_DEFAULT)
        assert res.ok and res.inliers.all()
        assert res.joints_cam.shape == (21, 3) and res.joints_cam.dtype == np.float32
        worst = max(worst, float(np.abs(res.joints_cam - cam).max()))
        assert np.nanmax(res.reproj_error) < 0.05
    assert worst < 1e-3  # under 1 mm on every joint of every trial
    # the pose maps the hand frame into the camera frame
    R = G.axis_angle_to_matrix(res.rvec.astype(np.float64))
    np.testing.assert_allclose(world @ R.T + res.tvec, cam, atol=1e-3)


def test_lift_hand_with_pixel_noise():
    """2 px Gaussian noise per coordinate on all 21 landmarks, hand at ~0.5 m, 200 trials.
    Asserts the median over trials of the mean joint error is under 1 cm and 95% of trials are
    under 2 cm (the requirement)."""
    rng = np.random.default_rng(1)
    errors = []
    for _ in range(200):
        world, cam = hand_scene(rng)
        uv = G.project(cam, K_DEFAULT) + rng.normal(0.0, 2.0, size=(21, 2))
        res = G.lift_hand(world, uv, K_DEFAULT)
        assert res.ok
        errors.append(np.linalg.norm(res.joints_cam - cam, axis=1).mean())
    errors = np.array(errors)
    assert np.median(errors) < 0.01
    assert np.percentile(errors, 95) < 0.02


def test_lift_hand_rejects_bad_landmarks():
    """Three landmarks 60 px off (a wrong finger) on top of 1 px noise: RANSAC drops them."""
    rng = np.random.default_rng(2)
    errors = []
    for _ in range(30):
        world, cam = hand_scene(rng)
        uv = G.project(cam, K_DEFAULT) + rng.normal(0.0, 1.0, size=(21, 2))
        bad = rng.choice(21, size=3, replace=False)
        uv[bad] += rng.choice([-60.0, 60.0], size=(3, 2))
        res = G.lift_hand(world, uv, K_DEFAULT)
        assert res.ok and not res.inliers[bad].any() and res.inliers.sum() >= 15
        assert np.all(res.reproj_error[bad] > 20.0)
        errors.append(np.linalg.norm(res.joints_cam - cam, axis=1).mean())
    assert np.median(errors) < 0.01


def test_lift_hand_few_or_invalid_landmarks():
    rng = np.random.default_rng(3)
    world, cam = hand_scene(rng)
    uv = G.project(cam, K_DEFAULT)
    valid = np.zeros(21, bool)
    valid[[0, 5, 17]] = True
    res = G.lift_hand(world, uv, K_DEFAULT, valid=valid)
    assert not res.ok and "at least 4" in res.reason and "got 3" in res.reason
    assert np.isnan(res.joints_cam).all() and np.isnan(res.reproj_error).all()
    with pytest.raises(ValueError, match="at least 4"):
        G.lift_hand(world, uv, K_DEFAULT, valid=valid, strict=True)
    # NaN landmarks count as invalid; the rest still lift exactly, NaN joints get NaN error
    uv_nan = uv.copy()
    uv_nan[[1, 2, 3]] = np.nan
    res = G.lift_hand(world, uv_nan, K_DEFAULT)
    assert res.ok and np.abs(res.joints_cam - cam).max() < 1e-3
    assert np.isnan(res.reproj_error[[1, 2, 3]]).all() and not res.inliers[[1, 2, 3]].any()
    # exactly 4 valid landmarks (no RANSAC possible) still give the pose without noise
    valid4 = np.zeros(21, bool)
    valid4[[0, 4, 8, 20]] = True
    res = G.lift_hand(world, uv, K_DEFAULT, valid=valid4)
    assert res.ok and np.abs(res.joints_cam - cam).max() < 1e-3
    with pytest.raises(ValueError, match="image_landmarks"):
        G.lift_hand(world, uv[:20], K_DEFAULT)
    with pytest.raises(ValueError, match="focal"):
        G.lift_hand(world, uv, np.diag([0.0, 500.0, 1.0]))


# ---------------------------------------------------------------------------------------------
# calibrate_scale


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(0.05, 20.0), seed=st.integers(0, 2**31 - 1))
def test_calibrate_scale_with_outliers(scale, seed):
    """21 joints, 20% (4) of them outliers whose cloud depth is off by 1.5-4x either way,
    0.3% depth noise on the rest: s within 1%."""
    rng = np.random.default_rng(seed)
    metric = rng.uniform(0.3, 0.9, size=21)
    cloud = metric / scale * (1 + rng.normal(0, 0.003, size=21))
    out = rng.choice(21, size=4, replace=False)
    cloud[out] *= rng.uniform(1.5, 4.0, size=4) ** rng.choice([-1, 1], size=4)
    res = G.calibrate_scale(metric, cloud)
    assert res.n_valid == 21 and res.ok
    assert abs(res.scale - scale) / scale < 0.01
    assert res.residual < 0.01  # the median relative error ignores the outliers too


def test_calibrate_scale_validity():
    metric = np.array([0.5, 0.6, 0.7, np.nan, 0.5, 0.5, -0.2])
    cloud = np.array([1.0, 1.2, 1.4, 1.0, 0.0, np.nan, 1.0])
    res = G.calibrate_scale(metric, cloud)
    assert res.n_valid == 3 and res.scale == pytest.approx(0.5) and res.residual == pytest.approx(0.0)
    res = G.calibrate_scale(metric, cloud, valid=np.array([1, 1, 0, 1, 1, 1, 1], bool))
    assert res.n_valid == 2
    empty = G.calibrate_scale(metric, cloud, valid=np.zeros(7, bool))
    assert empty.n_valid == 0 and not empty.ok and math.isnan(empty.scale)
    with pytest.raises(ValueError, match="cloud_depths"):
        G.calibrate_scale(metric, cloud[:3])


# ---------------------------------------------------------------------------------------------
# transforms and relative motion


@settings(max_examples=60, deadline=None)
@given(
    axis=st.tuples(st.floats(-1, 1), st.floats(-1, 1), st.floats(-1, 1)).filter(
        lambda a: np.linalg.norm(a) > 1e-3
    ),
    angle=st.one_of(st.floats(0.0, math.pi), st.just(math.pi), st.just(math.pi - 1e-7), st.just(1e-9)),
)
def test_axis_angle_round_trip(axis, angle):
    a = np.asarray(axis) / np.linalg.norm(axis)
    R = G.axis_angle_to_matrix(a * angle)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(R) == pytest.approx(1.0)
    # the recovered rotation is the same rotation (axis-angle at pi is ambiguous in sign)
    np.testing.assert_allclose(G.axis_angle_to_matrix(G.matrix_to_axis_angle(R)), R, atol=1e-6)


def test_transforms():
    rng = np.random.default_rng(4)
    Rs = np.stack([random_rotation(rng) for _ in range(5)])
    ts = rng.normal(size=(5, 3))
    T = G.make_transform(Rs, ts)
    assert T.shape == (5, 4, 4) and T.dtype == np.float32
    np.testing.assert_allclose(G.invert_transform(T) @ T, np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-5)
    pts = rng.normal(size=(5, 7, 3))
    moved = G.transform_points(T, pts)
    np.testing.assert_allclose(moved[2], pts[2] @ Rs[2].T + ts[2], atol=1e-5)
    back = G.transform_points(G.invert_transform(T[2]), moved[2])
    np.testing.assert_allclose(back, pts[2], atol=1e-5)
    with pytest.raises(ValueError, match="4, 4"):
        G.invert_transform(np.eye(3))


def test_relative_motion():
    rng = np.random.default_rng(5)
    world_from_a = G.make_transform(random_rotation(rng), rng.normal(size=3), np.float64)
    # camera b: turned 30 degrees to the right (about camera a's +y, down) and 0.2 m forward
    a_from_b = G.make_transform(G.axis_angle_to_matrix(np.array([0, math.radians(30), 0])), [0, 0, 0.2], np.float64)
    world_from_b = world_from_a @ a_from_b
    m = G.relative_motion(world_from_a, world_from_b)
    assert m.angle_deg == pytest.approx(30.0, abs=1e-4)
    np.testing.assert_allclose(m.axis, [0, 1, 0], atol=1e-5)
    np.testing.assert_allclose(m.translation, [0, 0, 0.2], atol=1e-5)
    np.testing.assert_allclose(m.transform, a_from_b, atol=1e-5)
    still = G.relative_motion(world_from_a, world_from_a)
    assert still.angle_deg == pytest.approx(0.0, abs=1e-4) and np.allclose(still.translation, 0, atol=1e-6)
    assert np.allclose(still.axis, 0)


# ---------------------------------------------------------------------------------------------
# real data: one TUM RGB-D (Kinect) frame


def kinect_sigma(z: float) -> float:
    """Kinect v1 depth noise (std, metres) at range z (Khoshelham & Elberink 2012)."""
    return 1.425e-3 * z * z


def fit_plane(points: np.ndarray, threshold: float):
    o3d = pytest.importorskip("open3d")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    o3d.utility.random.seed(0)
    _, inliers = pc.segment_plane(distance_threshold=threshold, ransac_n=3, num_iterations=1000)
    q = points[np.asarray(inliers)]
    centre = q.mean(axis=0)
    normal = np.linalg.svd(q - centre, full_matrices=False)[2][2]
    normal = normal if normal[1] > 0 else -normal  # pointing down (+y), toward the floor
    residual = float(np.sqrt(np.mean(((q - centre) @ normal) ** 2)))
    return normal, float(normal @ centre), residual, len(q) / len(points), float(np.median(q[:, 2]))


def test_tum_table_is_planar_within_kinect_noise():
    """Unproject the real Kinect frame, RANSAC-fit the desk top (image rows 200-245) with a 2-sigma
    threshold, refit by least squares: the inlier RMS residual is within the Kinect noise at that
    range, most of the desk region is on the plane, and the desk is parallel to the floor at a
    desk's height (a check on the intrinsics and the unprojection, not only on flatness)."""
    cv2 = pytest.importorskip("cv2")
    raw = cv2.imread(str(SAMPLE_RGBD / "TUM_depth.png"), cv2.IMREAD_UNCHANGED)
    assert raw.shape == (480, 640) and raw.dtype == np.uint16
    pts = G.unproject(raw, G.intrinsics_from_opencv(K_TUM_CV), depth_unit=TUM_DEPTH_UNIT)
    assert np.isnan(pts[raw == 0]).all() and np.isfinite(pts[raw > 0]).all()

    def region(rows, cols):
        p = pts[rows, cols].reshape(-1, 3)
        return p[np.isfinite(p[:, 2])]

    desk = region(slice(200, 245), slice(40, 620))
    z = float(np.median(desk[:, 2]))
    n_desk, d_desk, residual, frac, z_in = fit_plane(desk, threshold=2 * kinect_sigma(z))
    print(f"TUM desk plane: inlier RMS {residual * 1000:.2f} mm at {z_in:.2f} m "
          f"(Kinect sigma {kinect_sigma(z_in) * 1000:.2f} mm), {frac:.0%} of the desk region")
    assert residual <= kinect_sigma(z_in)
    assert frac > 0.5
    n_floor, d_floor, _, _, _ = fit_plane(region(slice(380, 480), slice(0, 640)), threshold=0.02)
    assert math.degrees(math.acos(min(1.0, abs(n_desk @ n_floor)))) < 3.0
    assert 0.6 < d_floor - d_desk < 0.85  # desk top above the floor, metres
