"""Predictor latency of the tiny VIPA-VLA for one prediction on one CPU thread (goal < 100 ms), against the 100 ms budget.

Loads checkpoints/tiny_sample when present (else a freshly initialised tiny checkpoint: latency
does not depend on the weights) and times ``Predictor.predict`` on a 96x96 RGB-D frame:
``trajectory`` mode (point map from depth + K, one forward for the numeric trajectory head,
then constrained motion-token decoding with a KV cache), plus the numeric-head-only time (one
forward) and ``answer`` mode. value = best trajectory-mode latency; baseline = the 100 ms budget
of issue 5; ratio = budget / latency (>= 1 meets the goal).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _checkpoint(tmp: Path) -> Path:
    from vipa.resources import REPO_ROOT

    ck = REPO_ROOT / "checkpoints" / "tiny_sample"
    if (ck / "model.safetensors").is_file():
        return ck
    from vipa.model.checkpoint import save_checkpoint
    from vipa.model.config import get_config
    from vipa.model.tokenizer import VIPATokenizer
    from vipa.model.vla import VIPAModel

    cfg = get_config("tiny")
    tok = VIPATokenizer.train(["Predict the right wrist motion to pick up the red cube."], cfg.model.tokenizer_vocab)
    return save_checkpoint(tmp / "ck", VIPAModel(cfg.model, tok.vocab_size), cfg, tok)


def run(quick: bool) -> dict[str, Any]:
    from vipa.bench import time_it
    from vipa.infer.predictor import Predictor

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        ck = _checkpoint(Path(d))
        pred = Predictor.load(ck)
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        depth = rng.uniform(0.4, 0.9, (96, 96)).astype(np.float32)
        K = np.array([[80, 0, 48], [0, 80, 48], [0, 0, 1]], np.float32)
        instr = "Predict the right wrist motion to pick up the red cube."
        n = 3 if quick else 15
        traj = time_it(lambda: pred.predict(img, depth, K, instr, mode="trajectory"), repeats=n)
        head = time_it(lambda: pred.predict(img, depth, K, instr, mode="trajectory", motion_tokens=False), repeats=n)
        ans = time_it(lambda: pred.predict(img, depth, K, "Where is the red cube relative to the right hand?",
                                           mode="answer"), repeats=n)
    return {"metric": "Predictor.predict latency, trajectory mode (1 thread)", "unit": "ms",
            "value": round(traj.best * 1e3, 2), "baseline": 100.0, "baseline_name": "100 ms budget (issue 5 goal)",
            "goal": 1.0, "checkpoint": str(ck), "trajectory": traj.ms(), "numeric_head_only": head.ms(),
            "answer_mode": ans.ms()}
