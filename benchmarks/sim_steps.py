"""Meta-World environment steps/s with RGB + depth rendering at 96 px: vipa's tuned offscreen
renderer vs Meta-World's own rgb_array rendering (gymnasium MujocoRenderer, default scene
options) on the same task, seeds and actions. Also reports steps/s without rendering."""

from __future__ import annotations

import time

import numpy as np

import vipa.sim  # noqa: F401  (sets MUJOCO_GL before mujoco loads)


def _steps_per_s(step, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as envs

    from vipa.sim.metaworld_env import MetaWorldEnv

    n = 40 if quick else 200
    size = 96
    ours = MetaWorldEnv("push-v3", width=size, height=size, max_steps=10**6)
    ours.reset(seed=0)
    rate_ours = _steps_per_s(lambda: ours.step(ours.expert_action()), n)
    ours.close()

    from gymnasium.envs.mujoco.mujoco_rendering import MujocoRenderer

    base = envs["push-v3-goal-observable"](seed=0, render_mode="rgb_array")
    base.reset(seed=0)
    renderer = MujocoRenderer(base.model, base.data, width=size, height=size, camera_name="corner")
    base.max_path_length = 10**6
    act = np.zeros(4, np.float32)

    def base_step():
        base.step(act)
        renderer.render("rgb_array")

    rate_base = _steps_per_s(base_step, n)
    renderer.close()
    base.close()

    plain = MetaWorldEnv("push-v3", render=False, max_steps=10**6)
    plain.reset(seed=0)
    rate_plain = _steps_per_s(lambda: plain.step(plain.expert_action()), n)
    plain.close()
    return {"name": "sim_steps", "metric": "env steps/s (RGB+depth, 96 px)", "unit": "steps/s",
            "value": rate_ours, "baseline": rate_base,
            "baseline_name": "gymnasium MujocoRenderer as Meta-World uses it (RGB only, default scene options)",
            "ratio": rate_ours / rate_base, "goal": ">= 1.0 (with depth too)", "passed": rate_ours >= rate_base,
            "extra": {"steps_per_s_no_render": rate_plain, "steps": n}}
