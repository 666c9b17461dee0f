"""Correction layer: edits over the base annotation, undo/redo as appended records, batches,
keyframe interpolation, concurrent writers, crash consistency, export of the merged view."""

from __future__ import annotations

import argparse
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from vipa import geometry
from vipa.conventions import HANDS
from vipa.data import cli as export_cli
from vipa.data.corrections import CorrectionError, CorrectionLog, Edit
from vipa.data.dataset import Hand3DDataset
from vipa.data.episode import Episode, HandTrack, ObjectTrack

REPO = Path(__file__).resolve().parents[1]


def make_episode(episode_id: str = "ep", t: int = 8, seed: int = 0, media: bool = False) -> Episode:
    rng = np.random.default_rng(seed)
    h, w = 40, 60
    K = np.array([[80.0, 0, 30.0], [0, 70.0, 20.0], [0, 0, 1]], np.float32)
    hands = {}
    for side in HANDS:
        j3 = np.stack([rng.uniform(-0.1, 0.1, (t, 21)), rng.uniform(-0.1, 0.1, (t, 21)),
                       rng.uniform(0.4, 0.8, (t, 21))], -1).astype(np.float32)
        j2 = (j3[..., :2] / j3[..., 2:]) * np.float32([80, 70]) + np.float32([30, 20])
        hands[side] = HandTrack(side, j2.astype(np.float32), j3, rng.uniform(0.2, 0.9, (t, 21)).astype(np.float32),
                                rng.uniform(size=(t, 21)) > 0.2, np.ones(t, bool),
                                rng.uniform(0, 2, (t, 21)).astype(np.float32), np.array(["lift"] * t, dtype=object))
    obj = ObjectTrack("cup", "cup", np.tile(np.float32([0.0, 0.05, 0.7]), (t, 1)), np.full(3, 0.08, np.float32),
                      np.tile(np.float32([20, 15, 40, 30]), (t, 1)), "detector")
    ep = Episode(episode_id, 10.0, w, h, K, hands, t, instruction="pick up the cup", objects=[obj],
                 depth_scale=np.full(t, 1.5, np.float32))
    if media:
        ep.rgb = rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)
        ep.depth_raw = rng.integers(200, 2000, (t, h, w)).astype(np.float32)
    return ep.validate()


@pytest.fixture
def ds(tmp_path: Path) -> Hand3DDataset:
    d = Hand3DDataset.create(tmp_path / "ds")
    d.write_episode(make_episode("ep"))
    return d


def project(p: np.ndarray, K: np.ndarray) -> np.ndarray:
    return geometry.project(np.asarray(p, np.float32), K)


def test_rederived_joints_follow_the_library_projection_with_skew(tmp_path: Path) -> None:
    ds = Hand3DDataset.create(tmp_path / "ds")
    ep = make_episode("skew")
    ep.K = np.array([[80.0, 2.5, 30.0], [0, 70.0, 20.0], [0, 0, 1]], np.float32)
    ds.write_episode(ep)
    ds.corrections.set_joint_2d("skew", 1, "left", 2, [17.25, 33.5], "a")
    p = ds.load_episode("skew").hands["left"].joints_3d[1, 2]
    np.testing.assert_allclose(project(p, ep.K), [17.25, 33.5], atol=1e-4)


# ----------------------------------------------------------------------------- applying edits


def test_joint_2d_rederives_3d_keeping_depth(ds: Hand3DDataset) -> None:
    base = ds.load_episode("ep", corrected=False)
    z = float(base.hands["right"].joints_3d[2, 8, 2])
    ds.corrections.set_joint_2d("ep", 2, "right", 8, [41.5, 12.25], "alice")
    ep = ds.load_episode("ep")
    h = ep.hands["right"]
    np.testing.assert_allclose(h.joints_2d[2, 8], [41.5, 12.25])
    assert h.joints_3d[2, 8, 2] == pytest.approx(z)
    np.testing.assert_allclose(project(h.joints_3d[2, 8], ep.K), [41.5, 12.25], atol=1e-4)
    assert h.valid[2, 8] and h.confidence[2, 8] == 1.0 and h.reproj_error[2, 8] == 0.0
    assert h.provenance[2] == "correction:alice" and h.provenance[1] == "lift"
    # everything else is the base annotation, and the base itself is untouched
    h.joints_2d[2, 8] = base.hands["right"].joints_2d[2, 8]
    h.joints_3d[2, 8] = base.hands["right"].joints_3d[2, 8]
    np.testing.assert_array_equal(h.joints_3d, base.hands["right"].joints_3d)
    np.testing.assert_array_equal(ep.hands["left"].joints_3d, base.hands["left"].joints_3d)
    np.testing.assert_array_equal(ds.load_episode("ep", corrected=False).hands["right"].joints_2d,
                                  base.hands["right"].joints_2d)


def test_joint_depth_slides_along_the_ray(ds: Hand3DDataset) -> None:
    base = ds.load_episode("ep", corrected=False)
    p0 = base.hands["left"].joints_3d[4, 0]
    ds.corrections.nudge_joint_depth("ep", 4, "left", 0, 0.1, "bob")
    p1 = ds.load_episode("ep").hands["left"].joints_3d[4, 0]
    assert p1[2] == pytest.approx(p0[2] + 0.1, abs=1e-6)
    np.testing.assert_allclose(project(p1, base.K), project(p0, base.K), atol=1e-4)
    np.testing.assert_allclose(p1 / np.linalg.norm(p1), p0 / np.linalg.norm(p0), atol=1e-6)
    # a later 2D move keeps the corrected depth
    ds.corrections.set_joint_2d("ep", 4, "left", 0, [10.0, 10.0], "bob")
    p2 = ds.load_episode("ep").hands["left"].joints_3d[4, 0]
    assert p2[2] == pytest.approx(p0[2] + 0.1, abs=1e-6)
    np.testing.assert_allclose(project(p2, base.K), [10, 10], atol=1e-4)


def test_joint_2d_without_depth_uses_the_hands_other_joints(ds: Hand3DDataset, tmp_path: Path) -> None:
    ep = make_episode("nod")
    ep.hands["left"].joints_3d[1, 5] = np.nan
    ep.hands["left"].valid[1, 5] = False
    ds.write_episode(ep)
    ds.corrections.set_joint_2d("nod", 1, "left", 5, [30.0, 20.0], "a")
    out = ds.load_episode("nod").hands["left"]
    others = np.delete(ep.hands["left"].joints_3d[1, :, 2], 5)
    assert out.joints_3d[1, 5, 2] == pytest.approx(np.median(others))
    assert out.valid[1, 5]


def test_visibility_scale_frames_instruction_review(ds: Hand3DDataset) -> None:
    log = ds.corrections
    log.set_joint_visible("ep", 0, "left", 3, False, "a")
    log.set_scale("ep", 2.0, "a")
    log.mark_frame_bad("ep", 5, "a")
    log.set_instruction("ep", "push the cup", "a")
    log.set_review_status("ep", "approved", "a")
    log.set_frame_review("ep", 6, "needs-fix", "a")
    ep = ds.load_episode("ep")
    assert not ep.hands["left"].valid[0, 3]
    np.testing.assert_array_equal(ep.depth_scale, np.full(8, 2.0, np.float32))
    assert not ep.frame_valid[5] and ep.frame_valid[4]
    assert ep.instruction == "push the cup" and ep.review_status == "approved"
    assert ep.extra["frame_review"] == {"6": "needs-fix"}
    row = ds.episodes_table(corrected=True)[0]
    assert row["instruction"] == "push the cup" and row["review_status"] == "approved"
    assert ds.episodes_table()[0]["review_status"] == "todo"  # the base row is unchanged
    log.undo("ep")  # the frame review
    log.undo("ep")  # the review status
    assert ds.episodes_table(corrected=True)[0]["review_status"] == "todo"


def test_scale_applies_to_metric_depth(tmp_path: Path) -> None:
    ds = Hand3DDataset.create(tmp_path / "ds")
    ep = make_episode("m", media=True)
    ds.write_episode(ep)
    before = ds.depth_frame("m", 3)
    ds.corrections.set_scale("m", 3.0, "a")
    np.testing.assert_allclose(ds.depth_frame("m", 3), before * (3.0 / 1.5), rtol=1e-6)
    np.testing.assert_allclose(ds.depth_frame("m", 3, corrected=False), before)


def test_object_box_edits(ds: Hand3DDataset) -> None:
    log = ds.corrections
    log.set_object_box("ep", 2, "cup", [30, 20, 50, 40], "a")
    log.set_object_box("ep", 3, "cup", [0, 0, 10, 10], "a", center=[0.1, 0.1, 0.5], size=[0.1, 0.2, 0.3])
    log.set_object_box("ep", 1, "plate", [5, 5, 25, 15], "a", name="plate")
    ep = ds.load_episode("ep")
    cup, plate = ep.objects
    np.testing.assert_array_equal(cup.box_2d[2], [30, 20, 50, 40])
    assert cup.center[2, 2] == pytest.approx(0.7)  # re-derived at the object's previous depth
    np.testing.assert_allclose(project(cup.center[2], ep.K), [40, 30], atol=1e-4)
    np.testing.assert_allclose(cup.center[3], [0.1, 0.1, 0.5])
    np.testing.assert_allclose(cup.size, [0.1, 0.2, 0.3])
    assert plate.name == "plate" and np.all(np.isnan(plate.box_2d[0]))
    np.testing.assert_array_equal(plate.box_2d[1], [5, 5, 25, 15])


def test_apply_to_leaves_the_input_alone(ds: Hand3DDataset) -> None:
    ds.corrections.set_joint_2d("ep", 0, "left", 0, [1.0, 2.0], "a")
    base = ds.load_episode("ep", corrected=False)
    copy2d = base.hands["left"].joints_2d.copy()
    out = ds.corrections.apply_to(base)
    np.testing.assert_array_equal(base.hands["left"].joints_2d, copy2d)
    assert out.hands["left"].joints_2d[0, 0].tolist() == [1.0, 2.0]


# ----------------------------------------------------------------------------- log semantics


def test_old_and_new_values_author_and_time(ds: Hand3DDataset) -> None:
    base = ds.load_episode("ep", corrected=False)
    log = ds.corrections
    log.set_joint_2d("ep", 1, "right", 4, [5.0, 6.0], "alice")
    log.set_joint_2d("ep", 1, "right", 4, [7.0, 8.0], "bob")
    h = log.history("ep")
    assert [r.author for r in h] == ["alice", "bob"]
    assert h[0].old == pytest.approx(base.hands["right"].joints_2d[1, 4].tolist())
    assert h[0].new == [5.0, 6.0] and h[1].old == [5.0, 6.0] and h[1].new == [7.0, 8.0]
    assert h[0].timestamp <= h[1].timestamp and h[0].batch_id != h[1].batch_id
    assert (h[0].frame, h[0].target, h[0].hand, h[0].joint) == (1, "joint_2d", "right", 4)


def test_undo_redo_are_appended_never_deleted(ds: Hand3DDataset) -> None:
    log = ds.corrections
    b1 = log.set_joint_2d("ep", 0, "left", 1, [1.0, 1.0], "a")
    b2 = log.set_joint_2d("ep", 0, "left", 1, [2.0, 2.0], "a")
    uv = lambda: ds.load_episode("ep").hands["left"].joints_2d[0, 1].tolist()  # noqa: E731
    assert uv() == [2.0, 2.0]
    assert log.undo("ep") == b2 and uv() == [1.0, 1.0]
    assert log.undo("ep") == b1
    assert uv() == pytest.approx(ds.load_episode("ep", corrected=False).hands["left"].joints_2d[0, 1].tolist())
    assert log.undo("ep") is None
    assert log.redo("ep") == b1 and uv() == [1.0, 1.0]
    assert log.redo("ep") == b2 and uv() == [2.0, 2.0]
    assert log.redo("ep") is None
    targets = [r.target for r in log.history("ep")]
    assert targets == ["joint_2d", "joint_2d", "undo", "undo", "redo", "redo"]
    # a new edit after an undo empties the redo stack, as in any editor
    log.undo("ep")
    log.set_joint_visible("ep", 0, "left", 1, False, "a")
    assert log.redo("ep") is None and not log.can_redo("ep") and log.can_undo("ep")


def test_undo_is_per_author_when_asked(ds: Hand3DDataset) -> None:
    log = ds.corrections
    ba = log.set_joint_2d("ep", 0, "left", 1, [1.0, 1.0], "alice")
    bb = log.set_joint_2d("ep", 0, "right", 1, [2.0, 2.0], "bob")
    assert log.undo("ep", author="alice") == ba
    ep = ds.load_episode("ep")
    assert ep.hands["right"].joints_2d[0, 1].tolist() == [2.0, 2.0]  # bob's edit stays
    assert ep.hands["left"].joints_2d[0, 1].tolist() != [1.0, 1.0]
    assert log.history("ep")[-1].author == "alice"
    assert log.undo("ep", author="alice") is None
    assert log.undo("ep") == bb


def test_log_is_append_only_in_the_database(ds: Hand3DDataset) -> None:
    ds.corrections.set_scale("ep", 2.0, "a")
    conn = sqlite3.connect(ds.root / "corrections.sqlite")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE edits SET new_value = '3.0'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM edits")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_batch_undoes_as_one(ds: Hand3DDataset) -> None:
    log = ds.corrections
    b = log.record("ep", [Edit("joint_2d", [3.0, 4.0], 1, "left", 2), Edit("frame_bad", True, 2),
                          Edit("scale", 0.9)], "a")
    ep = ds.load_episode("ep")
    assert ep.hands["left"].joints_2d[1, 2].tolist() == [3.0, 4.0] and not ep.frame_valid[2]
    assert {r.batch_id for r in log.history("ep")} == {b}
    assert log.undo("ep") == b
    ep = ds.load_episode("ep")
    assert ep.frame_valid[2] and ep.depth_scale[0] == 1.5


def test_interpolate_keyframes_is_one_linear_batch(ds: Hand3DDataset) -> None:
    log = ds.corrections
    log.set_joint_2d("ep", 1, "right", 8, [10.0, 10.0], "a")
    log.set_joint_2d("ep", 5, "right", 8, [30.0, 18.0], "a")
    b = log.interpolate_keyframes("ep", "right", 8, [1, 5], "a")
    ep = ds.load_episode("ep")
    for f, w in zip(range(2, 5), (0.25, 0.5, 0.75)):
        np.testing.assert_allclose(ep.hands["right"].joints_2d[f, 8], [10 + 20 * w, 10 + 8 * w], atol=1e-5)
        np.testing.assert_allclose(project(ep.hands["right"].joints_3d[f, 8], ep.K),
                                   ep.hands["right"].joints_2d[f, 8], atol=1e-3)
    assert sum(r.batch_id == b for r in log.history("ep")) == 3
    # all joints at once, across two spans
    b_all = log.interpolate_keyframes("ep", "left", None, [0, 2, 7], "a")
    assert sum(r.batch_id == b_all for r in log.history("ep")) == 21 * (1 + 4)
    assert log.undo("ep") == b_all and log.undo("ep") == b
    np.testing.assert_array_equal(ds.load_episode("ep").hands["right"].joints_2d[3, 8],
                                  ds.load_episode("ep", corrected=False).hands["right"].joints_2d[3, 8])
    with pytest.raises(CorrectionError, match="at least 2 keyframes"):
        log.interpolate_keyframes("ep", "right", 8, [3], "a")
    with pytest.raises(CorrectionError, match="nothing to interpolate"):
        log.interpolate_keyframes("ep", "right", 8, [3, 4], "a")


@pytest.mark.parametrize(
    "edit, message",
    [
        (Edit("teleport", 1), r"target: 'teleport' is not one of"),
        (Edit("joint_2d", [1, 2], 0, "left", 21), r"joint_2d.joint: expected 0..20"),
        (Edit("joint_2d", [1, 2], 0, "middle", 3), r"joint_2d.hand: expected one of"),
        (Edit("joint_2d", [1, np.nan], 0, "left", 3), r"joint_2d.new: expected 2 finite numbers"),
        (Edit("joint_2d", [1, 2], 99, "left", 3), r"joint_2d.frame: 99 out of range 0..7"),
        (Edit("joint_visible", 1, 0, "left", 3), r"joint_visible.new: expected true/false"),
        (Edit("joint_depth", -0.2, 0, "left", 3), r"joint_depth.new: must be > 0"),
        (Edit("scale", 0), r"scale.new: must be > 0"),
        (Edit("review_status", "done"), r"review_status.new: expected one of"),
        (Edit("object_box", {"box_2d": [5, 5, 1, 1]}, 0, object_id="cup"), r"box_2d: expected x0 <= x1"),
        (Edit("object_box", {"box_2d": [1, 1, 5, 5]}, 0), r"object_box.object_id: expected a non-empty"),
    ],
)
def test_bad_edits_name_the_field(ds: Hand3DDataset, edit: Edit, message: str) -> None:
    with pytest.raises(CorrectionError, match=message):
        ds.corrections.record("ep", edit, "a")
    assert ds.corrections.history("ep") == []


def test_bad_author_and_episode_id(ds: Hand3DDataset) -> None:
    with pytest.raises(CorrectionError, match="author"):
        ds.corrections.set_scale("ep", 1.0, "  ")
    with pytest.raises(ValueError, match="episode_id"):
        ds.corrections.set_scale("../ep", 1.0, "a")


def test_no_log_file_until_the_first_edit(ds: Hand3DDataset) -> None:
    assert ds.corrections.history("ep") == [] and ds.corrections.undo("ep") is None
    ds.load_episode("ep")
    assert not (ds.root / "corrections.sqlite").exists()


# ----------------------------------------------------------------------------- concurrency, crashes


def test_two_logs_in_threads_lose_no_edit(ds: Hand3DDataset) -> None:
    logs = [CorrectionLog(ds.root / "corrections.sqlite", base_loader=lambda e: ds.load_episode(e, corrected=False))
            for _ in range(2)]
    errors = []

    def work(k: int) -> None:
        try:
            for i in range(15):
                logs[k % 2].set_joint_2d("ep", i % 8, HANDS[k % 2], k * 5 + i % 5, [float(k), float(i)], f"user{k}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    hist = ds.corrections.history("ep")
    assert len(hist) == 60 and len({r.id for r in hist}) == 60
    ep = ds.load_episode("ep")
    for k in range(4):
        last = {}
        for i in range(15):
            last[(i % 8, k * 5 + i % 5)] = [float(k), float(i)]
        for (f, j), uv in last.items():
            assert ep.hands[HANDS[k % 2]].joints_2d[f, j].tolist() == uv


EDITOR = textwrap.dedent(
    """
    import sys
    from vipa.data.dataset import Hand3DDataset
    ds = Hand3DDataset.open({root!r})
    k = int(sys.argv[1])
    for i in range({n}):
        ds.corrections.set_joint_2d("ep", i % 8, "left", k, [float(k), float(i)], f"proc{{k}}")
    print("done", flush=True)
    """
)


def test_two_processes_lose_no_edit(ds: Hand3DDataset) -> None:
    code = EDITOR.format(root=str(ds.root), n=20)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for k in (3, 7)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    hist = ds.corrections.history("ep")
    assert sorted(r.author for r in hist) == ["proc3"] * 20 + ["proc7"] * 20


CRASHER = textwrap.dedent(
    """
    import time
    from vipa.data.corrections import CorrectionLog
    from vipa.data.dataset import Hand3DDataset
    ds = Hand3DDataset.open({root!r})
    original = CorrectionLog._insert

    def stall(self, conn, rows):
        original(self, conn, rows)
        print("inside", flush=True)  # rows inserted, transaction not committed
        time.sleep(600)

    CorrectionLog._insert = stall
    ds.corrections.record("ep", [__import__("vipa.data.corrections", fromlist=["Edit"]).Edit("scale", 9.0)], "crash")
    """
)


def test_killed_inside_a_transaction_leaves_the_log_consistent(ds: Hand3DDataset) -> None:
    keep = ds.corrections.set_scale("ep", 2.0, "before")
    proc = subprocess.Popen([sys.executable, "-c", CRASHER.format(root=str(ds.root))], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "inside", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    fresh = Hand3DDataset.open(ds.root)
    conn = sqlite3.connect(ds.root / "corrections.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    hist = fresh.corrections.history("ep")
    assert [r.batch_id for r in hist] == [keep]
    assert fresh.load_episode("ep").depth_scale[0] == 2.0
    fresh.corrections.set_scale("ep", 3.0, "after")  # the lock died with the process
    assert fresh.load_episode("ep").depth_scale[0] == 3.0


# ----------------------------------------------------------------------------- export


def _export(args: list[str]) -> int:
    parser = argparse.ArgumentParser()
    export_cli.register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["export", *args])
    return ns.func(ns)


def test_export_writes_the_merged_view(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = Hand3DDataset.create(tmp_path / "ds", fps=10.0)
    ds.write_episode(make_episode("a", media=True))
    ds.write_episode(make_episode("b", seed=1))
    ds.record_failure("c", "broken.mp4", "decode error")
    ds.write_derived("a", "qa", [{"q": "where", "a": "left, 0.1m"}])
    ds.corrections.set_joint_2d("a", 3, "left", 8, [12.0, 13.0], "alice")
    ds.corrections.set_scale("a", 2.5, "alice")
    ds.corrections.set_review_status("b", "approved", "bob")
    out = tmp_path / "out"
    assert _export([str(ds.root), "--out", str(out)]) == 0
    assert "wrote 2 episodes" in capsys.readouterr().out
    ex = Hand3DDataset.open(out)
    assert ex.episode_ids() == ["a", "b"] and ex.status("c") == "failed"
    assert not (out / "corrections.sqlite").exists()
    for eid in ("a", "b"):
        merged, exported = ds.load_episode(eid, media=True), ex.load_episode(eid, media=True)
        for side in HANDS:
            np.testing.assert_array_equal(merged.hands[side].joints_3d, exported.hands[side].joints_3d)
            np.testing.assert_array_equal(merged.hands[side].provenance, exported.hands[side].provenance)
        np.testing.assert_array_equal(merged.depth_scale, exported.depth_scale)
        assert merged.review_status == exported.review_status
    assert ex.load_episode("b").review_status == "approved"
    assert ex.episodes_table()[1]["review_status"] == "approved"
    assert (out / "episodes/a/rgb.mp4").read_bytes() == (ds.root / "episodes/a/rgb.mp4").read_bytes()
    np.testing.assert_array_equal(ex.depth_frame("a", 2), ds.depth_frame("a", 2))
    assert ex.read_derived("a", "qa") == [{"q": "where", "a": "left, 0.1m"}]
    # refuses to write over data, or into the dataset itself
    assert _export([str(ds.root), "--out", str(out)]) == 2
    assert _export([str(ds.root), "--out", str(ds.root / "inner")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_export_uncorrected_and_bad_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = Hand3DDataset.create(tmp_path / "ds")
    ds.write_episode(make_episode("a"))
    ds.corrections.set_scale("a", 2.5, "alice")
    assert _export([str(ds.root), "--out", str(tmp_path / "raw"), "--uncorrected"]) == 0
    assert Hand3DDataset.open(tmp_path / "raw").load_episode("a").depth_scale[0] == 1.5
    assert _export([str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "no such dataset folder" in capsys.readouterr().err


def test_export_lerobot_format(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vipa.data.lerobot import LeRobotDataset, check_lerobot_dataset

    ds = Hand3DDataset.create(tmp_path / "ds")
    ds.write_episode(make_episode("a", media=True))
    ds.write_episode(make_episode("b", t=5, seed=4, media=True))
    ds.corrections.set_joint_2d("a", 2, "left", 0, [11.0, 12.0], "alice")
    ds.corrections.set_instruction("b", "wave", "bob")
    out = tmp_path / "lr"
    assert _export([str(ds.root), "--out", str(out), "--format", "lerobot"]) == 0
    assert "as LeRobot v3" in capsys.readouterr().out
    assert check_lerobot_dataset(out) == []
    lr = LeRobotDataset(out)
    assert len(lr) == 2
    for k, eid in enumerate(("a", "b")):
        src = ds.load_episode(eid, media=True)
        got = lr.episode(k)
        for side in HANDS:
            np.testing.assert_array_equal(got[f"observation.hands.{side}.joints_3d"], src.hands[side].joints_3d)
            np.testing.assert_array_equal(got[f"observation.hands.{side}.valid"], src.hands[side].valid)
        np.testing.assert_array_equal(got["observation.camera.intrinsics"][0], src.K)
        np.testing.assert_array_equal(got["observation.depth"].astype(np.float32), src.depth_raw)
        right = src.hands["right"]
        measured = right.present & right.valid[:, 0] & np.isfinite(right.joints_3d[:, 0]).all(-1)
        np.testing.assert_array_equal(got["observation.state_valid"][:, 3], measured)
        np.testing.assert_allclose(got["observation.state"][measured, 3:], right.joints_3d[measured, 0])
        assert np.isfinite(got["observation.state"]).all()
        np.testing.assert_allclose(got["action"][:-1], got["observation.state"][1:])
        assert got["observation.images.rgb"].shape == src.rgb.shape
        assert np.abs(got["observation.images.rgb"].astype(int) - src.rgb).mean() < 40  # noise video, lossy
        assert got["task"] == src.instruction
    assert lr.episode(1)["task"] == "wave"
    assert lr.episode(0)["observation.hands.left.joints_2d"][2, 0].tolist() == [11.0, 12.0]


def test_export_lerobot_refuses_mixed_sizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds = Hand3DDataset.create(tmp_path / "ds")
    ds.write_episode(make_episode("a", media=True))
    other = make_episode("b", media=True)
    other.width, other.height = 30, 20
    other.rgb, other.depth_raw = other.rgb[:, :20, :30], other.depth_raw[:, :20, :30]
    ds.write_episode(other)
    assert _export([str(ds.root), "--out", str(tmp_path / "lr"), "--format", "lerobot"]) == 2
    assert "one image size per camera" in capsys.readouterr().err


def test_concurrent_depth_nudges_all_count(ds: Hand3DDataset) -> None:
    z0 = float(ds.load_episode("ep", corrected=False).hands["right"].joints_3d[2, 9, 2])
    logs = [CorrectionLog(ds.root / "corrections.sqlite", base_loader=lambda e: ds.load_episode(e, corrected=False))
            for _ in range(3)]
    threads = [threading.Thread(target=lambda lg=lg: [lg.nudge_joint_depth("ep", 2, "right", 9, 0.01, "n")
                                                       for _ in range(8)]) for lg in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    z = float(ds.load_episode("ep").hands["right"].joints_3d[2, 9, 2])
    assert z == pytest.approx(z0 + 0.24, abs=1e-5)  # each nudge starts from the previous one


def test_corrupt_log_is_a_clear_error(ds: Hand3DDataset) -> None:
    (ds.root / "corrections.sqlite").write_bytes(b"this is not sqlite" * 100)
    fresh = Hand3DDataset.open(ds.root)
    with pytest.raises(CorrectionError, match="corrections.sqlite: not a readable correction log"):
        fresh.load_episode("ep")


def test_log_without_base_loader_still_validates(tmp_path: Path) -> None:
    log = CorrectionLog(tmp_path / "c.sqlite")
    with pytest.raises(CorrectionError, match="joint_2d.joint"):
        log.record("e", Edit("joint_2d", [1, 2], 0, "left", 30), "a")
    assert not (tmp_path / "c.sqlite").exists()
    b = log.set_instruction("e", "wave", "a")
    assert log.history("e")[0].old is None and log.history("e")[0].batch_id == b
    with pytest.raises(CorrectionError, match="base_loader"):
        log.nudge_joint_depth("e", 0, "left", 0, 0.1, "a")


def test_lerobot_import_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Hand3D -> LeRobot v3 -> Hand3D keeps the corrected annotation, depth counts and metadata."""
    ds = Hand3DDataset.create(tmp_path / "ds")
    ds.write_episode(make_episode("a", media=True))
    ds.corrections.set_joint_2d("a", 2, "left", 0, [11.0, 12.0], "alice")
    ds.corrections.set_review_status("a", "approved", "alice")
    assert _export([str(ds.root), "--out", str(tmp_path / "lr"), "--format", "lerobot"]) == 0
    assert _export([str(tmp_path / "lr"), "--out", str(tmp_path / "back"), "--format", "lerobot"]) == 2
    assert "already LeRobot" in capsys.readouterr().err
    assert _export([str(tmp_path / "lr"), "--out", str(tmp_path / "back")]) == 0
    back = Hand3DDataset.open(tmp_path / "back")
    assert back.episode_ids() == ["a"]
    src, got = ds.load_episode("a", media=True), back.load_episode("a", media=True)
    for side in HANDS:
        np.testing.assert_array_equal(got.hands[side].joints_2d, src.hands[side].joints_2d)
        np.testing.assert_array_equal(got.hands[side].joints_3d, src.hands[side].joints_3d)
        np.testing.assert_array_equal(got.hands[side].present, src.hands[side].present)
    np.testing.assert_array_equal(got.K, src.K)
    np.testing.assert_allclose(got.depth_raw * got.depth_unit, src.depth_raw * src.depth_unit, rtol=1e-6)
    np.testing.assert_array_equal(got.depth_scale, src.depth_scale)
    assert got.instruction == src.instruction and got.review_status == "approved"
    assert got.rgb.shape == src.rgb.shape


def test_lerobot_import_refuses_non_hand3d(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vipa.data.lerobot import LeRobotWriter

    w = LeRobotWriter(tmp_path / "robot", fps=10, features={"action": {"dtype": "float32", "shape": [2]}})
    w.add_episode({"action": np.zeros((3, 2), np.float32)}, task="t")
    w.finalize()
    assert _export([str(tmp_path / "robot"), "--out", str(tmp_path / "h")]) == 2
    assert "not a Hand3D export" in capsys.readouterr().err


OPENER = textwrap.dedent(
    """
    import sys
    from vipa.data.corrections import CorrectionLog
    CorrectionLog(sys.argv[1])._conn()
    """
)


def test_many_processes_open_a_fresh_log_at_once(tmp_path: Path) -> None:
    """Creating the log and switching it to WAL must not fail with 'database is locked' under a race."""
    for trial in range(3):
        path = tmp_path / f"t{trial}" / "corrections.sqlite"
        path.parent.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(path)], cwd=REPO, stderr=subprocess.PIPE,
                                  text=True) for _ in range(8)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errs
