"""Loss helpers of ``VIPAModel.compute_loss``."""

from __future__ import annotations

import torch

IGNORE = -100  # label of target positions that carry no loss (padding)


def masked_l1(pred: torch.Tensor, true: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """L1 over the last axis (metres summed over x, y, z), averaged over any middle axes, then over the
    samples where ``m`` (B,) is 1."""
    err = (pred - true).abs().sum(-1)
    while err.ndim > 1:
        err = err.mean(-1)
    return (err * m).sum() / m.sum().clamp_min(1.0)
