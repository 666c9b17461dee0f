"""Flow-matching DiT action head (paper, robot post-training).

The hidden states of the learnable action queries (after the VLM) condition a small DiT whose
input tokens are the robot state and the noisy action chunk. Flow matching (paper's convention):
x_tau = (1 - tau) * eps + tau * a, tau ~ U(0, 1), target velocity v = a - eps, loss |v_theta - v|^2.
Sampling integrates dx/dtau = v_theta from tau = 0 (noise) to 1 with Euler steps.
Actions and states are in the normalised units of the training data (see vipa.train stats).
"""

from __future__ import annotations

import torch
from torch import nn

from vipa.model.encoders import sinusoidal


class DiTBlock(nn.Module):
    """Self-attention over [state, actions], cross-attention to the query states, MLP; adaLN-Zero."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.n1 = nn.LayerNorm(d, elementwise_affine=False)
        self.sa = nn.MultiheadAttention(d, heads, batch_first=True)
        self.n2 = nn.LayerNorm(d)
        self.ca = nn.MultiheadAttention(d, heads, batch_first=True)
        self.n3 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ada = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        s1, b1, g1, s2, b2, g2 = self.ada(c)[:, None].chunk(6, -1)
        h = self.n1(x) * (1 + s1) + b1
        x = x + g1 * self.sa(h, h, h, need_weights=False)[0]
        x = x + self.ca(self.n2(x), mem, mem, need_weights=False)[0]
        h = self.n3(x) * (1 + s2) + b2
        return x + g2 * self.mlp(h)


class FlowMatchingDiT(nn.Module):
    def __init__(self, cond_dim: int, action_dim: int, state_dim: int, chunk_len: int,
                 d: int = 128, layers: int = 3, heads: int = 4, geom_dim: int = 0):
        """``geom_dim`` > 0: ``velocity`` also takes a (B, geom_dim) geometry vector, embedded as one
        more memory token beside the query states."""
        super().__init__()
        self.geom_dim = geom_dim
        self.geom_in = nn.Sequential(nn.Linear(geom_dim, d), nn.GELU(), nn.Linear(d, d)) if geom_dim else None
        self.action_dim, self.state_dim, self.chunk_len = action_dim, state_dim, chunk_len
        self.d = d
        self.act_in = nn.Linear(action_dim, d)
        self.state_in = nn.Linear(state_dim, d)
        self.pos = nn.Parameter(torch.randn(1, chunk_len + 1, d) * 0.02)
        self.cond_in = nn.Linear(cond_dim, d)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(DiTBlock(d, heads) for _ in range(layers))
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, action_dim)

    def velocity(self, x: torch.Tensor, tau: torch.Tensor, state: torch.Tensor, cond: torch.Tensor,
                 geom: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, A) noisy chunk, tau (B,), state (B, S), cond (B, Q, cond_dim), geom (B, geom_dim)
        when the head was built with geometry -> (B, C, A)."""
        if x.shape[1:] != (self.chunk_len, self.action_dim):
            raise ValueError(f"action chunk: expected (B, {self.chunk_len}, {self.action_dim}), got {tuple(x.shape)}")
        if state.shape[1:] != (self.state_dim,):
            raise ValueError(f"robot state: expected (B, {self.state_dim}), got {tuple(state.shape)}")
        mem = self.cond_in(cond)
        if self.geom_in is not None:
            if geom is None or geom.shape[1:] != (self.geom_dim,):
                raise ValueError(f"geometry: expected (B, {self.geom_dim}), got "
                                 f"{None if geom is None else tuple(geom.shape)}")
            mem = torch.cat([mem, self.geom_in(geom)[:, None]], 1)
        c = self.t_mlp(sinusoidal(tau, self.d)) + mem.mean(1)
        h = torch.cat([self.state_in(state)[:, None], self.act_in(x)], 1) + self.pos
        for blk in self.blocks:
            h = blk(h, c, mem)
        return self.out(self.out_norm(h[:, 1:]))

    def loss(self, actions: torch.Tensor, state: torch.Tensor, cond: torch.Tensor,
             mask: torch.Tensor | None = None, geom: torch.Tensor | None = None) -> torch.Tensor:
        """Flow-matching loss on a (B, C, A) chunk; ``mask`` (B, C) marks real (not padded) steps."""
        eps = torch.randn_like(actions)
        tau = torch.rand(actions.shape[0], device=actions.device)
        x = (1 - tau)[:, None, None] * eps + tau[:, None, None] * actions
        err = (self.velocity(x, tau, state, cond, geom) - (actions - eps)) ** 2
        if mask is None:
            return err.mean()
        m = mask[..., None].float()
        return (err * m).sum() / (m.sum() * actions.shape[-1]).clamp_min(1.0)

    @torch.no_grad()
    def sample(self, state: torch.Tensor, cond: torch.Tensor, steps: int = 10,
               generator: torch.Generator | None = None, geom: torch.Tensor | None = None) -> torch.Tensor:
        """Euler integration from noise (tau=0) to an action chunk (tau=1): (B, C, A)."""
        if steps < 1:
            raise ValueError("flow steps must be >= 1")
        b = state.shape[0]
        x = torch.randn(b, self.chunk_len, self.action_dim, generator=generator, device=state.device)
        dt = 1.0 / steps
        for k in range(steps):
            tau = torch.full((b,), k * dt, device=state.device)
            x = x + dt * self.velocity(x, tau, state, cond, geom)
        return x
