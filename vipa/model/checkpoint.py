"""Checkpoints: a folder with ``model.safetensors`` (weights), ``config.json`` (the VIPAConfig,
stage, step, vocabulary size; for ``paper`` the local VLM / 3D-encoder folders, which must still
exist when loading: the weights file holds all weights, frozen ones included), ``tokenizer.json``
and, after post-training, ``action_stats.json`` (normalisation of robot states and actions).
Nothing is unpickled when loading one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from vipa.model.config import VIPAConfig
from vipa.model.pretrained import save_pointmap_encoder
from vipa.model.tokenizer import VIPATokenizer
from vipa.model.vla import VIPAModel

WEIGHTS, CONFIG, TOKENIZER, ACTION_STATS = "model.safetensors", "config.json", "tokenizer.json", "action_stats.json"


class CheckpointError(ValueError):
    """A checkpoint folder is missing, corrupted or does not match the requested config."""


def unwrap(model: torch.nn.Module) -> VIPAModel:
    return model.module if hasattr(model, "module") else model  # DDP


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: VIPAConfig, tok: VIPATokenizer,
                    meta: dict[str, Any] | None = None, action_stats: dict[str, list] | None = None) -> Path:
    """Write a checkpoint folder atomically (temporary folder, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        for f in tmp.iterdir():
            f.unlink()
    tmp.mkdir(parents=True, exist_ok=True)
    m = unwrap(model)
    save_model(m, str(tmp / WEIGHTS), metadata={"config": cfg.name})
    info = {"config": cfg.to_dict(), "vocab_size": m.vocab_size, **(meta or {})}
    (tmp / CONFIG).write_text(json.dumps(info, indent=2))
    tok.save(tmp / TOKENIZER)
    if action_stats is not None:
        (tmp / ACTION_STATS).write_text(json.dumps(action_stats))
    if path.exists():
        old = path.with_name(path.name + ".old")
        if old.exists():
            for f in old.iterdir():
                f.unlink()
            old.rmdir()
        path.rename(old)
        tmp.rename(path)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(path)
    return path


def read_checkpoint_info(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    for f in (WEIGHTS, CONFIG, TOKENIZER):
        if not (path / f).is_file():
            raise CheckpointError(f"checkpoint {path}: missing {f}")
    try:
        return json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: {CONFIG} is not valid JSON ({exc})") from exc


def load_checkpoint(path: str | Path, expect_config: str | None = None, vlm_path: str | None = None,
                    encoder3d_path: str | None = None,
                    ) -> tuple[VIPAModel, VIPAConfig, VIPATokenizer, dict[str, Any]]:
    """(model in eval mode, config, tokenizer, info) from a checkpoint folder.

    ``expect_config``: raise CheckpointError when the checkpoint was made with another config.
    ``vlm_path`` / ``encoder3d_path`` (``paper``): where the local pretrained folders are now, when
    they moved since training (only their configs are read; the checkpoint holds the weights).
    """
    path = Path(path)
    info = read_checkpoint_info(path)
    try:
        cfg = VIPAConfig.from_dict(info["config"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: config unreadable ({exc})") from exc
    if expect_config is not None and cfg.name != expect_config:
        raise CheckpointError(f"checkpoint {path} was trained with config {cfg.name!r}, not {expect_config!r}")
    if vlm_path is not None:
        cfg.model.vlm_path = str(vlm_path)
    if encoder3d_path is not None:
        cfg.model.encoder3d_path = str(encoder3d_path)
    tok = VIPATokenizer.load(path / TOKENIZER)
    if tok.vocab_size != info.get("vocab_size"):
        raise CheckpointError(f"checkpoint {path}: tokenizer has {tok.vocab_size} tokens, weights expect "
                              f"{info.get('vocab_size')}")
    # A `paper` checkpoint holds every weight (VLM and 3D encoder included): build the VLM from its
    # config only; the local folders must still exist for their configs and tokenizer layout.
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id, load_pretrained=False)
    load_weights(model, path / WEIGHTS)
    model.eval()
    info["action_stats"] = json.loads((path / ACTION_STATS).read_text()) if (path / ACTION_STATS).is_file() else None
    return model, cfg, tok, info


def load_weights(model: torch.nn.Module, file: str | Path, strict: bool = True) -> None:
    """Load safetensors weights into ``model`` with clear errors for corrupted or mismatched files."""
    try:
        missing, unexpected = load_model(unwrap(model), str(file), strict=False)
    except SafetensorError as exc:
        raise CheckpointError(f"{file}: corrupted or not a safetensors file ({exc})") from exc
    except RuntimeError as exc:  # shape mismatch
        raise CheckpointError(f"{file}: weights do not fit this model's config ({str(exc).splitlines()[0]} ...)") from exc
    if strict and (missing or unexpected):
        raise CheckpointError(f"{file}: weights do not match the model (missing {sorted(missing)[:5]}, "
                              f"unexpected {sorted(unexpected)[:5]})")


def export_pointmap_encoder(checkpoint: str | Path, folder: str | Path) -> Path:
    """The 3D encoder of a trained ``tiny``/``small`` checkpoint as a 3D-encoder folder for ``paper``
    (``vipa.model.pretrained``)."""
    model, cfg, _, _ = load_checkpoint(checkpoint)
    if model.spatial is None or cfg.model.vlm_path:
        raise ValueError(f"checkpoint {checkpoint}: has no project point-map encoder (config {cfg.name!r})")
    return save_pointmap_encoder(folder, model.spatial, cfg.model)
