"""Motion tokenizer (paper's 1024 bins per axis), low-motion filter, and Hand3D-action samples."""

from __future__ import annotations

import functools

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vipa.conventions import MOTION_BINS, MOTION_RANGE
from vipa.data.motion import (
    LowMotionFilter,
    MotionClippedWarning,
    MotionTokenError,
    MotionTokenizer,
    net_displacement,
    path_length,
)

TOK = MotionTokenizer()
LO = np.array([r[0] for r in MOTION_RANGE])
HI = np.array([r[1] for r in MOTION_RANGE])
HALF_BIN = (HI - LO) / MOTION_BINS / 2


def in_range_points(n_max: int = 20):
    return st.integers(1, n_max).flatmap(
        lambda n: arrays(np.float64, (n, 3), elements=st.floats(0, 1, allow_nan=False)).map(lambda u: LO + u * (HI - LO)))


@given(in_range_points())
@settings(max_examples=200, deadline=None)
def test_round_trip_within_half_a_bin(xyz: np.ndarray) -> None:
    idx, clipped = TOK.encode(xyz, return_clipped=True)
    assert idx.dtype == np.int64 and idx.shape == xyz.shape
    assert idx.min() >= 0 and idx.max() < MOTION_BINS
    assert not clipped.any()
    back = TOK.decode(idx)
    assert back.dtype == np.float32
    assert np.all(np.abs(back - xyz) <= HALF_BIN + 1e-6)
    # Through text and through ids as well.
    assert np.array_equal(TOK.from_text(TOK.to_text(idx)), idx)
    assert np.array_equal(TOK.from_tokens(TOK.to_tokens(idx)), idx)
    assert np.array_equal(TOK.from_ids(TOK.ids(idx)), idx)
    assert np.allclose(TOK.decode_text(TOK.encode_text(xyz)), back)


def test_bins_edges_and_centres() -> None:
    idx = TOK.encode(np.array([LO, HI, (LO + HI) / 2]), return_clipped=True)[0]
    assert idx[0].tolist() == [0, 0, 0]
    assert idx[1].tolist() == [MOTION_BINS - 1] * 3  # the upper edge belongs to the last bin
    assert idx[2].tolist() == [MOTION_BINS // 2] * 3
    assert np.allclose(TOK.decode(np.zeros(3, np.int64)), LO + HALF_BIN)
    assert np.allclose(TOK.bin_width, (HI - LO) / 1024)


def test_clipping_is_reported() -> None:
    xyz = np.array([[0.7, 0.0, 0.5], [0.0, -0.6, 1.2], [0.1, 0.1, 0.1]])
    idx, clipped = TOK.encode(xyz, return_clipped=True)
    assert clipped.tolist() == [[True, False, False], [False, True, True], [False, False, False]]
    assert idx[0, 0] == MOTION_BINS - 1 and idx[1, 1] == 0 and idx[1, 2] == MOTION_BINS - 1
    with pytest.warns(MotionClippedWarning, match="3 of 9"):
        TOK.encode(xyz)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TOK.encode(xyz[2:])  # nothing clipped: no warning


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        TOK.encode([0.0, np.nan, 0.5])
    with pytest.raises(ValueError, match="shape"):
        TOK.encode(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\[0, 1024\)"):
        TOK.decode(np.array([0, 1024, 3]))
    with pytest.raises(ValueError, match="integers"):
        TOK.decode(np.array([0.5, 1.0, 3.0]))
    with pytest.raises(ValueError, match="ranges"):
        MotionTokenizer(ranges=((0, 1), (1, 0), (0, 1)))


def test_vocabulary() -> None:
    toks = TOK.token_strings
    assert len(toks) == TOK.vocab_size == 3 * 1024 and len(set(toks)) == len(toks)
    assert toks[0] == "<mx_0000>" and toks[1023] == "<mx_1023>" and toks[1024] == "<my_0000>"
    assert toks[-1] == "<mz_1023>"
    idx = np.array([[3, 500, 1023]])
    ids = TOK.ids(idx)
    assert [toks[i] for i in ids[0]] == TOK.to_tokens(idx) == ["<mx_0003>", "<my_0500>", "<mz_1023>"]


def test_malformed_token_sequences() -> None:
    with pytest.raises(MotionTokenError, match="y token was expected"):
        TOK.from_tokens(["<mx_0001>", "<mz_0002>", "<my_0003>"])
    with pytest.raises(MotionTokenError, match="incomplete"):
        TOK.from_text("<mx_0001><my_0002><mz_0003><mx_0004>")
    with pytest.raises(MotionTokenError, match="not a motion token"):
        TOK.from_tokens(["<mx_1024>", "<my_0002>", "<mz_0003>"])
    with pytest.raises(MotionTokenError, match="non-motion-token"):
        TOK.from_text("move <mx_0001><my_0002><mz_0003>")
    with pytest.raises(MotionTokenError, match="order"):
        TOK.from_ids(np.array([[1024, 0, 2048]]))
    # Lenient reading keeps the well-formed prefix of a model's output.
    text = "sure: <mx_0001><my_0002><mz_0003> <mx_0004><my_0005><mz_0006><mx_0007>"
    assert TOK.from_text(text, strict=False).tolist() == [[1, 2, 3], [4, 5, 6]]
    assert TOK.from_text("<mx_0001><mz_0002>", strict=False).shape == (0, 3)


def test_low_motion_filter() -> None:
    f = LowMotionFilter()
    still = np.tile([0.0, 0.0, 0.5], (10, 1))
    assert f.is_low_motion(still) and not f(still)
    reach = np.linspace([0.0, 0.0, 0.5], [0.1, -0.05, 0.4], 10)
    assert path_length(reach) == pytest.approx(net_displacement(reach)) == pytest.approx(0.15)
    assert f(reach)
    # Jitter in place: long path, no net displacement.
    rng = np.random.default_rng(0)
    jitter = still + rng.normal(0, 0.01, still.shape)
    jitter[-1] = jitter[0]
    assert path_length(jitter) > f.min_path_length and f.is_low_motion(jitter)
    # Slow creep: 4 cm straight, under the path threshold.
    creep = np.linspace([0.0, 0.0, 0.5], [0.04, 0.0, 0.5], 5)
    assert f.is_low_motion(creep)
    assert LowMotionFilter(min_path_length=0.03)(creep)
    with pytest.raises(ValueError, match="non-finite"):
        path_length(np.array([[0, 0, 0], [np.nan, 0, 0]]))


# ============================================================================ motion samples
# The hand-made episode of test_qa (world-frame truth, panning camera); every waypoint and
# answer is recomputed from the world-frame truth here.

from annotators.motion import MOTION_TASKS, stride_frames  # noqa: E402
from annotators.motion import motion_samples as _motion_samples  # noqa: E402

# These tests check the paper's motion records; the trained kinds' records (vipa.tasks) are tested in test_tasks.py.
motion_samples = functools.partial(_motion_samples, training=False)
from test_qa import (  # noqa: E402
    FPS,
    T_FRAMES,
    hand_ok,
    make_episode,
    make_world,
    want_words,
    world_from_episode,
    world_to_cam,
)
from vipa.conventions import WRIST  # noqa: E402


def check_motion_record(r: dict, world: dict, ep) -> None:
    ref, side = r["frame_of_reference"], world["side"]
    assert r["frames"] == [ref] and ep.frame_valid[ref] and r["hand"] == side
    wf = r["waypoint_frames"]
    assert all(hand_ok(ep, f, side) for f in wf) and wf == sorted(wf) and len(set(wf)) == len(wf)
    assert all(f % r["stride_frames"] == wf[0] % r["stride_frames"] for f in wf)
    truth = np.array([world_to_cam(world, ref, world["joints"][f, WRIST]) for f in wf])
    wp = np.asarray(r["waypoints"])
    assert np.allclose(wp, truth, atol=1e-5)
    # Tokens decode to the (clipped) waypoints within half a bin; clipped coordinates are counted.
    past = np.array([world_to_cam(world, ref, world["joints"][f, WRIST]) for f in r.get("past_frames", [])])
    every = np.concatenate([truth, past.reshape(-1, 3)])
    assert r["clipped"] == int(((every < LO) | (every > HI)).sum())
    assert np.all(np.abs(TOK.decode_text(r["tokens"]) - np.clip(truth, LO, HI)) <= HALF_BIN + 1e-5)
    assert not LowMotionFilter().is_low_motion(truth) or r["type"] == "contextual_prediction"
    if r["type"] == "instruction_to_motion":
        assert r["answer"] == r["tokens"]
        assert world["instruction"].lower().rstrip(".") in r["question"].lower()
        assert wf[0] == ref and len(wf) <= 16
    elif r["type"] == "motion_to_text":
        assert r["tokens"] in r["question"]
        assert r["answer"] == want_words(truth[-1] - truth[0])
    elif r["type"] == "contextual_prediction":
        assert r["answer"] == r["tokens"] and r["past_tokens"] in r["question"]
        pf = r["past_frames"]
        assert pf[-1] == ref and all(f < ref for f in pf[:-1]) and all(f > ref for f in wf)
        step = r["stride_frames"]
        assert step == stride_frames(ep.fps, 0.2)
        assert all(ref - f <= 4 * step for f in pf) and all(f - ref <= 8 * step for f in wf)
        past_truth = np.array([world_to_cam(world, ref, world["joints"][f, WRIST]) for f in pf])
        assert np.allclose(r["past_waypoints"], past_truth, atol=1e-5)
        assert np.all(np.abs(TOK.decode_text(r["past_tokens"]) - np.clip(past_truth, LO, HI)) <= HALF_BIN + 1e-5)
        assert not LowMotionFilter().is_low_motion(np.concatenate([past_truth[-1:], truth]))
    else:
        raise AssertionError(r["type"])


def test_every_motion_sample_matches_ground_truth() -> None:
    world = make_world()
    ep = make_episode(world)
    recs = motion_samples(ep, seed=0, per_hand_contextual=10)
    assert {r["type"] for r in recs} == set(MOTION_TASKS)
    for r in recs:
        check_motion_record(r, world, ep)
    step = stride_frames(FPS, 0.2)
    # The whole trajectory is the valid frames of the stride grid, resampled to 16 at most.
    grid = [f for f in range(0, T_FRAMES, step) if hand_ok(ep, f)]
    whole = next(r for r in recs if r["type"] == "instruction_to_motion")
    period = whole["stride_frames"]
    assert period % step == 0 and len(whole["waypoint_frames"]) <= 16
    assert whole["waypoint_frames"] == [f for f in grid if (f - grid[0]) % period == 0]
    assert grid[-1] - whole["waypoint_frames"][-1] < period
    if period > step:  # the next shorter period would have given too many waypoints
        assert len([f for f in grid if (f - grid[0]) % (period - step) == 0]) > 16
    # Frames 7 (dropped) and 12-14 (hand absent) never appear.
    for r in recs:
        assert not {7, 12, 13, 14} & set(r["waypoint_frames"] + r.get("past_frames", []))
    import json
    assert json.loads(json.dumps(recs, allow_nan=False)) == recs
    assert motion_samples(ep, seed=0, per_hand_contextual=10) == recs


@pytest.mark.parametrize("stride_s, max_wp", [(0.1, 8), (0.3, 16), (0.5, 4)])
def test_motion_samples_other_strides(stride_s: float, max_wp: int) -> None:
    world = make_world()
    ep = make_episode(world)
    recs = motion_samples(ep, seed=1, stride_s=stride_s, max_waypoints=max_wp, n_future=4, n_past=2)
    assert recs
    step = stride_frames(FPS, stride_s)
    for r in recs:
        assert all(f % step == 0 for f in r["waypoint_frames"])
        if r["type"] != "contextual_prediction":
            assert len(r["waypoints"]) <= max_wp
        truth = np.array([world_to_cam(world, r["frame_of_reference"], world["joints"][f, WRIST])
                          for f in r["waypoint_frames"]])
        assert np.allclose(r["waypoints"], truth, atol=1e-5)


def test_low_motion_episodes_give_no_samples() -> None:
    ep = make_episode(make_world(still_hand=True))
    assert motion_samples(ep, seed=0) == []
    # With the filter off the same episode gives samples.
    recs = motion_samples(ep, seed=0, low_motion=LowMotionFilter(0.0, 0.0))
    assert recs and {r["type"] for r in recs} == set(MOTION_TASKS)


def test_clipped_waypoints_are_counted_or_dropped() -> None:
    world = make_world()
    world["joints"] = world["joints"] + np.array([0.0, -0.5, 0.0])  # wrist above y = -0.5 m late on
    ep = make_episode(world)
    recs = motion_samples(ep, seed=0, per_hand_contextual=10)
    clipped = [r for r in recs if r["clipped"]]
    assert clipped
    for r in clipped:
        wp = np.asarray(r["waypoints"] + r.get("past_waypoints", []))
        outside = ((wp < LO) | (wp > HI)).sum()
        assert r["clipped"] == outside > 0
    kept = motion_samples(ep, seed=0, per_hand_contextual=10, drop_clipped=True)
    assert kept and all(r["clipped"] == 0 for r in kept)


def test_bad_motion_config() -> None:
    ep = make_episode(make_world())
    with pytest.raises(ValueError, match="unknown task"):
        motion_samples(ep, tasks=("dance",))
    with pytest.raises(ValueError, match="stride_s"):
        motion_samples(ep, stride_s=0)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_motion_samples_from_synthetic_ground_truth(seed: int) -> None:
    synthetic = pytest.importorskip("annotators.synthetic")
    ep = synthetic.generate_episode(seed, width=64, height=64, num_frames=40)
    world = world_from_episode(ep)
    recs = motion_samples(ep, seed=seed, per_hand_contextual=6)
    assert recs
    for r in recs:
        check_motion_record(r, world, ep)


def test_custom_templates_change_prompts_not_targets() -> None:
    from annotators.language import TemplateError

    ep = make_episode(make_world())
    custom = {"instruction_to_motion": ["Do: {instruction}"], "motion_to_text": ["Say {tokens}"],
              "motion_to_text_answer": ["It went {motion}"], "contextual_prediction": ["Next after {past_tokens}"]}
    a, b = motion_samples(ep, seed=2), motion_samples(ep, seed=2, templates=custom)
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]
    assert [r["waypoint_frames"] for r in a] == [r["waypoint_frames"] for r in b]
    assert all(r["answer"].startswith("It went ") for r in b if r["type"] == "motion_to_text")
    with pytest.raises(TemplateError, match="unknown placeholder"):
        motion_samples(ep, templates={**custom, "motion_to_text": ["Say {object}"]})
