"""Constrained decoding of wrist motion: every generated waypoint is exactly three valid motion
tokens in x, y, z order; the end token is allowed only between waypoints."""

from __future__ import annotations

from collections.abc import Callable

import torch

from vipa.conventions import MOTION_BINS
from vipa.model.tokenizer import VIPATokenizer


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


def split_motion(tok: VIPATokenizer, ids: list[int]) -> list[int]:
    """The motion-token prefix of ``ids`` up to the end token, cut to whole waypoints."""
    out = []
    for i in ids:
        if i == tok.eos_id or not tok.is_motion(i):
            break
        out.append(int(i))
    return out[: len(out) // 3 * 3]
