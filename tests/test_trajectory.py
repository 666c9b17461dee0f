"""World-frame wrist trajectories and the predicted-vs-demonstrated comparison."""

import numpy as np

from annotators.synthetic import generate_episode
from vipa.conventions import WRIST
from vipa.data.trajectory import compare_to_demonstration, main_hand, wrist_world
from vipa.geometry import invert_transform, transform_points


def _moving_camera_episode():
    for seed in range(40):
        ep = generate_episode(seed, width=64, height=64, num_frames=24)
        if not np.allclose(ep.camera_pose[0], ep.camera_pose[-1]):
            return ep
    raise AssertionError("no moving-camera episode in 40 seeds")


def test_true_future_wrist_compares_to_zero_error_under_a_moving_camera():
    ep = _moving_camera_episode()
    side = main_hand(ep)
    frame, stride, n = 2, 2, 6
    world = wrist_world(ep, side)
    future = world[frame + stride * np.arange(1, n + 1)]
    cam = transform_points(invert_transform(ep.camera_pose[frame]), future)  # in frame 2's camera
    cmp = compare_to_demonstration(ep, frame, cam, stride=stride)
    assert cmp.side == side
    assert cmp.error_m is not None and cmp.error_m < 1e-4
    # a constant offset of 5 cm shows up as 5 cm
    off = compare_to_demonstration(ep, frame, cam + np.array([0.05, 0, 0], np.float32), stride=stride)
    assert abs(off.error_m - 0.05) < 1e-4


def test_waypoints_past_the_end_are_not_compared():
    ep = generate_episode(3, width=64, height=64, num_frames=12)
    traj = np.zeros((10, 3), np.float32)
    cmp = compare_to_demonstration(ep, 8, traj, stride=2)
    assert np.isnan(cmp.demonstrated_world[2:]).all()
    assert np.isfinite(cmp.predicted_world).all()


def test_wrist_world_masks_absent_and_bad_frames():
    ep = generate_episode(5, width=64, height=64, num_frames=12)
    side = main_hand(ep)
    ep.frame_valid[4] = False
    w = wrist_world(ep, side)
    assert np.isnan(w[4]).all()
    i = int(np.flatnonzero(ep.hands[side].valid[:, WRIST] & ep.frame_valid)[0])
    np.testing.assert_allclose(w[i], transform_points(ep.camera_pose[i], ep.hands[side].joints_3d[i, WRIST][None])[0],
                               atol=1e-5)
