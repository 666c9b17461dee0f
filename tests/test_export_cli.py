"""`vipa export` and the `vipa` command line never lie: damaged episodes fail the export with a line
naming the file, a killed export leaves no normal-looking dataset, errors are one line (no
traceback unless --debug), and every --help shows defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vipa import cli
from vipa.conventions import HANDS
from vipa.data.reader import Hand3DDataset
from vipa.data.episode import Episode, HandTrack

ROOT = Path(__file__).resolve().parents[1]


def _episode(eid: str, t: int = 8, seed: int = 0, h: int = 40, w: int = 60) -> Episode:
    rng = np.random.default_rng(seed)
    K = np.array([[80.0, 0, 30.0], [0, 70.0, 20.0], [0, 0, 1]], np.float32)
    hands = {}
    for side in HANDS:
        j3 = np.stack([rng.uniform(-0.1, 0.1, (t, 21)), rng.uniform(-0.1, 0.1, (t, 21)),
                       rng.uniform(0.4, 0.8, (t, 21))], -1).astype(np.float32)
        j2 = (j3[..., :2] / j3[..., 2:]) * np.float32([80, 70]) + np.float32([30, 20])
        hands[side] = HandTrack(side, j2.astype(np.float32), j3, np.full((t, 21), 0.9, np.float32),
                                np.ones((t, 21), bool), np.ones(t, bool), np.zeros((t, 21), np.float32),
                                np.array(["lift"] * t, dtype=object))
    ep = Episode(eid, 10.0, w, h, K, hands, t, instruction=f"pick up the cup {eid}",
                 depth_scale=np.full(t, 1.5, np.float32))
    ep.rgb = rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)
    ep.depth_raw = rng.integers(200, 2000, (t, h, w)).astype(np.float32)
    return ep.validate()


@pytest.fixture
def dataset(tmp_path: Path) -> Hand3DDataset:
    ds = Hand3DDataset.create(tmp_path / "ds", fps=10.0)
    for k in range(3):
        ds.write_episode(_episode(f"ep{k}", seed=k))
    return ds


def _vipa(args: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("fmt", ["hand3d", "lerobot"])
def test_damaged_episodes_fail_the_export(dataset, tmp_path, capsys, fmt):
    (dataset.episode_dir("ep1") / "depth" / "000003.png").unlink()
    mp4 = dataset.episode_dir("ep2") / "rgb.mp4"
    mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])  # truncated
    out = tmp_path / f"out_{fmt}"
    rc, _, err = _vipa(["export", dataset.root, "--out", out, "--format", fmt, "--no-progress"], capsys)
    assert rc == 2 and "Traceback" not in err
    assert "episode 'ep1': episodes/ep1/depth/000003.png: missing" in err
    assert "episode 'ep2': episodes/ep2/rgb.mp4" in err
    assert "2 of 3 episodes cannot be exported" in err
    assert not out.exists() and not list(tmp_path.glob(".partial-*"))


def test_non_finite_value_marked_valid_fails_the_export(tmp_path, capsys):
    ds = Hand3DDataset.create(tmp_path / "ds", fps=10.0)
    ep = _episode("bad")
    ep.hands["right"].joints_3d[2, 0, 1] = np.inf  # marked valid
    ds.write_episode(ep)
    rc, _, err = _vipa(["export", ds.root, "--out", tmp_path / "o", "--format", "lerobot"], capsys)
    assert rc == 2
    assert "episode 'bad': hands.right.joints_3d: 1 non-finite values marked valid (first in frame 2)" in err


def test_out_pointing_at_a_file_or_a_full_folder(dataset, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    rc, _, err = _vipa(["export", dataset.root, "--out", f], capsys)
    assert rc == 2 and err.strip() == f"vipa export: --out {f} is a file; give a new folder"
    rc, _, err = _vipa(["export", tmp_path / "nope", "--out", tmp_path / "o"], capsys)
    assert rc == 2 and "no such dataset folder" in err


def test_export_files_are_group_readable_and_strict_json(dataset, tmp_path, capsys):
    import json

    out = tmp_path / "lr"
    rc, _, err = _vipa(["export", dataset.root, "--out", out, "--format", "lerobot"], capsys)
    assert rc == 0, err
    assert "export LeRobot v3" in err  # progress on stderr
    for p in out.rglob("*"):
        assert (p.stat().st_mode & 0o777) == (0o755 if p.is_dir() else 0o644), p
    for name in ("info.json", "stats.json"):
        json.loads((out / "meta" / name).read_text(), parse_constant=lambda c: pytest.fail(f"{name}: {c}"))
    rc, _, _ = _vipa(["export", dataset.root, "--out", tmp_path / "h3", "--no-progress"], capsys)
    assert rc == 0 and all((p.stat().st_mode & 0o077) in (0o055, 0o044) for p in (tmp_path / "h3").rglob("*"))


def test_killed_export_leaves_no_dataset(tmp_path):
    ds = Hand3DDataset.create(tmp_path / "big", fps=10.0)
    for k in range(12):
        ds.write_episode(_episode(f"ep{k:02d}", t=40, seed=k, h=96, w=128))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "vipa.cli", "export", str(ds.root), "--out", str(out),
                             "--format", "lerobot", "--no-progress"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".partial-out-*")) and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "export finished before it could be killed: make the dataset bigger"
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert not out.exists()  # nothing that looks like a dataset
    leftovers = list(tmp_path.glob(".partial-*"))
    assert leftovers and all(p.name.startswith(".partial-out-") for p in leftovers)
    # a rerun is not blocked
    done = subprocess.run([sys.executable, "-m", "vipa.cli", "export", str(ds.root), "--out", str(out),
                           "--format", "lerobot", "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "meta" / "info.json").is_file()


def test_view_damaged_episode_is_one_line(dataset, tmp_path, capsys):
    mp4 = dataset.episode_dir("ep0") / "rgb.mp4"
    mp4.write_bytes(b"not a video at all")
    rc, _, err = _vipa(["view", dataset.root, "--episode", "ep0", "--out", tmp_path / "x.rrd"], capsys)
    lines = err.strip().splitlines()
    assert rc != 0 and "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("vipa view: ") and "rgb.mp4" in lines[0]


def test_debug_shows_the_traceback(monkeypatch, capsys):
    parser, _ = cli.build_parser()

    def boom(args):
        raise RuntimeError("the policy exploded")

    monkeypatch.setattr(cli, "build_parser", lambda: (parser, {}))
    parser.set_defaults(func=boom)
    sub = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    sub.choices["export"].set_defaults(func=boom)
    rc = cli.main(["export", "x", "--out", "y"])
    err = capsys.readouterr().err
    assert rc == 1 and err.strip() == "vipa export: RuntimeError: the policy exploded (--debug for the traceback)"
    with pytest.raises(RuntimeError, match="exploded"):
        cli.main(["export", "x", "--out", "y", "--debug"])


def test_version_and_help_show_defaults(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("vipa ")
    parser, _ = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        text = p.format_help()
        if any(a.option_strings and a.default not in (None, False) and a.default != argparse_suppress()
               for a in p._actions if a.dest != "help"):
            assert "(default: " in text, name
    export_help = sub.choices["export"].format_help()
    assert "(default: hand3d)" in export_help


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS
