"""The annotation pipeline: one input (video, image folder, RGB-D sequence) -> a Hand3D Episode.

Stages, registered by name in ``annotators.registry`` (each with its own small config
dataclass; ``AnnotateConfig`` holds one per stage), each a plain function with typed inputs and
outputs (testable alone):

    decode -> hands -> depth -> episode -> lift -> calibrate -> smooth -> objects -> language
    -> qa -> motion -> quality

The hands, depth and objects stages use backends registered by name (``annotators.registry``).
``annotate_source(source, config) -> Episode`` runs them all; ``run_pipeline`` does the same
and also returns the products kept beside the episode (QA, motion samples, raw joints before
smoothing, per-frame quality, stage timings). ``write_annotation(ds, result)`` writes the
episode and its derived products into a ``vipa.data.dataset.Hand3DDataset``
(``annotators.batch.annotate_to_dataset`` does it for many inputs):

    derived/qa.jsonl              Hand3D-visual QA records (annotators.qa -> vipa.tasks)
    derived/motion.jsonl          Hand3D-action samples (annotators.motion -> vipa.tasks)
    derived/joints_raw.jsonl      {"frame", "side", "joints_3d": 21x3 or null}: joints before smoothing
    derived/quality_frames.jsonl  per-frame quality (annotators.quality)

Units: 3D in each frame's camera frame (OpenCV, metres); pixels in the convention of
``vipa.conventions``. With metric (``sensor``) depth, ``lift`` places each PnP hand on the
sensor depth (``ep.extra["lift"]``, quality ``lift_depth_used`` / ``lift_depth_residual_m``);
with relative depth the hand stays where PnP put it and ``calibrate`` scales the cloud to it.
Depth is stored raw (``depth_raw`` in units of ``depth_unit``; sensor:
millimetres) with the calibration scale beside it (``depth_scale``), never baked in.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from annotators import registry
from annotators.checks import depth_unit_warning, hand_free_scene
from annotators.errors import AnnotatorError, InputError
from annotators.hands import look_back_by_side
from annotators.lift import Calibration, SmoothConfig, calibrate, lift, smooth
from annotators.smoothing import BoneOneEuroConfig, SkeletonSmoothConfig, smooth_episode_bones
from annotators.smoothing import filter_config as smoothing_filter_config
from vipa.conventions import DEFAULT_FOV_DEG, HANDS, NUM_JOINTS
from vipa.data.episode import Episode, HandTrack

DEPTH_UNIT = 0.001  # stored depth counts: millimetres (sensor) or milli-units (relative depth)


class NoHandsError(AnnotatorError):
    """No hand was found in any frame of an input (nothing to annotate)."""

    def __init__(self, path: str, num_frames: int) -> None:
        self.path, self.num_frames = str(path), int(num_frames)
        super().__init__(f"{self.path}: no hands found in any of its {self.num_frames} frames")

    def __reduce__(self):
        return (type(self), (self.path, self.num_frames))


# ------------------------------------------------------------------------ stage configs


@dataclass
class DecodeConfig:
    """Reading the input (``annotators.io``): sampling, resizing, intrinsics, memory limit.

    K: 3x3 intrinsics of the *input* size (or of ``K_size`` [w, h]: scaled to the input, or refused
    for another aspect ratio) overriding files and the fov default; fov_deg: the
    horizontal field of view assumed when no K is known (recorded as an estimate).
    depth_factor: uint16 depth counts per metre of RGB-D inputs (TUM 5000).
    """

    fps: float | None = None
    max_width: int | None = 640
    max_frames: int | None = None
    K: list | None = None
    K_size: list | None = None  # [width, height] that K was written for (None: the input's own size)
    fov_deg: float = DEFAULT_FOV_DEG
    depth_factor: float | None = None
    max_memory_gb: float = 6.0  # decoded frames are held in memory: refuse inputs needing more

    def validate(self) -> None:
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"decode.fps: must be > 0, got {self.fps}")
        if self.max_width is not None and not self.max_width >= 16:
            raise ValueError(f"decode.max_width: must be >= 16 px, got {self.max_width}")
        if not 1.0 < self.fov_deg < 179.0:
            raise ValueError(f"decode.fov_deg: must be in (1, 179), got {self.fov_deg}")


@dataclass
class HandsConfig:
    """Hand backend: a registered name (``annotators.registry``) or ``package.module:ClassName``."""

    backend: str = "mediapipe"
    options: dict = field(default_factory=dict)  # the backend's own options
    require_hands: bool = False  # True: an input without any hand is an error (NoHandsError)

    def validate(self) -> None:
        if ":" in self.backend:  # a HandBackend class by import path: its options are its kwargs
            return
        registry.get_backend("hands", self.backend).config(self.options)


@dataclass
class DepthConfig:
    """Depth backend ``NAME[:ARG]`` (``sensor``, ``hf:PATH``, ``none``, any registered one) or ``auto``
    (sensor depth when the input has it, else none)."""

    backend: str = "auto"
    options: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.backend == "auto":
            if self.options:
                raise ValueError("depth.options: give a backend (not auto) to set its options")
            return
        name, arg = registry.split_spec(self.backend)
        try:
            registry.get_backend("depth", name).config(self.options, arg)
        except (AnnotatorError, TypeError) as exc:
            raise ValueError(f"depth: {exc}") from None


@dataclass
class LiftConfig:
    """PnP lift: joints whose reprojection error exceeds ``max_reproj_px`` are dropped (None: keep),
    or ``max_reproj_rel`` times the hand's 2D size; ``method``: ``episode`` (every pose that explains
    the 2D, chosen over the track, ambiguous frames flagged) or ``pnp`` (one PnP per frame, the
    lift before issue 14). See ``annotators.lift.lift``."""

    max_reproj_px: float | None = 25.0
    max_reproj_rel: float | None = None
    method: str = "episode"

    def validate(self) -> None:
        if self.method not in ("episode", "pnp"):
            raise ValueError(f"lift.method: expected episode or pnp, got {self.method!r}")


@dataclass
class CalibrateConfig:
    """``mode``: ``auto`` (episode scale for metric depth, per-frame for relative), ``episode`` or ``frame``."""

    mode: str = "auto"

    def validate(self) -> None:
        if self.mode not in ("auto", "episode", "frame"):
            raise ValueError(f"calibrate.mode: expected auto, episode or frame, got {self.mode!r}")


@dataclass
class SmoothingConfig:
    """Temporal filtering of the 3D joints. ``method`` (``annotators.smoothing.FILTERS``): ``bone_one_euro``
    (the default: zero-phase One-Euro on the wrist and the bone directions, each bone's length the median
    of its raw lengths over 31 frames, ``annotators.smoothing.BoneOneEuroConfig`` fields in ``params``),
    ``one_euro`` (zero-phase One-Euro per joint, ``annotators.smoothing.SmoothConfig`` fields; shrinks bones)
    or ``skeleton`` (local quadratic fits, ``annotators.smoothing.SkeletonSmoothConfig`` fields). On the
    real clips (docs/SMOOTHING_RESULTS.md) the default keeps every bone's median length within 2 % of the
    raw (11/11 clip-hands; One-Euro 2/11, skeleton 8/11) with no lag and p95 jitter at most 0.46 of the
    raw; on the bundled webcam video wrist to middle MCP lies in 7-11 cm in 100 % of frames (One-Euro
    97.9 %, skeleton 94.4 %)."""

    enabled: bool = True
    method: str = "bone_one_euro"
    params: dict = field(default_factory=dict)

    def filter_config(self) -> SmoothConfig | SkeletonSmoothConfig | BoneOneEuroConfig:
        """The chosen filter's config built from ``params`` (methods: ``annotators.smoothing.FILTERS``)."""
        return smoothing_filter_config(self.method, self.params)

    def validate(self) -> None:
        self.filter_config()


@dataclass
class ObjectsConfig:
    """Object backends run in order (``NAME[:ARG]``, e.g. ``grasp``, ``detector:PATH``); ``options``
    per backend name."""

    backends: tuple[str, ...] = ("grasp", "tabletop")
    options: dict = field(default_factory=dict)  # {backend name: {option: value}}

    def __post_init__(self) -> None:
        self.backends = tuple(self.backends)

    def validate(self) -> None:
        names = [registry.split_spec(s)[0] for s in self.backends]
        for spec in self.backends:
            name, arg = registry.split_spec(spec)
            try:
                registry.get_backend("objects", name).config(self.options.get(name), arg)
            except (AnnotatorError, TypeError) as exc:
                raise ValueError(f"objects: {exc}") from None
        stray = sorted(set(self.options) - set(names))
        if stray:
            raise ValueError(f"objects.options: for backends not selected: {stray}")


@dataclass
class LanguageConfig:
    """Instruction: ``instruction`` for every input, else sidecar / ``instructions_file``, else a template."""

    instruction: str | None = None
    instructions_file: str | None = None


@dataclass
class QAStageConfig:
    """Hand3D-visual QA (``annotators.qa``); gamma: direction threshold (None = its default)."""

    enabled: bool = True
    gamma: float | None = None


@dataclass
class MotionStageConfig:
    """Hand3D-action motion samples (``annotators.motion``); gamma as for QA."""

    enabled: bool = True
    gamma: float | None = None


@dataclass
class NoConfig:
    """A stage without settings."""


class AnnotateConfig:
    """Settings of one annotation run: ``seed``, ``keep_media`` and one config per registered stage.

    ``config.decode.fps``, ``config.hands.backend``, ... read a stage's config (a small dataclass,
    see ``annotators.registry.stages()``). Build with ``AnnotateConfig(decode={"max_frames": 4},
    depth=DepthConfig("sensor"))`` (a stage's config or a dict of its fields); JSON round trip
    with ``to_dict`` / ``from_dict``; ``set("qa.gamma", "0.2")`` sets one field from a string.
    """

    def __init__(self, *, seed: int = 0, keep_media: bool = True, **stage_configs: Any) -> None:
        self.seed = int(seed)
        self.keep_media = bool(keep_media)  # write RGB (and depth) into the dataset
        self.stages: dict[str, Any] = {s.name: s.config_cls() for s in registry.stages()}
        for name, value in stage_configs.items():
            self.set_stage(name, value)

    def __getattr__(self, name: str) -> Any:
        stages = self.__dict__.get("stages")
        if stages is not None and name in stages:
            return stages[name]
        raise AttributeError(f"AnnotateConfig has no stage or field {name!r}")

    def set_stage(self, name: str, value: Any) -> None:
        """Replace a stage's config (an instance of its config class or a dict of its fields)."""
        if name not in self.stages:
            raise ValueError(f"AnnotateConfig: unknown stage {name!r}; stages: {', '.join(self.stages)}")
        cls = registry.get_stage(name).config_cls
        if isinstance(value, dict):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ValueError(f"AnnotateConfig: stage {name}: unknown field(s) {unknown}; known: {sorted(known)}")
            value = cls(**value)
        elif not isinstance(value, cls):
            raise TypeError(f"AnnotateConfig: stage {name} takes a {cls.__name__} or a dict, got {type(value).__name__}")
        self.stages[name] = value

    def set(self, key: str, text: str) -> None:
        """``"STAGE.FIELD"`` (or ``seed`` / ``keep_media``) from a command-line string."""
        if key in ("seed", "keep_media"):
            setattr(self, key, registry.parse_value(text, getattr(self, key)))
            return
        stage, _, name = key.partition(".")
        if stage not in self.stages or not name:
            raise ValueError(f"--set {key}: expected STAGE.FIELD with STAGE one of {', '.join(self.stages)}")
        cfg = self.stages[stage]
        value = registry.parse_options([f"{name}={text}"], type(cfg), f"--set {stage}")
        self.stages[stage] = replace(cfg, **value)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "keep_media": self.keep_media,
                "stages": {k: json.loads(json.dumps(asdict(v))) for k, v in self.stages.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnnotateConfig":
        unknown = set(d) - {"seed", "keep_media", "stages"}
        if unknown:
            raise ValueError(f"AnnotateConfig: unknown field(s) {sorted(unknown)}")
        return cls(seed=d.get("seed", 0), keep_media=d.get("keep_media", True), **dict(d.get("stages", {})))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnnotateConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"AnnotateConfig({self.to_dict()!r})"

    def validate(self) -> "AnnotateConfig":
        for cfg in self.stages.values():
            check = getattr(cfg, "validate", None)
            if check is not None:
                check()
        return self


# ------------------------------------------------------------------------------ stages


class Decoded:
    """Decoded input: frames plus the reader's description.

    ``rgb`` (T, H, W, 3) uint8, ``depth`` (T, H, W) float32 metres (sensor; NaN = none) or None,
    ``timestamps`` (T,) float64 s. Built from arrays, or from an ``annotators.io.FrameStream``
    (``open_frames``): then ``frames`` is the stream, which a stage can consume while the decode
    thread reads ahead (the hands stage does), and the arrays are assembled (and checked) the first
    time one of them is read, reading the rest of the input if no stage has.
    """

    def __init__(self, info: Any, rgb: np.ndarray | None = None, depth: np.ndarray | None = None,
                 timestamps: np.ndarray | None = None, *, frames: Any = None, source: str | Path = "") -> None:
        if frames is None and rgb is None:
            raise ValueError("Decoded: give rgb arrays or a FrameStream")
        self.info = info
        self.frames = frames if frames is not None else rgb  # what a streaming stage iterates
        self._stream = frames
        self._source = str(source or getattr(info, "path", ""))
        self._rgb, self._depth, self._timestamps = rgb, depth, timestamps
        self.decode_wait_s = 0.0  # s the consumer of ``frames`` waited for the decode thread

    def _assemble(self) -> None:
        st = self._stream
        if st is None or self._rgb is not None:
            return
        st.read_all()
        source = self._source
        if not len(st.rgb):
            raise InputError(source, "no frames could be decoded")
        if st.depth and len(st.depth) != len(st.rgb):
            raise InputError(source, f"depth for {len(st.depth)} of {len(st.rgb)} frames only")
        shapes = {f.shape for f in st.rgb}
        if len(shapes) > 1:
            raise InputError(source, f"frames change size within the input: {sorted(shapes)}")
        for t, d in enumerate(st.depth):
            if d.shape != st.rgb[t].shape[:2]:
                raise InputError(source, f"frame {t}: depth is {d.shape[1]}x{d.shape[0]} "
                                         f"but colour is {st.rgb[t].shape[1]}x{st.rgb[t].shape[0]}")
        self._rgb = np.stack(st.rgb)
        self._depth = np.stack(st.depth).astype(np.float32) if st.depth else None
        self._timestamps = np.asarray(st.timestamps, np.float64) - float(st.timestamps[0])
        self.frames = self._rgb
        self.decode_wait_s = st.prefetch.wait_s
        st.rgb, st.depth = [], []  # the arrays hold them now (no second copy)
        self._stream = None

    @property
    def rgb(self) -> np.ndarray:
        self._assemble()
        return self._rgb

    @property
    def depth(self) -> np.ndarray | None:
        self._assemble()
        return self._depth

    @property
    def timestamps(self) -> np.ndarray:
        self._assemble()
        return self._timestamps

    @property
    def has_depth(self) -> bool:
        """Whether the input has sensor depth (known before any frame is read)."""
        return bool(getattr(self.info, "has_depth", False)) if self._rgb is None else self._depth is not None

    def close(self) -> None:
        """Stop a decode thread still running (after an error in a stage)."""
        if self._stream is not None:
            self._stream.close()


def open_frames(source: str | Path, config: DecodeConfig, prefetch: int | None = None) -> Decoded:
    """Open ``source`` and start decoding it in a background thread (``annotators.io.FrameStream``,
    ``prefetch`` frames ahead, default ``annotators.io.PREFETCH_FRAMES``); InputError if unreadable
    or larger than ``config.max_memory_gb``. Frames arrive as a consumer iterates ``.frames``."""
    from annotators.io import PREFETCH_FRAMES, FrameStream, open_source

    K = None if config.K is None else np.asarray(config.K, np.float32)
    src = open_source(source, fps=config.fps, max_width=config.max_width, max_frames=config.max_frames,
                      K=K, depth_factor=config.depth_factor, fov_deg=config.fov_deg, K_size=config.K_size)
    info = src.info
    need = info.num_frames * info.width * info.height * (3 + (4 if info.has_depth else 0)) / 2**30
    if need > config.max_memory_gb:
        src.close()
        raise InputError(source, f"{info.num_frames} frames of {info.width}x{info.height} need about {need:.1f} GB "
                                 f"in memory (limit {config.max_memory_gb} GB); lower --fps, --max-width or "
                                 f"--max-frames, or split the video")
    return Decoded(info, frames=FrameStream(src, prefetch or PREFETCH_FRAMES), source=source)


def decode(source: str | Path, config: DecodeConfig) -> Decoded:
    """Read all output frames of ``source`` (InputError if unreadable or empty)."""
    dec = open_frames(source, config)
    try:
        dec.rgb  # noqa: B018 - reads and checks every frame
    finally:
        dec.close()
    return dec


@dataclass
class HandObservations:
    """Per-side detector output over an episode (pixels / hand-centred metres)."""

    joints_2d: dict[str, np.ndarray]  # (T, 21, 2) float32
    world: dict[str, np.ndarray]  # (T, 21, 3) float32
    confidence: dict[str, np.ndarray]  # (T, 21) float32
    present: dict[str, np.ndarray]  # (T,) bool
    backend: dict[str, Any]


def detect_hands(rgb, backend, on_frame: Callable[[int, int], None] | None = None) -> HandObservations:
    """Run a ``annotators.hands.HandBackend`` over consecutive frames (tracking reset first);
    ``on_frame(done, total)`` after each frame (progress within one long clip).

    ``rgb``: (T, H, W, 3) frames or any iterable of frames, e.g. a ``FrameStream`` still being
    decoded (each frame is detected as soon as it arrives; ``total`` is then the count the source
    declares, ``info.num_frames``)."""
    from annotators.hands import by_side

    j2 = {s: [] for s in HANDS}
    w3 = {s: [] for s in HANDS}
    conf = {s: [] for s in HANDS}
    present = {s: [] for s in HANDS}
    no_2d = np.full((NUM_JOINTS, 2), np.nan, np.float32)
    no_3d = np.full((NUM_JOINTS, 3), np.nan, np.float32)
    no_conf = np.zeros(NUM_JOINTS, np.float32)
    backend.reset()
    info = getattr(rgb, "info", None)
    for img in rgb:
        found = by_side(backend.detect(img))
        for side in HANDS:
            det = found.get(side)
            j2[side].append(no_2d if det is None else np.asarray(det.landmarks_2d, np.float32))
            w3[side].append(no_3d if det is None else np.asarray(det.world_landmarks, np.float32))
            conf[side].append(no_conf if det is None else np.asarray(det.confidence, np.float32))
            present[side].append(det is not None)
        if on_frame is not None:
            done = len(present[HANDS[0]])
            on_frame(done, max(done, int(info.num_frames) if info is not None else len(rgb)))

    def stack(v: list, empty: np.ndarray) -> np.ndarray:
        return np.stack(v).astype(np.float32) if v else np.empty((0, *empty.shape), np.float32)

    return HandObservations({s: stack(j2[s], no_2d) for s in HANDS}, {s: stack(w3[s], no_3d) for s in HANDS},
                            {s: stack(conf[s], no_conf) for s in HANDS},
                            {s: np.asarray(present[s], bool) for s in HANDS}, backend.describe())


def resolve_depth_spec(spec: str, has_sensor_depth: bool) -> str:
    """The depth backend spec actually used for an input (``auto`` resolved)."""
    if spec == "auto":
        return "sensor" if has_sensor_depth else "none"
    return spec


def estimate_depth(decoded: Decoded, backend) -> tuple[np.ndarray | None, bool]:
    """(T, H, W) float32 depth (metres if ``metric`` else relative units) from a DepthBackend, and ``metric``."""
    if backend.name == "none":
        return None, False
    sensor = decoded.depth
    if backend.name == "sensor" and sensor is None:
        from annotators.errors import BackendError

        raise BackendError("sensor", f"{decoded.info.path}: this input has no depth; use an RGB-D input, hf:PATH or none")
    if hasattr(backend, "predict_batch"):
        out = []
        for a in range(0, len(decoded.rgb), 8):
            out += backend.predict_batch(list(decoded.rgb[a:a + 8]))
    else:
        out = [backend.predict(decoded.rgb[t], None if sensor is None else sensor[t]) for t in range(len(decoded.rgb))]
    depth = np.stack([np.asarray(d, np.float32) for d in out])
    if depth.shape != decoded.rgb.shape[:3]:
        raise InputError(decoded.info.path, f"depth maps are {depth.shape[1:]} but frames {decoded.rgb.shape[1:3]}")
    return depth, bool(backend.metric)


def build_episode(episode_id: str, decoded: Decoded, hands: HandObservations, depth: np.ndarray | None,
                  source: str = "") -> Episode:
    """An Episode holding the decoded media and the 2D detections (3D not yet lifted)."""
    info = decoded.info
    t_count, h, w = decoded.rgb.shape[:3]
    tracks = {}
    for side in HANDS:
        tr = HandTrack.empty(side, t_count)
        tr.joints_2d = hands.joints_2d[side].astype(np.float32)
        tr.confidence = hands.confidence[side].astype(np.float32)
        tr.present = hands.present[side].copy()
        tr.valid = tr.present[:, None] & np.isfinite(tr.joints_2d).all(-1) & (tr.confidence > 0)
        tr.provenance = np.where(tr.present, "hands:" + str(hands.backend.get("name", "hands")), "").astype(object)
        tracks[side] = tr
    depth_raw = None
    if depth is not None:
        depth_raw = (depth / np.float32(DEPTH_UNIT)).astype(np.float32)
        depth_raw[~(depth_raw > 0)] = np.nan
    return Episode(
        episode_id=episode_id, fps=float(info.fps), width=int(w), height=int(h),
        K=np.asarray(info.K, np.float32), hands=tracks, num_frames=int(t_count),
        K_is_estimate=bool(info.K_is_estimate), source=str(source or info.path),
        depth_unit=DEPTH_UNIT, timestamps=decoded.timestamps.astype(np.float64),
        rgb=decoded.rgb, depth_raw=depth_raw,
        extra={"source_info": info.to_dict(), "hands_backend": hands.backend},
    )


def find_objects(ep: Episode, config: ObjectsConfig) -> Episode:
    """Run the object backends of ``config`` in order; their tracks are added to ``ep.objects``."""
    for spec in config.backends:
        name, arg = registry.split_spec(spec)
        backend = registry.get_backend("objects", name).build(config.options.get(name), arg)
        ep.objects += backend(ep)
    return ep


def resolve_language(ep: Episode, config: LanguageConfig, source: str | Path | None, seed: int = 0) -> Episode:
    """Set ``ep.instruction`` (user > sidecar file > instructions json > template) and its origin."""
    from annotators.language import resolve_instruction

    src_path = Path(source) if source is not None and Path(str(source)).exists() else None
    ins = resolve_instruction(src_path, user=config.instruction, mapping=config.instructions_file,
                              object_names=[o.name for o in ep.objects if o.name != "object"],
                              seed=seed + zlib.crc32(ep.episode_id.encode()))
    ep.instruction = ins.text
    ep.extra["instruction_source"] = ins.source
    return ep


def make_qa(ep: Episode, config: QAStageConfig, seed: int = 0) -> list[dict]:
    """Hand3D-visual QA records (annotators.qa)."""
    if not config.enabled:
        return []
    from annotators.qa import generate_qa

    kw = {} if config.gamma is None else {"gamma": float(config.gamma)}
    return generate_qa(ep, seed=seed, **kw)


def make_motion(ep: Episode, config: MotionStageConfig, seed: int = 0) -> list[dict]:
    """Hand3D-action motion-token samples (annotators.motion)."""
    if not config.enabled:
        return []
    from annotators.motion import motion_samples

    kw = {} if config.gamma is None else {"gamma": float(config.gamma)}
    return motion_samples(ep, seed=seed, **kw)


# --------------------------------------------------------------------------- the whole


@dataclass
class Annotation:
    """An annotated episode and the products written beside it.

    ``products``: derived records by name, each written as ``derived/<name>.jsonl`` (qa, motion,
    joints_raw, quality_frames, and those of plug-in stages).
    """

    episode: Episode
    products: dict[str, list[dict]] = field(default_factory=dict)
    raw_joints: dict[str, np.ndarray] = field(default_factory=dict)  # before smoothing
    frame_quality: dict[str, np.ndarray] = field(default_factory=dict)
    calibration: Calibration | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def qa(self) -> list[dict]:
        return self.products.get("qa", [])

    @property
    def motion(self) -> list[dict]:
        return self.products.get("motion", [])


@dataclass
class PipelineState:
    """What the stages of one run share: each stage reads what earlier ones set and adds its own."""

    source: str
    episode_id: str
    config: AnnotateConfig
    hand_backend: Any = None  # a HandBackend given by the caller (else built from config.hands)
    depth_backend: Any = None  # a DepthBackend given by the caller (else built from config.depth)
    decoded: Decoded | None = None
    hands: HandObservations | None = None
    depth: np.ndarray | None = None  # (T, H, W) float32, metres if ``metric``
    metric: bool = False
    depth_spec: str = ""
    episode: Episode | None = None
    calibration: Calibration | None = None
    raw_joints: dict[str, np.ndarray] = field(default_factory=dict)
    frame_quality: dict[str, np.ndarray] = field(default_factory=dict)
    products: dict[str, list[dict]] = field(default_factory=dict)
    on_frame: Callable[[int, int], None] | None = None  # progress of the per-frame loop: (done, total)


_HAND_BACKENDS: dict[str, Any] = {}  # one hand backend per process (MediaPipe graph reuse)


def _hand_backend(config: HandsConfig):
    key = repr((config.backend, sorted(config.options.items())))
    be = _HAND_BACKENDS.get(key)
    if be is None:
        if ":" in config.backend:
            from annotators.hands import create_hand_backend

            be = create_hand_backend(config.backend, **config.options)
        else:
            be = registry.get_backend("hands", config.backend).build(config.options)
        _HAND_BACKENDS[key] = be
    return be


def close_backends() -> None:
    """Close the cached hand backends of this process."""
    while _HAND_BACKENDS:
        _, be = _HAND_BACKENDS.popitem()
        be.close()


def episode_id_for(source: str | Path) -> str:
    """A dataset episode id from an input path: its name, reduced to [A-Za-z0-9_-]."""
    p = Path(str(source))
    name = p.stem if p.suffix and not p.is_dir() else p.name
    eid = re.sub(r"[^A-Za-z0-9_\-]+", "_", name).strip("_") or "episode"
    return eid[:100]


# ------------------------------------------------------------------ the built-in stages


def _stage_decode(state: PipelineState, cfg: DecodeConfig) -> None:
    """Open the input and start decoding its frames (and sensor depth) in a background thread; they
    are kept in memory as the next stage consumes them (``open_frames``)."""
    state.decoded = open_frames(state.source, cfg)


def _stage_hands(state: PipelineState, cfg: HandsConfig) -> None:
    """Detect hands with the configured backend (2D joints, hand-centred 3D, confidence), frame by
    frame as the decode thread delivers them (decoding overlaps detection)."""
    hb = state.hand_backend or _hand_backend(cfg)
    try:
        state.hands = detect_hands(state.decoded.frames, hb, state.on_frame)
        state.decoded.rgb  # noqa: B018 - the frames as arrays, checked (InputError if none or inconsistent)
    except BaseException:
        state.decoded.close()
        raise
    h = state.hands  # the backend's look-back pass (hands found late, followed back): annotators.hands
    look_back_by_side(hb, state.decoded.rgb, h.joints_2d, h.world, h.confidence, h.present)
    if cfg.require_hands and not any(state.hands.present[s].any() for s in HANDS):
        raise NoHandsError(state.source, len(state.decoded.rgb))


def _stage_depth(state: PipelineState, cfg: DepthConfig) -> None:
    """Per-frame depth from the configured backend (``auto``: sensor depth if the input has it)."""
    spec = resolve_depth_spec(cfg.backend, state.decoded.depth is not None)
    db = state.depth_backend or registry.build_backend("depth", spec, cfg.options)
    try:
        state.depth, state.metric = estimate_depth(state.decoded, db)
    finally:
        if state.depth_backend is None:
            db.close()
    state.depth_spec = spec


def _stage_episode(state: PipelineState, cfg: NoConfig) -> None:
    """Build the Episode from the decoded media, detections and depth."""
    state.episode = build_episode(state.episode_id, state.decoded, state.hands, state.depth, source=state.source)
    state.episode.extra["depth_backend"] = {"spec": state.depth_spec, "metric": state.metric}


def _stage_lift(state: PipelineState, cfg: LiftConfig) -> None:
    """PnP-lift the hands into the camera frame (onto metric depth when there is some)."""
    lift(state.episode, state.hands.world, max_reproj_px=cfg.max_reproj_px, metric_depth=state.metric,
         method=cfg.method, max_reproj_rel=cfg.max_reproj_rel)


def _stage_calibrate(state: PipelineState, cfg: CalibrateConfig) -> None:
    """Scale the cloud to the metric hands (the paper's median ratio); a hand-free episode keeps its
    frames and metric depth (``annotators.checks``); a sensor depth unit at odds with the hands is
    warned about on the console."""
    mode = cfg.mode if cfg.mode != "auto" else ("episode" if state.metric else "frame")
    ep = state.episode
    state.calibration = calibrate(ep, mode=mode)
    warnings = ep.extra.setdefault("warnings", list(state.decoded.info.extra.get("warnings", [])))
    if state.metric and state.decoded.depth is not None:
        depth_unit_warning(ep, state.decoded.info.depth_factor, warnings,
                           counts=state.decoded.info.extra.get("depth_counts", True))
    hand_free_scene(ep, state.metric)


def _stage_smooth(state: PipelineState, cfg: SmoothingConfig) -> None:
    """Temporal filtering of the 3D joints (raw joints kept as ``joints_raw``)."""
    fc = cfg.filter_config()
    if isinstance(fc, BoneOneEuroConfig):
        state.raw_joints = smooth_episode_bones(state.episode, fc, enabled=cfg.enabled)
    else:
        state.raw_joints = smooth(state.episode, fc, enabled=cfg.enabled)
    state.products["joints_raw"] = raw_joint_records(state.raw_joints)


def _stage_objects(state: PipelineState, cfg: ObjectsConfig) -> None:
    """Object tracks from the configured object backends."""
    find_objects(state.episode, cfg)


def _stage_language(state: PipelineState, cfg: LanguageConfig) -> None:
    """The episode's instruction."""
    resolve_language(state.episode, cfg, state.source, seed=state.config.seed)


def _stage_quality(state: PipelineState, cfg: NoConfig) -> None:
    """Quality figures per frame and per episode."""
    from annotators import quality
    from annotators.quality import frame_records

    ep = state.episode
    frames = quality.assess(ep, state.calibration if ep.depth_raw is not None else None)
    lifted = ep.extra.get("lift", {})
    ep.quality["lift_depth_used"] = float(bool(lifted.get("depth_used")))  # 1: hands placed on metric depth
    if lifted.get("residual_m") is not None:
        ep.quality["lift_depth_residual_m"] = float(lifted["residual_m"])
    state.frame_quality = frames
    if frames:
        state.products["quality_frames"] = frame_records(frames)


registry.register_stage("decode", _stage_decode, DecodeConfig)
registry.register_stage("hands", _stage_hands, HandsConfig)
registry.register_stage("depth", _stage_depth, DepthConfig)
registry.register_stage("episode", _stage_episode, NoConfig)
registry.register_stage("lift", _stage_lift, LiftConfig)
registry.register_stage("calibrate", _stage_calibrate, CalibrateConfig)
registry.register_stage("smooth", _stage_smooth, SmoothingConfig)
registry.register_stage("objects", _stage_objects, ObjectsConfig)
registry.register_stage("language", _stage_language, LanguageConfig)
registry.register_stage("qa", None, QAStageConfig, derive=make_qa, product="qa",
                        description="Hand3D-visual QA records (derived/qa.jsonl)")
registry.register_stage("motion", None, MotionStageConfig, derive=make_motion, product="motion",
                        description="Hand3D-action motion samples (derived/motion.jsonl)")
registry.register_stage("quality", _stage_quality, NoConfig)


def derive_products(ep: Episode, config: AnnotateConfig | None = None) -> dict[str, list[dict]]:
    """{product: records} of every registered derive stage (QA, motion, ...) for an annotated episode."""
    config = config or AnnotateConfig()
    return {st.product: st.derive(ep, config.stages[st.name], config.seed)
            for st in registry.stages() if st.derive is not None}


def run_pipeline(source: str | Path, config: AnnotateConfig | None = None, *, episode_id: str | None = None,
                 hand_backend=None, depth_backend=None, on_frame: Callable[[int, int], None] | None = None
                 ) -> Annotation:
    """All registered stages on one input; backends default to those named by ``config`` (hand
    backends cached per process); ``on_frame(done, total)`` reports the per-frame hand loop."""
    config = (config or AnnotateConfig()).validate()
    state = PipelineState(str(source), episode_id or episode_id_for(source), config,
                          hand_backend=hand_backend, depth_backend=depth_backend, on_frame=on_frame)
    timings: dict[str, float] = {}
    for st in registry.stages():
        t0 = time.perf_counter()
        cfg = config.stages[st.name]
        if st.derive is not None:
            state.products[st.product] = st.derive(state.episode, cfg, config.seed)
        else:
            st.run(state, cfg)
        timings[st.name] = round(time.perf_counter() - t0, 4)
    ep = state.episode
    timings["hands_waited_for_decode"] = round(state.decoded.decode_wait_s, 4)
    ep.extra["timings_s"] = timings
    ep.extra["annotate_config"] = config.to_dict()
    if not config.keep_media:
        ep.rgb = None
        ep.depth_raw = None
    ep.validate()
    return Annotation(ep, state.products, state.raw_joints, state.frame_quality, state.calibration, timings)


def annotate_source(source: str | Path, config: AnnotateConfig | None = None, **kwargs: Any) -> Episode:
    """One input -> an annotated Episode (media in memory). See :func:`run_pipeline`."""
    return run_pipeline(source, config, **kwargs).episode


# ------------------------------------------------------------------------ into a dataset


def raw_joint_records(raw: dict[str, np.ndarray]) -> list[dict]:
    """Raw joints as derived records: {"frame", "side", "joints_3d": 21x3 list (None = NaN) or None}."""
    recs = []
    for side in sorted(raw):
        arr = raw[side]
        for t in range(arr.shape[0]):
            j = arr[t]
            if not np.isfinite(j).any():
                continue
            vals = np.where(np.isfinite(j), np.round(j.astype(np.float64), 6), np.nan).tolist()
            recs.append({"frame": t, "side": side, "joints_3d": vals})
    return recs


def read_raw_joints(ds, episode_id: str) -> dict[str, np.ndarray]:
    """{side: (T, 21, 3) float32} joints before smoothing, from the dataset (empty if never smoothed)."""
    recs = ds.read_derived(episode_id, "joints_raw") or []
    t_count = ds.num_frames(episode_id)
    out: dict[str, np.ndarray] = {}
    for r in recs:
        arr = out.setdefault(r["side"], np.full((t_count, NUM_JOINTS, 3), np.nan, np.float32))
        arr[int(r["frame"])] = np.array(r["joints_3d"], dtype=np.float64)
    return out


def write_annotation(ds, ann: Annotation, checkpoint: Callable[[], None] | None = None) -> None:
    """Write the episode (atomically), then its derived products, then its completion marker.

    ``checkpoint()`` is called before each step; it may raise to stop the write between steps
    (the episode is then left without its marker: unfinished, redone on resume)."""
    check = checkpoint or (lambda: None)
    check()
    ds.write_episode(ann.episode, complete=False)
    for name, records in ann.products.items():
        check()
        ds.write_derived(ann.episode.episode_id, name, records)
    check()
    ds.mark_complete(ann.episode.episode_id)  # last: a crash before it leaves an episode the resume redoes


def annotate_into_dataset(ds, source: str | Path, config: AnnotateConfig | None = None,
                          episode_id: str | None = None, on_frame: Callable[[int, int], None] | None = None
                          ) -> Annotation:
    """``run_pipeline`` then ``write_annotation`` (see ``annotators.batch`` for many inputs)."""
    ann = run_pipeline(source, config, episode_id=episode_id, on_frame=on_frame)
    write_annotation(ds, ann)
    return ann
