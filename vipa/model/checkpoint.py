"""Checkpoints: a folder with ``model.safetensors`` (weights), ``config.json`` (the VIPAConfig,
stage, step, vocabulary size; for ``paper`` the local VLM / 3D-encoder folders, which must still
exist when loading: the weights file holds all weights, frozen ones included), ``tokenizer.json``
and, after post-training, ``action_stats.json`` (normalisation of robot states and actions).
Nothing is unpickled when loading one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from vipa.data._io import set_readable
from vipa.model.config import ConfigError, VIPAConfig
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
    set_readable(tmp)  # 0644 files, 0755 folder, whatever the umask
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
        info = json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path}: {CONFIG} is not valid JSON ({exc})") from exc
    if not isinstance(info, dict):
        raise ConfigError(str(path / CONFIG), "(top level)", f"expected a JSON object, got {type(info).__name__}")
    if "config" not in info:
        raise ConfigError(str(path / CONFIG), "config", "missing")
    if not isinstance(info.get("vocab_size"), int) or isinstance(info.get("vocab_size"), bool):
        raise ConfigError(str(path / CONFIG), "vocab_size", f"expected an integer, got {json.dumps(info.get('vocab_size'))}")
    return info


def checkpoint_config(path: str | Path, info: dict[str, Any] | None = None) -> VIPAConfig:
    """The checked VIPAConfig of a checkpoint folder (ConfigError names its config.json and the field)."""
    path = Path(path)
    info = read_checkpoint_info(path) if info is None else info
    return VIPAConfig.from_dict(info["config"], str(path / CONFIG))


def save_derived_checkpoint(path: str | Path, model: torch.nn.Module, cfg: VIPAConfig, tok: VIPATokenizer,
                            info: dict[str, Any], part: str, record: dict[str, Any],
                            log: list[dict[str, Any]]) -> Path:
    """Write a checkpoint made from a loaded one (``info`` from load_checkpoint) by fitting one ``part``:
    its metadata carried over plus ``record`` under ``part``, and ``metrics_<part>.jsonl`` from ``log``."""
    meta = {k: v for k, v in info.items() if k not in ("config", "vocab_size", "action_stats")}
    meta[part] = record
    out = save_checkpoint(path, model, cfg, tok, meta, info.get("action_stats"))
    with (out / f"metrics_{part}.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in log)
    return out


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
    cfg = checkpoint_config(path, info)
    if expect_config is not None and cfg.name != expect_config:
        raise CheckpointError(f"checkpoint {path} was trained with config {cfg.name!r}, not {expect_config!r}")
    if vlm_path is not None:
        cfg.model.vlm_path = str(vlm_path)
    if encoder3d_path is not None:
        cfg.model.encoder3d_path = str(encoder3d_path)
    tok = VIPATokenizer.load(path / TOKENIZER)
    if tok.vocab_size != info.get("vocab_size"):
        raise ConfigError(str(path / CONFIG), "vocab_size", f"{info.get('vocab_size')} disagrees with {TOKENIZER} "
                                                            f"({tok.vocab_size} tokens)")
    # A `paper` checkpoint holds every weight (VLM and 3D encoder included): build the VLM from its
    # config only; the local folders must still exist for their configs and tokenizer layout.
    model = VIPAModel(cfg.model, tok.vocab_size, tok.pad_id, load_pretrained=False)
    check_weights_fit(model, path / WEIGHTS, path / CONFIG)
    load_weights(model, path / WEIGHTS)
    model.eval()
    info["action_stats"] = json.loads((path / ACTION_STATS).read_text()) if (path / ACTION_STATS).is_file() else None
    return model, cfg, tok, info


def load_with_new_part(model: torch.nn.Module, state: dict[str, torch.Tensor], new_prefix: str,
                       where: str) -> None:
    """Load ``state`` (an older model's weights) into ``model``, which has one part more (the
    parameters named ``new_prefix``..., left as initialised); ValueError naming ``where`` when any
    other weight is missing or ``state`` has weights ``model`` lacks."""
    missing, unexpected = unwrap(model).load_state_dict(state, strict=False)
    wrong = [k for k in missing if not k.startswith(new_prefix)]
    if unexpected or wrong:
        raise ValueError(f"{where}: weights do not fit (missing {wrong[:3]}, unexpected {unexpected[:3]})")


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


# Tensors whose shape tells a config field: (name pattern, axis, field in config.json, what it counts).
_SHAPE_FIELDS = (
    (r"llm\.model\.embed_tokens\.weight", 0, "vocab_size", "tokens"),
    (r"llm\.model\.embed_tokens\.weight", 1, "config.model.llm.hidden_size", "hidden size"),
    (r"llm\.lm_head\.weight", 0, "vocab_size", "tokens"),
    (r"llm\.lm_head\.weight", 1, "config.model.llm.hidden_size", "hidden size"),
    (r"query_embed", 1, "config.model.llm.hidden_size", "hidden size"),
    (r"llm\.model\.layers\.\d+\.mlp\.gate_proj\.weight", 0, "config.model.llm.intermediate_size", "MLP width"),
    (r"llm\.model\.layers\.\d+\.self_attn\.k_proj\.weight", 0, "config.model.llm.num_key_value_heads", "key width"),
    (r"semantic\.pos", 1, "config.model.image_size / patch_size", "visual tokens"),
    (r"semantic\.pos", 2, "config.model.d_vision", "vision width"),
    (r"semantic\.fine\.0\.weight", 0, "config.model.stem_channels", "first stem width"),
    (r"key_pos", 2, "config.model.image_size / fine_stride", "fine grid"),
    (r"query_embed", 0, "config.model.num_queries", "query tokens"),
    (r"traj_head\.2\.weight", 0, "config.model.traj_horizon", "3 x waypoints"),
    (r"geo_embed\.0\.weight", 1, "config.model.geometry_features / traj_horizon", "geometry-token input width"),
    (r"action_head\..*", None, "config.model (action head: action_dim, state_dim, chunk_len, dit_*)", "shape"),
)
# Parameter prefixes whose presence a boolean / count field decides.
_PRESENCE_FIELDS = (
    (r"spatial\.", "config.model.use_3d", "a 3D encoder"),
    (r"point_head\.", "config.model.mono_points", "an RGB point-estimate head"),
    (r"geo_embed\.", "config.model.geometry_token", "a geometry-token embedding"),
)


def check_weights_fit(model: torch.nn.Module, weights: str | Path, config_file: str | Path) -> None:
    """Compare the weights file's tensor shapes (read from its header) with the model built from
    ``config_file``; a disagreement is a ConfigError naming the config field and the tensor."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights}: corrupted or not a safetensors file ({exc})") from exc
    want = {k: tuple(v.shape) for k, v in unwrap(model).state_dict().items()}
    src = str(config_file)
    for pat, name, what in _PRESENCE_FIELDS:
        in_w = any(re.match(pat, k) for k in have)
        in_m = any(re.match(pat, k) for k in want)
        if in_w != in_m:
            raise ConfigError(src, name, f"is {str(in_m).lower()} but {Path(weights).name} "
                                         f"{'has' if in_w else 'lacks'} {what}")
    layers = lambda keys: len({m.group(1) for k in keys if (m := re.match(r"llm\.model\.layers\.(\d+)\.", k))})
    if layers(have) != layers(want):
        raise ConfigError(src, "config.model.llm.num_hidden_layers",
                          f"{layers(want)} disagrees with {Path(weights).name} ({layers(have)} layers)")
    differ = {k: shape for k, shape in want.items() if k in have and have[k] != shape}
    for pat, axis, name, what in _SHAPE_FIELDS:  # the most telling field first
        for k, shape in differ.items():
            if not re.fullmatch(pat, k):
                continue
            if axis is None:
                raise ConfigError(src, name, f"disagrees with {Path(weights).name} (tensor {k}: {have[k]}, "
                                             f"config gives {shape})")
            if len(have[k]) == len(shape) and have[k][axis] != shape[axis]:
                raise ConfigError(src, name, f"{what} {shape[axis]} disagrees with {Path(weights).name} "
                                             f"({have[k][axis]}, tensor {k})")
    for k, shape in differ.items():
        raise ConfigError(src, "config.model", f"disagrees with {Path(weights).name}: tensor {k} is {have[k]}, "
                                               f"the config gives {shape}")


def export_pointmap_encoder(checkpoint: str | Path, folder: str | Path) -> Path:
    """The 3D encoder of a trained ``tiny``/``small`` checkpoint as a 3D-encoder folder for ``paper``
    (``vipa.model.pretrained``)."""
    model, cfg, _, _ = load_checkpoint(checkpoint)
    if model.spatial is None or cfg.model.vlm_path:
        raise ValueError(f"checkpoint {checkpoint}: has no project point-map encoder (config {cfg.name!r})")
    return save_pointmap_encoder(folder, model.spatial, cfg.model)
