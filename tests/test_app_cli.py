"""launch_app's command line without a browser: a login is required beyond the loopback address,
bad logins, folders and logs are one-line errors, and the committed simulator results load in
the Rollouts tab's logic."""

from __future__ import annotations

from pathlib import Path

import pytest

import launch_app
from app.rollouts import RolloutFolder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from app.sample import build_synthetic

    root = tmp_path_factory.mktemp("cli") / "ds"
    build_synthetic(root, seeds=(0,), num_frames=6)
    return root


@pytest.mark.parametrize("host,ok", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("[::1]", True),
                                     ("0.0.0.0", False), ("192.168.1.5", False), ("myhost.example", False)])
def test_loopback_addresses(host, ok):
    assert launch_app.is_loopback(host) is ok


def test_a_host_beyond_loopback_needs_a_login(dataset, capsys):
    assert launch_app.main(["--data", str(dataset), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--auth USER:PASSWORD" in err and err.count("\n") == 1


def test_logins_from_flags_and_file(tmp_path, capsys):
    f = tmp_path / "users.txt"
    f.write_text("# team\nana:s3cret\n\nbo:pa:ss\n")
    args = launch_app.parse_args(["--auth", "me:pw", "--auth-file", str(f)])
    assert launch_app.logins(args) == [("me", "pw"), ("ana", "s3cret"), ("bo", "pa:ss")]
    bad = launch_app.parse_args(["--auth", "nopassword"])
    with pytest.raises(ValueError, match="--auth: expected USER:PASSWORD"):
        launch_app.logins(bad)
    f.write_text("ana\n")
    with pytest.raises(ValueError, match=r"users.txt:1: expected USER:PASSWORD"):
        launch_app.logins(launch_app.parse_args(["--auth-file", str(f)]))
    assert launch_app.main(["--auth", "x", "--data", "/nonexistent"]) == 2


def test_missing_rollouts_folder_is_one_line(dataset, tmp_path, capsys):
    assert launch_app.main(["--data", str(dataset), "--rollouts", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"--rollouts {tmp_path / 'nope'}: no such folder"


def test_committed_sim_results_load():
    rf = RolloutFolder(REPO / "docs" / "sim_results")
    md = rf.summary_markdown()
    # the comparison report of runs a, a3, b, c and the per-run report below it
    assert "| run | reach-v3 |" in md and "| a3 |" in md and "25/50" in md
    assert "v1_corner_camera" in md
    assert "No rollout recordings" in md  # the committed folder has reports only, and says so
    assert rf.names() == []


def test_eval_folder_layout_and_guards(tmp_path):
    import json

    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "reach-v3_seed7.rrd").write_bytes(b"RRF2")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "reach-v3_seed7_ok.mp4").write_bytes(b"\0")
    (tmp_path / "report.json").write_text(json.dumps({
        "tasks": [{"task": "reach-v3", "episodes": 2, "successes": 1, "success_rate": 0.5, "ci95": [0.1, 0.9]}],
        "mean_success_rate": 0.5, "replan": 8}))
    rf = RolloutFolder(tmp_path)
    assert rf.names() == ["reach-v3_seed7"] and rf.video_names() == ["reach-v3_seed7_ok"]
    assert Path(rf.recording("reach-v3_seed7")).samefile(tmp_path / "rollouts" / "reach-v3_seed7.rrd")
    assert "1/2 = 50%" in rf.summary_markdown()
    with pytest.raises(ValueError, match="not in"):
        rf.recording("../../etc/passwd")
    (tmp_path / "report.json").write_text("{\"something\": 1}")
    assert "could not be read" in RolloutFolder(tmp_path).summary_markdown()


def test_replaced_log_stops_the_app_with_one_line(dataset, tmp_path, capsys):
    import shutil

    from app.sample import build_synthetic
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.open(dataset)
    ds.corrections.mark_frame_bad("synthetic_00", 1, "tester")
    other = tmp_path / "other"
    build_synthetic(other, seeds=(1,), num_frames=6)
    Hand3DDataset.open(other).corrections.mark_frame_bad("synthetic_01", 1, "tester")
    ds.corrections.close()
    shutil.copyfile(other / "corrections.sqlite", dataset / "corrections.sqlite")
    for suffix in ("-wal", "-shm"):
        (dataset / f"corrections.sqlite{suffix}").unlink(missing_ok=True)
    assert launch_app.main(["--data", str(dataset)]) == 2
    err = capsys.readouterr().err.strip()
    assert "was replaced" in err and "\n" not in err


def test_align_says_why_a_plot_is_empty_and_boxes_are_named(tmp_path):
    from annotators.synthetic import generate_episode
    from app.ui import _object_choices
    from app.workbench import Workbench
    from vipa.data.dataset import Hand3DDataset

    ds = Hand3DDataset.create(tmp_path / "ds")
    ep = generate_episode(0, num_frames=8)
    ep.episode_id = "rgb_only"
    ep.depth_raw = None
    ds.write_episode(ep)
    wb = Workbench(ds.root)
    _, resid, _ = wb.align("rgb_only", 0)
    assert "no calibration residual" in resid.layout.annotations[0].text
    assert "no scale" in wb.scale_preview("rgb_only", 0, 1.1).layout.annotations[0].text
    assert wb.table()[0][3 + 2] is None  # calib_residual: none without depth (the Align tab says why)
    e = wb.episode("rgb_only")
    choices = _object_choices(e)
    assert choices and all(label.endswith(f"({oid})") or label == oid for label, oid in choices)
    assert [oid for _, oid in choices] == [o.object_id for o in e.objects]
    assert any(o.name and o.name in label for (label, _), o in zip(choices, e.objects))
