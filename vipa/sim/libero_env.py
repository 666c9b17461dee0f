"""LIBERO adapter: seeded task-suite episodes with offscreen RGB + metric depth, intrinsics and
camera pose, proprioception and the task's instruction, rolled out against a policy server.

LIBERO (robosuite 1.4, mujoco 2.3, numpy 1.26) cannot share the project's environment, so this
module imports only numpy, msgpack, websockets and libero/robosuite (plus vipa.infer's codec and
client, which import nothing else) and runs in its own venv with the repository on PYTHONPATH
(``scripts/setup_libero.sh`` creates ``.venv-libero``)::

    vipa serve CHECKPOINT --port 8765 &          # project venv
    PYTHONPATH=. .venv-libero/bin/python -m vipa.sim.libero_env --server 127.0.0.1:8765 \\
        --suite libero_spatial --task 0 --episodes 10 --seed 0 --out runs/libero

Observations follow vipa.conventions like the Meta-World adapter: ``rgb`` (H, W, 3) uint8 with
row 0 at the top (robosuite's OpenGL images are flipped), ``depth`` (H, W) float32 metres along
the optical axis from the depth buffer with the model's near/far planes (NaN at the far plane),
``K`` from the camera's fovy with the principal point at (W/2, H/2) (pixel (i, j) has centre
(j + 0.5, i + 0.5)), ``camera_pose`` world_from_camera in OpenCV axes (x right, y down,
z forward) in robosuite's world frame, metres. ``state`` (8,) float32 is the openpi LIBERO
proprioception: end-effector position (3, world, m), orientation as axis-angle (3, rad), gripper
finger joint positions (2, m). Actions are robosuite OSC_POSE deltas (7,) in [-1, 1]: dx, dy,
dz, droll, dpitch, dyaw, gripper (-1 open, +1 close). The policy never sees object state.

Episode protocol (as LIBERO's and openpi's evaluation scripts): episode seed ``s = seed + i``
selects the suite's fixed initial state ``s % 50`` (seed 0 with 50 episodes is the standard
protocol), then ``wait_steps`` no-op steps let objects settle before the policy acts; success is
the task's BDDL goal predicate; the step limit is the suite's (220 for libero_spatial). With
``--out``: report.json (per-episode success, steps, timing; success rate with a 95% Wilson
interval), videos/*.webm (agent view) and rollouts/*.npz (state, executed action, each predicted
chunk and the step it was asked at) for the first ``--save-videos`` episodes.

Images: ours are the physical camera image (row 0 at the top, world +y to the right in the agent
view). openpi's LIBERO data and clients use ``raw[::-1, ::-1]``, which is ours mirrored
left-right (``rgb[:, ::-1]``): a policy trained on that data needs the same mirror.

Speed, measured on this 2-core CPU (llvmpipe EGL; libero_spatial task 0, zero actions, 40 steps;
other jobs kept the load at 12-20, so wall figures are pessimistic and CPU-seconds are the stable
measure; ``--policy zero --out DIR`` reports both as env_steps_per_s / env_steps_per_cpu_s):

    configuration                                   steps per CPU-s   steps/s wall (loaded)
    no rendering (--no-render, physics + control)         39                 8.9
    agentview 128 px RGB + depth (default look)           5.9-6.8            1.7-2.0
    agentview 224 px RGB + depth                          5.8                2.4
    agentview + wrist 128 px (--wrist)                    3.7                0.95
    agentview 128 px, --fast-render                      11.0-11.3           2.8-4.5
    agentview + wrist 128 px, --fast-render               7.0                1.5

Rendering dominates and barely depends on image size (shadows and reflections do:
``--fast-render`` is ~1.8x faster but changes the look); LP_NUM_THREADS=0 changed nothing.
Building the environment takes 10-25 s and each reset rebuilds the model (seconds), so one 220-step
libero_spatial episode with the agent view costs ~40 CPU-s: a few episodes per run on a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vipa.ranges import count, positive
from vipa.sim.metaworld_env import SimObservation
from vipa.sim.stats import wilson_interval

os.environ.setdefault("MUJOCO_GL", "egl")

SUITE_MAX_STEPS: dict[str, int] = {"libero_spatial": 220, "libero_object": 280, "libero_goal": 300,
                                   "libero_10": 520, "libero_90": 400}
STATE_DIM = 8  # eef xyz (m) + axis-angle (rad) + 2 gripper finger positions (m)
ACTION_DIM = 7  # OSC_POSE deltas + gripper, each in [-1, 1]
AGENT_CAMERA = "agentview"
WRIST_CAMERA = "robot0_eye_in_hand"
NOOP_ACTION = np.array([0, 0, 0, 0, 0, 0, -1], np.float32)  # hold still, gripper open


@dataclass
class CameraView:
    """One rendered camera: rgb (H, W, 3) uint8, depth (H, W) float32 m (NaN = no surface),
    K (3, 3) float32 px, camera_pose (4, 4) float32 world_from_camera (OpenCV axes)."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    camera_pose: np.ndarray


@dataclass
class LiberoObservation(SimObservation):
    """The simulator observation (agent-view camera; state (8,) float32) plus an optional wrist camera."""

    wrist: CameraView | None = None


def quat_to_axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> axis-angle (3,) rad, angle in [0, pi]."""
    q = np.asarray(quat_xyzw, np.float64).reshape(4)
    q = q / max(np.linalg.norm(q), 1e-12)
    if q[3] < 0:
        q = -q
    s = math.sqrt(max(1.0 - q[3] * q[3], 0.0))
    if s < 1e-8:
        return np.zeros(3, np.float32)
    return (q[:3] / s * 2.0 * math.acos(min(q[3], 1.0))).astype(np.float32)


def fovy_intrinsics(fovy_deg: float, width: int, height: int) -> np.ndarray:
    """Pinhole K (3, 3) float32 of a MuJoCo camera with vertical field of view ``fovy_deg``."""
    f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float32)


def opencv_camera_pose(cam_xpos: np.ndarray, cam_xmat: np.ndarray) -> np.ndarray:
    """World_from_camera (4, 4) float32 in OpenCV axes from MuJoCo's camera frame
    (x right, y up, looking along -z)."""
    T = np.eye(4, dtype=np.float32)
    T[:3, :3] = np.asarray(cam_xmat, np.float64).reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = cam_xpos
    return T


def depth_buffer_to_metres(buffer: np.ndarray, znear: float, zfar: float) -> np.ndarray:
    """Normalised OpenGL depth buffer in [0, 1] -> metric depth along the optical axis (float32),
    NaN at the far plane (no surface). ``znear``/``zfar`` in metres (model vis.map x extent)."""
    b = np.asarray(buffer, np.float64)
    depth = znear / (1.0 - b * (1.0 - znear / zfar))
    depth[b >= 1.0 - 1e-7] = np.nan
    return depth.astype(np.float32)


def _import_libero():
    try:
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "LIBERO is not installed in this Python: run scripts/setup_libero.sh and use "
            ".venv-libero/bin/python with the repository on PYTHONPATH") from exc
    return benchmark, get_libero_path, OffScreenRenderEnv


class LiberoEnv:
    """One LIBERO task with offscreen rendering. ``reset(seed)`` loads initial state seed % 50."""

    def __init__(self, suite: str = "libero_spatial", task: int = 0, size: int = 128, wrist: bool = False,
                 max_steps: int | None = None, wait_steps: int = 10, fast_render: bool = False,
                 render: bool = True):
        benchmark, get_libero_path, OffScreenRenderEnv = _import_libero()
        suites = benchmark.get_benchmark_dict()
        if suite not in suites:
            raise ValueError(f"unknown LIBERO suite {suite!r}; known: {', '.join(sorted(suites))}")
        self._suite = suites[suite]()
        if not 0 <= task < self._suite.n_tasks:
            raise ValueError(f"{suite} has tasks 0..{self._suite.n_tasks - 1}, got {task}")
        if size < 16:
            raise ValueError(f"image size must be at least 16 px, got {size}")
        t = self._suite.get_task(task)
        self.suite, self.task, self.task_name = suite, task, t.name
        self.size, self.wrist, self.render, self.fast_render = size, wrist, render, fast_render
        self.max_steps = max_steps if max_steps is not None else SUITE_MAX_STEPS.get(suite, 400)
        self.wait_steps = wait_steps
        self.init_states = np.asarray(self._suite.get_task_init_states(task))
        self.cameras = [AGENT_CAMERA] + ([WRIST_CAMERA] if wrist else [])
        bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
        self._env = OffScreenRenderEnv(bddl_file_name=bddl, camera_names=self.cameras,
                                       camera_heights=size, camera_widths=size, camera_depths=render,
                                       use_camera_obs=render)
        self.instruction = str(self._env.language_instruction)
        self._raw: dict[str, Any] = {}
        self.steps = 0
        self.seed = 0

    @property
    def sim(self):
        return self._env.sim

    def _apply_render_flags(self) -> None:
        """Shadows, reflections, skybox off (several times faster on llvmpipe; changes appearance,
        so off by default: LIBERO-trained policies saw the default look)."""
        if not (self.fast_render and self.render):
            return
        import mujoco

        ctx = self.sim._render_context_offscreen
        if ctx is not None:
            for flag in ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG", "mjRND_HAZE"):
                ctx.scn.flags[getattr(mujoco.mjtRndFlag, flag)] = 0

    def _view(self, camera: str) -> CameraView:
        m, d = self.sim.model, self.sim.data
        cid = m.camera_name2id(camera)
        K = fovy_intrinsics(float(m.cam_fovy[cid]), self.size, self.size)
        T = opencv_camera_pose(d.cam_xpos[cid], d.cam_xmat[cid])
        if not self.render:
            return CameraView(np.zeros((self.size, self.size, 3), np.uint8),
                              np.full((self.size, self.size), np.nan, np.float32), K, T)
        extent = float(m.stat.extent)
        rgb = np.ascontiguousarray(self._raw[f"{camera}_image"][::-1])  # OpenGL rows -> top row first
        buf = self._raw[f"{camera}_depth"][::-1, :, 0]
        depth = depth_buffer_to_metres(buf, float(m.vis.map.znear) * extent, float(m.vis.map.zfar) * extent)
        return CameraView(rgb, depth, K, T)

    def _observe(self) -> LiberoObservation:
        raw = self._raw
        state = np.concatenate([raw["robot0_eef_pos"], quat_to_axis_angle(raw["robot0_eef_quat"]),
                                raw["robot0_gripper_qpos"]]).astype(np.float32)
        agent = self._view(AGENT_CAMERA)
        wrist = self._view(WRIST_CAMERA) if self.wrist else None
        return LiberoObservation(agent.rgb, agent.depth, agent.K, agent.camera_pose, state,
                                 self.instruction, wrist)

    def reset(self, seed: int) -> LiberoObservation:
        """Seeded reset: initial state ``seed % 50`` of the suite, then ``wait_steps`` no-ops."""
        self.seed = int(seed)
        self._env.seed(self.seed)
        self._env.reset()
        self._apply_render_flags()
        self._raw = self._env.set_init_state(self.init_states[self.seed % len(self.init_states)])
        for _ in range(self.wait_steps):
            self._raw, _, _, _ = self._env.step(NOOP_ACTION)
        self.steps = 0
        return self._observe()

    def step(self, action: np.ndarray) -> tuple[LiberoObservation, bool, bool]:
        """Apply one action (7,) in [-1, 1]; returns (observation, success, done)."""
        action = np.asarray(action, np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"LIBERO actions are ({ACTION_DIM},) OSC_POSE deltas + gripper, got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("action contains NaN or inf")
        self._raw, _, done, _ = self._env.step(np.clip(action, -1.0, 1.0))
        self.steps += 1
        success = bool(self._env.check_success())
        return self._observe(), success, success or bool(done) or self.steps >= self.max_steps

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> "LiberoEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def observation_dict(obs: LiberoObservation) -> dict[str, Any]:
    """The policy-server observation (vipa.infer.server format; wrist_* keys when rendered)."""
    d: dict[str, Any] = {"image": obs.rgb, "depth": obs.depth, "K": obs.K, "state": obs.state,
                         "instruction": obs.instruction, "camera_pose": obs.camera_pose}
    if obs.wrist is not None:
        d.update(wrist_image=obs.wrist.rgb, wrist_depth=obs.wrist.depth, wrist_K=obs.wrist.K,
                 wrist_camera_pose=obs.wrist.camera_pose)
    return d


class ChunkPolicy(Protocol):
    metadata: dict[str, Any]

    def infer(self, observation: dict[str, Any]) -> np.ndarray: ...

    def reset(self) -> None: ...


class ZeroPolicy:
    """Holds still with the gripper open: a smoke test of the environment without a server."""

    metadata = {"name": "zero"}

    def __init__(self, chunk: int = 8):
        self.chunk = chunk

    def infer(self, observation: dict[str, Any]) -> np.ndarray:
        return np.tile(NOOP_ACTION, (self.chunk, 1))

    def reset(self) -> None:
        pass


class ReplayPolicy:
    """Replays a recorded (T, 7) action array (.npy, or .npz key ``action``), then no-ops."""

    def __init__(self, path: str | Path, chunk: int = 8):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"replay actions not found: {path}")
        data = np.load(path, allow_pickle=False)
        actions = data["action"] if isinstance(data, np.lib.npyio.NpzFile) else data
        actions = np.asarray(actions, np.float32)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM:
            raise ValueError(f"{path}: replay actions must be (T, {ACTION_DIM}), got {actions.shape}")
        self.actions, self.chunk, self.t = actions, chunk, 0
        self.metadata = {"name": "replay", "path": str(path), "length": len(actions)}

    def infer(self, observation: dict[str, Any]) -> np.ndarray:
        out = self.actions[self.t:self.t + self.chunk]
        self.t += self.chunk
        if len(out) < self.chunk:
            out = np.concatenate([out, np.tile(NOOP_ACTION, (self.chunk - len(out), 1))])
        return out

    def reset(self) -> None:
        self.t = 0


def rollout(env: LiberoEnv, policy: ChunkPolicy, seed: int, replan: int,
            record: bool = False) -> dict[str, Any]:
    """One episode; returns success, steps, timing and (when ``record``) agent-view frames and the
    record: state and executed action per step, each predicted chunk with the step it was asked at."""
    obs = env.reset(seed)
    policy.reset()
    queue: list[np.ndarray] = []
    frames = [obs.rgb] if record else []
    rec: dict[str, list] = {"state": [], "action": [], "chunk_steps": [], "chunks": []}
    chunks = 0
    t_env = t_policy = cpu_env = 0.0
    success = done = False
    while not done:
        if not queue:
            t0 = time.perf_counter()
            chunk = np.asarray(policy.infer(observation_dict(obs)), np.float32)
            t_policy += time.perf_counter() - t0
            if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM or len(chunk) == 0:
                raise ValueError(f"policy returned actions of shape {chunk.shape}, expected (chunk, {ACTION_DIM})"
                                 " (LIBERO OSC_POSE deltas + gripper)")
            queue = list(chunk[:max(1, replan)])
            chunks += 1
            if record:
                rec["chunk_steps"].append(env.steps)
                rec["chunks"].append(chunk)
        action = queue.pop(0)
        if record:
            rec["state"].append(obs.state)
            rec["action"].append(action)
        t0, c0 = time.perf_counter(), time.process_time()
        obs, success, done = env.step(action)
        t_env += time.perf_counter() - t0
        cpu_env += time.process_time() - c0
        if record:
            frames.append(obs.rgb)
    return {"seed": seed, "init_state": seed % len(env.init_states), "success": success, "steps": env.steps,
            "chunks": chunks, "env_s": t_env, "env_cpu_s": cpu_env, "policy_s": t_policy,
            "env_steps_per_s": env.steps / max(t_env, 1e-9), "frames": frames, "record": rec}


def save_video(frames: list[np.ndarray], path: Path, fps: int = 20) -> Path:
    """Browser-playable VP8 .webm through OpenCV (bundled with LIBERO; its wheels have no H.264
    encoder), else MPEG-4 .mp4, else the frames as .npz. Returns the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import cv2
    except ModuleNotFoundError:
        cv2 = None
    if cv2 is not None:
        h, w = frames[0].shape[:2]
        for fourcc, suffix in (("VP80", ".webm"), ("mp4v", ".mp4")):
            out = path.with_suffix(suffix)
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
            if writer.isOpened():
                for f in frames:
                    writer.write(np.ascontiguousarray(f[..., ::-1]))
                writer.release()
                return out
    out = path.with_suffix(".npz")
    np.savez_compressed(out, rgb=np.stack(frames))
    return out


def _parse_server(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--server must be HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Roll out ``args.episodes`` seeded episodes; write report.json (+ videos) under ``args.out``."""
    out = Path(args.out) if args.out else None
    client = None
    if args.server:
        from vipa.infer.server import PolicyClient

        host, port = _parse_server(args.server)
        try:
            client = PolicyClient(host, port, timeout=args.timeout)
        except (OSError, TimeoutError) as exc:
            raise ConnectionError(f"cannot reach the policy server at {host}:{port} ({exc})") from exc
        policy: ChunkPolicy = client
    elif args.policy == "replay":
        if not args.actions:
            raise ValueError("--policy replay needs --actions FILE.npy")
        policy = ReplayPolicy(args.actions, chunk=args.replan)
    else:
        policy = ZeroPolicy(chunk=args.replan)
    episodes = []
    t_make = time.perf_counter()
    try:
        with LiberoEnv(args.suite, args.task, size=args.size, wrist=args.wrist, max_steps=args.max_steps,
                       wait_steps=args.wait_steps, fast_render=args.fast_render, render=not args.no_render) as env:
            make_s = time.perf_counter() - t_make
            for i in range(args.episodes):
                seed = args.seed + i
                record = out is not None and i < args.save_videos
                ep = rollout(env, policy, seed, args.replan, record=record)
                frames, rec = ep.pop("frames"), ep.pop("record")
                if record and frames:
                    stem = f"{args.suite}_task{args.task}_seed{seed}"
                    ep["video"] = str(save_video(frames, out / "videos" / f"{stem}_{'ok' if ep['success'] else 'fail'}.webm"))
                    ep["rollout"] = str(out / "rollouts" / f"{stem}.npz")
                    (out / "rollouts").mkdir(parents=True, exist_ok=True)
                    np.savez_compressed(
                        ep["rollout"], state=np.stack(rec["state"]), action=np.stack(rec["action"]),
                        chunk_steps=np.array(rec["chunk_steps"], np.int64),
                        chunks=np.stack(rec["chunks"]) if rec["chunks"] else np.zeros((0, 1, ACTION_DIM), np.float32))
                episodes.append(ep)
                print(json.dumps(ep), file=sys.stderr, flush=True)
            instruction, task_name = env.instruction, env.task_name
    finally:
        if client is not None:
            client.close()
    n_ok = sum(e["success"] for e in episodes)
    steps = sum(e["steps"] for e in episodes)
    report = {"suite": args.suite, "task": args.task, "task_name": task_name, "instruction": instruction,
              "policy": getattr(policy, "metadata", {}), "replan": args.replan, "size": args.size,
              "wrist": args.wrist, "fast_render": args.fast_render, "render": not args.no_render,
              "episodes": episodes,
              "successes": n_ok, "success_rate": n_ok / max(len(episodes), 1),
              "ci95": wilson_interval(n_ok, len(episodes)), "env_make_s": make_s,
              "env_steps_per_s": steps / max(sum(e["env_s"] for e in episodes), 1e-9),
              "env_steps_per_cpu_s": steps / max(sum(e["env_cpu_s"] for e in episodes), 1e-9)}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vipa.sim.libero_env", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", help="HOST:PORT of a policy server (`vipa serve`); default: --policy")
    p.add_argument("--policy", choices=("zero", "replay"), default="zero",
                   help="offline policy when no --server: zero (hold still) or replay --actions")
    p.add_argument("--actions", help="(T, 7) .npy/.npz actions for --policy replay")
    p.add_argument("--suite", default="libero_spatial")
    p.add_argument("--task", type=count(0), default=0)
    p.add_argument("--episodes", type=count(), default=1)
    p.add_argument("--seed", type=count(0), default=0, help="episode i uses seed + i and initial state (seed + i) %% 50")
    p.add_argument("--replan", type=count(), default=5, help="actions executed from each chunk before asking again")
    p.add_argument("--size", type=count(8), default=128, help="square camera image size in px")
    p.add_argument("--wrist", action="store_true", help="also render the wrist camera (wrist_* keys)")
    p.add_argument("--max-steps", type=count(), default=None, help="default: the suite's limit")
    p.add_argument("--wait-steps", type=count(0), default=10, help="no-op steps after reset while objects settle")
    p.add_argument("--fast-render", action="store_true", help="shadows/reflections/skybox off (faster, looks different)")
    p.add_argument("--no-render", action="store_true", help="blank images, no depth: physics-only timing")
    p.add_argument("--timeout", type=positive(), default=120.0, help="seconds to wait for the server per request")
    p.add_argument("--out", help="folder for report.json and videos")
    p.add_argument("--save-videos", type=count(0), default=2, help="first episodes saved as videos and rollout records")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (ValueError, RuntimeError, FileNotFoundError, ConnectionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
