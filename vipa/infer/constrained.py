"""Constrained decoding of wrist motion: every generated waypoint is exactly three valid motion
tokens in x, y, z order; the end token is allowed only between waypoints (and, with
``min_waypoints`` = the horizon, only after the last one, so decoding always gives the full
trajectory).

``MOTION_DECODING``: how the token of a motion step is chosen among the allowed ones. "greedy"
takes the most likely token; "expectation" takes the bin nearest the expected bin index under the
model's distribution over that axis's 1024 bins (a near miss then costs millimetres, not a jump to
an unrelated mode); "readout" is expectation under the product of that distribution and a Gaussian
of std ``READOUT_PRIOR_CM`` around the same model's numeric readout of that waypoint (a product of
experts of the model's two outputs: the LLM reads the absolute start of the motion only coarsely
from its geometry token, the readout measures it from the point map). All keep the format: the
chosen token is an allowed motion token.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from vipa.conventions import MOTION_BINS
from vipa.data.motion import MotionTokenizer
from vipa.model.config import MOTION_DECODING
from vipa.model.tokenizer import VIPATokenizer

# The readout prior's std per axis, cm: 3 and 5 gave the same figures on the sample checkpoint's
# training split; 10 and more let the LLM's offset back in (tiny_sample/README.md).
READOUT_PRIOR_CM = 5.0


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


def motion_pick_fn(tok: VIPATokenizer, decoding: str = "greedy", prior_cm: float = READOUT_PRIOR_CM,
                   ) -> Callable[..., torch.Tensor] | None:
    """``pick(logits (B, V), -inf where not allowed, step, first) -> (B,) ids`` for
    ``VIPAModel.generate``; None for "greedy" (generate's argmax). "expectation": where the argmax is
    a motion token of axis a, the id of the bin nearest sum_i i * p(i), p the softmax over axis a's
    allowed bins; other ids (the end token) stay the argmax. "readout": the same with p multiplied by
    a Gaussian of std ``prior_cm`` around ``first.traj``'s waypoint ``step // 3`` (camera-frame
    metres, the model's numeric trajectory); steps past the readout's horizon use expectation."""
    if decoding not in MOTION_DECODING:
        raise ValueError(f"motion decoding: expected one of {MOTION_DECODING}, got {decoding!r}")
    if decoding == "greedy":
        return None
    if not prior_cm > 0:
        raise ValueError(f"motion decoding: the readout prior's std must be > 0 cm, got {prior_cm}")
    starts = torch.tensor(tok.motion_start, dtype=torch.long)
    bins = torch.arange(MOTION_BINS, dtype=torch.float32)
    mt = MotionTokenizer()
    lo = torch.tensor(np.asarray(mt.ranges, np.float64)[:, 0], dtype=torch.float32)
    width = torch.tensor(mt.bin_width, dtype=torch.float32)  # metres per bin, (3,)

    def pick(logits: torch.Tensor, step: int = 0, first=None) -> torch.Tensor:
        best = logits.argmax(-1)
        out = best.clone()
        prior = None
        if decoding == "readout":
            if first is None or getattr(first, "traj", None) is None:
                raise ValueError("readout decoding needs the model's first output (its numeric trajectory)")
            if step // 3 < first.traj.shape[1]:
                prior = (first.traj[:, step // 3].float().cpu() - lo) / width - 0.5  # (B, 3) bin coordinates
        for a in range(3):
            s = int(starts[a])
            rows = (best >= s) & (best < s + MOTION_BINS)
            if rows.any():
                lp = torch.log_softmax(logits[rows, s:s + MOTION_BINS].float(), -1)
                if prior is not None:
                    sd = prior_cm / 100.0 / float(width[a])
                    c = prior[rows.cpu(), a].to(lp.device)
                    lp = lp - (bins.to(lp.device)[None] - c[:, None]) ** 2 / (2 * sd * sd)
                p = torch.softmax(lp, -1)
                out[rows] = s + (p @ bins.to(p.device)).round().long().clamp(0, MOTION_BINS - 1)
        return out

    return pick


def decode_motion(model, args: tuple, tok: VIPATokenizer, decoding: str = "greedy",
                  prior_cm: float = READOUT_PRIOR_CM) -> tuple[list[np.ndarray], object]:
    """Constrained decoding of the full trajectory (``traj_horizon`` waypoints, never fewer) for a
    batch of observations ``args`` (``Batch.observation()``): -> ((N, 3) float32 camera-frame metres
    per sample, the model's first output). ``prior_cm``: the "readout" decoding's prior std."""
    n = model.cfg.traj_horizon
    ids, out = model.generate(*args, bos_id=tok.bos_id, eos_id=tok.eos_id, max_new_tokens=3 * n + 1,
                              allowed_fn=motion_allowed_fn(tok, model.vocab_size, n, min_waypoints=n),
                              pick_fn=motion_pick_fn(tok, decoding, prior_cm))
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
