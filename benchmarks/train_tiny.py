"""Training throughput of the tiny VIPA-VLA (samples/s, one CPU thread): full model vs the same model without the 3D branch.

One optimizer step (forward, backward, AdamW) of the stage-1 loss on a batch of 32 synthetic-
shaped samples (64 px image + point map, 32-token prompt, 12-token answer), timed interleaved
with the baseline (tiny with ``use_3d=False``: no point-map encoder, no fusion cross-attention)
by vipa.bench.time_pair. value/baseline are samples per second (higher is better); the ratio
full/no-3D says what the 3D branch costs. Goal: the 3D branch costs at most 2x (ratio >= 0.5).
"""

from __future__ import annotations

from typing import Any

import torch


def _step_fn(use_3d: bool, batch_size: int):
    from vipa.model.config import get_config
    from vipa.model.tokenizer import VIPATokenizer
    from vipa.model.vla import VIPAModel
    from vipa.model.batch import Batch

    cfg = get_config("tiny", use_3d=use_3d)
    tok = VIPATokenizer.train(["Where is the red cube relative to the right hand? left and down, 0.44m"], 400)
    torch.manual_seed(0)
    model = VIPAModel(cfg.model, tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    s, b = cfg.model.image_size, batch_size
    prompt = torch.randint(5, 300, (b, cfg.model.max_prompt_len))
    batch = Batch(**{"image": torch.rand(b, 3, s, s), "xyz": torch.rand(b, 3, s, s), "valid": torch.ones(b, 1, s, s),
             "prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt),
             "target": torch.randint(5, 300, (b, 12)), "target_mask": torch.ones(b, 12, dtype=torch.long),
             "point_a": torch.rand(b, 3), "point_b": torch.rand(b, 3), "point_a_mask": torch.ones(b),
             "point_b_mask": torch.ones(b), "traj": torch.rand(b, cfg.model.traj_horizon, 3), "traj_mask": torch.zeros(b)})

    def step() -> None:
        loss, _ = model.compute_loss(batch, "stage1", cfg.train)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def run(quick: bool) -> dict[str, Any]:
    from vipa.bench import time_pair

    torch.set_num_threads(1)
    bs = 8 if quick else 32
    ours, base = time_pair(_step_fn(True, bs), _step_fn(False, bs), repeats=2 if quick else 5, warmup=1)
    value, baseline = bs / ours.best, bs / base.best
    return {"metric": f"tiny stage-1 training samples/s (batch {bs}, 1 thread)", "unit": "samples/s",
            "value": round(value, 2), "baseline": round(baseline, 2),
            "baseline_name": "tiny without the 3D branch (use_3d=False)", "lower_is_better": False,
            "goal": 0.5, "step_ms": ours.ms(), "baseline_step_ms": base.ms()}
