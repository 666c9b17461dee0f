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


def text_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, motion_start: int | None = None,
                       sigma: float = 0.0, per_sample: bool = False) -> torch.Tensor:
    """Mean next-token cross-entropy of ``logits`` (..., V) against ``labels`` (...), IGNORE skipped.

    ``per_sample``: each sample's (first axis) tokens are averaged first, then the samples, so a long
    answer (a motion-token sequence) weighs as much as a short one (a QA answer); otherwise every
    token of the batch weighs the same.

    ``sigma`` > 0 (in bins): a label that is a motion token (ids ``motion_start`` ..
    ``motion_start + 3 * MOTION_BINS``, x bins then y then z) of axis a and bin i gets the ordinal
    target q(j) proportional to exp(-(j - i)^2 / (2 sigma^2)) over axis a's bins j instead of a
    one-hot, so a near miss costs less than a far one; the token format is unchanged. Other labels
    stay one-hot. sigma = 0 is plain cross-entropy."""
    from vipa.conventions import MOTION_BINS

    v = logits.shape[-1]
    n_samples = labels.shape[0] if labels.dim() > 1 else 1
    tokens_per_sample = labels.numel() // n_samples
    logits, labels = logits.reshape(-1, v).float(), labels.reshape(-1)
    keep = labels != IGNORE
    logits, labels = logits[keep], labels[keep]
    if labels.numel() == 0:
        return logits.sum() * 0.0
    logp = torch.log_softmax(logits, -1)
    nll = -logp.gather(1, labels[:, None])[:, 0]
    if sigma > 0 and motion_start is not None:
        rel = labels - motion_start
        mot = (rel >= 0) & (rel < 3 * MOTION_BINS)
        if mot.any():
            r = rel[mot]
            j = torch.arange(MOTION_BINS, device=labels.device)
            w = torch.exp(-((j[None] - (r % MOTION_BINS)[:, None]).float() ** 2) / (2 * sigma ** 2))
            w = w / w.sum(1, keepdim=True)
            cols = motion_start + (r // MOTION_BINS)[:, None] * MOTION_BINS + j[None]
            nll = nll.masked_scatter(mot, -(w * logp[mot].gather(1, cols)).sum(1))
    if per_sample:  # the sample of each kept token: its flat position // tokens per sample
        sample = keep.nonzero()[:, 0] // tokens_per_sample
        tot = torch.zeros(n_samples, device=nll.device).index_add(0, sample, nll)
        cnt = torch.zeros(n_samples, device=nll.device).index_add(0, sample, torch.ones_like(nll))
        has = cnt > 0
        return (tot[has] / cnt[has]).mean()
    return nll.mean()
