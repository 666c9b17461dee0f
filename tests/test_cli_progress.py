"""Progress and file modes: `vipa view` shows its steps on stderr (--no-progress: none), `vipa annotate`
reports every frame of one long clip (not 0/1 until it is done), and every file the project writes
(atomic writes, checkpoints, .rrd recordings) is 0644 whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from annotators.synthetic import generate_episode
from vipa import cli
from vipa.data._io import atomic_write_bytes, atomic_write_json, set_readable
from vipa.data.dataset import Hand3DDataset


@pytest.fixture
def strict_umask():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def dataset(tmp_path: Path) -> Hand3DDataset:
    ds = Hand3DDataset.create(tmp_path / "ds")
    ep = generate_episode(0, num_frames=6)
    ep.episode_id = "a"
    ds.write_episode(ep)
    return ds


def test_view_shows_progress_and_writes_a_0644_rrd(dataset, tmp_path, capsys, strict_umask):
    out = tmp_path / "a.rrd"
    rc = cli.main(["view", str(dataset.root), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "view a: read media" in captured.err and "3/3" in captured.err
    assert "wrote" in captured.out and out.stat().st_size > 10_000
    assert _mode(out) == 0o644
    rc = cli.main(["view", str(dataset.root), "--out", str(tmp_path / "b.rrd"), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == "" and (tmp_path / "b.rrd").is_file()


def test_view_checks_the_media_first(dataset, tmp_path, capsys):
    depth = sorted((dataset.episode_dir("a") / "depth").glob("*.png"))
    depth[3].unlink()
    rc = cli.main(["view", str(dataset.root), "--out", str(tmp_path / "a.rrd")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("vipa view: episode 'a'") and depth[3].name in lines[0]
    assert not (tmp_path / "a.rrd").exists()


def test_atomic_writes_and_checkpoints_are_0644(tmp_path, strict_umask):
    atomic_write_bytes(tmp_path / "x.bin", b"abc")
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert _mode(tmp_path / "x.bin") == 0o644 and _mode(tmp_path / "x.json") == 0o644

    from vipa.model.checkpoint import save_checkpoint
    from vipa.model.config import get_config
    from vipa.model.tokenizer import VIPATokenizer
    from vipa.model.vla import VIPAModel

    cfg = get_config("tiny")
    tok = VIPATokenizer.train(["pick up the red cube", "left and down, 0.44m"], 300)
    model = VIPAModel(cfg.model, tok.vocab_size)
    path = save_checkpoint(tmp_path / "ckpt", model, cfg, tok)
    assert _mode(path) == 0o755
    files = [f for f in path.rglob("*") if f.is_file()]
    assert files and {_mode(f) for f in files} == {0o644}, {f.name: oct(_mode(f)) for f in files}

    folder = tmp_path / "tree" / "sub"
    folder.mkdir(parents=True)
    (folder / "f").write_bytes(b"1")
    set_readable(tmp_path / "tree")
    assert _mode(folder) == 0o755 and _mode(folder / "f") == 0o644


def test_annotate_reports_every_frame_of_one_clip(tmp_path, capsys):
    from annotators import cli as acli
    from annotators.batch import annotate_to_dataset
    from annotators.pipeline import AnnotateConfig
    from vipa.resources import SAMPLE_VIDEO

    calls: list[tuple[str, int, int]] = []
    report = annotate_to_dataset([SAMPLE_VIDEO], tmp_path / "out",
                                 AnnotateConfig(decode={"max_frames": 5, "max_width": 320}),
                                 on_frame=lambda eid, done, total: calls.append((eid, done, total)))
    assert report.counts()["ok"] == 1, report.summary()
    assert [c[1:] for c in calls] == [(i, 5) for i in range(1, 6)]
    assert len({c[0] for c in calls}) == 1

    rc = acli.main([str(SAMPLE_VIDEO), "--out", str(tmp_path / "out2"), "--max-frames", "5", "--max-width", "320"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "frames" in err and "5/5" in err  # the per-frame bar, beside the per-episode one


def test_export_shows_progress_and_no_progress_silences_it(dataset, tmp_path, capsys, strict_umask):
    rc = cli.main(["export", str(dataset.root), "--out", str(tmp_path / "lr"), "--format", "lerobot"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "check episodes" in captured.err and "export LeRobot v3" in captured.err and "1/1" in captured.err
    assert _mode(tmp_path / "lr" / "meta" / "info.json") == 0o644
    rc = cli.main(["export", str(dataset.root), "--out", str(tmp_path / "lr2"), "--format", "lerobot",
                   "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0 and captured.err == ""
