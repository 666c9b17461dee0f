"""Model and training configurations, registered by name (``tiny``, ``small``, ``paper``).

``tiny`` trains from scratch on a CPU in minutes; ``small`` is the same code sized for one GPU;
``paper`` loads the semantic encoder + LLM from a local pretrained VLM folder and the 3D encoder
from a local folder, frozen as in the paper. Nothing is ever downloaded. Supported VLM families:
LLaVA (``LlavaForConditionalGeneration``) and Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``);
folder formats in ``vipa.model.pretrained``. For
``paper`` the widths (``d_vision``, ``llm``) come from the VLM (the fusion runs in the LLM's
hidden size); ``image_size``/``patch_size`` set the visual token grid the tower's patch tokens
are pooled onto.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vipa.ranges import Range
from vipa.tasks import LEGACY_MOTION_STRIDE_S, MOTION_STRIDE_S

STAGES = ("stage1", "stage2", "post")


class ConfigError(ValueError):
    """A config (a checkpoint's config.json, or a dict) that cannot be used; the message names its
    source and the field, on one line."""

    def __init__(self, source: str, field: str, problem: str):
        super().__init__(f"{source}: {field}: {problem}")
        self.source, self.field, self.problem = source, field, problem


def _expected_type(default: Any) -> tuple[type, ...] | None:
    """JSON types a field accepts, from its default value (None: not checked)."""
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return (int, float)
    if isinstance(default, str):
        return (str,)
    if isinstance(default, (tuple, list)):
        return (list, tuple)
    if isinstance(default, dict):
        return (dict,)
    return None


def _check_types(cls: type, d: Any, where: str, source: str) -> dict[str, Any]:
    """``d`` must be a JSON object with only ``cls``'s fields, each of its default's type."""
    if not isinstance(d, dict):
        raise ConfigError(source, where, f"expected a JSON object, got {type(d).__name__}")
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v = d[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if default is None:  # optional local paths
            ok: tuple[type, ...] | None = (str, type(None))
        else:
            ok = _expected_type(default)
        if ok is None:
            continue
        if isinstance(v, bool) and bool not in ok:
            ok_v = False
        else:
            ok_v = isinstance(v, ok)
        if not ok_v:
            want = " or ".join("null" if t is type(None) else {"int": "integer", "float": "number", "str": "string",
                                                               "bool": "boolean", "list": "list", "tuple": "list",
                                                               "dict": "object"}[t.__name__] for t in ok)
            raise ConfigError(source, f"{where}.{f.name}", f"expected {want}, got {json.dumps(v)[:40]}")
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(source, where, f"unknown fields {unknown}")
    return dict(d)

# Trainable parameter groups of the model (see VIPAModel.param_groups()).
GROUPS = ("semantic", "spatial", "fusion", "llm", "readout", "action_head")


@dataclass
class LLMConfig:
    """Decoder-only LLM built from config with transformers (``arch``: qwen2 | llama)."""

    arch: str = "qwen2"
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 384


# Encodings of the geometry token's input (ModelConfig.geometry_features); "fourier" uses these
# frequencies, cycles per metre.
GEOMETRY_FEATURES = ("raw", "fourier")
# How constrained decoding picks motion tokens (vipa.infer.constrained.motion_pick_fn).
MOTION_DECODING = ("greedy", "expectation", "readout")
GEOMETRY_FREQS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


@dataclass
class ModelConfig:
    """Architecture. Image side ``image_size`` px; visual tokens on a (image_size/patch_size)^2 grid;
    the readout pointer works on the finer (image_size/fine_stride)^2 grid."""

    name: str = "tiny"
    image_size: int = 64
    patch_size: int = 8
    fine_stride: int = 4
    stem_channels: tuple[int, int, int] = (16, 32, 64)
    d_vision: int = 128
    fusion_heads: int = 4
    fusion_dropout: float = 0.1
    alpha_init: float = 0.5
    use_3d: bool = True  # False = "without the 3D encoder" ablation
    # With the 3D encoder: a per-cell point-map estimate from the semantic encoder's fine map, so the
    # readout still has camera-frame points when a frame comes without depth or point map (RGB only).
    # False in checkpoints made before this field (they run RGB-only with an uninformed pointer).
    mono_points: bool = True
    llm: LLMConfig = field(default_factory=LLMConfig)
    max_prompt_len: int = 32
    max_target_len: int = 40
    num_queries: int = 4  # learnable query tokens: pointer A, pointer B, trajectory, + action queries
    traj_horizon: int = 8  # future wrist waypoints predicted in stage 2
    past_horizon: int = 4  # past waypoints given in the contextual-motion task
    motion_stride_s: float = MOTION_STRIDE_S  # seconds between motion waypoints (vipa.tasks)
    tokenizer_vocab: int = 640  # BPE merges budget of the project-trained tokenizer (tiny/small)
    # Project-trained tokenizer: every digit its own token (numbers in answers are then read and
    # written digit by digit, fixed width), instead of BPE's merged digit pairs.
    digit_tokens: bool = False
    # Text answers read the readout: one token after the query tokens, before the text target, embeds
    # the readout's geometry (pointers A, B, B - A, |B - A|, the trajectory; detached), so the LLM's
    # generated numbers and motion tokens can say what the readout measured. Old checkpoints: off.
    geometry_token: bool = False
    # How the geometry token sees its numbers (``GEOMETRY_FEATURES``): "raw" metres (checkpoints from
    # before the field), or "fourier": each value also as sin / cos at 1 to 64 cycles per metre, so a
    # centimetre (what the text is written to) moves the token's input by O(1), not by 0.01.
    geometry_features: str = "fourier"
    # How constrained decoding picks each motion token (vipa.infer.constrained.MOTION_DECODING):
    # "greedy" (the argmax), "expectation" (the bin nearest the expected bin of that axis) or
    # "readout" (expectation with a Gaussian prior around the model's own numeric trajectory).
    motion_decoding: str = "greedy"
    # Action head (post-training): DiT trained by flow matching.
    action_dim: int = 4
    state_dim: int = 4
    chunk_len: int = 16
    dit_dim: int = 128
    dit_layers: int = 3
    dit_heads: int = 4
    flow_steps: int = 10
    # The DiT also reads the readout geometry (pointer A, pointer B, B - A, the predicted trajectory;
    # camera-frame metres from the point map) as one more memory token, so the action head sees
    # where things are, not only the queries' states. False in checkpoints made before this field.
    action_geometry: bool = True
    # `paper` only: local folders (never downloaded).
    vlm_path: str | None = None
    encoder3d_path: str | None = None

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def fine_grid(self) -> int:
        return self.image_size // self.fine_stride

    @property
    def num_visual_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def geometry_dim(self) -> int:
        """Width of the readout geometry the action head reads (0 when ``action_geometry`` is off)."""
        return 9 + 3 * self.traj_horizon if self.action_geometry else 0

    @property
    def max_seq_len(self) -> int:
        return self.num_visual_tokens + self.max_prompt_len + self.num_queries + self.max_target_len + 1

    def validate(self) -> "ModelConfig":
        if self.geometry_features not in GEOMETRY_FEATURES:
            raise ValueError(f"geometry_features: expected one of {', '.join(GEOMETRY_FEATURES)}, "
                             f"got {self.geometry_features!r}")
        if self.motion_decoding not in MOTION_DECODING:
            raise ValueError(f"motion_decoding: expected one of {', '.join(MOTION_DECODING)}, got {self.motion_decoding!r}")
        if not self.motion_stride_s > 0:
            raise ValueError(f"motion_stride_s: must be > 0 seconds, got {self.motion_stride_s}")
        if self.image_size % self.patch_size or self.image_size % self.fine_stride:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size and fine_stride")
        if self.patch_size % self.fine_stride or self.patch_size // self.fine_stride not in (1, 2, 4, 8):
            raise ValueError("patch_size must be fine_stride times a power of two <= 8")
        if self.num_queries < 3:
            raise ValueError("num_queries must be >= 3 (pointer A, pointer B, trajectory)")
        if not 0.0 <= self.fusion_dropout < 1.0:
            raise ValueError("fusion_dropout must be in [0, 1)")
        for name in ("image_size", "patch_size", "fine_stride", "d_vision", "fusion_heads", "max_prompt_len",
                     "max_target_len", "traj_horizon", "past_horizon", "action_dim", "state_dim", "chunk_len",
                     "dit_dim", "dit_layers", "dit_heads", "flow_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.tokenizer_vocab < 0 or any(c <= 0 for c in self.stem_channels) or len(self.stem_channels) != 3:
            raise ValueError("tokenizer_vocab must be >= 0 and stem_channels three positive widths")
        c = self.llm
        if min(c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
               c.intermediate_size) <= 0:
            raise ValueError("llm sizes must be > 0")
        if self.name != "paper" and not self.vlm_path:  # widths of `paper` come from its VLM
            if self.d_vision % self.fusion_heads:
                raise ValueError(f"fusion_heads {self.fusion_heads} must divide d_vision {self.d_vision}")
            if c.hidden_size % c.num_attention_heads or c.num_attention_heads % c.num_key_value_heads:
                raise ValueError("llm.num_attention_heads must divide llm.hidden_size, and num_key_value_heads "
                                 "num_attention_heads")
        if self.dit_dim % self.dit_heads:
            raise ValueError(f"dit_heads {self.dit_heads} must divide dit_dim {self.dit_dim}")
        return self

    def check_local_weights(self) -> None:
        """For configs that load pretrained parts (``paper``): both local folders must exist.
        Nothing is ever downloaded, so a missing folder is an error naming the field."""
        for field_name, what in (("vlm_path", "pretrained LLaVA or Qwen2.5-VL VLM (transformers save_pretrained + tokenizer.json)"),
                                 ("encoder3d_path", "3D encoder (encoder3d.json: the project's point-map "
                                                    "encoder or a Cut3R / VGGT adapter)")):
            value = getattr(self, field_name)
            if field_name == "encoder3d_path" and not self.use_3d:
                continue  # the "without the 3D encoder" ablation needs no 3D folder
            if not value:
                raise FileNotFoundError(f"config {self.name!r}: {field_name} is not set; give the local folder of the {what}")
            if not Path(value).is_dir():
                raise FileNotFoundError(f"config {self.name!r}: {field_name} {value!r} is not a folder (nothing is downloaded)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config", where: str = "model") -> "ModelConfig":
        """A checked ModelConfig from its JSON form; ConfigError names ``source`` and the field."""
        d = _check_types(cls, d, where, source)
        d["llm"] = _check_types(LLMConfig, d.get("llm", {}), f"{where}.llm", source)
        if d.get("name", "tiny") not in REGISTRY:
            raise ConfigError(source, f"{where}.name", f"unknown config {d['name']!r}; known: {', '.join(sorted(REGISTRY))}")
        if d["llm"].get("arch", "qwen2") not in ("qwen2", "llama"):
            raise ConfigError(source, f"{where}.llm.arch", f"unknown {d['llm']['arch']!r} (qwen2 | llama)")
        d.setdefault("action_geometry", False)  # checkpoints from before the field existed
        d.setdefault("mono_points", False)
        d.setdefault("geometry_token", False)
        d.setdefault("geometry_features", "raw")  # checkpoints from before the field
        d.setdefault("motion_decoding", "greedy")
        d.setdefault("motion_stride_s", LEGACY_MOTION_STRIDE_S)  # what checkpoints before the field trained with
        d["llm"] = LLMConfig(**d["llm"])
        if "stem_channels" in d:
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in d["stem_channels"]):
                raise ConfigError(source, f"{where}.stem_channels", f"expected integers, got {d['stem_channels']}")
            d["stem_channels"] = tuple(d["stem_channels"])
        try:
            return cls(**d).validate()
        except ValueError as exc:
            raise ConfigError(source, where, str(exc)) from exc


# TrainConfig fields with a range, checked on load and by `vipa train`'s flags; for lr, batch_size
# and steps the range holds for each stage's value (steps 0 = one epoch). A negative lr climbs the
# loss, grad_clip 0 zeroes every gradient and log_every 0 divides by zero: all three would otherwise
# run without a word.
TRAIN_RANGES: dict[str, Range] = {
    "lr": Range(0.0, above=True), "batch_size": Range(1, integer=True), "steps": Range(0, integer=True),
    "warmup_steps": Range(0, integer=True), "weight_decay": Range(0.0), "grad_clip": Range(0.0, above=True),
    "min_lr_ratio": Range(0.0, 1.0), "log_every": Range(1, integer=True), "ckpt_every": Range(0, integer=True),
    "w_lm": Range(0.0), "w_point": Range(0.0), "w_traj": Range(0.0), "w_motion": Range(0.0),
    "w_post_spatial": Range(0.0), "w_mono": Range(0.0),
    "pointmap_dropout": Range(0.0, 1.0), "motion_label_sigma": Range(0.0), "stage2_replay": Range(0.0)}


@dataclass
class TrainConfig:
    """Optimisation per stage. ``trainable[stage]`` lists the parameter groups that train."""

    lr: dict[str, float] = field(default_factory=lambda: {"stage1": 1e-3, "stage2": 1e-3, "post": 1e-3})
    batch_size: dict[str, int] = field(default_factory=lambda: {"stage1": 32, "stage2": 32, "post": 32})
    steps: dict[str, int] = field(default_factory=lambda: {"stage1": 1500, "stage2": 1500, "post": 2000})
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    min_lr_ratio: float = 0.05
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    # Loss weights: numeric readouts are in metres, so they are weighted up against the CE.
    w_lm: float = 1.0
    w_point: float = 10.0
    w_traj: float = 10.0
    # Stages 1 / 2: weight of the L1 (metres) on the trajectory relative to pointer A (the predicted
    # displacement from the wrist now) against the demonstrated displacement. The absolute trajectory
    # loss alone lets the displacement absorb pointer A's error; this term teaches the motion itself.
    # 0 = off (the absolute trajectory only).
    w_motion: float = 0.0
    w_post_spatial: float = 2.0  # post-training: weight of the end-effector readout targets (metres, L1)
    stage2_replay: float = 0.5  # stage 2: stage-1 QA samples mixed in, as a fraction of the motion samples
    # Stages 1 / 2: probability that a sample's point map is hidden from the model (the readout and the
    # point-estimate head still learn from it), so the same weights run with RGB only.
    pointmap_dropout: float = 0.3
    w_mono: float = 1.0  # weight of the point-estimate head's L1 (metres) against the point map
    # Motion-token labels: 0 = one-hot cross-entropy; > 0 = a Gaussian target of this standard deviation
    # (in bins, ~1 mm each) over the neighbouring bins of the same axis, so near misses are credited.
    motion_label_sigma: float = 0.0
    # The text loss: False = the mean over the batch's tokens (a motion answer's many tokens outweigh a
    # QA answer's few); True = each sample's mean first, then the samples' mean.
    lm_per_sample: bool = False
    trainable: dict[str, list[str]] = field(
        default_factory=lambda: {s: list(GROUPS) for s in STAGES}
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config", where: str = "train") -> "TrainConfig":
        """A checked TrainConfig from its JSON form; ConfigError names ``source`` and the field."""
        d = _check_types(cls, d, where, source)
        d.setdefault("pointmap_dropout", 0.0)  # checkpoints from before the field trained without it
        d.setdefault("motion_label_sigma", 0.0)
        for k in ("lr", "batch_size", "steps", "trainable"):
            bad = sorted(set(d.get(k, {})) - set(STAGES))
            if bad:
                raise ConfigError(source, f"{where}.{k}", f"unknown stages {bad}; known: {', '.join(STAGES)}")
        for k in TRAIN_RANGES:
            values = d[k].items() if isinstance(d.get(k), dict) else [("", d[k])] if k in d else []
            for stage, v in values:
                problem = TRAIN_RANGES[k].problem(v)
                if problem:
                    raise ConfigError(source, f"{where}.{k}{'.' + stage if stage else ''}", problem)
        for g in d.get("trainable", {}).values():
            if not isinstance(g, list) or set(g) - set(GROUPS):
                raise ConfigError(source, f"{where}.trainable", f"expected lists of {', '.join(GROUPS)}, got {g}")
        return cls(**d)


@dataclass
class VIPAConfig:
    name: str
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model.to_dict(), "train": self.train.to_dict()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, d: Any, source: str = "config", where: str = "config") -> "VIPAConfig":
        """A checked VIPAConfig from its JSON form (``source``: the file it came from, for errors)."""
        if not isinstance(d, dict):
            raise ConfigError(source, where, f"expected a JSON object, got {type(d).__name__}")
        for k in ("name", "model", "train"):
            if k not in d:
                raise ConfigError(source, f"{where}.{k}", "missing")
        unknown = sorted(set(d) - {"name", "model", "train"})
        if unknown:
            raise ConfigError(source, where, f"unknown fields {unknown}")
        if not isinstance(d["name"], str) or d["name"] not in REGISTRY:
            raise ConfigError(source, f"{where}.name", f"unknown config {d['name']!r}; known: {', '.join(sorted(REGISTRY))}")
        model = ModelConfig.from_dict(d["model"], source, f"{where}.model")
        if model.name != d["name"]:
            raise ConfigError(source, f"{where}.model.name", f"{model.name!r} disagrees with {where}.name {d['name']!r}")
        return cls(name=d["name"], model=model, train=TrainConfig.from_dict(d["train"], source, f"{where}.train"))


def _tiny() -> VIPAConfig:
    return VIPAConfig("tiny", ModelConfig(name="tiny").validate(), TrainConfig())


def _small() -> VIPAConfig:
    m = ModelConfig(
        name="small", image_size=128, patch_size=16, fine_stride=4, stem_channels=(64, 128, 256), d_vision=384,
        fusion_heads=8, llm=LLMConfig(hidden_size=512, num_hidden_layers=8, num_attention_heads=8,
                                      num_key_value_heads=4, intermediate_size=1536),
        tokenizer_vocab=2048, dit_dim=384, dit_layers=6, dit_heads=8,
    ).validate()
    t = TrainConfig(lr={"stage1": 3e-4, "stage2": 3e-4, "post": 3e-4},
                    batch_size={"stage1": 64, "stage2": 64, "post": 128},
                    steps={"stage1": 20000, "stage2": 20000, "post": 30000}, warmup_steps=1000)
    return VIPAConfig("small", m, t)


def _paper() -> VIPAConfig:
    # Paper: InternVL3.5-2B (semantic encoder + LLM) and a frozen Cut3R 3D encoder; here a local
    # LLaVA or Qwen2.5-VL VLM and an encoder3d.json folder (vipa.model.pretrained). AdamW lr 1e-5,
    # batch 32, cosine, 1 epoch per stage; post-training lr 5e-5, batch 128. Stage 1 trains the
    # fusion layer, stage 2 LLM + fusion, post-training LLM + action head (encoders frozen).
    m = ModelConfig(
        name="paper", image_size=448, patch_size=28, fine_stride=14, d_vision=1024, fusion_heads=16,
        llm=LLMConfig(hidden_size=1536), tokenizer_vocab=0, dit_dim=1024, dit_layers=8, dit_heads=16,
        vlm_path=None, encoder3d_path=None,
    )
    t = TrainConfig(
        lr={"stage1": 1e-5, "stage2": 1e-5, "post": 5e-5},
        batch_size={"stage1": 32, "stage2": 32, "post": 128},
        steps={"stage1": 0, "stage2": 0, "post": 0},  # 0 = one epoch
        warmup_steps=100,
        trainable={"stage1": ["fusion", "readout"], "stage2": ["llm", "fusion", "readout"],
                   "post": ["llm", "action_head"]},
        stage2_replay=0.0,  # the paper trains stage 2 on Hand3D-action only
    )
    return VIPAConfig("paper", m, t)


# Fields that only shape the action head: a post-training run may change them against its --init
# checkpoint (the head is (re)initialised there; stage-1/2 checkpoints never trained it).
ACTION_HEAD_FIELDS = ("action_dim", "state_dim", "chunk_len", "dit_dim", "dit_layers", "dit_heads", "flow_steps",
                      "action_geometry")


def config_diff(a: ModelConfig, b: ModelConfig, ignore: tuple[str, ...] = ("motion_decoding",)) -> list[str]:
    """The model-config fields (but ``ignore``) whose values differ between ``a`` and ``b``, as
    "field: A != B"."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{k}: {da.get(k)!r} != {db.get(k)!r}" for k in sorted(set(da) | set(db))
            if k not in ignore and da.get(k) != db.get(k)]


def same_config(a: ModelConfig, b: ModelConfig) -> bool:
    """True when two model configs are equal up to ``motion_decoding`` (a decoding choice, no weights)."""
    return not config_diff(a, b)


def same_backbone(a: ModelConfig, b: ModelConfig) -> bool:
    """True when two model configs differ at most in their action-head fields (and ``motion_decoding``)."""
    return not config_diff(a, b, ACTION_HEAD_FIELDS + ("motion_decoding",))


# Fields a stage-1/2 run may turn on against its --init checkpoint: the geometry token (its embedding
# starts fresh, every other weight is the init's) and how motion tokens are decoded (no weights).
ADDABLE_FIELDS = ("geometry_token", "motion_decoding")


def adds_geometry_token(init: ModelConfig, model: ModelConfig) -> bool:
    """True when ``model`` is ``init`` with the geometry token turned on (and perhaps another decoding)."""
    da, db = init.to_dict(), model.to_dict()
    if da.pop("geometry_token") or not db.pop("geometry_token"):
        return False
    da.pop("geometry_features"), db.pop("geometry_features")  # the init has no token to see them
    da.pop("motion_decoding"), db.pop("motion_decoding")
    return da == db


def adopt_init_parts(model: ModelConfig, init: ModelConfig) -> None:
    """Set in ``model`` (in place) the optional parts an ``--init`` checkpoint has or lacks, kept as they
    are: the RGB point-estimate head, the geometry token (``model`` may add it) and its encoding."""
    model.mono_points = init.mono_points
    model.geometry_token = model.geometry_token or init.geometry_token
    # with the init's token its encoding is part of the weights; with no token at all it touches no
    # weight, and keeping the init's (a checkpoint from before the field reads "raw") keeps them equal
    if init.geometry_token or not model.geometry_token:
        model.geometry_features = init.geometry_features



def init_fits(init: ModelConfig, model: ModelConfig, stage: str) -> bool:
    """Whether a checkpoint of model config ``init`` can initialise a ``stage`` run of ``model``: the same
    config up to ``motion_decoding``; for stages 1-2 also with the geometry token added
    (``adds_geometry_token``); for post-training the same backbone with another action head."""
    return same_config(init, model) or (stage in ("stage1", "stage2") and adds_geometry_token(init, model)) or \
        (stage == "post" and same_backbone(init, model))


REGISTRY = {"tiny": _tiny, "small": _small, "paper": _paper}


def get_config(name: str, **model_overrides: Any) -> VIPAConfig:
    """A fresh config by registry name; keyword overrides replace ModelConfig fields."""
    if name not in REGISTRY:
        raise KeyError(f"unknown config {name!r}; known: {', '.join(sorted(REGISTRY))}")
    cfg = REGISTRY[name]()
    if model_overrides:
        cfg.model = dataclasses.replace(cfg.model, **model_overrides)
        if cfg.name != "paper":
            cfg.model.validate()
    return cfg
