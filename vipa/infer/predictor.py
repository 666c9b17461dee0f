"""Predictor: one checkpoint, one frame (+ depth or point map, K) and an instruction ->
answer text | wrist trajectory (camera frame, metres) | robot action chunk. The app's Predict tab
and ``vipa predict`` use exactly this.

Inputs: RGB only, RGB + metric depth (+ K), or RGB + point map; ``Prediction.inputs`` says which
the model used (a model with a 3D encoder runs RGB-only frames with its 3D branch masked out).
Input handling (documented, not silent): any image size is accepted and resized to the
model's ``image_size``; depth/point map must have the image's height and width; NaN depth or
points are treated as missing pixels; inf, an all-missing point map, a missing K with depth, or
an instruction longer than the model's context raise ValueError.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vipa import tasks
from vipa.data.qa import AnswerParseError, encode_direction_distance, parse_direction_distance
from vipa.infer.constrained import decode_motion
from vipa.model.batch import Batch
from vipa.model.checkpoint import load_checkpoint
from vipa.model.processor import Processor, encode_prompt

MODES = ("auto", "answer", "trajectory", "action")


@dataclass
class Prediction:
    mode: str
    # Inputs the model used: "rgb" (RGB only, 3D branch masked out), "rgb+depth" or "rgb+points".
    inputs: str = "rgb"
    text: str | None = None  # answer or motion description
    lm_text: str | None = None  # the LLM's own decoded text (before the numeric head fills in numbers)
    trajectory: np.ndarray | None = None  # (H, 3) float32 camera-frame metres, future wrist (numeric head)
    trajectory_tokens: np.ndarray | None = None  # (H, 3) float32 from constrained motion-token decoding
    wrist: np.ndarray | None = None  # (3,) current wrist estimate (pointer A), metres
    target: np.ndarray | None = None  # (3,) pointer B (object / goal), metres
    actions: np.ndarray | None = None  # (chunk, action_dim) in the robot's units
    attention: np.ndarray | None = None  # (g, g) pointer-A weights over the image grid
    timings_ms: dict[str, float] = field(default_factory=dict)


def trajectory_prompt(instruction: str, hand: str = "right") -> str:
    """The stage-2 instructional-motion prompt for a plain task instruction (kept as is when it
    already is a motion prompt); ``vipa.tasks.trajectory_prompt``."""
    return tasks.trajectory_prompt(instruction, hand)


class Predictor:
    def __init__(self, model, cfg, tok, info: dict[str, Any]):
        self.model, self.cfg, self.tok, self.info = model, cfg, tok, info
        self.checkpoint: Path | None = None  # the folder it was loaded from (Predictor.load)
        self.mcfg = cfg.model
        self.action_stats = info.get("action_stats")
        self.processor = Processor(self.mcfg, tok)

    @property
    def motion_stride_s(self) -> float:
        """Seconds between the predicted trajectory's waypoints (what the checkpoint trained with)."""
        return float(self.mcfg.motion_stride_s)

    @classmethod
    def load(cls, checkpoint: str | Path, expect_config: str | None = None, threads: int | None = None,
             vlm_path: str | None = None, encoder3d_path: str | None = None) -> "Predictor":
        """``vlm_path`` / ``encoder3d_path``: current local folders of a ``paper`` checkpoint's
        pretrained parts when they moved since training."""
        if threads:
            torch.set_num_threads(threads)
        model, cfg, tok, info = load_checkpoint(checkpoint, expect_config, vlm_path, encoder3d_path)
        pred = cls(model, cfg, tok, info)
        pred.checkpoint = Path(checkpoint)
        return pred

    # ---- inputs ----
    def prepare(self, image: np.ndarray, depth: np.ndarray | None = None, K: np.ndarray | None = None,
                points: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """One frame -> the model's observation tensors with a batch axis of 1 (``Processor.observation``)."""
        return {k: v[None] for k, v in self.processor.observation(image, depth, K, points).items()}

    def _prompt(self, instruction: str) -> dict[str, torch.Tensor]:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError("instruction: empty")
        p = encode_prompt(self.tok, instruction.strip(), self.mcfg.max_prompt_len)
        return {k: v[None] for k, v in p.items()}

    # ---- prediction ----
    @torch.no_grad()
    def predict(self, image: np.ndarray, depth: np.ndarray | None = None, K: np.ndarray | None = None,
                instruction: str = "", points: np.ndarray | None = None, mode: str = "auto",
                state: np.ndarray | None = None, flow_steps: int | None = None, seed: int = 0,
                motion_tokens: bool = True, hand: str = "right") -> Prediction:
        """``mode``: "answer" (QA text), "trajectory" (future wrist), "action" (robot chunk; needs
        ``state``) or "auto" (action when the checkpoint is post-trained and a state is given,
        answer for questions ending in "?", else trajectory). ``motion_tokens``: in trajectory
        mode also decode the LLM's motion tokens (constrained), besides the numeric head."""
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        t0 = time.perf_counter()
        x = self.prepare(image, depth, K, points)
        p = self._prompt(instruction)
        if mode == "auto":
            mode = "action" if (state is not None and self.action_stats) else \
                ("answer" if instruction.strip().endswith("?") else "trajectory")
        if mode == "trajectory":
            p = self._prompt(trajectory_prompt(instruction, hand))
        t1 = time.perf_counter()
        m = self.model
        args = Batch(**x, **p).observation()
        pred = Prediction(mode, inputs=Processor.inputs_used(self.mcfg, depth, points))
        if mode == "action":
            pred_out = m(*args)
            pred.actions = self._actions(pred_out.queries, state, flow_steps, seed, m.action_geometry(pred_out))
        elif mode == "trajectory" and not motion_tokens:
            pred_out = m(*args)
            pred.trajectory = pred_out.traj[0].numpy().astype(np.float32)
        elif mode == "trajectory":
            # Always the full horizon (traj_horizon waypoints), decoded as the checkpoint says.
            trajs, pred_out = decode_motion(m, args, self.tok, self.mcfg.motion_decoding)
            pred.trajectory_tokens = trajs[0]
            pred.trajectory = pred_out.traj[0].numpy().astype(np.float32)
        else:
            ids, pred_out = m.generate(*args, bos_id=self.tok.bos_id, eos_id=self.tok.eos_id,
                                       max_new_tokens=self.mcfg.max_target_len)
            text = self.tok.decode(ids[0].tolist())
            pred.lm_text = text
            try:
                parse_direction_distance(text)
                is_vector = True
            except AnswerParseError:
                is_vector = False
            # The LLM decides the answer's form; the numeric head (pointer B - pointer A) gives its metric content.
            pred.text = encode_direction_distance((pred_out.point_b - pred_out.point_a)[0].numpy()) if is_vector else text
        pred.wrist = pred_out.point_a[0].numpy().astype(np.float32)
        pred.target = pred_out.point_b[0].numpy().astype(np.float32)
        g = self.mcfg.fine_grid
        pred.attention = pred_out.attn_a[0].reshape(g, g).numpy()
        t2 = time.perf_counter()
        pred.timings_ms = {"prepare": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3}
        return pred

    def _actions(self, queries: torch.Tensor, state: np.ndarray | None, flow_steps: int | None, seed: int,
                 geom: torch.Tensor | None = None) -> np.ndarray:
        if not self.action_stats:
            raise ValueError("this checkpoint has no action head training (no action_stats): post-train it first")
        if state is None:
            raise ValueError("action mode needs the robot state")
        st = self.action_stats
        s = np.asarray(state, np.float32).reshape(-1)
        if s.shape != (self.mcfg.state_dim,):
            raise ValueError(f"state: expected ({self.mcfg.state_dim},), got {s.shape}")
        s_n = (s - np.asarray(st["state_mean"], np.float32)) / np.asarray(st["state_std"], np.float32)
        g = torch.Generator().manual_seed(seed)
        a = self.model.action_head.sample(torch.from_numpy(s_n)[None], queries,
                                          steps=flow_steps or self.mcfg.flow_steps, generator=g, geom=geom)[0].numpy()
        return (a * np.asarray(st["action_std"], np.float32) + np.asarray(st["action_mean"], np.float32)).astype(np.float32)


def checkpoint_label(path: str | Path | None) -> str:
    """What to tell clients about a checkpoint folder: its name, with the run folder's name for a
    run's ``final`` or ``checkpoints/step_*`` (never a full path of the server's disk)."""
    if not path:
        return ""
    p = Path(path)
    if p.name == "final" or p.parent.name == "checkpoints":
        run = p.parent if p.name == "final" else p.parent.parent
        return f"{run.name}/{p.name}"
    return p.name
