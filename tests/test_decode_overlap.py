"""Decoding ahead of detection: ``annotators.io.Prefetch`` / ``FrameStream`` and the pipeline's frame loop.

Order, bounded read-ahead, errors of the decode thread surfacing in the caller with their message,
early close stopping the thread (and closing the input), the truncated-container warning still
given, and the pipeline's detections identical with and without the decode thread.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from annotators.errors import InputError
from annotators.io import FrameStream, Prefetch, open_source
from annotators.pipeline import AnnotateConfig, DecodeConfig, decode, detect_hands, open_frames

from tests.test_robust_inputs import _declare_extra_frames, _encode


def _wait_until(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_prefetch_keeps_order_and_reads_ahead_in_another_thread():
    seen_threads = set()

    def gen():
        for i in range(200):
            seen_threads.add(threading.get_ident())
            yield i

    with Prefetch(gen(), depth=4) as p:
        out = list(p)
    assert out == list(range(200))
    assert seen_threads and threading.get_ident() not in seen_threads
    assert p.produced == 200


def test_prefetch_is_bounded():
    state = {"produced": 0, "consumed": 0, "max_ahead": 0}

    def gen():
        for i in range(100):
            state["produced"] += 1
            state["max_ahead"] = max(state["max_ahead"], state["produced"] - state["consumed"])
            yield i

    p = Prefetch(gen(), depth=3)
    # the caller takes nothing: the thread fills the queue (3) and then holds one more item, blocked
    assert _wait_until(lambda: p.buffered == 3)
    time.sleep(0.05)
    assert state["produced"] == 4 and p.alive
    for i, item in enumerate(p):
        assert item == i
        state["consumed"] += 1
    # never more than depth queued + the one in the thread's hand + the one being handed over
    assert state["max_ahead"] <= 3 + 2
    assert not p.alive


class DecodeFailure(RuntimeError):
    pass


def test_error_in_the_thread_surfaces_in_the_caller_with_its_message():
    def gen():
        yield 0
        yield 1
        raise DecodeFailure("frame 2 of clip.mp4: corrupt macroblock")

    p = Prefetch(gen(), depth=2)
    assert next(p) == 0 and next(p) == 1
    with pytest.raises(DecodeFailure, match="frame 2 of clip.mp4: corrupt macroblock") as info:
        next(p)
    # the traceback reaches the generator's raise (debuggable), and the stream is over
    assert any(tb.tb_frame.f_code.co_name == "gen" for tb in _tracebacks(info.value.__traceback__))
    with pytest.raises(StopIteration):
        next(p)
    assert not p.alive


def _tracebacks(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


def test_early_close_stops_the_thread_and_closes_the_input():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    p = Prefetch(endless(), depth=2)
    assert [next(p) for _ in range(5)] == [0, 1, 2, 3, 4]
    p.close()
    assert not p.alive
    assert closed.is_set()  # the generator's finally ran (a video container would be closed)
    with pytest.raises(StopIteration):
        next(p)


def test_frame_stream_keeps_the_frames_seen_for_later_passes(tmp_path):
    clip = _encode(tmp_path / "grey.mp4", 20)
    with open_source(clip) as src:
        direct = [f.rgb for f in src]
    stream = FrameStream(open_source(clip), depth=2)
    firsts = []
    for t, img in enumerate(stream):
        assert len(stream) == t + 1  # len: the frames seen so far
        firsts.append(int(img[0, 0, 0]))
        if t == 9:
            break
    assert len(stream) == 10 and stream.done is False
    # a second pass reads the kept frames again, then goes on decoding
    again = list(stream)
    assert len(again) == 20 and stream.done
    for a, b in zip(again, direct):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(stream[3], direct[3])
    assert [int(x[0, 0, 0]) for x in direct[:10]] == firsts
    assert not stream.prefetch.alive


def test_frame_stream_close_mid_input_keeps_what_was_seen(tmp_path):
    stream = FrameStream(open_source(_encode(tmp_path / "grey.mp4", 40)), depth=2)
    it = iter(stream)
    for _ in range(5):
        next(it)
    stream.close()
    assert not stream.prefetch.alive and len(stream) == 5 and stream[4].shape == (48, 64, 3)


def test_truncated_container_still_warns_or_fails_through_the_thread(tmp_path, capsys):
    plain = _encode(tmp_path / "plain.mp4", 30)
    lying = _declare_extra_frames(plain, tmp_path / "lying.mp4", 2)
    dec = open_frames(lying, DecodeConfig(max_width=None))
    assert dec.info.num_frames == 32  # what the container declares, before reading
    assert len(list(dec.frames)) == 30
    assert dec.rgb.shape[0] == 30 and dec.info.num_frames == 30 and dec.info.extra["declared_frames"] == 32
    assert "declares 32 frames but holds 30" in capsys.readouterr().err
    truncated = _declare_extra_frames(plain, tmp_path / "truncated.mp4", 30)
    dec = open_frames(truncated, DecodeConfig(max_width=None))
    with pytest.raises(InputError, match="truncated video: decoded 30 of the 60"):
        for _ in dec.frames:
            pass
    assert not dec.frames.prefetch.alive


class _CountingBackend:
    """A HandBackend stand-in that reports one 'hand' whose wrist is the frame's mean grey (frame order visible)."""

    def __init__(self):
        self.calls = 0

    def reset(self):
        self.calls = 0

    def detect(self, img):
        from annotators.hands import HandDetection

        self.calls += 1
        v = float(img.mean())
        lm = np.full((21, 2), v, np.float32)
        return [HandDetection("right", lm, np.zeros((21, 3), np.float32), np.ones(21, np.float32), 1.0,
                              np.ones(21, bool))]

    def describe(self):
        return {"name": "counting"}


def test_detection_on_the_stream_equals_detection_on_decoded_arrays(tmp_path):
    clip = _encode(tmp_path / "grey.mp4", 25)
    arrays = decode(clip, DecodeConfig(max_width=None))
    ref = detect_hands(arrays.rgb, _CountingBackend())
    streamed = open_frames(clip, DecodeConfig(max_width=None))
    obs = detect_hands(streamed.frames, _CountingBackend())
    for side in ("left", "right"):
        np.testing.assert_array_equal(obs.present[side], ref.present[side])
        np.testing.assert_array_equal(obs.joints_2d[side], ref.joints_2d[side])
    assert obs.present["right"].all() and len(np.unique(obs.joints_2d["right"][:, 0, 0])) > 5
    np.testing.assert_array_equal(streamed.rgb, arrays.rgb)
    np.testing.assert_allclose(streamed.timestamps, arrays.timestamps)


def test_pipeline_stops_the_decode_thread_when_detection_fails(tmp_path):
    from annotators.pipeline import run_pipeline

    class Broken(_CountingBackend):
        def detect(self, img):
            if self.calls == 3:
                raise RuntimeError("detector crashed on frame 3")
            return super().detect(img)

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeError, match="detector crashed on frame 3"):
        run_pipeline(_encode(tmp_path / "grey.mp4", 60), AnnotateConfig(decode={"max_width": None}),
                     hand_backend=Broken())
    assert _wait_until(lambda: not ({t.name for t in threading.enumerate()} - before))
