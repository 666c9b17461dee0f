"""Hand3D-visual answer codec, Hand3D-test metrics, and QA generated from known 3D ground truth."""

from __future__ import annotations

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
        assert ans.rotation_signs.tolist() == direction_signs(want_axis).tolist()
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
    with pytest.raises(AnswerParseError):
        score_predictions(["left, 0.1m"], ["not an answer"])
