"""LIBERO adapter: camera/depth/state conversions here, and a rollout in LIBERO's own venv that
talks to a PolicyServer running in this process (transport, observation format, geometry)."""

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vipa.geometry import invert_transform, project, transform_points, unproject
from vipa.infer.server import PolicyServer
from vipa.resources import REPO_ROOT
from vipa.sim.libero_env import (ACTION_DIM, STATE_DIM, depth_buffer_to_metres, fovy_intrinsics,
                                 opencv_camera_pose, quat_to_axis_angle)


def _libero_python() -> str | None:
    """VIPA_LIBERO_PYTHON, else REPO_ROOT/.venv-libero/bin/python (scripts/setup_libero.sh)."""
    env = os.environ.get("VIPA_LIBERO_PYTHON")
    if env:
        return env if Path(env).is_file() else None
    p = Path(REPO_ROOT) / ".venv-libero" / "bin" / "python"
    return str(p) if p.is_file() else None


LIBERO_PYTHON = _libero_python()
needs_libero = pytest.mark.skipif(
    LIBERO_PYTHON is None,
    reason="no LIBERO Python: run scripts/setup_libero.sh (creates .venv-libero) or set VIPA_LIBERO_PYTHON")


def test_depth_buffer_round_trip_and_far_plane():
    near, far = 0.0106, 530.0
    z = np.array([[0.05, 0.5], [1.3, 40.0]])
    buf = (1 - near / z) / (1 - near / far)  # OpenGL's normalised depth of a point at z
    np.testing.assert_allclose(depth_buffer_to_metres(buf.astype(np.float32), near, far), z, rtol=2e-3)
    d = depth_buffer_to_metres(np.array([[1.0, 0.5]], np.float32), near, far)
    assert np.isnan(d[0, 0]) and d.dtype == np.float32 and d[0, 1] == pytest.approx(2 * near, rel=1e-3)


def test_quaternion_to_axis_angle():
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    for angle in (0.3, 2.0, math.pi - 1e-3):
        q = np.r_[axis * math.sin(angle / 2), math.cos(angle / 2)]  # x, y, z, w
        np.testing.assert_allclose(quat_to_axis_angle(q), axis * angle, atol=1e-5)
        np.testing.assert_allclose(quat_to_axis_angle(-q), axis * angle, atol=1e-5)  # double cover
    np.testing.assert_array_equal(quat_to_axis_angle(np.array([0, 0, 0, 1.0])), np.zeros(3))


def test_camera_pose_and_intrinsics_follow_opencv_conventions():
    # a MuJoCo camera 1 m above the origin looking straight down (its -z is world -z), image-up = +y
    T = opencv_camera_pose(np.array([0, 0, 1.0]), np.eye(3).ravel())
    K = fovy_intrinsics(45.0, 128, 96)
    assert K[0, 2] == 64 and K[1, 2] == 48 and K[0, 0] == pytest.approx(48 / math.tan(math.radians(22.5)))
    pts = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]], np.float32)  # origin, world +x, world +y
    cam = transform_points(invert_transform(T), pts)
    np.testing.assert_allclose(cam[:, 2], 1.0, atol=1e-6)  # in front, 1 m away
    uv = project(cam, K)
    np.testing.assert_allclose(uv[0], [64, 48], atol=1e-4)  # principal point at the image centre
    assert uv[1, 0] > uv[0, 0] and uv[2, 1] < uv[0, 1]  # world +x is image right, +y is image up


def _run_client(port: int | None, out: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    cmd = [LIBERO_PYTHON, "-m", "vipa.sim.libero_env", "--out", str(out), *extra]
    if port is not None:
        cmd += ["--server", f"127.0.0.1:{port}"]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


class _RecordingPolicy:
    """Moves the end effector up at a constant speed, gripper open; keeps what it was sent."""

    metadata = {"name": "constant-up"}

    def __init__(self, chunk: int = 8):
        self.chunk, self.observations, self.resets = chunk, [], 0

    def infer(self, observation):
        self.observations.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in observation.items()})
        return np.tile(np.array([0, 0, 0.5, 0, 0, 0, -1], np.float32), (self.chunk, 1))

    def reset(self):
        self.resets += 1


@pytest.mark.slow
@needs_libero
def test_libero_rollout_through_policy_server(tmp_path):
    policy = _RecordingPolicy()
    server = PolicyServer(policy, port=0).start()
    try:
        proc = _run_client(server.port, tmp_path, "--suite", "libero_spatial", "--task", "0", "--episodes", "2",
                           "--seed", "3", "--max-steps", "20", "--replan", "5", "--wrist")
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == json.loads((tmp_path / "report.json").read_text())
    ep, ep2 = report["episodes"]
    assert ep["steps"] == 20 and ep["chunks"] == 4 and ep["init_state"] == 3 and ep["success"] is False
    assert ep2["init_state"] == 4 and report["successes"] == 0 and report["ci95"][1] < 0.9
    assert report["policy"] == {"name": "constant-up"} and policy.resets == 2
    assert len(policy.observations) == 8
    # each episode starts from its own initial layout
    assert np.abs(policy.observations[4]["image"].astype(int) - policy.observations[0]["image"]).max() > 30
    assert Path(ep["video"]).is_file() and Path(ep["video"]).stat().st_size > 1000
    with np.load(ep["rollout"]) as rec:
        assert rec["state"].shape == (20, STATE_DIM) and rec["action"].shape == (20, ACTION_DIM)
        np.testing.assert_array_equal(rec["chunk_steps"], [0, 5, 10, 15])
        assert rec["chunks"].shape == (4, 8, ACTION_DIM) and np.all(rec["action"][:, 2] == 0.5)

    first, last = policy.observations[0], policy.observations[3]
    assert first["instruction"] == report["instruction"] and "bowl" in first["instruction"]
    for prefix in ("", "wrist_"):
        img, depth, K = first[prefix + "image"], first[prefix + "depth"], first[prefix + "K"]
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8 and img.std() > 10
        assert depth.shape == (128, 128) and depth.dtype == np.float32
        assert np.isfinite(depth).mean() > 0.95 and np.nanmin(depth) > 0.01 and np.nanmax(depth) < 10
        assert K.shape == (3, 3) and K[0, 2] == 64 and K[1, 2] == 64 and 50 < K[0, 0] < 400
        assert first[prefix + "camera_pose"].shape == (4, 4)
    assert first["state"].shape == (STATE_DIM,) and first["state"].dtype == np.float32
    # the constant +z action was executed: the end effector rose, x/y stayed put
    rise = last["state"][:3] - first["state"][:3]
    assert rise[2] > 0.02 and np.abs(rise[:2]).max() < 0.02

    # geometry: the agent-view depth lifted to the world with K and camera_pose puts the table top
    # on one horizontal plane, and a rendered surface (a finger) lies within a few cm of the
    # end effector near where the end effector projects
    pts = transform_points(first["camera_pose"], unproject(first["depth"], first["K"]))
    table = pts[110:, :, 2]
    assert np.nanstd(table) < 0.005 and 0.5 < np.nanmedian(table) < 1.2
    ee = first["state"][:3]
    dist = np.linalg.norm(pts - ee, axis=-1)
    i, j = np.unravel_index(np.nanargmin(dist), dist.shape)
    assert dist[i, j] < 0.05  # fingers open: the nearest finger surface is ~4 cm from the grip site
    ee_cam = transform_points(invert_transform(first["camera_pose"]), ee[None])[0]
    u, v = project(ee_cam[None], first["K"])[0]
    assert ee_cam[2] > 0.3 and abs(u - (j + 0.5)) < 10 and abs(v - (i + 0.5)) < 10
    # the wrist camera looks down the gripper: the end effector is in front of it, inside the image
    ee_wrist = transform_points(invert_transform(first["wrist_camera_pose"]), ee[None])[0]
    uw, vw = project(ee_wrist[None], first["wrist_K"])[0]
    assert 0.02 < ee_wrist[2] < 0.3 and 0 <= uw < 128 and 64 < vw < 128


@pytest.mark.slow
@needs_libero
def test_libero_client_errors_are_clear(tmp_path):
    proc = _run_client(None, tmp_path, "--suite", "libero_nonexistent", timeout=300)
    assert proc.returncode == 2 and "unknown LIBERO suite 'libero_nonexistent'" in proc.stderr

    class WrongShape(_RecordingPolicy):
        def infer(self, observation):
            return np.zeros((4, 4), np.float32)  # a Meta-World checkpoint's actions

    server = PolicyServer(WrongShape(), port=0).start()
    try:
        proc = _run_client(server.port, tmp_path, "--max-steps", "3", "--wait-steps", "0", "--size", "32")
    finally:
        server.stop()
    assert proc.returncode == 2 and f"expected (chunk, {ACTION_DIM})" in proc.stderr


def test_cli_help_renders():
    from vipa.sim.libero_env import build_parser

    text = build_parser().format_help()
    assert "--server" in text and "initial state" in text and "%%" not in text
