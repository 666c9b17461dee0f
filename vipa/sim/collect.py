"""Record scripted-expert demonstrations into a LeRobot v3 dataset.

Per frame: the camera image (video), metric depth (uint16 millimetres, 0 = no surface), K,
camera pose (world_from_camera, OpenCV axes), robot state (end-effector xyz m + gripper) and
the expert's action (4,). Episode extras: task, seed, success, steps, noise.

With ``noise`` > 0 the demonstrations are recorded with perturbed execution (DART, Laskey et al.
2017): the label is always the expert's action for the state the robot is in, but the action
executed is that plus Gaussian noise, so the data shows how the expert recovers from the small
errors a learned policy makes in closed loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from vipa.data.lerobot import LeRobotWriter
from vipa.sim.metaworld_env import ACTION_DIM, STATE_DIM, MetaWorldEnv, SimObservation

DEPTH_UNIT_M = 0.001  # observation.depth counts are millimetres
SIM_FPS = 80.0  # Meta-World control rate: MuJoCo dt 2.5 ms x frame_skip 5


def sim_features(height: int, width: int) -> dict[str, dict]:
    """The LeRobot features of a simulated demonstration (shapes per frame)."""
    return {
        "observation.images.main": {"dtype": "video", "shape": [height, width, 3],
                                    "names": ["height", "width", "channels"]},
        "observation.depth": {"dtype": "uint16", "shape": [height, width], "names": ["height", "width"],
                              "info": {"unit": "mm", "zero": "no surface", "frame": "camera (OpenCV)"}},
        "observation.camera_intrinsics": {"dtype": "float32", "shape": [3, 3], "names": None,
                                          "info": {"unit": "px"}},
        "observation.camera_pose": {"dtype": "float32", "shape": [4, 4], "names": None,
                                    "info": {"frame": "world_from_camera, OpenCV camera axes", "unit": "m"}},
        "observation.state": {"dtype": "float32", "shape": [STATE_DIM],
                              "names": ["ee_x", "ee_y", "ee_z", "gripper"], "info": {"unit": "m, world frame"}},
        "action": {"dtype": "float32", "shape": [ACTION_DIM], "names": ["dx", "dy", "dz", "grip"],
                   "info": {"range": [-1, 1]}},
        "next.success": {"dtype": "bool", "shape": [1], "names": None},
    }


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metric depth (NaN = none) -> uint16 millimetres (0 = none), clipped to 65.535 m."""
    mm = np.nan_to_num(depth_m / DEPTH_UNIT_M, nan=0.0)
    return np.clip(np.round(mm), 0, 65535).astype(np.uint16)


NOISE_DIMS = 3  # the xyz deltas; the gripper command is executed as the expert gives it


def noise_rng(seed: int) -> np.random.Generator:
    """The execution-noise generator of the demonstration with episode seed ``seed``."""
    return np.random.default_rng([0x5EED, seed])


def check_noise(noise: float) -> float:
    """``noise`` if it is a valid execution-noise sd (>= 0, action units), else ValueError."""
    if not noise >= 0:
        raise ValueError(f"execution noise must be >= 0, got {noise}")
    return noise


def perturb(action: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """The executed action (4,): ``action`` plus N(0, noise^2) on its xyz deltas (action units,
    [-1, 1] full scale), clipped to [-1, 1]. ``noise`` 0 returns ``action`` unchanged."""
    if check_noise(noise) == 0:
        return action
    out = np.array(action, np.float32, copy=True)
    out[:NOISE_DIMS] += rng.normal(0.0, noise, NOISE_DIMS).astype(np.float32)
    return np.clip(out, -1.0, 1.0)


def expert_episode(env: MetaWorldEnv, seed: int, noise: float = 0.0
                   ) -> Iterator[tuple[SimObservation, np.ndarray, bool]]:
    """One scripted-expert episode from a seeded reset: per control step yields (the observation,
    the expert's action for it, success after executing ``perturb(action)``) until the episode ends."""
    obs = env.reset(seed=seed)
    rng = noise_rng(seed)
    done = False
    while not done:
        action = env.expert_action()
        nxt, success, done = env.step(perturb(action, rng, noise))
        yield obs, action, success
        obs = nxt


@dataclass
class CollectStats:
    task: str
    attempted: int
    kept: int
    successes: int


def collect_demos(out: str | Path, tasks: list[str], episodes: int, seed: int = 0, camera: str = "workspace",
                  size: int = 96, max_steps: int = 200, only_success: bool = True,
                  progress: Callable[[str], None] | None = None, noise: float = 0.0) -> list[CollectStats]:
    """Run the scripted expert ``episodes`` times per task (seeds seed, seed+1, ...) and write a
    LeRobot v3 dataset at ``out``. Failed demos are dropped when ``only_success``. ``noise`` > 0
    records the expert's action but executes it perturbed (see ``perturb``)."""
    check_noise(noise)  # before anything is written
    writer = LeRobotWriter(Path(out), fps=SIM_FPS, features=sim_features(size, size), robot_type="sawyer")
    stats = []
    for task in tasks:
        kept = successes = 0
        with MetaWorldEnv(task, camera=camera, width=size, height=size, max_steps=max_steps) as env:
            for i in tqdm(range(episodes), desc=f"collect {task}", disable=progress is not None):
                s = seed + i
                frames: dict[str, list] = {k: [] for k in sim_features(size, size)}
                success = False
                for obs, action, success in expert_episode(env, s, noise):
                    frames["observation.images.main"].append(obs.rgb)
                    frames["observation.depth"].append(depth_to_mm(obs.depth))
                    frames["observation.camera_intrinsics"].append(obs.K)
                    frames["observation.camera_pose"].append(obs.camera_pose)
                    frames["observation.state"].append(obs.state)
                    frames["action"].append(action)
                    frames["next.success"].append(success)
                successes += success
                if success or not only_success:
                    writer.add_episode({k: np.stack(v) for k, v in frames.items()}, task=obs.instruction,
                                       extra={"task": task, "seed": s, "success": success, "steps": env.steps,
                                              "noise": noise})
                    kept += 1
                if progress:
                    progress(f"{task}: {i + 1}/{episodes}")
        stats.append(CollectStats(task, episodes, kept, successes))
    writer.finalize()
    return stats
