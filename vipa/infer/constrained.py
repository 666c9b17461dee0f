"""Constrained decoding of wrist motion: every generated waypoint is exactly three valid motion
tokens in x, y, z order; the end token is allowed only between waypoints (and, with
``min_waypoints`` = the horizon, only after the last one, so decoding always gives the full
trajectory).

``MOTION_DECODING``: how the token of a motion step is chosen among the allowed ones. "greedy"
takes the most likely token; "expectation" takes the bin nearest the expected bin index under the
model's distribution over that axis's 1024 bins (a near miss then costs millimetres, not a jump to
an unrelated mode). Both keep the format: the chosen token is an allowed motion token.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vipa.conventions import MOTION_BINS
from vipa.model.tokenizer import VIPATokenizer

MOTION_DECODING = ("greedy", "expectation")


def motion_allowed_fn(tok: VIPATokenizer, vocab_size: int, max_waypoints: int, min_waypoints: int = 1,
                      ) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """``allowed(step, generated (B, step)) -> (B, V) bool`` for ``VIPAModel.generate``."""
    if max_waypoints < min_waypoints or min_waypoints < 1:
        raise ValueError("need 1 <= min_waypoints <= max_waypoints")
    masks = []
    for a in range(3):
        m = torch.zeros(vocab_size, dtype=torch.bool)
        m[tok.motion_start[a]: tok.motion_start[a] + MOTION_BINS] = True
        masks.append(m)
    eos = torch.zeros(vocab_size, dtype=torch.bool)
    eos[tok.eos_id] = True

    def allowed(step: int, generated: torch.Tensor) -> torch.Tensor:
        b = generated.shape[0]
        if step >= 3 * max_waypoints:
            m = eos
        elif step % 3 == 0 and step >= 3 * min_waypoints:
            m = masks[0] | eos
        else:
            m = masks[step % 3]
        return m.to(generated.device).expand(b, -1)

    return allowed


def motion_pick_fn(tok: VIPATokenizer, decoding: str = "greedy") -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``pick(logits (B, V), -inf where not allowed) -> (B,) ids`` for ``VIPAModel.generate``; None
    for "greedy" (generate's argmax). "expectation": where the argmax is a motion token of axis a,
    the id of the bin nearest sum_i i * p(i), p the softmax over axis a's allowed bins; other ids
    (the end token) stay the argmax."""
    if decoding not in MOTION_DECODING:
        raise ValueError(f"motion decoding: expected one of {MOTION_DECODING}, got {decoding!r}")
    if decoding == "greedy":
        return None
    starts = torch.tensor(tok.motion_start, dtype=torch.long)
    bins = torch.arange(MOTION_BINS, dtype=torch.float32)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        best = logits.argmax(-1)
        out = best.clone()
        for a in range(3):
            s = int(starts[a])
            rows = (best >= s) & (best < s + MOTION_BINS)
            if rows.any():
                p = torch.softmax(logits[rows, s:s + MOTION_BINS].float(), -1)
                out[rows] = s + (p @ bins.to(p.device)).round().long().clamp(0, MOTION_BINS - 1)
        return out

    return pick


def decode_motion(model, args: tuple, tok: VIPATokenizer, decoding: str = "greedy",
                  ) -> tuple[list[np.ndarray], object]:
    """Constrained decoding of the full trajectory (``traj_horizon`` waypoints, never fewer) for a
    batch of observations ``args`` (``Batch.observation()``): -> ((N, 3) float32 camera-frame metres
    per sample, the model's first output)."""
    n = model.cfg.traj_horizon
    ids, out = model.generate(*args, bos_id=tok.bos_id, eos_id=tok.eos_id, max_new_tokens=3 * n + 1,
                              allowed_fn=motion_allowed_fn(tok, model.vocab_size, n, min_waypoints=n),
                              pick_fn=motion_pick_fn(tok, decoding))
    trajs = []
    for r in ids:
        mids = split_motion(tok, r.tolist())
        trajs.append(tok.ids_to_waypoints(mids) if mids else np.zeros((0, 3), np.float32))
    return trajs, out


def split_motion(tok: VIPATokenizer, ids: list[int]) -> list[int]:
    """The motion-token prefix of ``ids`` up to the end token, cut to whole waypoints."""
    out = []
    for i in ids:
        if i == tok.eos_id or not tok.is_motion(i):
            break
        out.append(int(i))
    return out[: len(out) // 3 * 3]
