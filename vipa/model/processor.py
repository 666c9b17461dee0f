"""The processor: raw inputs -> the model's tensors, the one path shared by the training datasets,
evaluation, post-training, the policy server and the app (through ``vipa.infer.Predictor``).

Inputs: an RGB frame (H, W, 3) uint8 of any size, optionally (RGB only works too) its 3D: a camera-frame point map
(H, W, 3) metres (NaN = missing) or a metric depth map (H, W) metres with intrinsics K (3, 3)
pixels (the point map is computed from it at full resolution by ``vipa.geometry.unproject``);
and a prompt text. Outputs: the image resized to the config's ``image_size`` S (aspect not
preserved), the point map NaN-aware area-resized to S x S with a validity map, and the prompt's
token ids right-padded to ``max_prompt_len`` (the model's fixed token layout).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vipa.geometry import unproject
from vipa.model.batch import Batch
from vipa.model.config import ModelConfig
from vipa.model.tokenizer import VIPATokenizer


def point_map_from_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(H, W) metric depth (metres; NaN, inf, <= 0 invalid) + (3, 3) K -> (H, W, 3) float32
    camera-frame XYZ, NaN where depth is invalid (``vipa.geometry.unproject``)."""
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth: expected (H, W), got {depth.shape}")
    return unproject(depth, np.asarray(K))


def resize_point_map(points: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) XYZ with NaN holes -> ((3, size, size) float32 area-averaged XYZ over valid pixels
    (0 where none), (1, size, size) float32 fraction of valid pixels)."""
    pts = torch.from_numpy(np.ascontiguousarray(points, np.float32)).permute(2, 0, 1)[None]
    if torch.isinf(pts).any():
        raise ValueError("point map: contains inf")
    valid = torch.isfinite(pts).all(1, keepdim=True).float()
    pts = torch.nan_to_num(pts, nan=0.0) * valid
    s = F.adaptive_avg_pool2d(pts, size)
    vf = F.adaptive_avg_pool2d(valid, size)
    xyz = torch.where(vf > 0, s / vf.clamp_min(1e-6), torch.zeros_like(s))
    return xyz[0].numpy(), vf[0].numpy()


def prepare_image(rgb: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) uint8, area-resized (aspect not preserved; K is not
    needed afterwards because the point map is computed at full resolution first)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    t = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float()
    t = F.adaptive_avg_pool2d(t, size) if t.shape[-1] >= size else \
        F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t[0].round().clamp(0, 255).to(torch.uint8)


def prepare_points(points: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) camera-frame XYZ (NaN = invalid) -> ((3, S, S) float32, (1, S, S) float32 validity)."""
    xyz, valid = resize_point_map(points, size)
    if valid.max() <= 0:
        raise ValueError("point map: no valid pixel (all depth missing)")
    return torch.from_numpy(xyz), torch.from_numpy(valid)


def encode_prompt(tok: VIPATokenizer, text: str, max_len: int) -> dict[str, torch.Tensor]:
    """Prompt ids right-padded to ``max_len`` (fixed layout); ValueError when longer."""
    ids = tok.encode(text)
    if len(ids) > max_len:
        raise ValueError(f"instruction/prompt is {len(ids)} tokens; this model's context allows {max_len}")
    pad = max_len - len(ids)
    return {"prompt_ids": torch.tensor(ids + [tok.pad_id] * pad, dtype=torch.long),
            "prompt_mask": torch.tensor([1] * len(ids) + [0] * pad, dtype=torch.long)}


def collate(batch: list[dict[str, Any]], pad_id: int = 0) -> Batch:
    """Stack per-sample dicts (keys: ``Batch``'s fields) into a Batch; targets right-padded to the
    longest (``target_mask`` marks real tokens)."""
    known = set(Batch.keys())
    unknown = set(batch[0]) - known
    if unknown:
        raise ValueError(f"collate: sample has unknown keys {sorted(unknown)}; Batch fields are {sorted(known)}")
    out: dict[str, torch.Tensor] = {}
    for k in batch[0]:
        if k == "target":
            n = max(len(b[k]) for b in batch)
            out[k] = torch.full((len(batch), n), pad_id, dtype=torch.long)
            out["target_mask"] = torch.zeros(len(batch), n, dtype=torch.long)
            for j, b in enumerate(batch):
                out[k][j, : len(b[k])] = b[k]
                out["target_mask"][j, : len(b[k])] = 1
        else:
            out[k] = torch.stack([b[k] for b in batch])
    return Batch(**out)


class Processor:
    """Raw inputs -> model tensors for one model config and tokenizer (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, tok: VIPATokenizer):
        self.cfg, self.tok = cfg, tok

    @staticmethod
    def inputs_used(cfg: ModelConfig, depth: np.ndarray | None = None, points: np.ndarray | None = None) -> str:
        """Which inputs a frame gives the model: "rgb+points", "rgb+depth" or "rgb" (RGB only: no 3D
        input, or a model without the 3D encoder, which ignores it)."""
        if not cfg.use_3d:
            return "rgb"
        return "rgb+points" if points is not None else ("rgb+depth" if depth is not None else "rgb")

    def observation(self, image: np.ndarray, depth: np.ndarray | None = None, K: np.ndarray | None = None,
                    points: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """One frame -> {image (3, S, S) float32 in [0, 1]} plus {xyz (3, S, S), valid (1, S, S)} when the
        model has its 3D encoder and the frame has 3D (from ``points``, else from ``depth`` + ``K``);
        without either the model runs on RGB only (its 3D branch masked out). NaN depth / points are
        missing pixels; inf, an all-missing point map, or depth without K raise ValueError."""
        s = self.cfg.image_size
        out = {"image": prepare_image(image, s).float() / 255.0}
        if self.cfg.use_3d and (points is not None or depth is not None):
            if points is None:
                if K is None:
                    raise ValueError("depth given without intrinsics K")
                if np.shape(depth) != image.shape[:2]:
                    raise ValueError(f"depth {np.shape(depth)} does not match the image {image.shape[:2]}")
                points = point_map_from_depth(depth, K)
            points = np.asarray(points, np.float32)
            if points.shape != image.shape[:2] + (3,):
                raise ValueError(f"point map {points.shape} does not match the image {image.shape[:2] + (3,)}")
            if np.isinf(points).any():
                raise ValueError("point map: contains inf")
            out["xyz"], out["valid"] = prepare_points(points, s)
        return out

    def prompt(self, text: str) -> dict[str, torch.Tensor]:
        """Prompt text -> {prompt_ids (P,), prompt_mask (P,)}; ValueError when empty or too long."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("instruction: empty")
        return encode_prompt(self.tok, text.strip(), self.cfg.max_prompt_len)

    def __call__(self, image: np.ndarray, prompt: str, depth: np.ndarray | None = None,
                 K: np.ndarray | None = None, points: np.ndarray | None = None) -> Batch:
        """One frame + prompt -> a Batch of one observation (no targets)."""
        return collate([{**self.observation(image, depth, K, points), **self.prompt(prompt)}])
