"""Hand3D-visual answer codec, Hand3D-test metrics, and QA generated from known 3D ground truth."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vipa.data.qa import (
    DEFAULT_GAMMA,
    AnswerParseError,
    direction_score,
    direction_signs,
    distance_error,
    encode_camera_motion,
    encode_direction_distance,
    encode_relation,
    parse_camera_motion,
    parse_direction_distance,
    parse_relation,
    score_by_type,
    score_predictions,
)

coord = st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False)
vec3 = st.tuples(coord, coord, coord).map(np.array)


def expected_signs(v: np.ndarray, gamma: float) -> np.ndarray:
    u = v / np.linalg.norm(v)
    return np.where(np.abs(u) > gamma, np.sign(u), 0).astype(int)


@given(vec3, st.sampled_from([0.0, 0.2, DEFAULT_GAMMA, 0.5]))
@settings(max_examples=300, deadline=None)
def test_direction_distance_round_trip(v: np.ndarray, gamma: float) -> None:
    n = np.linalg.norm(v)
    assume(n > 0.01)
    # Stay away from the gamma boundary, where float rounding decides.
    assume(np.all(np.abs(np.abs(v / n) - gamma) > 1e-6))
    text = encode_direction_distance(v, gamma=gamma)
    signs, dist = parse_direction_distance(text)
    assert signs.tolist() == expected_signs(v, gamma).tolist()
    assert abs(dist - n) <= 0.005 + 1e-9
    assert text.endswith(f", {n:.2f}m")


@given(vec3, st.booleans())
@settings(max_examples=100, deadline=None)
def test_relation_round_trip(v: np.ndarray, contact: bool) -> None:
    assume(np.linalg.norm(v) > 0.01)
    signs, dist, c = parse_relation(encode_relation(v, contact))
    assert signs.tolist() == direction_signs(v).tolist()
    assert c is contact and abs(dist - np.linalg.norm(v)) <= 0.005 + 1e-9


def test_answer_format_matches_the_paper() -> None:
    assert encode_direction_distance([-0.2, 0.2, 0.34]) == "left and down and forward, 0.44m"
    assert encode_direction_distance([0.0, -0.3, 0.0]) == "up, 0.30m"
    assert encode_direction_distance([0.0, 0.0, -1.234]) == "backward, 1.23m"
    assert encode_direction_distance([0.001, 0.0, 0.002]) == "stationary, 0.00m"
    assert parse_direction_distance("stationary, 0.00m")[0].tolist() == [0, 0, 0]


def test_gamma_behaviour() -> None:
    v = np.array([1.0, 0.25, 0.0])  # y component of v/|v| is 0.243
    assert encode_direction_distance(v, gamma=0.3).startswith("right, ")
    assert encode_direction_distance(v, gamma=0.2).startswith("right and down, ")
    assert encode_direction_distance(v, gamma=0.0).startswith("right and down, ")
    # A component exactly at gamma is not named ("exceeds" is strict).
    assert direction_signs([0.6, 0.8, 0.0], gamma=0.6).tolist() == [0, 1, 0]
    # A gamma no unit vector exceeds on any axis still names the dominant axis.
    assert direction_signs([1.0, 1.1, 1.0], gamma=0.9).tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="gamma"):
        encode_direction_distance([1, 0, 0], gamma=1.0)
    with pytest.raises(ValueError, match="finite"):
        encode_direction_distance([np.nan, 0, 0])


@pytest.mark.parametrize("text, signs, dist", [
    ("left and down and forward, 0.44m", [-1, 1, 1], 0.44),
    ("  LEFT And DOWN and Forward ,0.44 m ", [-1, 1, 1], 0.44),
    ("The hand should move right, up and backwards, 1.5 meters.", [1, -1, -1], 1.5),
    ("forward,0.1metres", [0, 0, 1], 0.1),
    ("Stationary, 0.00m", [0, 0, 0], 0.0),
])
def test_parse_is_tolerant(text: str, signs: list[int], dist: float) -> None:
    s, d = parse_direction_distance(text)
    assert s.tolist() == signs and d == pytest.approx(dist)


@given(vec3, st.data())
@settings(max_examples=150, deadline=None)
def test_parse_survives_case_and_spacing(v: np.ndarray, data: st.DataObject) -> None:
    assume(np.linalg.norm(v) > 0.01)
    text = encode_relation(v, False)
    mangled = "".join(
        (c.upper() if data.draw(st.booleans()) else c) + (" " * data.draw(st.integers(0, 2)) if c in ", " else "")
        for c in text)
    mangled = data.draw(st.sampled_from(["", "  ", "Answer: "])) + mangled + data.draw(st.sampled_from(["", ".", " \n"]))
    assert [x.tolist() if isinstance(x, np.ndarray) else x for x in parse_relation(mangled)] == \
        [x.tolist() if isinstance(x, np.ndarray) else x for x in parse_relation(text)]
    s1, d1 = parse_direction_distance(mangled)
    assert s1.tolist() == direction_signs(v).tolist() and d1 == pytest.approx(float(text.split(", ")[-2][:-1]))


@pytest.mark.parametrize("text, match", [
    ("I am not sure", "no '<direction words>, <distance>m'"),
    ("left and down", "no '<direction words>"),
    ("left, 0.44mm", "no '<direction words>"),
    ("left and right, 0.2m", "contradictory"),
    ("", "no '<direction words>"),
])
def test_parse_errors_are_clear(text: str, match: str) -> None:
    with pytest.raises(AnswerParseError, match=match):
        parse_direction_distance(text)


@given(vec3, st.floats(-400, 400, allow_nan=False), vec3)
@settings(max_examples=150, deadline=None)
def test_camera_round_trip(axis: np.ndarray, angle: float, t: np.ndarray) -> None:
    assume(np.linalg.norm(axis) > 1e-3 and np.linalg.norm(t) > 0.01)
    ans = parse_camera_motion(encode_camera_motion(axis, angle, t))
    folded = angle % 360.0
    want_axis = axis if folded <= 180 else -axis
    want_angle = folded if folded <= 180 else 360 - folded
    assert ans.angle_deg == pytest.approx(want_angle if want_angle >= 0.5 else 0.0, abs=0.05 + 1e-9)
    if want_angle >= 0.5:
        assume(np.all(np.abs(np.abs(want_axis / np.linalg.norm(want_axis)) - DEFAULT_GAMMA) > 1e-6))
        # the axis is a direction: its length (here possibly below the still distance) must not matter
        unit = want_axis / np.linalg.norm(want_axis)
        assert ans.rotation_signs.tolist() == direction_signs(unit, still_distance=0.0).tolist()
    else:
        assert ans.rotation_signs.tolist() == [0, 0, 0]
    assert ans.translation_signs.tolist() == direction_signs(t).tolist()
    assert ans.distance == pytest.approx(np.linalg.norm(t), abs=0.005 + 1e-9)


def test_camera_answer_format() -> None:
    text = encode_camera_motion([0, 1, 0], 12.34, [-0.1, 0, 0.1])
    assert text == "rotation: down, 12.3 degrees; translation: left and forward, 0.14m"
    assert encode_camera_motion([0, 1, 0], 0.1, [0, 0, 0]) == \
        "rotation: none, 0.0 degrees; translation: stationary, 0.00m"
    with pytest.raises(AnswerParseError, match="rotation"):
        parse_camera_motion("left, 0.1m")


def test_direction_score_and_distance_error() -> None:
    assert direction_score([-1, 1, 1], [-1, 1, 1]) == 3
    assert direction_score([-1, 0, 1], [-1, 1, 1]) == 2
    assert direction_score([1, -1, -1], [-1, 1, 1]) == 0
    assert direction_score([0, 0, 0], [0, 0, 1]) == 2
    assert distance_error("left, 0.30m", "left and up, 0.44m") == pytest.approx(0.14)
    with pytest.raises(AnswerParseError):
        distance_error("no idea", "left, 0.3m")


def test_score_predictions() -> None:
    gts = ["left and down, 0.40m", "right, 0.10m", "forward, 0.20m",
           "up and forward, 0.30m, in contact",
           "rotation: down, 10.0 degrees; translation: left, 0.10m"]
    preds = ["left and down, 0.30m", "dunno", "forward and up, 0.25m",
             "up and forward, 0.30m, not in contact",
             "rotation: down, 14.0 degrees; translation: left and up, 0.12m"]
    s = score_predictions(preds, gts)
    assert s.n == 5 and s.parse_failures == 1
    assert s.mean_distance_error == pytest.approx(np.mean([0.10, 0.05, 0.0, 0.02]))
    assert s.mean_direction_score == pytest.approx((3 + 0 + 2 + 3 + 2) / 5)
    assert s.mean_angle_error_deg == pytest.approx(4.0)
    assert s.contact_accuracy == 0.0
    assert set(s.as_dict()) >= {"mean_distance_error", "mean_direction_score", "parse_failures"}
    with pytest.raises(ValueError, match="length"):
        score_predictions(preds[:2], gts)
    by = score_by_type(preds, gts, ["move", "move", "task", "spatial", "camera"])
    assert set(by) == {"all", "move", "task", "spatial", "camera"} and by["all"] == s
    assert by["move"].n == 2 and by["move"].parse_failures == 1 and by["move"].mean_direction_score == 1.5
    assert by["camera"].mean_angle_error_deg == pytest.approx(4.0)
    with pytest.raises(AnswerParseError):
        score_predictions(["left, 0.1m"], ["not an answer"])


# ============================================================================ generated QA
# A hand-made episode with known world-frame ground truth: the camera pans about its y axis and
# slides right; the right hand reaches a box, grasps it (index tip inside it) and lifts it.
# Everything the generator reads is derived here with plain numpy, and the checks below
# recompute every answer from the world-frame truth, not from the generator's helpers.

from annotators.language import (  # noqa: E402
    TemplateError,
    load_templates,
    resolve_instruction,
    template_instruction,
)
from annotators.qa import QA_TYPES  # noqa: E402
from annotators.qa import generate_qa as _generate_qa  # noqa: E402

# These tests check the paper's QA records; the trained kinds' records (vipa.tasks) are tested in test_tasks.py.
generate_qa = functools.partial(_generate_qa, training=False)
from vipa.conventions import FINGERTIPS, INDEX_MCP, INDEX_TIP, MIDDLE_MCP, PINKY_MCP, WRIST  # noqa: E402
from vipa.data.episode import Episode, HandTrack, ObjectTrack  # noqa: E402

T_FRAMES, FPS = 60, 10.0
OBJ_SIZE = np.array([0.08, 0.10, 0.08])
GRASP_AT = 25


def rot_y(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def make_world(moving_camera: bool = True, still_hand: bool = False) -> dict:
    """World-frame truth: camera poses (T,4,4), hand joints (T,21,3), object centres (T,3)."""
    rng = np.random.default_rng(7)
    offsets = rng.uniform(-0.03, 0.03, (21, 3))
    offsets[WRIST] = 0.0
    offsets[list(FINGERTIPS)] += [0.0, 0.0, 0.09]
    poses = np.tile(np.eye(4), (T_FRAMES, 1, 1))
    if moving_camera:
        for t in range(T_FRAMES):
            poses[t, :3, :3] = rot_y(0.01 * t)
            poses[t, :3, 3] = [0.004 * t, -0.001 * t, 0.0]
    obj0 = np.array([0.10, 0.10, 0.65])
    w_grasp = obj0 - offsets[INDEX_TIP]  # index tip at the box centre
    w_start = np.array([-0.15, 0.02, 0.40])
    wrist = np.empty((T_FRAMES, 3))
    for t in range(T_FRAMES):
        if still_hand:
            wrist[t] = w_start + 0.001 * np.sin(t)
        elif t <= GRASP_AT:
            wrist[t] = w_start + (w_grasp - w_start) * t / GRASP_AT
        else:
            wrist[t] = w_grasp + np.array([0.0, -0.006, -0.002]) * (t - GRASP_AT)
    joints = wrist[:, None, :] + offsets[None]
    obj = np.tile(obj0, (T_FRAMES, 1))
    if not still_hand:
        obj[GRASP_AT:] = obj0 + (wrist[GRASP_AT:] - w_grasp)
    return {"poses": poses, "joints": joints, "objs": obj[:, None, :], "sizes": OBJ_SIZE[None],
            "names": ["red box"], "instruction": "Lift the red box.", "side": "right"}


def world_from_episode(ep: Episode) -> dict:
    """World-frame truth of an episode whose stored 3D values are exact (synthetic)."""
    side = next(s for s, h in ep.hands.items() if h.present.any())
    poses = ep.camera_pose.astype(np.float64)
    R, t = poses[:, :3, :3], poses[:, :3, 3]
    joints = np.einsum("tij,tnj->tni", R, ep.hands[side].joints_3d.astype(np.float64)) + t[:, None]
    centers = np.stack([o.center for o in ep.objects], 1).astype(np.float64)
    objs = np.einsum("tij,tnj->tni", R, centers) + t[:, None]
    return {"poses": poses, "joints": joints, "objs": objs, "sizes": np.stack([o.size for o in ep.objects]),
            "names": [o.name for o in ep.objects], "instruction": ep.instruction, "side": side}


def to_cam(poses: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """World points (T, ..., 3) into each frame's camera frame."""
    R, t = poses[:, :3, :3], poses[:, :3, 3]
    shape = pts.shape
    p = pts.reshape(shape[0], -1, 3) - t[:, None, :]
    return np.einsum("tji,tnj->tni", R, p).reshape(shape)  # R^T (p - t)


def make_episode(world: dict, episode_id: str = "ep0") -> Episode:
    K = np.array([[300, 0, 112], [0, 300, 112], [0, 0, 1]], np.float32)
    cam_joints = to_cam(world["poses"], world["joints"]).astype(np.float32)
    right = HandTrack.empty("right", T_FRAMES)
    right.joints_3d[:] = cam_joints
    right.joints_2d[:] = 0.0
    right.present[:] = True
    right.valid[:] = True
    right.confidence[:] = 1.0
    right.present[12:15] = False  # hand out of view
    right.joints_3d[12:15] = np.nan
    right.valid[12:15] = False
    right.valid[30, PINKY_MCP] = False  # palm centre unknown: wrist anchor
    right.joints_3d[30, PINKY_MCP] = np.nan
    right.valid[40, list(FINGERTIPS)] = False  # contact unknown in this frame
    right.joints_3d[40, list(FINGERTIPS)] = np.nan
    right.valid[HIDDEN_FRAMES] = False  # hidden from view but estimated (finite)
    frame_valid = np.ones(T_FRAMES, bool)
    frame_valid[7] = False
    obj = ObjectTrack("o1", "red box", to_cam(world["poses"], world["objs"][:, 0]).astype(np.float32),
                      OBJ_SIZE.astype(np.float32), np.zeros((T_FRAMES, 4), np.float32))
    return Episode(episode_id=episode_id, fps=FPS, width=224, height=224, K=K, hands={"right": right},
                   num_frames=T_FRAMES, instruction="Lift the red box.", objects=[obj],
                   camera_pose=world["poses"].astype(np.float32), frame_valid=frame_valid).validate()


def want_words(v: np.ndarray, gamma: float = DEFAULT_GAMMA) -> str:
    """Direction + distance recomputed independently of vipa.data.qa."""
    n = np.linalg.norm(v)
    if n < 0.005:
        return f"stationary, {n:.2f}m"
    u = v / n
    names = [("right", "left"), ("down", "up"), ("forward", "backward")]
    words = [names[i][0 if u[i] > 0 else 1] for i in range(3) if abs(u[i]) > gamma]
    assert words, "test episode has no axis above gamma"
    return f"{' and '.join(words)}, {n:.2f}m"


def world_to_cam(world: dict, t: int, p: np.ndarray) -> np.ndarray:
    P = world["poses"][t]
    return P[:3, :3].T @ (p - P[:3, 3])


HIDDEN_FRAMES = [44, 45, 46]


def known(ep: Episode, side: str, t: int, joints, visible: bool = False) -> bool:
    """Frame valid, hand present, the joints' 3D finite (and flagged visible when asked)."""
    h = ep.hands[side]
    ok = ep.frame_valid[t] and h.present[t] and np.isfinite(h.joints_3d[t, joints]).all()
    return bool(ok and (h.valid[t, joints].all() if visible else True))


def hand_ok(ep: Episode, t: int, side: str = "right", visible: bool = False) -> bool:
    return known(ep, side, t, [WRIST], visible)


def truth_contact(world: dict, ep: Episode, t: int, k: int | None = None, visible: bool = False) -> float:
    """Fingertip-to-box distance for object k (all objects when None) in frame t."""
    tips = [j for j in FINGERTIPS if known(ep, world["side"], t, [j], visible)]
    if not tips:
        return np.inf
    tips_cam = np.array([world_to_cam(world, t, world["joints"][t, j]) for j in tips])
    best = np.inf
    for i in range(len(world["names"])) if k is None else [k]:
        c = world_to_cam(world, t, world["objs"][t, i])
        d = np.maximum(np.abs(tips_cam - c) - world["sizes"][i] / 2, 0)
        best = min(best, float(np.linalg.norm(d, axis=1).min()))
    return best


def want_camera(world: dict, a: int, b: int) -> str:
    """Camera Movement answer recomputed from the two world poses."""
    Pa, Pb = world["poses"][a], world["poses"][b]
    R = Pa[:3, :3].T @ Pb[:3, :3]
    t_ab = Pa[:3, :3].T @ (Pb[:3, 3] - Pa[:3, 3])
    angle = np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))
    if angle < 0.5:
        return f"rotation: none, 0.0 degrees; translation: {want_words(t_ab)}"
    axis = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    axis_words = want_words(axis / np.linalg.norm(axis)).split(",")[0]
    return f"rotation: {axis_words}, {angle:.1f} degrees; translation: {want_words(t_ab)}"


def check_qa_record(r: dict, world: dict, ep: Episode, visible: bool = False) -> None:
    """Recompute one record's answer from the world-frame truth (``visible``: the generator was
    asked to use only joints flagged visible)."""
    assert all(ep.frame_valid[f] for f in r["frames"]), r
    assert r["frames"] == sorted(r["frames"]) and len(set(r["frames"])) == len(r["frames"])
    j, side = world["joints"], world["side"]
    if r["type"] != "camera_movement":
        assert r["hand"] == side
    if r["type"] == "spatial_relationship":
        t = r["frames"][-1]
        assert 1 <= len(r["frames"]) <= 4 and hand_ok(ep, t, side, visible)
        k = [o.object_id for o in ep.objects].index(r["target"]["object_id"])
        palm_ids = [WRIST, INDEX_MCP, MIDDLE_MCP, PINKY_MCP]
        if known(ep, side, t, palm_ids, visible):
            hand_w, anchor = j[t, palm_ids].mean(0), "palm_centre"
        else:
            hand_w, anchor = j[t, WRIST], "wrist"
        v = world_to_cam(world, t, world["objs"][t, k]) - world_to_cam(world, t, hand_w)
        contact = truth_contact(world, ep, t, k, visible) <= 0.02
        assert r["target"]["anchor"] == anchor
        assert r["answer"] == want_words(v) + (", in contact" if contact else ", not in contact")
        assert world["names"][k] in r["question"]
    elif r["type"] == "task_completion":
        (t,) = r["frames"]
        assert hand_ok(ep, t, side, visible)
        valid = [f for f in range(ep.num_frames) if hand_ok(ep, f, side, visible)]
        contact = {f: truth_contact(world, ep, f, None, visible) <= 0.02 for f in valid}
        onsets = [f for f in valid if contact[f] and not contact.get(f - 1, False)]
        later = [f for f in onsets if f > t]
        g = later[0] if later else valid[-1]
        assert r["target"]["goal_frame"] == g
        assert r["target"]["goal"] == ("grasp" if later else "end")
        v = world_to_cam(world, t, j[g, WRIST]) - world_to_cam(world, t, j[t, WRIST])
        assert r["answer"] == want_words(v)
        assert world["instruction"].lower().rstrip(".") in r["question"].lower()
    elif r["type"] == "hand_movement":
        a, b = r["frames"]
        assert hand_ok(ep, a, side, visible) and hand_ok(ep, b, side, visible) and a < b
        v = world_to_cam(world, a, j[b, WRIST]) - world_to_cam(world, a, j[a, WRIST])
        assert r["answer"] == want_words(v)
    elif r["type"] == "camera_movement":
        a, b = r["frames"]
        assert r["answer"] == want_camera(world, a, b)
    else:
        raise AssertionError(f"unknown type {r['type']}")
    for key in ("id", "episode_id", "question", "answer", "target", "frames"):
        assert key in r
    assert abs(np.linalg.norm(r["target"]["vector"]) - r["target"]["distance"]) < 1e-6


def test_every_generated_answer_matches_ground_truth() -> None:
    world = make_world()
    ep = make_episode(world)
    recs = generate_qa(ep, seed=3, per_type=12)
    types = {r["type"] for r in recs}
    assert types == set(QA_TYPES)
    for r in recs:
        check_qa_record(r, world, ep)
    spatial = [r for r in recs if r["type"] == "spatial_relationship"]
    assert {r["target"]["in_contact"] for r in spatial} == {True, False}
    assert {r["target"]["goal"] for r in recs if r["type"] == "task_completion"} <= {"grasp", "end"}
    assert not any(40 == r["frames"][-1] for r in spatial)  # fingertips invalid there
    assert len({r["id"] for r in recs}) == len(recs)
    # The records are plain JSON.
    import json
    assert json.loads(json.dumps(recs, allow_nan=False)) == recs


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_generated_answers_over_seeds_and_goal_modes(seed: int) -> None:
    world = make_world()
    ep = make_episode(world, f"ep{seed}")
    for goal in ("auto", "end"):
        recs = generate_qa(ep, seed=seed, per_type=6, task_goal=goal, max_context_frames=4)
        for r in recs:
            if r["type"] == "task_completion" and goal == "end":
                valid = [f for f in range(T_FRAMES) if hand_ok(ep, f)]
                assert r["target"]["goal_frame"] == valid[-1]
                v = world_to_cam(world, r["frames"][0], world["joints"][valid[-1], WRIST]) \
                    - world_to_cam(world, r["frames"][0], world["joints"][r["frames"][0], WRIST])
                assert r["answer"] == want_words(v)
            elif not (r["type"] == "task_completion"):
                check_qa_record(r, world, ep)
    grasp = [r for r in generate_qa(ep, seed=seed, per_type=30, types=("task_completion",))
             if r["target"]["goal"] == "grasp"]
    assert grasp and all(r["frames"][0] < r["target"]["goal_frame"] for r in grasp)
    for r in grasp:
        check_qa_record(r, world, ep)


def test_generation_is_deterministic_and_seeded() -> None:
    ep = make_episode(make_world())
    a, b = generate_qa(ep, seed=11), generate_qa(ep, seed=11)
    assert a == b
    assert generate_qa(ep, seed=12) != a


def test_static_camera_and_invalid_frames() -> None:
    world = make_world(moving_camera=False)
    ep = make_episode(world)
    recs = generate_qa(ep, seed=0, per_type=8)
    assert not [r for r in recs if r["type"] == "camera_movement"]
    for r in recs:
        check_qa_record(r, world, ep)
    static = generate_qa(ep, seed=0, per_type=3, types=("camera_movement",), include_static_camera=True)
    assert len(static) == 3
    assert all(r["answer"] == "rotation: none, 0.0 degrees; translation: stationary, 0.00m" for r in static)
    # No frame where the hand is absent or the frame is dropped is ever used.
    for r in recs:
        assert 7 not in r["frames"]
        if r["hand"] is not None:
            assert not set(r["frames"]) & {12, 13, 14} or r["type"] == "spatial_relationship"
            if r["type"] == "spatial_relationship":
                assert r["frames"][-1] not in (12, 13, 14)


def test_episode_without_hands_or_objects() -> None:
    world = make_world()
    ep = make_episode(world)
    ep.hands["right"] = HandTrack.empty("right", T_FRAMES)
    recs = generate_qa(ep, seed=0)
    assert {r["type"] for r in recs} == {"camera_movement"}
    ep2 = make_episode(world)
    ep2.objects = []
    recs2 = generate_qa(ep2, seed=0)
    assert "spatial_relationship" not in {r["type"] for r in recs2}
    assert {r["target"]["goal"] for r in recs2 if r["type"] == "task_completion"} == {"end"}


def test_bad_config_is_rejected() -> None:
    ep = make_episode(make_world())
    with pytest.raises(ValueError, match="unknown QA type"):
        generate_qa(ep, types=("nonsense",))
    with pytest.raises(ValueError, match="task_goal"):
        generate_qa(ep, task_goal="later")
    with pytest.raises(TypeError):
        generate_qa(ep, not_a_field=1)


# ============================================================================ templates, language

def test_templates_are_data_and_checked(tmp_path) -> None:
    from annotators.qa import qa_templates
    t = qa_templates()
    assert set(QA_TYPES) <= set(t) and all(t[k] for k in QA_TYPES)
    bad = tmp_path / "qa.json"
    bad.write_text('{"spatial_relationship": ["Where is {thing}?"]}')
    with pytest.raises(TemplateError, match="unknown placeholder"):
        load_templates(bad, {"spatial_relationship": {"object", "hand"}})
    with pytest.raises(TemplateError, match="missing template list 'task_completion'"):
        load_templates(bad, {"task_completion": {"hand"}})
    bad.write_text("{not json")
    with pytest.raises(TemplateError, match="not valid JSON"):
        load_templates(bad)
    # Custom templates change the questions, never the answers.
    ep = make_episode(make_world())
    custom = {k: [f"Q {k} {{hand}}?"] for k in QA_TYPES}
    a, b = generate_qa(ep, seed=1), generate_qa(ep, seed=1, templates=custom)
    assert [r["answer"] for r in a] == [r["answer"] for r in b]
    assert all(r["question"].startswith("Q ") for r in b)


def test_instruction_sources(tmp_path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    assert resolve_instruction(video, user="  Open the drawer. ").text == "Open the drawer"
    (tmp_path / "instructions.json").write_text('{"clip": "pour the water"}')
    got = resolve_instruction(video)
    assert (got.text, got.source) == ("pour the water", "sidecar-json")
    (tmp_path / "clip.txt").write_text("\n  Stack the cups.\nsecond line\n")
    got = resolve_instruction(video)
    assert (got.text, got.source) == ("Stack the cups", "sidecar-txt")
    other = tmp_path / "other.mp4"
    got = resolve_instruction(other, object_names=["mug"], seed=3)
    assert got.source == "template" and "mug" in got.text
    assert template_instruction(["mug"], seed=3) == got.text
    assert resolve_instruction(other, mapping={"other.mp4": "wipe the table"}).text == "wipe the table"
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "instruction.txt").write_text("open the lid")
    assert resolve_instruction(frames).text == "open the lid"
    (tmp_path / "broken.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="broken.json.*not valid JSON"):
        resolve_instruction(other, mapping=tmp_path / "broken.json")
    assert resolve_instruction(None).source == "template"


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_answers_from_synthetic_ground_truth(seed: int) -> None:
    """Episodes of the synthetic generator (exact 3D truth, moving cameras in some): every
    answer recomputed from the world-frame truth."""
    synthetic = pytest.importorskip("annotators.synthetic")
    ep = synthetic.generate_episode(seed, width=64, height=64, num_frames=30)
    world = world_from_episode(ep)
    recs = generate_qa(ep, seed=seed, per_type=8)
    assert {"spatial_relationship", "task_completion", "hand_movement"} <= {r["type"] for r in recs}
    for r in recs:
        check_qa_record(r, world, ep)


def test_hidden_joints_are_used_unless_visibility_is_required() -> None:
    world = make_world()
    ep = make_episode(world)
    recs = generate_qa(ep, seed=4, per_type=40)
    used = {f for r in recs if r["hand"] for f in r["frames"][-1:]}
    assert used & set(HIDDEN_FRAMES)
    strict = generate_qa(ep, seed=4, per_type=40, require_visible=True)
    for r in strict:
        check_qa_record(r, world, ep, visible=True)
        if r["hand"]:
            assert not set(r["frames"]) & set(HIDDEN_FRAMES) or r["type"] == "spatial_relationship"
            if r["type"] == "spatial_relationship":
                assert r["frames"][-1] not in HIDDEN_FRAMES
