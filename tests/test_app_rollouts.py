"""The Rollouts tab: simulator rollouts of `vipa sim eval --out DIR` shown in the workbench."""

import json

import pytest

pytest.importorskip("metaworld")

from app.rollouts import RolloutFolder  # noqa: E402
from test_app import AppProcess
from vipa.sim.evaluate import evaluate


@pytest.fixture(scope="module")
def rollout_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    evaluate(None, ["reach-v3"], episodes=1, size=48, max_steps=120, out=out, save_videos=1)
    return out


def test_rollout_folder_lists_and_guards(rollout_dir):
    rf = RolloutFolder(rollout_dir)
    names = rf.names()
    assert names == [f"reach-v3_seed{100000}"]
    path = rf.recording(names[0])
    assert path.endswith(".rrd") and (rollout_dir / "rollouts" / f"{names[0]}.rrd").samefile(path)
    with pytest.raises(ValueError, match="not in"):
        rf.recording("../../etc/passwd")
    md = rf.summary_markdown()
    assert "reach-v3" in md and "1/1 = 100%" in md
    with pytest.raises(FileNotFoundError):
        RolloutFolder(rollout_dir / "missing")


@pytest.mark.slow
def test_app_serves_rollouts(rollout_dir, tmp_path):
    from app.sample import build_synthetic

    data = tmp_path / "ds"
    build_synthetic(data, seeds=(0,), num_frames=8)
    app = AppProcess(data, extra_args=("--rollouts", str(rollout_dir))).start()
    try:
        c = app.client()
        name = RolloutFolder(rollout_dir).names()[0]
        got = c.predict(name, api_name="/rollout")
        files = got if isinstance(got, list) else [got]
        assert len(files) == 1 and str(files[0]).endswith(".rrd")
        assert open(files[0], "rb").read() == (rollout_dir / "rollouts" / f"{name}.rrd").read_bytes()
        with pytest.raises(Exception, match="not in"):
            c.predict("../secret", api_name="/rollout")
    finally:
        app.stop()
    assert json.loads((rollout_dir / "report.json").read_text())["tasks"][0]["task"] == "reach-v3"
