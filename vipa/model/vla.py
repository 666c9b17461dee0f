"""VIPA-VLA: semantic encoder + 3D point-map encoder -> fusion -> LLM, with readout heads and the
flow-matching action head.

Token layout (fixed, so readout positions never move):
``[visual tokens N][prompt, padded to max_prompt_len][query tokens Q][<bos> target ... <eos>]``.
Query tokens are learnable embeddings: q0 and q1 point at image locations (pointer A: the wrist,
pointer B: the object or goal) and read a 3D position there from the point map (plus a learned
offset); q2 predicts the future wrist trajectory relative to pointer A; all Q condition the DiT
action head. Text targets (QA answers, motion tokens, motion descriptions) are trained with
next-token cross-entropy. 3D outputs are camera-frame metres.

The model is built from ``Parts`` (``tiny_parts``: conv encoders + a random-weight LLM;
``pretrained_parts``: a local VLM + a local 3D encoder), takes a typed ``vipa.model.batch.Batch``
(made by ``vipa.model.processor``) and owns its training loss (``compute_loss(batch, stage)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from vipa.model.action_head import FlowMatchingDiT
from vipa.model.batch import Batch
from vipa.model.config import GEOMETRY_FREQS, STAGES, ModelConfig, TrainConfig
from vipa.model.encoders import PointHead, PointMapEncoder, SemanticEncoder, SpatialFusion, pool_points
from vipa.conventions import MOTION_BINS
from vipa.model.losses import IGNORE, masked_l1, text_cross_entropy



def build_llm(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    """A decoder-only LLM from config (random weights) for tiny/small."""
    c = cfg.llm
    kw = dict(
        vocab_size=vocab_size, hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads, num_key_value_heads=c.num_key_value_heads,
        intermediate_size=c.intermediate_size, max_position_embeddings=max(256, cfg.max_seq_len + 8),
        tie_word_embeddings=True, pad_token_id=0,
    )
    if c.arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kw))
    if c.arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**kw))
    raise ValueError(f"llm.arch: unknown {c.arch!r} (qwen2 | llama)")


@dataclass
class Parts:
    """The interchangeable parts of ``VIPAModel``: semantic encoder ``image -> (fine map, tokens
    (B, N, d))``, 3D encoder (a ``vipa.model.encoders.Encoder3D``, None without 3D), the projection
    of its tokens to width d, the fusion (width d), the projector d -> hidden, and the LLM."""

    semantic: nn.Module
    spatial: nn.Module | None
    spatial_proj: nn.Module
    fusion: nn.Module
    projector: nn.Module
    llm: nn.Module
    hidden: int  # the LLM's hidden size


def tiny_parts(cfg: ModelConfig, vocab_size: int) -> Parts:
    """tiny / small: conv encoders and a random-weight LLM; fusion in ``d_vision``, then an MLP projector."""
    d, h = cfg.d_vision, cfg.llm.hidden_size
    return Parts(SemanticEncoder(cfg), PointMapEncoder(cfg) if cfg.use_3d else None, nn.Identity(),
                 SpatialFusion(d, cfg.fusion_heads, cfg.fusion_dropout, cfg.alpha_init),
                 nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.Linear(h, h)), build_llm(cfg, vocab_size), h)


def pretrained_parts(cfg: ModelConfig, vocab_size: int, load_weights: bool = True) -> Parts:
    """paper: semantic encoder + LLM from the local VLM folder, the 3D encoder from its folder
    (``vipa.model.pretrained``); the fusion works in the LLM's hidden size (after the VLM's own
    projector), so the 3D tokens get a linear projection to it."""
    from vipa.model.pretrained import Spatial3DEncoder, load_encoder3d, load_vlm

    cfg.check_local_weights()
    semantic, llm, h = load_vlm(cfg, vocab_size, load_weights=load_weights)
    if h % cfg.fusion_heads:
        raise ValueError(f"fusion_heads {cfg.fusion_heads} must divide the VLM's hidden size {h}")
    spatial = Spatial3DEncoder(load_encoder3d(cfg.encoder3d_path), cfg) if cfg.use_3d else None
    proj = nn.Linear(spatial.out_dim, h) if spatial is not None else nn.Identity()
    return Parts(semantic, spatial, proj, SpatialFusion(h, cfg.fusion_heads, cfg.fusion_dropout, cfg.alpha_init),
                 nn.Identity(), llm, h)


@dataclass
class VLAOutput:
    hidden: torch.Tensor  # (B, L, H) final hidden states
    logits: torch.Tensor | None  # (B, Lt, V) at target input positions
    point_a: torch.Tensor  # (B, 3) metres
    point_b: torch.Tensor  # (B, 3)
    traj: torch.Tensor  # (B, T, 3)
    queries: torch.Tensor  # (B, Q, H) query hidden states
    attn_a: torch.Tensor  # (B, Nf) pointer weights over the fine grid
    point_est: torch.Tensor | None = None  # (B, Nf, 3) per-cell point estimate from RGB (mono_points), metres
    attention_mask: torch.Tensor | None = None  # (B, L) of the sequence (for cached decoding)
    past_key_values: object | None = None  # the LLM's KV cache when use_cache=True


class VIPAModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, pad_id: int = 0, load_pretrained: bool = True):
        """``load_pretrained``: for ``paper`` (``vlm_path`` set), read the VLM's weights; False builds
        the same structure from its config only (a checkpoint then supplies every weight)."""
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.pad_id = pad_id
        # First motion-token id: VIPATokenizer appends the 3 x MOTION_BINS motion tokens last (the
        # training loop sets it from the tokenizer); the ordinal motion-token loss needs it.
        self.motion_start: int | None = vocab_size - 3 * MOTION_BINS if vocab_size >= 3 * MOTION_BINS else None
        self.pretrained = bool(cfg.vlm_path or cfg.encoder3d_path or cfg.name == "paper")  # which parts
        parts = pretrained_parts(cfg, vocab_size, load_pretrained) if self.pretrained else tiny_parts(cfg, vocab_size)
        self.semantic, self.spatial, self.spatial_proj = parts.semantic, parts.spatial, parts.spatial_proj
        self.fusion, self.projector, self.llm = parts.fusion, parts.projector, parts.llm
        h = parts.hidden
        self.query_embed = nn.Parameter(torch.randn(cfg.num_queries, h) * 0.02)
        # Readout (pointer over the fine grid + offsets; trajectory deltas).
        fine_ch = self.semantic.fine_ch + (self.spatial.fine_ch if self.spatial is not None else 0)
        dk = 64
        self.key_fine = nn.Conv2d(fine_ch, dk, 1)
        self.key_llm = nn.Linear(h, dk)
        self.key_pos = nn.Parameter(torch.randn(1, dk, cfg.fine_grid, cfg.fine_grid) * 0.02)
        self.q_ptr = nn.Linear(h, 2 * dk)
        self.offset = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 6))
        self.traj_head = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.GELU(), nn.Linear(2 * h, cfg.traj_horizon * 3))
        nn.init.zeros_(self.offset[-1].weight)
        nn.init.zeros_(self.traj_head[-1].weight)
        nn.init.zeros_(self.traj_head[-1].bias)
        with torch.no_grad():
            # Without the point map the offsets are absolute positions: start at 0.5 m ahead.
            self.offset[-1].bias.copy_(torch.tensor([0, 0, 0.0, 0, 0, 0.0] if cfg.use_3d else [0, 0, 0.5, 0, 0, 0.5]))
        self.dk = dk
        # RGB-only point estimate per fine cell (camera-frame metres) from the semantic fine map: the
        # readout's points for frames without depth or point map.
        self.point_head = PointHead(self.semantic.fine_ch, cfg.fine_grid) if cfg.use_3d and cfg.mono_points else None
        # The readout's geometry as one input token before the text target (``geometry_token``).
        n_geo = (10 + 3 * cfg.traj_horizon) * (1 if cfg.geometry_features == "raw" else 1 + 2 * len(GEOMETRY_FREQS))
        self.geo_embed = nn.Sequential(nn.Linear(n_geo, h), nn.GELU(), nn.Linear(h, h)) if cfg.geometry_token else None
        self.action_head = FlowMatchingDiT(h, cfg.action_dim, cfg.state_dim, cfg.chunk_len,
                                           cfg.dit_dim, cfg.dit_layers, cfg.dit_heads, cfg.geometry_dim)

    # ---- parameter groups (what trains in each stage) ----
    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        g: dict[str, list[nn.Parameter]] = {
            "semantic": list(self.semantic.parameters()),
            "spatial": list(self.spatial.parameters()) if self.spatial is not None else [],
            "fusion": list(self.fusion.parameters()) + list(self.projector.parameters())
            + list(self.spatial_proj.parameters()),
            "llm": list(self.llm.parameters()) + [self.query_embed],
            "action_head": list(self.action_head.parameters()),
        }
        seen = {id(p) for ps in g.values() for p in ps}
        g["readout"] = [p for p in self.parameters() if id(p) not in seen]
        return g

    def set_trainable(self, groups: list[str]) -> None:
        pg = self.param_groups()
        unknown = set(groups) - set(pg)
        if unknown:
            raise ValueError(f"unknown parameter groups {sorted(unknown)}; known: {sorted(pg)}")
        for name, ps in pg.items():
            for p in ps:
                p.requires_grad_(name in groups)

    def train(self, mode: bool = True) -> "VIPAModel":
        """As nn.Module.train, but frozen encoders (``paper``'s pretrained ones) stay in eval mode so
        their dropout / normalisation statistics behave as when they were pretrained (the tiny conv
        encoders have neither, so the rule holds for every config)."""
        super().train(mode)
        if mode:
            for enc in (self.semantic, self.spatial):
                if enc is not None and not any(p.requires_grad for p in enc.parameters()):
                    enc.eval()
        return self

    # ---- forward ----
    def check_inputs(self, image: torch.Tensor, xyz: torch.Tensor | None, valid: torch.Tensor | None) -> None:
        s = self.cfg.image_size
        if image.ndim != 4 or image.shape[1:] != (3, s, s):
            raise ValueError(f"image: expected (B, 3, {s}, {s}) for config {self.cfg.name!r}, got {tuple(image.shape)}")
        if self.cfg.use_3d and (xyz is not None or valid is not None):
            if xyz is None or valid is None:
                raise ValueError("point map: give both xyz and valid, or neither (RGB only)")
            if xyz.shape != (image.shape[0], 3, s, s) or valid.shape != (image.shape[0], 1, s, s):
                raise ValueError(f"point map: expected (B, 3, {s}, {s}) + validity (B, 1, {s}, {s}), got "
                                 f"{tuple(xyz.shape)} and {tuple(valid.shape)}")
            if not torch.isfinite(xyz).all():
                raise ValueError("point map: contains NaN/inf; mark invalid pixels in the validity mask and zero them")

    @staticmethod
    def has_points(valid: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) validity -> (B,) float, 1 where the sample has any valid 3D point."""
        return (valid.flatten(1).amax(1) > 0).float()

    def encode_images(self, image, xyz, valid):
        """-> (visual tokens (B, N, H), fine map for the readout, semantic fine map). Samples without
        a point map (all ``valid`` zero) have the 3D branch masked out (fusion and fine map) when the
        3D encoder needs points."""
        sem_fine, v_sem = self.semantic(image)
        has = None
        if self.spatial is not None:
            spa_fine, v_spa = self.spatial(image, xyz, valid)
            v_spa = self.spatial_proj(v_spa)
            if getattr(self.spatial, "needs_points", True):
                has = self.has_points(valid)
                spa_fine = spa_fine * has[:, None, None, None]
            fine = torch.cat([sem_fine, spa_fine], 1)
        else:
            v_spa, fine = None, sem_fine
        return self.projector(self.fusion(v_sem, v_spa, has)), fine, sem_fine

    def forward(self, image: torch.Tensor, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
                xyz: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                target_in: torch.Tensor | None = None, target_mask: torch.Tensor | None = None,
                use_cache: bool = False) -> VLAOutput:
        cfg = self.cfg
        self.check_inputs(image, xyz, valid)
        b = image.shape[0]
        if prompt_ids.shape[1] != cfg.max_prompt_len:
            raise ValueError(f"prompt: expected length {cfg.max_prompt_len} (padded), got {prompt_ids.shape[1]}")
        if cfg.use_3d and xyz is None:  # RGB only: an all-invalid point map
            s = cfg.image_size
            xyz = image.new_zeros(b, 3, s, s)
            valid = image.new_zeros(b, 1, s, s)
        vis, fine, sem_fine = self.encode_images(image, xyz, valid)
        emb = self.llm.get_input_embeddings()
        parts = [vis, emb(prompt_ids), self.query_embed[None].expand(b, -1, -1)]
        masks = [torch.ones(b, vis.shape[1], dtype=prompt_mask.dtype, device=vis.device), prompt_mask,
                 torch.ones(b, cfg.num_queries, dtype=prompt_mask.dtype, device=vis.device)]
        if target_in is not None:
            parts.append(emb(target_in))
            masks.append(target_mask if target_mask is not None else torch.ones_like(target_in))
        n, q0 = vis.shape[1], vis.shape[1] + cfg.max_prompt_len
        est = None
        if self.point_head is not None:
            est = self.point_head(sem_fine).flatten(2).transpose(1, 2)  # (B, Nf, 3)
        if self.geo_embed is not None and target_in is not None:
            # Two passes over one sequence: the prefix gives the queries and so the readout; its
            # geometry becomes a token the text target attends to (the cache carries the prefix).
            prefix = self.llm.model(inputs_embeds=torch.cat(parts[:-1], 1), attention_mask=torch.cat(masks[:-1], 1),
                                    use_cache=True)
            hid = prefix.last_hidden_state
            queries = hid[:, q0:q0 + cfg.num_queries]
            pa, pb, traj, attn_a = self.readout(hid[:, :n], queries, fine, xyz, valid, est)
            geo = self.geo_embed(self.geometry_input(self.text_geometry(pa, pb, traj)))[:, None]
            mask = torch.cat(masks[:-1] + [masks[-1].new_ones(b, 1), masks[-1]], 1)
            out = self.llm.model(inputs_embeds=torch.cat([geo, parts[-1]], 1), attention_mask=mask,
                                 cache=prefix.cache, use_cache=True)
            logits = self.llm.lm_head(out.last_hidden_state[:, 1:])
            hid = torch.cat([hid, out.last_hidden_state], 1)
            return VLAOutput(hid, logits, pa, pb, traj, queries, attn_a, est, mask,
                             out.cache if use_cache else None)
        x = torch.cat(parts, 1)
        mask = torch.cat(masks, 1)
        out = self.llm.model(inputs_embeds=x, attention_mask=mask, use_cache=use_cache)
        hid = out.last_hidden_state
        queries = hid[:, q0:q0 + cfg.num_queries]
        logits = None
        if target_in is not None:
            logits = self.llm.lm_head(hid[:, q0 + cfg.num_queries:])
        pa, pb, traj, attn_a = self.readout(hid[:, :n], queries, fine, xyz, valid, est)
        return VLAOutput(hid, logits, pa, pb, traj, queries, attn_a, est, mask,
                         out.cache if use_cache else None)

    @staticmethod
    def text_geometry(pa: torch.Tensor, pb: torch.Tensor, traj: torch.Tensor) -> torch.Tensor:
        """(B, 10 + 3T): pointer A, pointer B, B - A, |B - A| and the trajectory, metres, detached
        (the text loss does not move the readout)."""
        v = pb - pa
        return torch.cat([pa, pb, v, v.norm(dim=-1, keepdim=True), traj.flatten(1)], 1).detach()

    def geometry_input(self, g: torch.Tensor) -> torch.Tensor:
        """The geometry token's input from ``text_geometry`` (B, D) metres: as it is ("raw"), or
        ("fourier") each value x as 10 x, sin(2 pi f x), cos(2 pi f x) for f in GEOMETRY_FREQS
        cycles per metre: (B, D * (1 + 2 F))."""
        if self.cfg.geometry_features == "raw":
            return g
        f = g.new_tensor(GEOMETRY_FREQS)
        ang = 2 * math.pi * g[..., None] * f  # (B, D, F)
        return torch.cat([10.0 * g, ang.sin().flatten(1), ang.cos().flatten(1)], 1)

    def readout(self, vis_hidden, queries, fine, xyz, valid, est=None):
        """Pointers A and B (softmax over the fine grid of the cells' 3D points + offsets) and the
        trajectory. Cells take the point map's points; without any (RGB only) the estimate ``est``
        (B, Nf, 3) stands in, and the pointer may use every cell."""
        cfg = self.cfg
        b, g, fg = vis_hidden.shape[0], cfg.grid, cfg.fine_grid
        kl = self.key_llm(vis_hidden).transpose(1, 2).reshape(b, self.dk, g, g)
        keys = self.key_fine(fine) + F.interpolate(kl, size=(fg, fg), mode="nearest") + self.key_pos
        keys = keys.flatten(2)  # (B, dk, Nf)
        q = self.q_ptr(queries[:, :2]).reshape(b, 2, 2, self.dk)  # pointer a uses q0, b uses q1
        qa, qb = q[:, 0, 0], q[:, 1, 1]
        off = self.offset(queries[:, :2])  # (B, 2, 6)
        offa, offb = off[:, 0, :3], off[:, 1, 3:]
        la = torch.einsum("bd,bdn->bn", qa, keys) / math.sqrt(self.dk)
        lb = torch.einsum("bd,bdn->bn", qb, keys) / math.sqrt(self.dk)
        if self.spatial is not None:
            cells, cv = pool_points(xyz, valid, fg)
            if est is not None:
                none = cv.sum(1, keepdim=True) == 0  # (B, 1): samples without a point map
                cells = torch.where(none[..., None], est, cells)
                cv = torch.where(none, torch.ones_like(cv), cv)
            bias = torch.where(cv > 0, 0.0, -1e4)
            wa, wb = torch.softmax(la + bias, -1), torch.softmax(lb + bias, -1)
            pa = torch.einsum("bn,bnc->bc", wa, cells) + offa
            pb = torch.einsum("bn,bnc->bc", wb, cells) + offb
        else:
            wa = torch.softmax(la, -1)
            pa, pb = offa, offb
        delta = self.traj_head(torch.cat([queries[:, 2], queries[:, 0]], -1)).reshape(b, cfg.traj_horizon, 3)
        traj = pa[:, None] + torch.cumsum(delta, 1)
        return pa, pb, traj, wa

    def action_geometry(self, out: VLAOutput) -> torch.Tensor | None:
        """The readout geometry the action head reads: pointer A, pointer B, B - A and the predicted
        trajectory, flattened (B, 9 + 3T), camera-frame metres; None when the config has it off."""
        if not self.cfg.action_geometry:
            return None
        b = out.point_a.shape[0]
        return torch.cat([out.point_a, out.point_b, out.point_b - out.point_a, out.traj.reshape(b, -1)], 1)

    # ---- losses ----
    def compute_loss(self, batch: Batch, stage: str, weights: TrainConfig | None = None,
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of ``stage`` on ``batch`` -> (total, named parts); ``weights``: the
        loss weights of a TrainConfig (w_lm, w_point, w_traj, w_post_spatial; defaults otherwise).

        stage1 / stage2: next-token cross-entropy on the target text ("lm"; motion tokens with the
        ordinal target of ``motion_label_sigma``, ``vipa.model.losses.text_cross_entropy``) and L1 in metres on
        pointer A, pointer B, their difference (the QA "vector") and the trajectory; with
        ``w_motion`` > 0 also on the trajectory relative to pointer A ("motion", the displacement).
        post: the action head's flow-matching loss ("flow"), conditioned on the query states and
        the readout geometry; when the batch carries them, the same readout targets keep the
        pointers aligned on robot data (pointer A = the end effector now, B = where it ends the
        demonstration, trajectory = its future positions; point B is masked with point A's mask)."""
        if stage not in STAGES:
            raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
        w = weights or TrainConfig()
        if stage == "post":
            out = self(*batch.observation())
            fm = self.action_head.loss(batch.actions, batch.state, out.queries, batch.action_mask,
                                       geom=self.action_geometry(out))
            losses = {"flow": fm}
            total = fm
            if batch.point_a is not None:
                ma, mt = batch.point_a_mask, batch.traj_mask
                losses["point_a"] = masked_l1(out.point_a, batch.point_a, ma)
                losses["point_b"] = masked_l1(out.point_b, batch.point_b, ma)
                losses["traj"] = masked_l1(out.traj, batch.traj, mt)
                total = total + w.w_post_spatial * (losses["point_a"] + losses["point_b"] + losses["traj"])
            return total, losses
        if batch.target is None:
            raise ValueError(f"{stage}: the batch has no text target")
        tgt, tmask = batch.target, batch.target_mask
        image, ids, pmask, xyz, valid = batch.observation()
        if self.training and self.spatial is not None and valid is not None and w.pointmap_dropout > 0:
            # Hide the point map of some samples (RGB-only inputs); their targets stay.
            keep = (torch.rand(len(batch), device=valid.device) >= w.pointmap_dropout).to(valid.dtype)
            xyz, valid = xyz * keep[:, None, None, None], valid * keep[:, None, None, None]
        out = self(image, ids, pmask, xyz, valid, target_in=tgt[:, :-1], target_mask=tmask[:, :-1])
        labels = tgt[:, 1:].masked_fill(tmask[:, 1:] == 0, IGNORE)
        lm = text_cross_entropy(out.logits, labels, self.motion_start, w.motion_label_sigma, w.lm_per_sample)
        ma, mb, mt = batch.point_a_mask, batch.point_b_mask, batch.traj_mask
        pa = masked_l1(out.point_a, batch.point_a, ma)
        pb = masked_l1(out.point_b, batch.point_b, mb)
        vec = masked_l1(out.point_b - out.point_a, batch.point_b - batch.point_a, ma * mb)
        traj = masked_l1(out.traj, batch.traj, mt)
        total = w.w_lm * lm + w.w_point * (pa + pb + vec) + w.w_traj * traj
        parts = {"lm": lm, "point_a": pa, "point_b": pb, "vector": vec, "traj": traj}
        if w.w_motion > 0:
            # The displacement from the wrist now, predicted against demonstrated (motion samples carry
            # the wrist at t as point A's target).
            parts["motion"] = masked_l1(out.traj - out.point_a[:, None], batch.traj - batch.point_a[:, None], mt * ma)
            total = total + w.w_motion * parts["motion"]
        if out.point_est is not None and batch.valid is not None:
            # The RGB-only point estimate against the (unhidden) point map, L1 metres over valid cells.
            cells, cv = pool_points(batch.xyz, batch.valid, self.cfg.fine_grid)
            parts["mono"] = ((out.point_est - cells).abs().sum(-1) * cv).sum() / cv.sum().clamp_min(1.0)
            total = total + w.w_mono * parts["mono"]
        return total, parts

    # ---- text generation ----
    @torch.no_grad()
    def generate(self, image, prompt_ids, prompt_mask, xyz=None, valid=None, bos_id: int = 1, eos_id: int = 2,
                 max_new_tokens: int = 32, allowed_fn=None, pick_fn=None) -> tuple[torch.Tensor, VLAOutput]:
        """Decoding after the query tokens. ``allowed_fn(step, generated (B, t)) -> (B, V) bool``
        restricts each step (constrained decoding); ``pick_fn(logits (B, V), -inf where not allowed,
        step, first output) -> (B,) ids`` chooses the token (default greedy: the argmax; see
        ``vipa.infer.constrained.motion_pick_fn``); returns (B, t) ids (eos-terminated or max length)."""
        b = image.shape[0]
        cur = torch.full((b, 1), bos_id, dtype=torch.long, device=image.device)
        first = self.forward(image, prompt_ids, prompt_mask, xyz, valid, target_in=cur, use_cache=True)
        logits, past, mask = first.logits[:, -1], first.past_key_values, first.attention_mask
        done = torch.zeros(b, dtype=torch.bool, device=image.device)
        emb = self.llm.get_input_embeddings()
        for step in range(min(max_new_tokens, self.cfg.max_target_len)):
            logits = logits.float()
            if allowed_fn is not None:
                logits = logits.masked_fill(~allowed_fn(step, cur[:, 1:]), float("-inf"))
            nxt = logits.argmax(-1) if pick_fn is None else pick_fn(logits, step, first)
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)
            cur = torch.cat([cur, nxt[:, None]], 1)
            done |= nxt == eos_id
            if done.all():
                break
            mask = torch.cat([mask, torch.ones(b, 1, dtype=mask.dtype, device=mask.device)], 1)
            o = self.llm.model(inputs_embeds=emb(nxt[:, None]), attention_mask=mask, cache=past, use_cache=True)
            past = o.cache
            logits = self.llm.lm_head(o.last_hidden_state[:, -1])
        return cur[:, 1:], first
