"""Batch annotation and `vipa annotate`: bad inputs, resumability, interrupts, workers, Ray.

Every bad file is made here. The good input is the bundled sample video cut to a few frames.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from annotators import cli
from annotators.batch import OutputError, annotate_to_dataset, check_output, plan_episodes
from annotators.pipeline import AnnotateConfig
from vipa.data.dataset import Hand3DDataset
from vipa.resources import SAMPLE_VIDEO

FAST = {"decode": {"max_frames": 4, "max_width": 320}}


def _encode(path: Path, frames: np.ndarray, fps: int = 10) -> Path:
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=fps)
        st.height, st.width = frames.shape[1:3]
        st.pix_fmt = "yuv420p"
        for f in frames:
            for pk in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
        for pk in st.encode():
            c.mux(pk)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    good = d / "good.mp4"
    shutil.copy(SAMPLE_VIDEO, good)
    data = SAMPLE_VIDEO.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "not_a_video.mp4").write_text("this is a text file, not a video\n" * 20)
    (d / "zero_length.mp4").write_bytes(b"")
    _encode(d / "no_hands.mp4", np.tile(np.array([40, 120, 200], np.uint8), (8, 48, 64, 1)))
    rgbd = d / "size_mismatch"
    (rgbd / "rgb").mkdir(parents=True)
    (rgbd / "depth").mkdir()
    for t in range(2):
        cv2.imwrite(str(rgbd / "rgb" / f"{t / 30:.6f}.png"), np.full((48, 64, 3), 128, np.uint8))
        cv2.imwrite(str(rgbd / "depth" / f"{t / 30:.6f}.png"), np.full((24, 32), 1000, np.uint16))
    return {p.stem if p.is_file() else p.name: p for p in d.iterdir()}


BAD = {
    "truncated": "truncated",
    "not_a_video": "not a",
    "zero_length": "zero-length",
    "no_hands": "no hands",
    "size_mismatch": "depth",
}


def test_cli_bad_inputs_are_recorded_and_good_episode_survives(tmp_path, inputs, capsys):
    out = tmp_path / "ds"
    parser, _ = _parser()
    # the good episode first, alone
    rc = _run(parser, [str(inputs["good"]), "--out", str(out), "--max-frames", "4", "--max-width", "320", "--quiet"])
    assert rc == 0
    ds = Hand3DDataset.open(out)
    assert ds.episode_ids() == ["good"]
    before = ds.load_episode("good")
    # then every bad input (and the good one again: skipped)
    args = [str(inputs[k]) for k in ["good", *BAD]] + ["--out", str(out), "--max-frames", "4", "--max-width", "320",
                                                        "--quiet", "--report", str(tmp_path / "report.json")]
    rc = _run(parser, args)
    err = capsys.readouterr().err
    assert rc == 1
    ds = Hand3DDataset.open(out)
    assert ds.episode_ids() == ["good"]
    for name, words in BAD.items():
        assert ds.status(name) == "failed", name
        msg = ds.error(name)
        assert words in msg.lower(), (name, msg)
        assert str(inputs[name]) in msg or name in msg, (name, msg)
        assert f"failed: {inputs[name]}" in err
    after = ds.load_episode("good")
    assert np.array_equal(after.hands["right"].joints_3d, before.hands["right"].joints_3d, equal_nan=True)
    assert ds.rgb_frame("good", 0).shape == (180, 320, 3)
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["counts"] == {"skipped": 1, "failed": len(BAD)}


def test_unwritable_output_is_a_clear_error_up_front(tmp_path, inputs, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    parser, _ = _parser()
    rc = _run(parser, [str(inputs["good"]), "--out", str(blocker / "ds"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "output folder" in err and str(blocker / "ds") in err
    with pytest.raises(OutputError, match="not empty"):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("mine")
        check_output(tmp_path / "busy")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(OutputError):
                check_output(ro / "ds")
        finally:
            ro.chmod(0o700)


def test_resume_skips_finished_and_retries_failed(tmp_path, inputs):
    out = tmp_path / "ds"
    cfg = AnnotateConfig(**FAST)
    seen = []
    r1 = annotate_to_dataset([inputs["good"], inputs["zero_length"]], out, cfg,
                             progress=lambda o, done, total: seen.append((o.episode_id, o.status, done, total)))
    assert [(o.episode_id, o.status) for o in r1.outcomes] == [("good", "ok"), ("zero_length", "failed")]
    assert seen[-1][2:] == (2, 2)
    written = (out / "episodes" / "good" / "episode.json").stat().st_mtime_ns
    r2 = annotate_to_dataset([inputs["good"], inputs["zero_length"]], out, cfg)
    assert [(o.episode_id, o.status) for o in r2.outcomes] == [("good", "skipped"), ("zero_length", "failed")]
    assert (out / "episodes" / "good" / "episode.json").stat().st_mtime_ns == written
    assert "1 skipped" in r2.summary() and "1 failed" in r2.summary()


def test_interrupt_leaves_a_readable_dataset(tmp_path, inputs):
    out = tmp_path / "ds"

    def stop(outcome, done, total):
        if done == 1:
            raise KeyboardInterrupt

    report = annotate_to_dataset([inputs["good"], inputs["no_hands"]], out, AnnotateConfig(**FAST), progress=stop)
    assert report.interrupted
    ds = Hand3DDataset.open(out)
    assert ds.episode_ids() == ["good"] and ds.status("no_hands") is None
    assert ds.load_episode("good").num_frames == 4


def test_plan_ids_unique_and_stable(tmp_path):
    a, b = tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mp4"
    plan = plan_episodes([a, b, a])
    assert len(plan) == 2 and plan[0][0] != plan[1][0] and plan[0][0].startswith("clip-")
    assert plan_episodes([b, a]) == plan[::-1]
    assert plan_episodes([tmp_path / "one.mp4"]) == [("one", str(tmp_path / "one.mp4"))]


@pytest.mark.slow
def test_process_pool_two_workers(tmp_path, inputs):
    out = tmp_path / "ds"
    report = annotate_to_dataset([inputs["good"], inputs["not_a_video"]], out, AnnotateConfig(**FAST), workers=2)
    assert {o.episode_id: o.status for o in report.outcomes} == {"good": "ok", "not_a_video": "failed"}
    ds = Hand3DDataset.open(out)
    assert ds.episode_ids() == ["good"] and ds.status("not_a_video") == "failed"


@pytest.mark.slow
def test_ray_local_backend(tmp_path, inputs):
    pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    out = tmp_path / "ds"
    report = annotate_to_dataset([inputs["good"], inputs["zero_length"]], out, AnnotateConfig(**FAST),
                                 workers=2, ray="local")
    assert {o.episode_id: o.status for o in report.outcomes} == {"good": "ok", "zero_length": "failed"}
    ds = Hand3DDataset.open(out)
    assert ds.episode_ids() == ["good"]
    assert "zero-length" in ds.error("zero_length")
    assert len(ds.read_derived("good", "qa")) > 0


def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="vipa")
    cli.register(parser.add_subparsers(dest="command"))
    return parser, None


def _run(parser, argv: list[str]) -> int:
    args = parser.parse_args(["annotate", *argv])
    return args.func(args)


@pytest.mark.slow
def test_sigint_during_cli_run_leaves_a_readable_dataset(tmp_path, inputs):
    """A real Ctrl-C (SIGINT) to `vipa annotate` mid-batch: exit 130, finished episodes readable."""
    import signal
    import subprocess
    import sys
    import time

    clips = []
    for k in range(6):
        p = tmp_path / f"clip{k}.mp4"
        p.symlink_to(inputs["good"])
        clips.append(str(p))
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "annotators.cli", *clips, "--out", str(out), "--max-frames", "30",
           "--max-width", "320", "--quiet"]
    # A shell that started the tests in the background (`make test &`, nohup) leaves SIGINT ignored in its
    # children, and Python then keeps it ignored: give the CLI the default action, as in a terminal.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "episodes" / "clip0" / "episode.json").exists():
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    ds = Hand3DDataset.open(out)
    ids = ds.episode_ids()
    assert "clip0" in ids and len(ids) < 6
    for eid in ids:
        assert ds.load_episode(eid).num_frames == 30
    leftovers = [p.name for p in (out / "episodes").iterdir() if p.name not in ids]
    assert all(n.startswith(".") for n in leftovers), leftovers  # only hidden temporaries, cleaned by ds.cleanup()
