"""Lean recordings: the stored video is capped at the source's bytes per frame, so the video in a
clip's .rrd costs about what the source mp4 does (`vipa bench rrd_size`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vipa.data.video import decode_all, encode_h264, source_bytes_per_frame


def _frames(t: int = 60, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (h, w * 2, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 3 * i, axis=1)[:, :w] for i in range(t)])  # a textured pan: costly at crf 18


def test_bitrate_cap_bounds_bytes_per_frame(tmp_path):
    frames = _frames()
    encode_h264(frames, tmp_path / "free.mp4", 30.0)
    free_bpf = (tmp_path / "free.mp4").stat().st_size / len(frames)
    cap = free_bpf / 4
    encode_h264(frames, tmp_path / "capped.mp4", 30.0, max_bytes_per_frame=cap)
    capped_bpf = (tmp_path / "capped.mp4").stat().st_size / len(frames)
    assert capped_bpf <= 1.5 * cap < free_bpf, (free_bpf, cap, capped_bpf)
    back = decode_all(tmp_path / "capped.mp4", len(frames), 96, 128, "capped.mp4")
    assert back.shape == frames.shape  # every frame still there
    with pytest.raises(ValueError, match="max_bytes_per_frame"):
        encode_h264(frames, tmp_path / "bad.mp4", 30.0, max_bytes_per_frame=float("nan"))


def test_source_bytes_per_frame(tmp_path):
    src = tmp_path / "src.mp4"
    src.write_bytes(b"\0" * 1000)
    info = {"kind": "video", "path": str(src), "source_num_frames": 10, "frame_step": 1}
    assert source_bytes_per_frame(info) == 100.0
    assert source_bytes_per_frame(dict(info, frame_step=3)) == 300.0  # each stored frame stands for 3
    assert source_bytes_per_frame(dict(info, kind="images")) is None
    assert source_bytes_per_frame(dict(info, path=str(tmp_path / "gone.mp4"))) is None
    assert source_bytes_per_frame(None) is None


def test_bench_rrd_size_quick(capsys):
    from vipa.cli import main

    assert main(["bench", "rrd_size", "--quick"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["name"] == "rrd_size" and rec["unit"] == "bytes/frame" and rec["quick"] is True
    assert rec["ratio"] == pytest.approx(rec["value"] / rec["baseline"], rel=1e-3)
    assert rec["stored_mp4_bytes_per_frame"] < rec["uncapped_mp4_bytes_per_frame"]
    assert rec["ratio"] < rec["uncapped_ratio"]
    assert rec["passed"] == (rec["ratio"] <= 1.5)
