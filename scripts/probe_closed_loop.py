"""Issue 13 item 4, diagnosis: where does a post-trained policy go wrong in closed loop? Rolls a
checkpoint out on seeded Meta-World episodes (the evaluation's seeds and replanning) and logs, at
each replanning step, what the model's readout says against the truth:

- ``pa_err``: pointer A (the model's end-effector estimate) against the end effector from
  proprioception, metres;
- ``pb_goal``: pointer B (where the model thinks the end effector will end) minus the task's goal,
  world frame, metres. The goal is privileged simulator state, read here for the diagnosis only;
  the policy never sees it.

``--anchor`` is an intervention: the action head's geometry token takes the end effector from
proprioception (camera frame) instead of pointer A (B - A and the trajectory moved with it). When
failures come from pointer A drifting, anchored rollouts succeed more often.

    python scripts/probe_closed_loop.py runs/sim_seeds/post_b@s1/final --task push-v3 --episodes 8 \\
        [--anchor] --out runs/probe/b_s1_push.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipa.infer.policy import PredictorPolicy
from vipa.sim.evaluate import EVAL_SEED_OFFSET
from vipa.sim.metaworld_env import MetaWorldEnv


def anchored_geometry(model, ee_cam: dict[str, np.ndarray]):
    """A replacement for ``model.action_geometry`` that puts the proprioceptive end effector
    ``ee_cam["now"]`` (camera frame, metres) where pointer A was, the trajectory moved with it; the
    layout stays the model's own (its ``action_geometry`` on the changed output)."""
    original = model.action_geometry

    def geometry(out) -> torch.Tensor:
        ee = torch.as_tensor(ee_cam["now"], dtype=out.point_a.dtype)[None].expand_as(out.point_a)
        return original(dataclasses.replace(out, point_a=ee, traj=out.traj + (ee - out.point_a)[:, None]))
    return geometry


def probe(checkpoint: str, task: str, episodes: int, seed: int = 0, replan: int = 8, size: int = 64,
          max_steps: int = 200, anchor: bool = False) -> list[dict[str, Any]]:
    """One row per episode: success, steps, and the readout against the truth along the rollout."""
    policy = PredictorPolicy.load(checkpoint)
    model = policy.predictor.model
    ee_cam: dict[str, np.ndarray] = {}
    if anchor:
        model.action_geometry = anchored_geometry(model, ee_cam)
    env = MetaWorldEnv(task, width=size, height=size, max_steps=max_steps)
    rows = []
    try:
        for i in range(episodes):
            s = EVAL_SEED_OFFSET + seed + i
            obs = env.reset(seed=s)
            policy.reset()
            goal = np.asarray(env._env._target_pos, np.float64)  # privileged: the diagnosis only
            steps: list[dict[str, Any]] = []
            queue: list[np.ndarray] = []
            done = ok = False
            while not done:
                if not queue:
                    T = np.asarray(obs.camera_pose, np.float64)
                    ee = obs.state[:3].astype(np.float64)
                    ee_cam["now"] = (T[:3, :3].T @ (ee - T[:3, 3])).astype(np.float32)
                    chunk = policy.infer({"image": obs.rgb, "depth": obs.depth, "K": obs.K, "state": obs.state,
                                          "instruction": obs.instruction})
                    pred = policy.last
                    pa = T[:3, :3] @ pred.wrist + T[:3, 3]
                    pb = T[:3, :3] @ pred.target + T[:3, 3]
                    steps.append({"step": env.steps, "pa_err": float(np.linalg.norm(pa - ee)),
                                  "pb_goal": (pb - goal).tolist(), "ee_goal": (ee - goal).tolist()})
                    queue = list(chunk[:max(1, replan)])
                obs, ok, done = env.step(queue.pop(0))
            pa_err = [r["pa_err"] for r in steps]
            rows.append({"task": task, "seed": s, "anchor": anchor, "success": bool(ok), "steps": env.steps,
                         "pa_err_mean": float(np.mean(pa_err)), "pa_err_max": float(np.max(pa_err)),
                         "pb_goal_first": float(np.linalg.norm(steps[0]["pb_goal"])),
                         "pb_goal_last": float(np.linalg.norm(steps[-1]["pb_goal"])),
                         "final_ee_minus_goal": (obs.state[:3] - goal).round(4).tolist(), "replans": steps})
    finally:
        env.close()
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the successful and the failed episodes."""
    out: dict[str, Any] = {"episodes": len(rows), "successes": sum(r["success"] for r in rows)}
    for tag, sel in (("success", [r for r in rows if r["success"]]), ("failure", [r for r in rows if not r["success"]])):
        if sel:
            out[tag] = {k: round(float(np.mean([r[k] for r in sel])), 4)
                        for k in ("pa_err_mean", "pb_goal_first", "pb_goal_last")}
            out[tag]["final_ee_minus_goal"] = np.mean([r["final_ee_minus_goal"] for r in sel], 0).round(4).tolist()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--task", required=True)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="evaluation seeds start at 100000 + this")
    p.add_argument("--replan", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--anchor", action="store_true", help="the end effector from proprioception in the geometry token")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="JSONL, one row per episode; the summary goes to stdout")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = probe(a.checkpoint, a.task, a.episodes, a.seed, a.replan, a.size, a.max_steps, a.anchor)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(json.dumps(summary(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
