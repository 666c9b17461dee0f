"""Motion tokenizer (paper's 1024 bins per axis), low-motion filter, and Hand3D-action samples."""

from __future__ import annotations

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
