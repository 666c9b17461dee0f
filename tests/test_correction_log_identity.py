"""A correction log cannot vanish: the dataset records its id and last edit, and a missing,
emptied, replaced or rolled-back log is an error in the library, the app's Workbench and the
CLI, never a fresh start; each export leaves a read-only copy that restores the log."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from vipa.data.corrections import LogIdentityError, check_log, read_identity, restore, snapshot
from vipa.data.dataset import Hand3DDataset

EID = "synthetic_00"


def make(root: Path, seed: int = 0) -> Hand3DDataset:
    from annotators.synthetic import generate_episode

    ds = Hand3DDataset.create(root)
    ep = generate_episode(seed, num_frames=6)
    ep.episode_id = EID
    ds.write_episode(ep)
    return ds


def edited(root: Path, n: int = 3, seed: int = 0) -> Hand3DDataset:
    ds = make(root, seed)
    for f in range(n):
        ds.corrections.mark_frame_bad(EID, f, "tester")
    ds.corrections.close()
    return Hand3DDataset.open(root)


def drop_log(root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (root / f"corrections.sqlite{suffix}").unlink(missing_ok=True)


def test_identity_follows_every_edit(tmp_path):
    ds = edited(tmp_path / "a", n=2)
    ident = read_identity(ds.root / "corrections.sqlite")
    assert ident["edits"] == 2 and ident["last_edit_id"] == 2 and len(ident["log_id"]) == 32
    ds.corrections.undo(EID)
    after = read_identity(ds.root / "corrections.sqlite")
    assert after["edits"] == 3 and after["last_edit_id"] == 3 and after["last_edit_hash"] != ident["last_edit_hash"]
    assert after["log_id"] == ident["log_id"]


def test_emptied_log_is_an_error_not_a_fresh_start(tmp_path):
    ds = edited(tmp_path / "a")
    drop_log(ds.root)
    (ds.root / "corrections.sqlite").write_bytes(b"")  # 0 bytes, as in the issue
    fresh = Hand3DDataset.open(ds.root)
    with pytest.raises(LogIdentityError, match=r"is empty \(0 bytes\).*records 3 edits"):
        fresh.load_episode(EID, corrected=True)
    with pytest.raises(LogIdentityError, match="empty"):
        fresh.corrections.mark_frame_bad(EID, 4, "tester")  # no new edits on top
    assert (ds.root / "corrections.sqlite").stat().st_size == 0


def test_missing_log_is_an_error(tmp_path):
    ds = edited(tmp_path / "a")
    drop_log(ds.root)
    with pytest.raises(LogIdentityError, match="is missing.*records 3 edits"):
        Hand3DDataset.open(ds.root).load_episode(EID, corrected=True)
    assert not (ds.root / "corrections.sqlite").exists()  # nothing was created in its place


def test_another_datasets_log_is_an_error(tmp_path):
    ds = edited(tmp_path / "a")
    other = edited(tmp_path / "b", n=5, seed=1)
    drop_log(ds.root)
    shutil.copyfile(other.root / "corrections.sqlite", ds.root / "corrections.sqlite")
    with pytest.raises(LogIdentityError, match="was replaced"):
        Hand3DDataset.open(ds.root).load_episode(EID, corrected=True)


def test_log_replaced_while_open_is_noticed(tmp_path):
    ds = edited(tmp_path / "a")
    log = ds.corrections
    assert len(log.history(EID)) == 3  # connection open
    other = edited(tmp_path / "b", seed=1)
    tmp = ds.root / "swap.sqlite"
    shutil.copyfile(other.root / "corrections.sqlite", tmp)
    os.replace(tmp, ds.root / "corrections.sqlite")
    with pytest.raises(LogIdentityError, match="was replaced"):
        log.mark_frame_bad(EID, 5, "tester")


def test_an_older_copy_is_an_error(tmp_path):
    ds = edited(tmp_path / "a", n=2)
    old = snapshot(ds.root, tag="before")
    ds.corrections.mark_frame_bad(EID, 4, "tester")
    ds.corrections.close()
    drop_log(ds.root)
    shutil.copyfile(old, ds.root / "corrections.sqlite")
    os.chmod(ds.root / "corrections.sqlite", 0o644)
    with pytest.raises(LogIdentityError, match="lacks the last recorded edit"):
        check_log(ds.root / "corrections.sqlite")


def test_export_keeps_a_read_only_copy_that_restores(tmp_path, capsys):
    from vipa.cli import main as vipa_main

    ds = edited(tmp_path / "a")
    assert vipa_main(["export", str(ds.root), "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()  # the first export's progress lines
    (copy,) = sorted((ds.root / "meta" / "corrections_backups").glob("*.sqlite"))
    assert copy.name.endswith("-export-out-last3.sqlite")
    assert not (copy.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    drop_log(ds.root)
    (ds.root / "corrections.sqlite").write_bytes(b"")
    # the CLI refuses, in one line
    assert vipa_main(["export", str(ds.root), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty (0 bytes)" in err and "\n" not in err
    # the documented recovery
    from vipa.data.corrections import _main

    assert _main(["restore", str(ds.root)]) == 0
    back = Hand3DDataset.open(ds.root)
    assert (~back.load_episode(EID, corrected=True).frame_valid).sum() == 3
    assert _main(["check", str(ds.root)]) == 0
    back.corrections.mark_frame_bad(EID, 5, "tester")  # editing goes on
    assert read_identity(ds.root / "corrections.sqlite")["edits"] == 4


def test_workbench_refuses_a_replaced_log(tmp_path):
    from app.workbench import Workbench

    ds = edited(tmp_path / "a")
    other = edited(tmp_path / "b", seed=1)
    drop_log(ds.root)
    shutil.copyfile(other.root / "corrections.sqlite", ds.root / "corrections.sqlite")
    with pytest.raises(LogIdentityError, match="was replaced"):
        Workbench(ds.root)


def test_datasets_from_before_adopt_their_log(tmp_path):
    ds = edited(tmp_path / "a")
    (ds.root / "meta" / "corrections.json").unlink()
    assert len(Hand3DDataset.open(ds.root).corrections.history(EID)) == 3
    assert read_identity(ds.root / "corrections.sqlite")["edits"] == 3
