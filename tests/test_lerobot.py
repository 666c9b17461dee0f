"""LeRobot v3 writer/reader: round trip and the format's own checks."""

import json

import numpy as np
import pytest

from vipa.data.lerobot import LeRobotDataset, LeRobotFormatError, LeRobotWriter, check_lerobot_dataset

FEATURES = {
    "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "grip"]},
    "action": {"dtype": "float32", "shape": [4], "names": None},
    "observation.depth": {"dtype": "float32", "shape": [6, 8], "names": None,
                          "info": {"unit": "m", "frame": "camera (OpenCV)"}},
    "observation.camera_intrinsics": {"dtype": "float32", "shape": [3, 3], "names": None},
    "observation.images.main": {"dtype": "video", "shape": [6, 8, 3], "names": ["height", "width", "channels"]},
}


def _episode(rng, t):
    img = np.zeros((t, 6, 8, 3), np.uint8)
    img[:, :, :4] = 200  # a large flat patch survives H.264
    return {
        "observation.state": rng.normal(size=(t, 4)).astype(np.float32),
        "action": rng.normal(size=(t, 4)).astype(np.float32),
        "observation.depth": rng.uniform(0.3, 2.0, size=(t, 6, 8)).astype(np.float32),
        "observation.camera_intrinsics": np.tile(np.diag([50, 50, 1]).astype(np.float32), (t, 1, 1)),
        "observation.images.main": img,
    }


def test_round_trip_and_checks(tmp_path):
    rng = np.random.default_rng(0)
    w = LeRobotWriter(tmp_path / "ds", fps=10, features=FEATURES, robot_type="sawyer")
    eps = [_episode(rng, t) for t in (5, 7, 3)]
    for i, ep in enumerate(eps):
        assert w.add_episode(ep, task=f"task {i % 2}") == i
    w.finalize()
    assert check_lerobot_dataset(tmp_path / "ds") == []
    ds = LeRobotDataset(tmp_path / "ds")
    assert len(ds) == 3 and ds.video_keys == ["observation.images.main"]
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == 15
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        for k in ("observation.state", "action", "observation.depth", "observation.camera_intrinsics"):
            np.testing.assert_array_equal(got[k], ep[k])
        assert got["task"] == f"task {i % 2}"
        assert got["observation.images.main"].shape == ep["observation.images.main"].shape
        assert np.abs(got["observation.images.main"].astype(int) - ep["observation.images.main"]).mean() < 12
        np.testing.assert_array_equal(got["frame_index"], np.arange(len(ep["action"])))


def test_checks_catch_tampering(tmp_path):
    rng = np.random.default_rng(1)
    w = LeRobotWriter(tmp_path / "ds", fps=10, features=FEATURES)
    w.add_episode(_episode(rng, 4), task="t")
    w.add_episode(_episode(rng, 4), task="t")
    w.finalize()
    info_path = tmp_path / "ds/meta/info.json"
    info = json.loads(info_path.read_text())
    info["features"]["extra_feature"] = {"dtype": "float32", "shape": [1], "names": None}
    info["total_frames"] = 99
    info_path.write_text(json.dumps(info))
    problems = check_lerobot_dataset(tmp_path / "ds")
    assert any("extra_feature" in p for p in problems)
    assert any("total_frames" in p for p in problems)


def test_bad_input(tmp_path):
    w = LeRobotWriter(tmp_path / "ds", fps=10, features=FEATURES)
    ep = _episode(np.random.default_rng(2), 3)
    ep["action"] = ep["action"][:2]
    with pytest.raises(LeRobotFormatError, match="different lengths"):
        w.add_episode(ep, task="t")
    ep = _episode(np.random.default_rng(2), 3)
    ep["action"] = np.zeros((3, 5), np.float32)
    with pytest.raises(LeRobotFormatError, match="action"):
        w.add_episode(ep, task="t")
    with pytest.raises(LeRobotFormatError, match="no episodes"):
        w.finalize()
    with pytest.raises(LeRobotFormatError, match="not a LeRobot dataset"):
        LeRobotDataset(tmp_path / "nothing")
    (tmp_path / "bad/meta").mkdir(parents=True)
    (tmp_path / "bad/meta/info.json").write_text("{truncated")
    with pytest.raises(LeRobotFormatError, match="invalid JSON"):
        LeRobotDataset(tmp_path / "bad")
