"""The annotation pipeline: one input (video, image folder, RGB-D sequence) -> a Hand3D Episode.

Stages, each a plain function with typed inputs and outputs (testable alone):

    decode -> detect_hands -> estimate_depth -> build_episode -> lift -> calibrate -> smooth
    -> find_objects -> resolve_language -> make_qa -> make_motion -> assess (quality)

``annotate_source(source, config) -> Episode`` runs them all; ``run_pipeline`` does the same
and also returns the products kept beside the episode (QA, motion samples, raw joints before
smoothing, per-frame quality, stage timings). ``write_annotation(ds, result)`` writes the
episode and its derived products into a ``vipa.data.dataset.Hand3DDataset``:

    derived/qa.jsonl              Hand3D-visual QA records (annotators.qa)
    derived/motion.jsonl          Hand3D-action samples (annotators.motion)
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

import re
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from annotators.checks import depth_unit_warning, hand_free_scene
from annotators.errors import AnnotatorError, InputError
from annotators.lift import Calibration, SmoothConfig, calibrate, lift, smooth
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


@dataclass
class AnnotateConfig:
    """Settings of one annotation run (JSON round trip: ``to_dict`` / ``from_dict``).

    depth: ``"auto"`` (sensor depth when the input has it, else none), ``"sensor"``,
    ``"hf:PATH"`` (local transformers depth model; relative depth, calibrated per frame) or
    ``"none"``. fps / max_width / max_frames: sampling and resizing (``annotators.io``).
    K: 3x3 intrinsics of the *input* size (or of ``K_size`` [w, h]: scaled to the input, or refused
    for another aspect ratio) overriding files and the fov default; fov_deg: the
    horizontal field of view assumed when no K is known (recorded as an estimate).
    depth_factor: uint16 depth counts per metre of RGB-D inputs (TUM 5000).
    calibration_mode: ``"auto"`` (episode scale for metric depth, per-frame for relative),
    ``"episode"`` or ``"frame"``. smooth: temporal filtering of the 3D joints.
    gamma: QA direction threshold (None = ``vipa.data.qa``'s default).
    """

    depth: str = "auto"
    fps: float | None = None
    max_width: int | None = 640
    max_frames: int | None = None
    K: list | None = None
    K_size: list | None = None  # [width, height] that K was written for (None: the input's own size)
    fov_deg: float = DEFAULT_FOV_DEG
    depth_factor: float | None = None
    hands: str = "mediapipe"
    hands_options: dict = field(default_factory=dict)
    max_reproj_px: float | None = 25.0
    calibration_mode: str = "auto"
    smooth: bool = True
    smoothing: dict = field(default_factory=dict)  # SmoothConfig fields
    objects: bool = True
    detector: str | None = None  # local folder of a zero-shot detector
    detector_labels: tuple[str, ...] = ()
    instruction: str | None = None
    instructions_file: str | None = None
    qa: bool = True
    motion: bool = True
    gamma: float | None = None
    seed: int = 0
    require_hands: bool = False  # True: an input without any hand is an error (NoHandsError)
    max_memory_gb: float = 6.0  # decoded frames are held in memory: refuse inputs needing more
    keep_media: bool = True  # write RGB (and depth) into the dataset

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["detector_labels"] = list(self.detector_labels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AnnotateConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"AnnotateConfig: unknown field(s) {sorted(unknown)}")
        d = dict(d)
        if "detector_labels" in d:
            d["detector_labels"] = tuple(d["detector_labels"])
        return cls(**d)

    def validate(self) -> "AnnotateConfig":
        if not (self.depth in ("auto", "sensor", "none") or self.depth.startswith("hf:")):
            raise ValueError(f"depth: expected auto, sensor, none or hf:PATH, got {self.depth!r}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps: must be > 0, got {self.fps}")
        if self.max_width is not None and not self.max_width >= 16:
            raise ValueError(f"max_width: must be >= 16 px, got {self.max_width}")
        if self.calibration_mode not in ("auto", "episode", "frame"):
            raise ValueError(f"calibration_mode: expected auto, episode or frame, got {self.calibration_mode!r}")
        if not 1.0 < self.fov_deg < 179.0:
            raise ValueError(f"fov_deg: must be in (1, 179), got {self.fov_deg}")
        SmoothConfig(**self.smoothing)
        return self


# ------------------------------------------------------------------------------ stages


@dataclass
class Decoded:
    """Decoded input: frames in memory plus the reader's description."""

    info: Any  # annotators.io.SourceInfo
    rgb: np.ndarray  # (T, H, W, 3) uint8
    depth: np.ndarray | None  # (T, H, W) float32 metres (sensor), NaN = none
    timestamps: np.ndarray  # (T,) float64 s


def decode(source: str | Path, config: AnnotateConfig) -> Decoded:
    """Read all output frames of ``source`` (InputError if unreadable or empty)."""
    from annotators.io import open_source

    K = None if config.K is None else np.asarray(config.K, np.float32)
    rgb, depth, stamps = [], [], []
    with open_source(source, fps=config.fps, max_width=config.max_width, max_frames=config.max_frames,
                     K=K, depth_factor=config.depth_factor, fov_deg=config.fov_deg, K_size=config.K_size) as src:
        info = src.info
        need = info.num_frames * info.width * info.height * (3 + (4 if info.has_depth else 0)) / 2**30
        if need > config.max_memory_gb:
            raise InputError(source, f"{info.num_frames} frames of {info.width}x{info.height} need about {need:.1f} GB "
                                     f"in memory (limit {config.max_memory_gb} GB); lower --fps, --max-width or "
                                     f"--max-frames, or split the video")
        for fr in src:
            rgb.append(fr.rgb)
            stamps.append(fr.timestamp)
            if fr.depth is not None:
                if fr.depth.shape != fr.rgb.shape[:2]:
                    raise InputError(source, f"frame {fr.index}: depth is {fr.depth.shape[1]}x{fr.depth.shape[0]} "
                                             f"but colour is {fr.rgb.shape[1]}x{fr.rgb.shape[0]}")
                depth.append(fr.depth)
    if not rgb:
        raise InputError(source, "no frames could be decoded")
    if depth and len(depth) != len(rgb):
        raise InputError(source, f"depth for {len(depth)} of {len(rgb)} frames only")
    shapes = {f.shape for f in rgb}
    if len(shapes) > 1:
        raise InputError(source, f"frames change size within the input: {sorted(shapes)}")
    return Decoded(
        info=info, rgb=np.stack(rgb), depth=np.stack(depth).astype(np.float32) if depth else None,
        timestamps=np.asarray(stamps, np.float64) - float(stamps[0]),
    )


@dataclass
class HandObservations:
    """Per-side detector output over an episode (pixels / hand-centred metres)."""

    joints_2d: dict[str, np.ndarray]  # (T, 21, 2) float32
    world: dict[str, np.ndarray]  # (T, 21, 3) float32
    confidence: dict[str, np.ndarray]  # (T, 21) float32
    present: dict[str, np.ndarray]  # (T,) bool
    backend: dict[str, Any]


def detect_hands(rgb: np.ndarray, backend) -> HandObservations:
    """Run a ``annotators.hands.HandBackend`` over consecutive frames (tracking reset first)."""
    from annotators.hands import by_side

    t_count = len(rgb)
    j2 = {s: np.full((t_count, NUM_JOINTS, 2), np.nan, np.float32) for s in HANDS}
    w3 = {s: np.full((t_count, NUM_JOINTS, 3), np.nan, np.float32) for s in HANDS}
    conf = {s: np.zeros((t_count, NUM_JOINTS), np.float32) for s in HANDS}
    present = {s: np.zeros(t_count, bool) for s in HANDS}
    backend.reset()
    for t in range(t_count):
        for side, det in by_side(backend.detect(rgb[t])).items():
            j2[side][t] = det.landmarks_2d
            w3[side][t] = det.world_landmarks
            conf[side][t] = det.confidence
            present[side][t] = True
    return HandObservations(j2, w3, conf, present, backend.describe())


def resolve_depth_spec(config: AnnotateConfig, has_sensor_depth: bool) -> str:
    """The depth backend spec actually used for an input (``auto`` resolved)."""
    if config.depth == "auto":
        return "sensor" if has_sensor_depth else "none"
    return config.depth


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


def find_objects(ep: Episode, config: AnnotateConfig) -> Episode:
    """Geometric proposals (with depth): grasped objects, or for a hand-free episode the objects on
    the supporting plane (``annotators.tabletop``); detector boxes (with ``config.detector``)."""
    from annotators import objects as obj

    if config.objects and ep.depth_raw is not None:
        if ep.extra.get("hand_free"):
            from annotators.tabletop import propose_tabletop_objects

            ep.objects += propose_tabletop_objects(ep)
        else:
            ep.objects += obj.propose_grasped_objects(ep)
    if config.detector:
        det = obj.ZeroShotDetector(config.detector)
        labels = list(config.detector_labels) or ["object"]
        ep.objects += obj.detect_objects(ep, det, labels)
    return ep


def resolve_language(ep: Episode, config: AnnotateConfig, source: str | Path | None) -> Episode:
    """Set ``ep.instruction`` (user > sidecar file > instructions json > template) and its origin."""
    from annotators.language import resolve_instruction

    src_path = Path(source) if source is not None and Path(str(source)).exists() else None
    ins = resolve_instruction(src_path, user=config.instruction, mapping=config.instructions_file,
                              object_names=[o.name for o in ep.objects if o.name != "object"],
                              seed=config.seed + zlib.crc32(ep.episode_id.encode()))
    ep.instruction = ins.text
    ep.extra["instruction_source"] = ins.source
    return ep


def make_qa(ep: Episode, config: AnnotateConfig) -> list[dict]:
    """Hand3D-visual QA records (annotators.qa)."""
    if not config.qa:
        return []
    from annotators.qa import generate_qa

    kw = {} if config.gamma is None else {"gamma": float(config.gamma)}
    return generate_qa(ep, seed=config.seed, **kw)


def make_motion(ep: Episode, config: AnnotateConfig) -> list[dict]:
    """Hand3D-action motion-token samples (annotators.motion)."""
    if not config.motion:
        return []
    from annotators.motion import motion_samples

    kw = {} if config.gamma is None else {"gamma": float(config.gamma)}
    return motion_samples(ep, seed=config.seed, **kw)


# --------------------------------------------------------------------------- the whole


@dataclass
class Annotation:
    """An annotated episode and the products written beside it."""

    episode: Episode
    qa: list[dict] = field(default_factory=list)
    motion: list[dict] = field(default_factory=list)
    raw_joints: dict[str, np.ndarray] = field(default_factory=dict)  # before smoothing
    frame_quality: dict[str, np.ndarray] = field(default_factory=dict)
    calibration: Calibration | None = None
    timings: dict[str, float] = field(default_factory=dict)


_HAND_BACKENDS: dict[str, Any] = {}  # one hand backend per process (MediaPipe graph reuse)


def _hand_backend(config: AnnotateConfig):
    from annotators.hands import create_hand_backend

    key = repr((config.hands, sorted(config.hands_options.items())))
    be = _HAND_BACKENDS.get(key)
    if be is None:
        be = create_hand_backend(config.hands, **config.hands_options)
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


def run_pipeline(source: str | Path, config: AnnotateConfig | None = None, *, episode_id: str | None = None,
                 hand_backend=None, depth_backend=None) -> Annotation:
    """All stages on one input; backends default to those named by ``config`` (cached per process)."""
    from annotators import depth as depth_mod
    from annotators import quality

    config = (config or AnnotateConfig()).validate()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 4)
        clock = now

    decoded = decode(source, config)
    tick("decode")
    hb = hand_backend or _hand_backend(config)
    obs = detect_hands(decoded.rgb, hb)
    tick("hands")
    if config.require_hands and not any(obs.present[s].any() for s in HANDS):
        raise NoHandsError(str(source), len(decoded.rgb))
    spec = resolve_depth_spec(config, decoded.depth is not None)
    db = depth_backend or depth_mod.parse(spec)
    try:
        depth, metric = estimate_depth(decoded, db)
    finally:
        if depth_backend is None:
            db.close()
    tick("depth")
    ep = build_episode(episode_id or episode_id_for(source), decoded, obs, depth, source=str(source))
    ep.extra["depth_backend"] = {"spec": spec, "metric": metric}
    lift(ep, obs.world, max_reproj_px=config.max_reproj_px, metric_depth=metric)
    tick("lift")
    mode = config.calibration_mode
    if mode == "auto":
        mode = "episode" if metric else "frame"
    cal = calibrate(ep, mode=mode)
    warnings = ep.extra.setdefault("warnings", list(decoded.info.extra.get("warnings", [])))
    if metric and decoded.depth is not None:
        depth_unit_warning(ep, decoded.info.depth_factor, warnings)
    hand_free_scene(ep, metric)
    tick("calibrate")
    raw = smooth(ep, SmoothConfig(**config.smoothing), enabled=config.smooth)
    tick("smooth")
    find_objects(ep, config)
    tick("objects")
    resolve_language(ep, config, source)
    qa = make_qa(ep, config)
    tick("qa")
    motion = make_motion(ep, config)
    tick("motion")
    frames = quality.assess(ep, cal if ep.depth_raw is not None else None)
    lifted = ep.extra.get("lift", {})
    ep.quality["lift_depth_used"] = float(bool(lifted.get("depth_used")))  # 1: hands placed on metric depth
    if lifted.get("residual_m") is not None:
        ep.quality["lift_depth_residual_m"] = float(lifted["residual_m"])
    tick("quality")
    ep.extra["timings_s"] = timings
    ep.extra["annotate_config"] = config.to_dict()
    if not config.keep_media:
        ep.rgb = None
        ep.depth_raw = None
    ep.validate()
    return Annotation(ep, qa, motion, raw, frames, cal, timings)


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


def write_annotation(ds, ann: Annotation) -> None:
    """Write the episode (atomically), then its derived products, then its completion marker."""
    from annotators.quality import frame_records

    ep = ann.episode
    ds.write_episode(ep, complete=False)
    ds.write_derived(ep.episode_id, "qa", ann.qa)
    ds.write_derived(ep.episode_id, "motion", ann.motion)
    ds.write_derived(ep.episode_id, "joints_raw", raw_joint_records(ann.raw_joints))
    if ann.frame_quality:
        ds.write_derived(ep.episode_id, "quality_frames", frame_records(ann.frame_quality))
    ds.mark_complete(ep.episode_id)  # last: a crash before it leaves an episode the resume redoes


def annotate_into_dataset(ds, source: str | Path, config: AnnotateConfig | None = None,
                          episode_id: str | None = None) -> Annotation:
    """``run_pipeline`` then ``write_annotation`` (see ``annotators.batch`` for many inputs)."""
    ann = run_pipeline(source, config, episode_id=episode_id)
    write_annotation(ds, ann)
    return ann


def annotate_to_dataset(inputs: Sequence[str | Path], out_root: str | Path, config: AnnotateConfig | None = None,
                        workers: int = 1, progress: Callable | None = None, **kwargs: Any):
    """Annotate many inputs into the dataset at ``out_root``; see ``annotators.batch.annotate_to_dataset``."""
    from annotators.batch import annotate_to_dataset as run

    return run(inputs, out_root, config, workers=workers, progress=progress, **kwargs)
