"""Meta-World adapter, demonstration collection (LeRobot v3), evaluation and the policy server."""

import json
import urllib.request

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

pytest.importorskip("metaworld")

from vipa.data.lerobot import LeRobotDataset, check_lerobot_dataset
from vipa.geometry import invert_transform, project, transform_points
from vipa.infer.msgpack_numpy import packb, unpackb
from vipa.infer.server import PolicyClient, PolicyServer
from vipa.sim.collect import collect_demos
from vipa.sim.evaluate import evaluate, wilson_interval
from vipa.sim.metaworld_env import MetaWorldEnv


@pytest.mark.parametrize("camera", ["workspace", "corner"])
def test_observation_geometry_is_consistent(camera):
    """The end effector, projected with K and the camera pose, lands in the image where the
    rendered depth is at (or in front of) its camera-frame depth."""
    with MetaWorldEnv("reach-v3", camera=camera, width=192, height=192) as env:
        obs = env.reset(seed=3)
        for _ in range(20):
            obs, _, _ = env.step(env.expert_action())
        ee_world = obs.state[:3][None].astype(np.float32)
        ee_cam = transform_points(invert_transform(obs.camera_pose), ee_world)[0]
        assert ee_cam[2] > 0.2
        u, v = project(ee_cam[None], obs.K)[0]
        assert 0 <= u < 192 and 0 <= v < 192
        # the end effector is the point between the fingers: a finger is within a few millimetres (8 px)
        window = obs.depth[int(v) - 8:int(v) + 9, int(u) - 8:int(u) + 9]
        assert np.nanmin(np.abs(window - ee_cam[2])) < 0.03
        assert obs.rgb.dtype == np.uint8 and obs.rgb.shape == (192, 192, 3)
        # world up is image up: the table (lower in the world) is lower in the image than the gripper
        table_rows = np.where(np.isfinite(obs.depth).any(1))[0]
        assert table_rows.max() > v


def test_workspace_camera_shows_the_reach_goal_at_64px():
    """The default camera frames the table: at 64 px the (never observed) reach goal projects onto
    red pixels several pixels wide, and the rendered depth there is the goal's camera-frame depth."""
    import mujoco

    with MetaWorldEnv("reach-v3", width=64, height=64) as env:
        for seed in (0, 1, 2):
            obs = env.reset(seed=seed)
            m, d = env._env.model, env._env.data
            goal = d.site_xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "goal")][None].astype(np.float32)
            g_cam = transform_points(invert_transform(obs.camera_pose), goal)[0]
            u, v = (int(x) for x in project(g_cam[None], obs.K)[0])
            assert 4 <= u < 60 and 4 <= v < 60
            patch = obs.rgb[v - 1:v + 2, u - 1:u + 2].reshape(-1, 3).astype(int)
            red = (patch[:, 0] > 120) & (patch[:, 1] < 60) & (patch[:, 2] < 60)
            assert red.sum() >= 4, patch
            assert obs.depth[v, u] == pytest.approx(g_cam[2], abs=0.04)  # the sphere's near surface


def test_seeded_reset_is_deterministic():
    with MetaWorldEnv("push-v3", width=48, height=48) as env:
        a = env.reset(seed=7)
        b = env.reset(seed=7)
        c = env.reset(seed=8)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    assert not np.array_equal(a.rgb, c.rgb)


def test_collect_writes_valid_lerobot_v3(tmp_path):
    stats = collect_demos(tmp_path / "demos", ["reach-v3"], episodes=2, seed=0, size=48, max_steps=120)
    assert stats[0].kept == stats[0].successes == 2
    assert check_lerobot_dataset(tmp_path / "demos") == []
    ds = LeRobotDataset(tmp_path / "demos")
    ep = ds.episode(0)
    assert ep["task"] == "reach the red goal point"
    t = len(ep["action"])
    assert ep["observation.images.main"].shape == (t, 48, 48, 3)
    assert ep["observation.depth"].dtype == np.uint16 and (ep["observation.depth"] > 0).mean() > 0.5
    assert ep["next.success"][-1] and not ep["next.success"][0]
    assert np.abs(ep["action"]).max() <= 1.0
    extra = json.loads(ds.episodes[1]["extra"])
    assert extra["seed"] == 1 and extra["success"] is True


def test_expert_evaluation_and_interval(tmp_path):
    report = evaluate(None, ["reach-v3"], episodes=2, size=48, max_steps=150, out=tmp_path, save_videos=1)
    assert report["tasks"][0]["successes"] == 2
    assert (tmp_path / "report.json").is_file()
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 1
    lo, hi = wilson_interval(45, 50)
    assert 0.78 < lo < 0.9 < hi < 0.97
    assert wilson_interval(0, 10)[0] == 0.0


class _CentroidPolicy:
    """Moves toward the brightest image region: simple, deterministic, observation-dependent."""

    metadata = {"name": "centroid", "chunk": 4, "action_dim": 4}

    def __init__(self):
        self.resets = 0

    def infer(self, observation):
        img = observation["image"].astype(np.float32).mean(-1)
        ys, xs = np.nonzero(img >= np.percentile(img, 95))
        dx = (xs.mean() / img.shape[1]) - 0.5
        dy = (ys.mean() / img.shape[0]) - 0.5
        step = np.array([dx, -dy, 0.0, -1.0], np.float32)
        return np.tile(step, (4, 1)) * np.linspace(1, 0.25, 4, dtype=np.float32)[:, None]

    def reset(self):
        self.resets += 1


def test_policy_server_round_trip_and_errors():
    policy = _CentroidPolicy()
    server = PolicyServer(policy, port=0).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
            assert r.status == 200 and r.read().strip() == b"ok"
        rng = np.random.default_rng(0)
        obs = {"image": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8),
               "depth": rng.uniform(0.5, 1.5, (32, 32)).astype(np.float32),
               "K": np.eye(3, dtype=np.float32), "state": np.zeros(4, np.float32), "instruction": "reach"}
        with PolicyClient(port=server.port) as client:
            assert client.metadata["name"] == "centroid"
            actions = client.infer(obs)
            np.testing.assert_allclose(actions, policy.infer(obs))
            assert client.last_timing["infer_ms"] >= 0 and client.last_timing["round_trip_ms"] > 0
            client.reset()
            assert policy.resets == 1
            bad = dict(obs, image=obs["image"][..., 0])
            with pytest.raises(RuntimeError, match="observation.image"):
                client.infer(bad)
            with pytest.raises(RuntimeError, match="missing"):  # the client reconnects after an error
                client.infer({"image": obs["image"]})
            # raw garbage: openpi's error reply (a text frame, then close 1011); the server keeps serving
            client.infer(obs)
            client._ws.send(b"\xc1\xff not msgpack")
            reply = client._ws.recv(timeout=10)
            assert isinstance(reply, str) and "undecodable" in reply
            with pytest.raises(ConnectionClosed) as closed:
                client._ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1011
            client._ws = None
            np.testing.assert_allclose(client.infer(obs), actions)
    finally:
        server.stop()


def test_message_codec_refuses_unsafe_arrays():
    blob = packb({"a": np.arange(6, dtype=np.float32).reshape(2, 3)})
    np.testing.assert_array_equal(unpackb(blob)["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    from vipa.infer.msgpack_numpy import MessageError
    with pytest.raises(MessageError, match="not allowed"):
        packb({"a": np.array([object()], dtype=object)})
    import msgpack
    evil = msgpack.packb({b"__ndarray__": True, b"dtype": "|O", b"shape": [1], b"data": b"x" * 8})
    with pytest.raises(MessageError, match="not allowed"):
        unpackb(evil)
    short = msgpack.packb({b"__ndarray__": True, b"dtype": "<f4", b"shape": [4], b"data": b"x" * 8})
    with pytest.raises(MessageError, match="needs 16"):
        unpackb(short)


def test_perturb_adds_noise_to_the_xyz_deltas_only():
    from vipa.sim.collect import noise_rng, perturb

    a = np.array([0.2, -0.4, 0.9, 1.0], np.float32)
    assert perturb(a, noise_rng(0), 0.0) is a
    out = np.stack([perturb(a, noise_rng(s), 0.3) for s in range(400)])
    assert np.all(out[:, 3] == 1.0), "the gripper command is executed as given"
    assert np.all(np.abs(out) <= 1.0)
    free = out[:, 0] - a[0]  # x and y are far from the clip
    assert abs(free.mean()) < 0.05 and 0.25 < free.std() < 0.35
    np.testing.assert_array_equal(perturb(a, noise_rng(5), 0.3), perturb(a, noise_rng(5), 0.3))
    with pytest.raises(ValueError, match="noise must be >= 0"):
        perturb(a, noise_rng(0), -0.1)


def test_collect_with_execution_noise_records_expert_labels_off_the_clean_path(tmp_path):
    clean = collect_demos(tmp_path / "clean", ["reach-v3"], episodes=1, seed=0, size=32, max_steps=150)
    noisy = collect_demos(tmp_path / "noisy", ["reach-v3"], episodes=1, seed=0, size=32, max_steps=150, noise=0.3)
    assert clean[0].kept == noisy[0].kept == 1, "the expert recovers from the perturbations"
    c, n = LeRobotDataset(tmp_path / "clean").episode(0), LeRobotDataset(tmp_path / "noisy").episode(0)
    np.testing.assert_allclose(c["observation.state"][0], n["observation.state"][0])  # the same start
    k = min(len(c["action"]), len(n["action"]))
    assert np.abs(c["observation.state"][:k, :3] - n["observation.state"][:k, :3]).max() > 0.002
    # the label is the expert's action, not the executed one: with noise it explains the motion less well
    def residual(ep):
        moved = np.diff(ep["observation.state"][:, :3], axis=0)
        fit = np.linalg.lstsq(ep["action"][:-1, :3], moved, rcond=None)
        return float(np.mean((ep["action"][:-1, :3] @ fit[0] - moved) ** 2))
    assert residual(n) > 2 * residual(c)
    assert json.loads(LeRobotDataset(tmp_path / "noisy").episodes[0]["extra"])["noise"] == 0.3
    with pytest.raises(ValueError, match="noise must be >= 0"):
        collect_demos(tmp_path / "bad", ["reach-v3"], episodes=1, size=32, noise=-1.0)
    assert not (tmp_path / "bad").exists(), "a bad noise fails before anything is written"
