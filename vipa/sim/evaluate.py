"""Closed-loop evaluation in simulation: seeded rollouts, success rates with binomial (Wilson)
confidence intervals, a few rollouts saved as videos for the workbench."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
from tqdm import tqdm

from vipa.sim.metaworld_env import MetaWorldEnv, SimObservation
from vipa.sim.stats import wilson_interval

EVAL_SEED_OFFSET = 100_000  # evaluation seeds never overlap demonstration seeds (0, 1, 2, ...)


class ChunkPolicy(Protocol):
    """Anything that maps an observation dict to an action chunk (chunk, 4)."""

    metadata: dict[str, Any]

    def infer(self, observation: dict[str, Any]) -> np.ndarray: ...

    def reset(self) -> None: ...


def observation_dict(obs: SimObservation) -> dict[str, Any]:
    """The policy-server observation of a simulator observation (no privileged state)."""
    return {"image": obs.rgb, "depth": obs.depth, "K": obs.K, "state": obs.state,
            "instruction": obs.instruction, "camera_pose": obs.camera_pose}


@dataclass
class TaskResult:
    task: str
    episodes: int
    successes: int
    success_rate: float
    ci95: tuple[float, float]
    mean_steps: float
    seeds: list[int] = field(default_factory=list)


def rollout(env: MetaWorldEnv, policy: ChunkPolicy | None, seed: int, replan: int,
            record: bool = False) -> tuple[bool, int, dict[str, list]]:
    """One episode. ``policy=None`` runs the scripted expert (the ceiling). Returns (success,
    steps, recorded frames: rgb, state, executed action, predicted chunk per replanning step)."""
    obs = env.reset(seed=seed)
    if policy is not None:
        policy.reset()
    rec: dict[str, list] = {"rgb": [], "state": [], "action": [], "chunks": [], "K": obs.K, "camera_pose": obs.camera_pose,
                            "instruction": obs.instruction}
    done = success = False
    queue: list[np.ndarray] = []
    while not done:
        if policy is None:
            action = env.expert_action()
        else:
            if not queue:
                chunk = np.asarray(policy.infer(observation_dict(obs)), np.float32)
                if chunk.ndim != 2 or chunk.shape[1] != 4:
                    raise ValueError(f"policy returned actions of shape {chunk.shape}, expected (chunk, 4)")
                queue = list(chunk[: max(1, replan)])
                if record:
                    rec["chunks"].append((env.steps, chunk))
            action = queue.pop(0)
        if record:
            rec["rgb"].append(obs.rgb)
            rec["state"].append(obs.state)
            rec["action"].append(action)
        obs, success, done = env.step(action)
    return success, env.steps, rec


def save_rollout(out_dir: Path, task: str, seed: int, ok: bool, rec: dict[str, Any], video: bool = True) -> Path:
    """Write one recorded rollout: rollouts/{task}_seed{S}.npz (rgb (T, H, W, 3) uint8, state (T, 4)
    world-frame metres + gripper, executed action (T, 4), chunk_steps (N,) and chunks (N, chunk, 4)
    as predicted, K, camera_pose world_from_camera, task, instruction, seed, success), its Rerun
    recording rollouts/{task}_seed{S}.rrd and, with ``video``, videos/{task}_seed{S}_{ok|fail}.mp4."""
    (out_dir / "rollouts").mkdir(parents=True, exist_ok=True)
    chunks = [c[1] for c in rec["chunks"]]
    npz = out_dir / "rollouts" / f"{task}_seed{seed}.npz"
    np.savez_compressed(npz, rgb=np.stack(rec["rgb"]), state=np.stack(rec["state"]), action=np.stack(rec["action"]),
                        chunk_steps=np.array([c[0] for c in rec["chunks"]], np.int64),
                        chunks=np.stack(chunks) if chunks else np.zeros((0, 1, 4), np.float32),
                        K=np.asarray(rec["K"], np.float32), camera_pose=np.asarray(rec["camera_pose"], np.float32),
                        task=np.array(task), instruction=np.array(rec["instruction"]), seed=np.array(seed),
                        success=np.array(bool(ok)))
    from vipa.viz.rollout import save_rollout_rrd

    save_rollout_rrd(npz, npz.with_suffix(".rrd"))
    if video:
        from vipa.data.lerobot import encode_video

        encode_video(np.stack(rec["rgb"]), out_dir / "videos" / f"{task}_seed{seed}_{'ok' if ok else 'fail'}.mp4", fps=20)
    return npz


def evaluate(policy: ChunkPolicy | None, tasks: list[str], episodes: int, seed: int = 0, replan: int = 8,
             camera: str = "workspace", size: int = 96, max_steps: int = 200, out: str | Path | None = None,
             save_videos: int = 2, progress: Callable[[str], None] | None = None,
             save_video: bool = True) -> dict[str, Any]:
    """Roll ``policy`` out ``episodes`` times per task on seeds EVAL_SEED_OFFSET + seed + i and
    report success rates with 95% intervals. Writes report.json under ``out`` and, for the first
    ``save_videos`` episodes per task, an .mp4 (when ``save_video``), the rollout .npz and its
    Rerun .rrd (see save_rollout)."""
    results: list[TaskResult] = []
    out_dir = Path(out) if out is not None else None
    for task in tasks:
        successes, steps, seeds = 0, [], []
        with MetaWorldEnv(task, camera=camera, width=size, height=size, max_steps=max_steps) as env:
            for i in tqdm(range(episodes), desc=f"eval {task}", disable=progress is not None):
                s = EVAL_SEED_OFFSET + seed + i
                record = out_dir is not None and i < save_videos
                ok, n, rec = rollout(env, policy, s, replan, record=record)
                successes += ok
                steps.append(n)
                seeds.append(s)
                if record:
                    save_rollout(out_dir, task, s, ok, rec, video=save_video)
                if progress:
                    progress(f"{task}: {i + 1}/{episodes} ({successes} ok)")
        results.append(TaskResult(task, episodes, successes, successes / max(episodes, 1),
                                  wilson_interval(successes, episodes), float(np.mean(steps)), seeds))
    total = sum(r.successes for r in results)
    n = sum(r.episodes for r in results)
    report = {"policy": getattr(policy, "metadata", {"name": "scripted expert"}) if policy else {"name": "scripted expert"},
              "replan": replan, "camera": camera, "size": size,
              "tasks": [asdict(r) for r in results],
              "mean_success_rate": float(np.mean([r.success_rate for r in results])) if results else 0.0,
              "pooled_ci95": wilson_interval(total, n)}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return report
