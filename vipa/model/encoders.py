"""Vision side: the semantic encoder, the 3D-encoder interface (``Encoder3D``) with the project's
point-map encoder, and the paper's fusion layer. Inputs are made by ``vipa.model.processor``.

Tensors: images (B, 3, S, S) float in [0, 1]; point maps (B, 3, S, S) camera-frame metres with a
validity mask (B, 1, S, S); visual tokens (B, N, D) on the patch grid in row-major order.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from vipa.model.config import ModelConfig


def pool_points(xyz: torch.Tensor, valid: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) XYZ + (B, 1, S, S) validity -> per-cell mean valid XYZ (B, size*size, 3), valid (B, size*size)."""
    s = F.adaptive_avg_pool2d(xyz * valid, size)
    v = F.adaptive_avg_pool2d(valid, size)
    m = s / v.clamp_min(1e-6)
    return m.flatten(2).transpose(1, 2), (v > 0).float().flatten(1)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c)


class ConvStem(nn.Module):
    """Convolutional encoder: returns a fine feature map (stride ``fine_stride``) and tokens on the
    patch grid (stride ``patch_size``) with learned 2D position embeddings."""

    def __init__(self, in_ch: int, cfg: ModelConfig):
        super().__init__()
        c1, c2, c3 = cfg.stem_channels
        layers: list[nn.Module] = [nn.Conv2d(in_ch, c1, 3, padding=1), _norm(c1), nn.GELU()]
        ch, stride = c1, 1
        widths = [c2, c3]
        while stride < cfg.fine_stride:
            out = widths.pop(0) if widths else c3
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), _norm(out), nn.GELU(),
                       nn.Conv2d(out, out, 3, padding=1), _norm(out), nn.GELU()]
            ch, stride = out, stride * 2
        self.fine = nn.Sequential(*layers)
        self.fine_ch = ch
        down: list[nn.Module] = []
        while stride < cfg.patch_size:
            down += [nn.Conv2d(ch, cfg.d_vision, 3, stride=2, padding=1), _norm(cfg.d_vision), nn.GELU()]
            ch, stride = cfg.d_vision, stride * 2
        down += [nn.Conv2d(ch, cfg.d_vision, 1)]
        self.down = nn.Sequential(*down)
        self.pos = nn.Parameter(torch.randn(1, cfg.num_visual_tokens, cfg.d_vision) * 0.02)
        self.grid, self.fine_grid = cfg.grid, cfg.fine_grid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = self.fine(x)
        t = self.down(fine)
        # The stem strides are powers of two; other geometries (e.g. the paper's 448 px / patch 28,
        # fine stride 14) are resampled onto the config's token and fine grids.
        if t.shape[-2:] != (self.grid, self.grid):
            t = F.adaptive_avg_pool2d(t, self.grid)
        if fine.shape[-2:] != (self.fine_grid, self.fine_grid):
            fine = F.interpolate(fine, size=(self.fine_grid, self.fine_grid), mode="bilinear", align_corners=False)
        tokens = t.flatten(2).transpose(1, 2) + self.pos
        return fine, tokens


class SemanticEncoder(ConvStem):
    """Semantic visual tokens V_sem from RGB (tiny/small: conv stem; paper: the VLM's vision tower)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(3, cfg)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return super().forward(image - 0.5)


class Encoder3D(Protocol):
    """What every 3D encoder of ``VIPAModel`` is (the tiny/small ``PointMapEncoder``, the ``paper``
    config's ``vipa.model.pretrained.Spatial3DEncoder`` around a local folder's encoder):

    ``encoder(image (B, 3, S, S) RGB in [0, 1], xyz (B, 3, S, S) camera-frame metres, valid
    (B, 1, S, S))`` -> ``(fine (B, fine_ch, fine_grid, fine_grid), tokens (B, grid*grid, out_dim))``:
    a dense feature map for the readout pointer and the spatial tokens V_spa on the model's patch
    grid (row-major). An encoder may ignore the image (point-map only) or the point map (image-only
    foundation models). ``needs_points``: True when its output means nothing without a point map;
    for a sample without one (all ``valid`` zero) the model then masks the encoder's output out."""

    fine_ch: int
    out_dim: int
    needs_points: bool

    def __call__(self, image: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor,
                 ) -> tuple[torch.Tensor, torch.Tensor]: ...


class PointMapEncoder(ConvStem):
    """``Encoder3D`` of tiny/small: spatial tokens V_spa from the scale-calibrated camera-frame XYZ map
    (metres) and its validity (the image is not used), on the same patch grid as the semantic tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(4, cfg)
        self.out_dim = cfg.d_vision
        self.needs_points = True

    def forward(self, image: torch.Tensor | None, xyz: torch.Tensor, valid: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        centred = xyz - torch.tensor([0.0, 0.0, 0.5], device=xyz.device).view(1, 3, 1, 1)
        return super().forward(torch.cat([centred * valid * 2.0, valid], 1))


class PointHead(nn.Module):
    """Per-cell camera-frame point estimate (B, 3, g, g), metres, from a fine feature map (B, c, g, g):
    a small CoordConv (the cell's normalised (u, v) as two more channels, since x and y follow the
    pixel's ray) plus a learned per-cell mean map. Starts at 0.5 m straight ahead."""

    def __init__(self, in_ch: int, grid: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_ch + 2, width, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(width, width, 1), nn.GELU(), nn.Conv2d(width, 3, 1))
        nn.init.zeros_(self.net[-1].weight)
        with torch.no_grad():
            self.net[-1].bias.copy_(torch.tensor([0.0, 0.0, 0.5]))
        self.pos = nn.Parameter(torch.zeros(1, 3, grid, grid))
        r = torch.linspace(-1.0, 1.0, grid)
        self.register_buffer("coords", torch.stack(torch.meshgrid(r, r, indexing="xy"))[None], persistent=False)

    def forward(self, fine: torch.Tensor) -> torch.Tensor:
        x = torch.cat([fine, self.coords.expand(fine.shape[0], -1, -1, -1).to(fine.dtype)], 1)
        return self.net(x) + self.pos


class SpatialFusion(nn.Module):
    """The paper's fusion: F_spa = CrossAttn(Q=V_sem, K=V=V_spa); V_f = LN(Dropout(V_sem + alpha*F_spa)),
    alpha a learnable scalar initialised to ``alpha_init`` (0.5)."""

    def __init__(self, d: int, heads: int, dropout: float, alpha_init: float = 0.5):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, v_sem: torch.Tensor, v_spa: torch.Tensor | None, has_3d: torch.Tensor | None = None,
                ) -> torch.Tensor:
        """``has_3d`` (B,) float: 0 for samples without 3D input, whose F_spa is masked out (V_f is
        then LN(Dropout(V_sem)), as without the 3D encoder); None = every sample has 3D."""
        if v_spa is None:
            return self.norm(self.dropout(v_sem))
        f_spa, _ = self.attn(v_sem, v_spa, v_spa, need_weights=False)
        if has_3d is not None:
            f_spa = f_spa * has_3d.to(f_spa.dtype)[:, None, None]
        return self.norm(self.dropout(v_sem + self.alpha * f_spa))


def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """(B,) scalars in [0, 1] -> (B, dim) sinusoidal embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * max_period * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)
