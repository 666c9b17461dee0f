"""Pretrained parts of the ``paper`` config, from LOCAL folders only (nothing is downloaded).

**VLM folder** (``ModelConfig.vlm_path``): a transformers ``save_pretrained`` folder holding
``config.json``, the weights (``model*.safetensors``) and the fast tokenizer ``tokenizer.json``;
``preprocessor_config.json`` (image mean/std) is optional (CLIP's are used otherwise). Supported
families (``model_type`` in ``SUPPORTED_VLMS``):

- ``llava``: ``LlavaForConditionalGeneration`` (e.g. llava-hf/llava-1.5-7b-hf,
  llava-interleave-qwen-0.5b-hf; CLIP or SigLIP tower, any decoder LLM). Semantic encoder = the
  vision tower (``vision_feature_layer``, CLS dropped for the "default" strategy) + the VLM's
  multimodal projector; the image is resized to the tower's ``image_size``.
- ``qwen2_5_vl``: ``Qwen2_5_VLForConditionalGeneration`` (e.g. Qwen/Qwen2.5-VL-3B-Instruct).
  Semantic encoder = the vision transformer with its patch merger; the image is resized to
  ``image_size`` rounded to a multiple of patch_size x spatial_merge_size (fixed resolution,
  not the processor's dynamic one) and patchified exactly as Qwen2VLImageProcessor does. The
  LLM gets plain 1D positions (mRoPE with the same index on all three sections), as for text.

In both the language model + LM head are the LLM. Models are loaded in float32.

**3D encoder folder** (``ModelConfig.encoder3d_path``): ``encoder3d.json`` plus whatever the
encoder needs. Two kinds:

- ``{"format": "vipa-pointmap-encoder", "version": 1, "config": {image_size, patch_size,
  fine_stride, stem_channels, d_vision}}`` + ``model.safetensors``: the project's point-map
  encoder (``PointMapEncoder``), e.g. exported from a ``tiny``/``small`` checkpoint with
  ``vipa.model.checkpoint.export_pointmap_encoder``.
- ``{"format": "adapter", "class": "package.module:ClassName", "kwargs": {...}}``: an external
  3D foundation encoder (Cut3R / VGGT-like) wrapped by a user class subclassing
  ``Encoder3DAdapter`` (it loads its own weights from the folder).

Token alignment: the semantic tower's patch tokens and the 3D encoder's tokens are both
average-pooled onto the model's ``grid`` x ``grid`` patch grid (row-major), and their feature
maps are bilinearly resized onto the ``fine_grid`` used by the readout pointer.
"""

from __future__ import annotations

import abc
import importlib
import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vipa.model.config import ModelConfig

SUPPORTED_VLMS = ("llava", "qwen2_5_vl")
VLM_EXPECTED = ("a transformers save_pretrained folder of a LLaVA or Qwen2.5-VL model (config.json with "
                f"model_type in {SUPPORTED_VLMS}, model*.safetensors, tokenizer.json)")
ENCODER3D_FILE = "encoder3d.json"
POINTMAP_FORMAT = "vipa-pointmap-encoder"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class PretrainedFolderError(FileNotFoundError):
    """A local pretrained folder is missing or does not hold what the ``paper`` config expects."""


# ---------------------------------------------------------------- VLM
def check_vlm_folder(path: str | Path, need_weights: bool = True) -> dict[str, Any]:
    """The folder's config.json as a dict, after checking the folder holds a supported VLM."""
    p = Path(path)
    if not p.is_dir():
        raise PretrainedFolderError(f"vlm_path {str(p)!r} is not a folder; expected {VLM_EXPECTED}")
    if not (p / "config.json").is_file():
        raise PretrainedFolderError(f"vlm_path {str(p)!r}: no config.json; expected {VLM_EXPECTED}")
    try:
        conf = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise PretrainedFolderError(f"vlm_path {str(p)!r}: config.json is not valid JSON ({exc})") from exc
    mt = conf.get("model_type")
    if mt not in SUPPORTED_VLMS:
        raise PretrainedFolderError(f"vlm_path {str(p)!r}: model_type {mt!r} is not supported; expected {VLM_EXPECTED}")
    if need_weights and not any(p.glob("model*.safetensors")):
        raise PretrainedFolderError(f"vlm_path {str(p)!r}: no model*.safetensors weights; expected {VLM_EXPECTED}")
    if not (p / "tokenizer.json").is_file():
        raise PretrainedFolderError(f"vlm_path {str(p)!r}: no tokenizer.json (fast tokenizer); expected {VLM_EXPECTED}")
    return conf


class PretrainedCausalLM(nn.Module):
    """The VLM's language model + LM head with the interface VIPAModel uses (``.model``,
    ``.lm_head``, ``get_input_embeddings``)."""

    def __init__(self, language_model: nn.Module, lm_head: nn.Module):
        super().__init__()
        self.model = language_model
        self.lm_head = lm_head

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()


class VLMSemanticEncoder(nn.Module):
    """Semantic visual tokens from the VLM's vision tower + its multimodal projector.

    (B, 3, S, S) RGB in [0, 1] -> (fine (B, C_tower, fg, fg) tower features on the readout grid,
    tokens (B, grid*grid, H) in the LLM's hidden size)."""

    def __init__(self, tower: nn.Module, projector: nn.Module, cfg: ModelConfig, tower_size: int,
                 tower_hidden: int, feature_layer: int | list[int], strategy: str,
                 mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.tower, self.projector = tower, projector
        self.grid, self.fine_grid, self.tower_size = cfg.grid, cfg.fine_grid, tower_size
        self.layers = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
        if strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {strategy!r}: expected 'default' or 'full'")
        self.drop_cls = strategy == "default"
        self.fine_ch = tower_hidden * len(self.layers)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = image.shape[0]
        x = image
        if x.shape[-1] != self.tower_size or x.shape[-2] != self.tower_size:
            x = F.interpolate(x, size=(self.tower_size, self.tower_size), mode="bilinear", align_corners=False)
        hs = self.tower(pixel_values=(x - self.mean) / self.std, output_hidden_states=True).hidden_states
        feats = torch.cat([hs[i] for i in self.layers], -1)
        if self.drop_cls:
            feats = feats[:, 1:]
        g = math.isqrt(feats.shape[1])
        if g * g != feats.shape[1]:
            raise ValueError(f"vision tower: {feats.shape[1]} patch tokens do not form a square grid")
        fmap = feats.transpose(1, 2).reshape(b, feats.shape[-1], g, g)
        fine = F.interpolate(fmap, size=(self.fine_grid, self.fine_grid), mode="bilinear", align_corners=False)
        tokens = F.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)
        return fine, self.projector(tokens)


class QwenVLSemanticEncoder(nn.Module):
    """Semantic visual tokens from a Qwen2.5-VL vision transformer (its merger projects to the LLM's
    hidden size). (B, 3, S, S) RGB in [0, 1] -> (fine (B, H, fg, fg), tokens (B, grid*grid, H))."""

    def __init__(self, visual: nn.Module, cfg: ModelConfig, patch: int, merge: int, temporal: int,
                 hidden: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.visual = visual
        self.patch, self.merge, self.temporal = patch, merge, temporal
        unit = patch * merge
        self.tower_size = max(unit, round(cfg.image_size / unit) * unit)
        self.grid, self.fine_grid, self.fine_ch = cfg.grid, cfg.fine_grid, hidden
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = image.shape[:2]
        ts, p, m, t = self.tower_size, self.patch, self.merge, self.temporal
        x = image
        if x.shape[-1] != ts or x.shape[-2] != ts:
            x = F.interpolate(x, size=(ts, ts), mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std)[:, None].expand(b, t, c, ts, ts)  # a still image = t equal frames
        g = ts // p
        x = x.reshape(b, t, c, g // m, m, p, g // m, m, p).permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
        flat = x.reshape(b * g * g, c * t * p * p)
        thw = torch.tensor([[1, g, g]] * b, device=image.device)
        out = self.visual(flat, grid_thw=thw)
        merged = out.pooler_output if hasattr(out, "pooler_output") else out
        gm = g // m
        fmap = merged.reshape(b, gm, gm, -1).permute(0, 3, 1, 2)
        fine = F.interpolate(fmap, size=(self.fine_grid, self.fine_grid), mode="bilinear", align_corners=False)
        tokens = F.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)
        return fine, tokens


def _vlm_class(model_type: str) -> type:
    from transformers import LlavaForConditionalGeneration, Qwen2_5_VLForConditionalGeneration

    return {"llava": LlavaForConditionalGeneration, "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration}[model_type]


def load_vlm(cfg: ModelConfig, vocab_size: int, load_weights: bool = True,
             ) -> tuple[nn.Module, PretrainedCausalLM, int]:
    """(semantic encoder, LLM, LLM hidden size) from ``cfg.vlm_path`` (local files only).

    The token embeddings (and LM head) are resized to ``vocab_size`` (the pretrained tokenizer
    plus VIPA's specials and motion tokens; new rows mean-initialised). ``load_weights=False``
    builds the same structure from config.json alone (used when a VIPA checkpoint supplies all
    weights)."""
    from transformers import AutoConfig

    path = Path(cfg.vlm_path)
    model_type = check_vlm_folder(path, need_weights=load_weights)["model_type"]
    cls = _vlm_class(model_type)
    try:
        conf = AutoConfig.from_pretrained(str(path), local_files_only=True)
        if load_weights:
            vlm = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        else:
            vlm = cls._from_config(conf, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise PretrainedFolderError(f"vlm_path {str(path)!r}: could not load ({exc}); expected {VLM_EXPECTED}") from exc
    vlm.resize_token_embeddings(vocab_size)
    vc = conf.vision_config
    mean, std = CLIP_MEAN, CLIP_STD
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        pc = json.loads(pre.read_text())
        mean, std = tuple(pc.get("image_mean", mean)), tuple(pc.get("image_std", std))
    inner = vlm.model
    hidden = int(conf.text_config.hidden_size)
    if model_type == "llava":
        sem: nn.Module = VLMSemanticEncoder(inner.vision_tower, inner.multi_modal_projector, cfg, int(vc.image_size),
                                            int(vc.hidden_size), conf.vision_feature_layer,
                                            conf.vision_feature_select_strategy, mean, std)
    else:
        sem = QwenVLSemanticEncoder(inner.visual, cfg, int(vc.patch_size), int(vc.spatial_merge_size),
                                    int(vc.temporal_patch_size), hidden, mean, std)
    llm = PretrainedCausalLM(inner.language_model, vlm.lm_head)
    return sem, llm, hidden


# ---------------------------------------------------------------- 3D encoder
class Encoder3DAdapter(nn.Module, abc.ABC):
    """Interface of a 3D encoder for the ``paper`` config (Cut3R / VGGT-like foundation models
    are wrapped by a subclass the user writes; ``encoder3d.json`` names it).

    ``__init__(folder, **kwargs)`` loads the encoder's weights from ``folder`` (locally) and sets
    ``out_dim`` (channels of the spatial tokens) and ``fine_ch`` (channels of the fine map).
    ``forward(image (B, 3, S, S) RGB in [0, 1], xyz (B, 3, S, S) camera-frame metres, valid
    (B, 1, S, S))`` returns ``(fine (B, fine_ch, h, w), tokens (B, out_dim, h2, w2))``: a dense
    feature map for the readout and a token map; both are resampled onto the model's grids.
    An image-only encoder (Cut3R, VGGT) ignores ``xyz``/``valid`` and sets ``needs_points = False``
    (its output is then used for frames without a point map too)."""

    out_dim: int
    fine_ch: int
    needs_points: bool = True

    def __init__(self, folder: Path, **kwargs: Any):
        super().__init__()
        self.folder = Path(folder)

    @abc.abstractmethod
    def forward(self, image: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        ...


def _resize_points(xyz: torch.Tensor, valid: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validity-weighted area resampling of a (B, 3, S, S) point map + (B, 1, S, S) mask to size x size."""
    if xyz.shape[-1] == size:
        return xyz, valid
    s = F.interpolate(xyz * valid, size=(size, size), mode="area" if xyz.shape[-1] > size else "bilinear")
    v = F.interpolate(valid, size=(size, size), mode="area" if valid.shape[-1] > size else "bilinear")
    return torch.where(v > 0, s / v.clamp_min(1e-6), torch.zeros_like(s)), v


class PointMapFolderEncoder(Encoder3DAdapter):
    """The project's point-map encoder stored as ``encoder3d.json`` + ``model.safetensors``."""

    def __init__(self, folder: Path, config: dict[str, Any] | None = None, **kwargs: Any):
        from safetensors.torch import load_model

        from vipa.model.encoders import PointMapEncoder

        super().__init__(folder)
        keys = ("image_size", "patch_size", "fine_stride", "stem_channels", "d_vision")
        if not config or set(keys) - set(config):
            raise PretrainedFolderError(f"encoder3d_path {str(folder)!r}: {ENCODER3D_FILE} 'config' needs {keys}")
        c = {k: config[k] for k in keys}
        c["stem_channels"] = tuple(c["stem_channels"])
        self.ecfg = ModelConfig(name="encoder3d", **c).validate()
        self.encoder = PointMapEncoder(self.ecfg)
        weights = self.folder / "model.safetensors"
        if not weights.is_file():
            raise PretrainedFolderError(f"encoder3d_path {str(folder)!r}: no model.safetensors")
        try:
            load_model(self.encoder, str(weights))
        except Exception as exc:  # safetensors raises several types for corrupt/mismatched files
            raise PretrainedFolderError(f"encoder3d_path {str(folder)!r}: model.safetensors does not fit "
                                        f"its {ENCODER3D_FILE} config ({str(exc).splitlines()[0]})") from exc
        self.out_dim, self.fine_ch = self.ecfg.d_vision, self.encoder.fine_ch

    def forward(self, image, xyz, valid):
        x, v = _resize_points(xyz, valid, self.ecfg.image_size)
        fine, tokens = self.encoder(image, x, v)
        g = self.ecfg.grid
        return fine, tokens.transpose(1, 2).reshape(tokens.shape[0], -1, g, g)


def save_pointmap_encoder(folder: str | Path, encoder: nn.Module, cfg: ModelConfig) -> Path:
    """Write a ``PointMapEncoder`` (built with ``cfg``) as a 3D-encoder folder for ``paper``."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(encoder, str(folder / "model.safetensors"))
    conf = {"format": POINTMAP_FORMAT, "version": 1,
            "config": {"image_size": cfg.image_size, "patch_size": cfg.patch_size, "fine_stride": cfg.fine_stride,
                       "stem_channels": list(cfg.stem_channels), "d_vision": cfg.d_vision}}
    (folder / ENCODER3D_FILE).write_text(json.dumps(conf, indent=2))
    return folder


def load_encoder3d(path: str | Path) -> Encoder3DAdapter:
    """The 3D encoder described by ``path/encoder3d.json`` (see the module docstring)."""
    p = Path(path)
    expected = (f"a folder with {ENCODER3D_FILE} (format {POINTMAP_FORMAT!r} + model.safetensors, or format "
                "'adapter' naming an Encoder3DAdapter subclass)")
    if not p.is_dir():
        raise PretrainedFolderError(f"encoder3d_path {str(p)!r} is not a folder; expected {expected}")
    if not (p / ENCODER3D_FILE).is_file():
        raise PretrainedFolderError(f"encoder3d_path {str(p)!r}: no {ENCODER3D_FILE}; expected {expected}")
    try:
        conf = json.loads((p / ENCODER3D_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise PretrainedFolderError(f"encoder3d_path {str(p)!r}: {ENCODER3D_FILE} is not valid JSON ({exc})") from exc
    fmt = conf.get("format")
    if fmt == POINTMAP_FORMAT:
        return PointMapFolderEncoder(p, conf.get("config"))
    if fmt == "adapter":
        spec = str(conf.get("class", ""))
        mod, _, name = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise PretrainedFolderError(f"encoder3d_path {str(p)!r}: adapter class {spec!r} not importable ({exc})") from exc
        if not (isinstance(cls, type) and issubclass(cls, Encoder3DAdapter)):
            raise PretrainedFolderError(f"encoder3d_path {str(p)!r}: {spec!r} is not an Encoder3DAdapter subclass")
        enc = cls(p, **conf.get("kwargs", {}))
        for attr in ("out_dim", "fine_ch"):
            if not isinstance(getattr(enc, attr, None), int):
                raise PretrainedFolderError(f"encoder3d_path {str(p)!r}: adapter {spec!r} must set integer {attr}")
        return enc
    raise PretrainedFolderError(f"encoder3d_path {str(p)!r}: unknown format {fmt!r}; expected {expected}")


class Spatial3DEncoder(nn.Module):
    """The ``paper`` config's ``vipa.model.encoders.Encoder3D``: wraps a folder's 3D encoder and
    resamples its outputs onto the model's grids: (image, xyz, valid) -> (fine (B, fine_ch, fg, fg),
    tokens (B, grid*grid, out_dim))."""

    def __init__(self, encoder: Encoder3DAdapter, cfg: ModelConfig):
        super().__init__()
        self.encoder = encoder
        self.grid, self.fine_grid = cfg.grid, cfg.fine_grid
        self.fine_ch, self.out_dim = encoder.fine_ch, encoder.out_dim
        self.needs_points = bool(getattr(encoder, "needs_points", True))

    def forward(self, image: torch.Tensor, xyz: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine, tmap = self.encoder(image, xyz, valid)
        if fine.shape[-1] != self.fine_grid or fine.shape[-2] != self.fine_grid:
            fine = F.interpolate(fine, size=(self.fine_grid, self.fine_grid), mode="bilinear", align_corners=False)
        tokens = F.adaptive_avg_pool2d(tmap, self.grid).flatten(2).transpose(1, 2)
        return fine, tokens
