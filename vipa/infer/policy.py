"""A checkpoint as a chunk policy for the policy server and the simulator, built on vipa.infer.Predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vipa.infer.predictor import Predictor, checkpoint_label


class PredictorPolicy:
    """A post-trained checkpoint as a chunk policy: observation dict -> (chunk, A) actions.

    Uses the image, metric depth + K (for the 3D branch), the robot state and the instruction;
    nothing privileged. Flow-matching samples are seeded per call so a rollout is repeatable."""

    def __init__(self, predictor: Predictor, flow_steps: int | None = None, replan: int | None = None):
        if not predictor.action_stats:
            raise ValueError("checkpoint has no action head training (no action_stats): run `vipa train post` first")
        self.predictor = predictor
        self.flow_steps = flow_steps
        self._calls = 0
        self.last: Any = None  # the vipa.infer.Prediction of the last call (readout, timings)
        cfg = predictor.cfg
        self.metadata: dict[str, Any] = {
            "name": "vipa", "config": cfg.name, "use_3d": bool(predictor.mcfg.use_3d),
            "chunk": int(predictor.mcfg.chunk_len), "action_dim": int(predictor.mcfg.action_dim),
            "state_dim": int(predictor.mcfg.state_dim), "image_size": int(predictor.mcfg.image_size),
            "replan": replan, "checkpoint": checkpoint_label(getattr(predictor, "checkpoint", None)),
        }

    @classmethod
    def load(cls, checkpoint: str | Path, threads: int | None = None, **kw) -> "PredictorPolicy":
        return cls(Predictor.load(checkpoint, threads=threads), **kw)

    def reset(self) -> None:
        self._calls = 0

    def infer(self, observation: dict[str, Any]) -> np.ndarray:
        depth = observation.get("depth")
        if depth is not None:
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
        pred = self.predictor.predict(observation["image"], depth=depth, K=observation.get("K"),
                                      instruction=observation["instruction"], mode="action",
                                      state=observation["state"], flow_steps=self.flow_steps, seed=self._calls)
        self._calls += 1
        self.last = pred
        return pred.actions
