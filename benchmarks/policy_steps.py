"""Closed-loop policy steps/s of the tiny VIPA policy in Meta-World (64 px RGB + depth, 3D branch
on): executing 8 actions of each predicted chunk (replan=8, the evaluator's default) vs
re-predicting at every step (replan=1, the baseline). Extra: one chunk's inference latency with
10 vs 1 flow-matching steps."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import vipa.sim  # noqa: F401  (sets MUJOCO_GL before mujoco loads)


def _checkpoint(root: Path) -> Path:
    """A tiny model with an action head and action statistics (untrained: speed does not depend on weights)."""
    import torch

    from vipa.model.checkpoint import save_checkpoint
    from vipa.model.config import get_config
    from vipa.model.vla import VIPAModel
    from vipa.sim.metaworld_env import TASK_INSTRUCTIONS
    from vipa.train.robot import robot_tokenizer

    torch.manual_seed(0)
    cfg = get_config("tiny")
    tok = robot_tokenizer(sorted(TASK_INSTRUCTIONS.values()), cfg)
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id)
    stats = {"state_mean": [0.0, 0.6, 0.2, 0.5], "state_std": [0.1, 0.1, 0.1, 0.5],
             "action_mean": [0.0] * 4, "action_std": [0.5] * 4}
    return save_checkpoint(root / "ck", model, cfg, tok, {"stage": "post"}, stats)


def run(quick: bool = False) -> dict:
    import torch

    from vipa.sim.evaluate import observation_dict
    from vipa.sim.metaworld_env import MetaWorldEnv
    from vipa.infer.policy import PredictorPolicy

    torch.set_num_threads(1)
    n = 24 if quick else 96
    with tempfile.TemporaryDirectory() as tmp:
        policy = PredictorPolicy.load(_checkpoint(Path(tmp)))
    env = MetaWorldEnv("push-v3", width=64, height=64, max_steps=10**6)

    def closed_loop(replan: int) -> float:
        obs = env.reset(seed=0)
        policy.reset()
        policy.infer(observation_dict(obs))  # warm-up
        queue: list[np.ndarray] = []
        t0 = time.perf_counter()
        for _ in range(n):
            if not queue:
                queue = list(policy.infer(observation_dict(obs))[:replan])
            obs, _, _ = env.step(queue.pop(0))
        return n / (time.perf_counter() - t0)

    rate8 = closed_loop(8)
    rate1 = closed_loop(1)
    obs = observation_dict(env.reset(seed=1))
    lat = {}
    for steps in (10, 1):
        policy.flow_steps = steps
        policy.infer(obs)
        k = 5 if quick else 20
        t0 = time.perf_counter()
        for _ in range(k):
            policy.infer(obs)
        lat[steps] = (time.perf_counter() - t0) / k * 1e3
    env.close()
    return {"metric": "closed-loop policy steps/s (tiny, 64 px, RGB + depth, 1 torch thread)", "unit": "steps/s",
            "value": rate8, "baseline": rate1, "lower_is_better": False,
            "baseline_name": "replan=1 (a new chunk every step)", "goal": ">= 2",
            "extra": {"chunk_latency_ms_flow10": lat[10], "chunk_latency_ms_flow1": lat[1], "steps": n,
                      "chunks_per_s_flow10": 1e3 / lat[10]}}
