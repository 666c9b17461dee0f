"""Joint orders, converters and handedness in vipa.conventions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vipa import conventions as C

ORDERS = ["mediapipe", "mano", "interhand", "hot3d"]

# Parents in each order's own indexing, written from each source's skeleton (not derived from
# the name tables): a converted skeleton must have the same bones.
MEDIAPIPE_PARENTS = [-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 0, 13, 14, 15, 0, 17, 18, 19]
# smplx / Minimal-IK MANO kinematic tree with the tips appended (tips hang off thumb3, index3, ...)
MANO_PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14, 15, 3, 6, 12, 9]
# InterHand2.6M skeleton.txt: tip <- 3 <- 2 <- 1 <- wrist(20) per finger
INTERHAND_PARENTS = [1, 2, 3, 20, 5, 6, 7, 20, 9, 10, 11, 20, 13, 14, 15, 20, 17, 18, 19, 20, -1]


def test_orders_are_permutations_of_named_joints():
    for name in ("mediapipe", "mano", "interhand"):
        order = C.JOINT_ORDERS[name]
        assert len(order) == C.NUM_JOINTS and sorted(order) == sorted(C.JOINT_NAMES), name
    hot3d = C.HOT3D_ORDER
    assert len(hot3d) == len(set(hot3d)) == C.NUM_JOINTS
    assert set(C.JOINT_NAMES) - set(hot3d) == {"thumb_cmc"}
    assert set(hot3d) - set(C.JOINT_NAMES) == {C.PALM_CENTER}


def test_tables_match_published_mappings():
    # HaMeR hamer/models/mano_wrapper.py: openpose (= MediaPipe order) joint k is MANO joint map[k]
    hamer = [0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20]
    assert C.joint_index_table("mano", "mediapipe").tolist() == hamer
    # hot3d/data_loaders/mano_layer.py mano_to_nimble_joint_mapping (first 20 HOT3D landmarks)
    hot3d = [16, 17, 18, 19, 20, 0, 14, 15, 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9]
    assert C.joint_index_table("mano", "hot3d").tolist() == hot3d + [-1]


@pytest.mark.parametrize(
    "name,parents", [("mano", MANO_PARENTS), ("interhand", INTERHAND_PARENTS)]
)
def test_converted_skeleton_keeps_bones(name, parents):
    rng = np.random.default_rng(0)
    mp = rng.normal(size=(21, 3)).astype(np.float32)
    other = C.convert_joints(mp, "mediapipe", name)
    names = C.JOINT_ORDERS[name]
    for child, parent in enumerate(parents):
        if parent < 0:
            continue
        # a bone of the other skeleton joins the same two named joints as in MediaPipe's
        c_mp, p_mp = C.JOINT_INDEX[names[child]], C.JOINT_INDEX[names[parent]]
        assert MEDIAPIPE_PARENTS[c_mp] == p_mp or (names[parent] == "wrist" and MEDIAPIPE_PARENTS[c_mp] == 0)
        np.testing.assert_array_equal(other[child] - other[parent], mp[c_mp] - mp[p_mp])


@settings(max_examples=30, deadline=None)
@given(
    joints=arrays(np.float32, (3, 21, 3), elements=st.floats(-1, 1, width=32)),
    src=st.sampled_from(ORDERS),
    dst=st.sampled_from(ORDERS),
)
def test_round_trip(joints, src, dst):
    back = C.convert_joints(C.convert_joints(joints, src, dst), dst, src)
    shared = set(C.JOINT_ORDERS[src]) & set(C.JOINT_ORDERS[dst])
    for i, n in enumerate(C.JOINT_ORDERS[src]):
        if n in shared:
            np.testing.assert_array_equal(back[..., i, :], joints[..., i, :])
        else:
            assert np.all(np.isnan(back[..., i, :]))


def test_missing_joints_are_nan_and_masked():
    mp = np.arange(63, dtype=np.float32).reshape(21, 3)
    hot = C.convert_joints(mp, "mediapipe", "hot3d")
    assert np.all(np.isnan(hot[20])) and np.all(np.isfinite(hot[:20]))
    np.testing.assert_array_equal(hot[5], mp[C.WRIST])
    np.testing.assert_array_equal(hot[0], mp[C.THUMB_TIP])
    back = C.convert_joints(hot, "hot3d", "mediapipe")
    assert np.all(np.isnan(back[C.JOINT_INDEX["thumb_cmc"]]))
    mask = C.convert_joint_mask(np.ones((4, 21), bool), "hot3d", "mediapipe")
    assert mask.shape == (4, 21) and mask.sum() == 4 * 20 and not mask[:, 1].any()
    with pytest.raises(ValueError, match="palm_center"):
        C.convert_joints(mp.astype(np.int32), "mediapipe", "hot3d")


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown joint order"):
        C.convert_joints(np.zeros((21, 3)), "mediapipe", "coco")
    with pytest.raises(ValueError, match=r"\(\.\.\., 21, C\)"):
        C.convert_joints(np.zeros((20, 3)), "mediapipe", "mano")
    with pytest.raises(ValueError, match="42"):
        C.split_interhand(np.zeros((21, 3)))


def test_split_interhand():
    a = np.arange(42 * 3).reshape(42, 3)
    hands = C.split_interhand(a[None])
    assert hands["right"].shape == (1, 21, 3)
    np.testing.assert_array_equal(hands["left"][0, 20], a[41])
    wrist = C.convert_joints(hands["right"].astype(float), "interhand", "mediapipe")[0, C.WRIST]
    np.testing.assert_array_equal(wrist, a[20])


def test_handedness():
    assert C.anatomical_side("Left", mirrored=True) == "right"
    assert C.anatomical_side("Right", mirrored=True) == "left"
    assert C.anatomical_side(" right ", mirrored=False) == "right"
    assert C.anatomical_side("L", mirrored=False) == "left"
    # legacy MediaPipe on an unflipped frame; flipping the frame first cancels the mirror
    assert C.anatomical_side("Left", C.MEDIAPIPE_LEGACY_MIRRORED) == "right"
    assert C.anatomical_side("Left", C.MEDIAPIPE_LEGACY_MIRRORED != True) == "left"  # noqa: E712
    assert C.other_side("left") == "right" and C.other_side("Right") == "left"
    with pytest.raises(ValueError, match="handedness"):
        C.anatomical_side("both", mirrored=False)
