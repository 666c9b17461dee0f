"""The machinery of the task kinds: the registry (``TaskKind``, ``register``), the episode view
the builders read (``EpisodeView``, with the one camera-frame transform ``to_frame``), the
build parameters (``TaskParams``), prompts, record helpers and ``build_records``.

The kinds themselves are registered by ``vipa.tasks.trained`` (what the model trains on) and
``vipa.tasks.paper`` (the paper's products); see ``vipa.tasks`` for the record layout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vipa.conventions import HANDS, WRIST
from vipa.data.episode import Episode
from vipa.data.motion import LowMotionFilter, MotionTokenizer
from vipa.data.qa import encode_direction_distance
from vipa.geometry import invert_transform, transform_points
from vipa.tasks.text import load_templates

# Seconds between motion waypoints: 2 frames at the synthetic episodes' 15 fps, what
# checkpoints/tiny_sample was trained with (checkpoints without the config field get it).
MOTION_STRIDE_S = 2.0 / 15.0
LEGACY_MOTION_STRIDE_S = MOTION_STRIDE_S
FUTURE_WAYPOINTS = 8  # waypoints after t ("gen", "context"); = ModelConfig.traj_horizon
PAST_WAYPOINTS = 4  # waypoints before t ("context"); = ModelConfig.past_horizon
MIN_TASK_DISTANCE = 0.01  # metres; shorter "task" answers are not asked
DEFAULT_INSTRUCTION = "do the task"
STAGES = ("stage1", "stage2")
PRODUCTS = {"stage1": "qa", "stage2": "motion"}  # stage -> derived file (derived/<product>.jsonl)

_MT = MotionTokenizer()


@dataclass(frozen=True)
class TaskParams:
    """What the builders need beyond the episode.

    Trained kinds: ``stride_s`` (seconds between waypoints; the model config's), horizons and
    the low-motion filter. Paper kinds: ``seed`` (template and frame sampling), ``instruction``
    (None: the episode's, else a template one), their knobs ``qa`` / ``motion`` (None: the
    defaults), ``templates`` (prompt lists by kind; None: ``vipa/tasks/templates``) and the
    motion ``tokenizer`` (None: the default ``MotionTokenizer``)."""

    stride_s: float = MOTION_STRIDE_S
    n_future: int = FUTURE_WAYPOINTS
    n_past: int = PAST_WAYPOINTS
    low_motion: LowMotionFilter = LowMotionFilter()
    seed: int = 0
    instruction: str | None = None
    qa: Any = None  # a vipa.tasks.paper.PaperQAConfig (None: its defaults); paper imports this module
    motion: Any = None  # a vipa.tasks.paper.PaperMotionConfig (None: its defaults)
    templates: Mapping[str, Sequence[str]] | None = field(default=None, compare=False)
    tokenizer: MotionTokenizer | None = field(default=None, compare=False)


@dataclass
class EpisodeView:
    """What the builders read of one episode, for its main hand (camera frame per frame, metres)."""

    episode: Episode
    hand: str
    instruction: str
    wrist: np.ndarray  # (T, 3) float32, NaN where the hand is absent or the wrist unknown
    frames: np.ndarray  # (F,) frames a sample may start at: frame valid and wrist known
    objects: list[tuple[str, np.ndarray]]  # (name, (T, 3) float32 centre)
    static_camera: bool
    memo: dict = field(default_factory=dict)  # per-view results shared by builders (e.g. futures)

    def to_frame(self, points: np.ndarray, src: Sequence[int] | int, dst: int,
                 dtype: type = np.float32) -> np.ndarray:
        """(N, 3) points (metres), each in camera ``src[i]``'s frame, expressed in camera ``dst``'s
        frame with the episode's ``camera_pose`` (world_from_camera; poses composed in float64,
        applied by ``vipa.geometry.transform_points``), returned as ``dtype`` (the trained
        kinds' float32, the paper kinds' float64); unchanged when the camera is static. The one
        camera-frame transform of the task builders."""
        p = np.asarray(points, dtype).reshape(-1, 3)
        if self.static_camera:
            return p
        poses = self.episode.camera_pose.astype(np.float64)
        src = np.broadcast_to(np.asarray(src), (len(p),))
        dst_from_src = invert_transform(poses[dst]) @ poses[src]
        return transform_points(dst_from_src, p.astype(np.float64)[:, None, :])[:, 0, :].astype(dtype)


def main_hand(ep: Episode) -> str:
    """The hand with most frames where it is present with a known wrist."""
    counts = {s: int((h.present & np.isfinite(h.joints_3d[:, WRIST]).all(1)).sum()) for s, h in ep.hands.items()}
    return max(counts, key=counts.get)


def episode_view(ep: Episode) -> EpisodeView:
    """The builders' view of ``ep`` (corrections already applied when read through a dataset)."""
    side = main_hand(ep)
    h = ep.hands[side]
    wrist = np.where(h.present[:, None], h.joints_3d[:, WRIST], np.nan).astype(np.float32)
    frames = np.flatnonzero(ep.frame_valid & np.isfinite(wrist).all(1))
    poses = np.asarray(ep.camera_pose)
    static = bool(np.isfinite(poses).all() and (poses == poses[:1]).all())
    objects = [(o.name or o.object_id, o.center.astype(np.float32)) for o in ep.objects]
    return EpisodeView(ep, side, ep.instruction or DEFAULT_INSTRUCTION, wrist, frames, objects, static)


def stride_frames(fps: float, stride_s: float) -> int:
    """Frames between waypoints: round(fps * stride_s), at least 1."""
    return max(1, int(round(fps * stride_s)))


def motion_text(xyz: np.ndarray) -> str:
    """Motion-token text of waypoints (N, 3) metres, camera frame (clipped silently)."""
    return _MT.to_text(_MT.encode(np.asarray(xyz, np.float32).reshape(-1, 3), return_clipped=True)[0])


def waypoints(v: EpisodeView, t: int, stride: int, n: int, direction: int) -> np.ndarray | None:
    """(n, 3) wrist every ``stride`` frames after (``direction`` +1) or before (-1) frame t, in
    camera t's frame, oldest first; the future is held at the last known wrist; None when a
    needed frame is outside the episode or its wrist unknown."""
    idx = [t + direction * stride * k for k in range(1, n + 1)]
    known = np.flatnonzero(np.isfinite(v.wrist).all(1))
    last = int(known[-1]) if len(known) else -1
    idx = [min(i, last) for i in idx] if direction > 0 else idx
    if any(i < 0 or i >= len(v.wrist) for i in idx):
        return None
    w = v.wrist[idx]
    if not np.isfinite(w).all():
        return None
    w = v.to_frame(w, idx, t)
    return w if direction > 0 else w[::-1].copy()


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class TaskKind:
    """One QA or motion kind: its stage ("stage1" Hand3D-visual QA, written to derived/qa.jsonl;
    "stage2" Hand3D-action motion, derived/motion.jsonl), its prompt, answer format and record
    builder ``build(view, params) -> records``.

    ``prompt`` is a ``str.format`` template (fields: hand, object, instruction, motion, past and,
    for templated kinds, their own); a kind with ``templates`` (a file of
    ``vipa/tasks/templates``) draws its wording from that file's list under its name instead,
    and ``prompt`` is empty. ``stride_s``: seconds between waypoints of a motion kind (its
    default; trained kinds use the model config's, ``TaskParams.stride_s``). ``variant_of``
    names the kind this one is a variant of (same concept, other form), and ``doc`` says what
    the kind asks and, for a variant, how and why it differs."""

    name: str
    stage: str
    prompt: str
    answer: str  # "direction_distance" | "motion_tokens" | "instruction" | "relation" | "camera_motion"
    build: Callable[[EpisodeView, TaskParams], list[dict[str, Any]]]
    stride_s: float | None = None
    templates: str | None = None
    variant_of: str | None = None
    doc: str = ""

    @property
    def product(self) -> str:
        """The derived file its records go to: "qa" or "motion"."""
        return PRODUCTS[self.stage]

    def prompts(self) -> list[str]:
        """Its prompt templates: ``[prompt]``, or the list of its templates file."""
        if self.templates is None:
            return [self.prompt]
        return load_templates(self.templates)[self.name]


REGISTRY: dict[str, TaskKind] = {}
TRAINED: dict[str, tuple[str, ...]] = {"stage1": (), "stage2": ()}


def register(kind: TaskKind, trained: bool = True) -> TaskKind:
    """Add ``kind`` to the registry and, when ``trained``, to the kinds its stage trains on (in
    registration order); a kind the single-frame model cannot learn (several images, the
    paper's templated wording) is registered with ``trained=False``: its records are written
    but not trained on."""
    if kind.stage not in STAGES:
        raise ValueError(f"task {kind.name!r}: stage must be one of {STAGES}, got {kind.stage!r}")
    if kind.variant_of is not None and kind.variant_of not in REGISTRY:
        raise ValueError(f"task {kind.name!r}: variant_of {kind.variant_of!r} is not registered")
    REGISTRY[kind.name] = kind
    if trained and kind.name not in TRAINED[kind.stage]:
        TRAINED[kind.stage] = TRAINED[kind.stage] + (kind.name,)
    return kind


def is_trained(name: str) -> bool:
    """True when the model trains on kind ``name`` (in some stage)."""
    return any(name in TRAINED[s] for s in STAGES)


def unregister(name: str) -> None:
    """Remove a kind (tests register temporary kinds)."""
    kind = REGISTRY.pop(name)
    TRAINED[kind.stage] = tuple(k for k in TRAINED[kind.stage] if k != name)


def trained_kinds(stage: str) -> tuple[str, ...]:
    """The kinds the model trains on in ``stage``, in sample order."""
    if stage not in STAGES:
        raise ValueError(f"stage: expected one of {STAGES}, got {stage!r}")
    return TRAINED[stage]


def prompt(kind: str, **fields: str) -> str:
    """The prompt of ``kind`` with ``fields`` filled in (missing fields are empty)."""
    if kind not in REGISTRY:
        raise ValueError(f"task kind: unknown {kind!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[kind].prompts()[0].format_map(_Blank(fields))


class _Blank(dict):
    """Format fields; a missing one is empty."""

    def __missing__(self, key: str) -> str:
        return ""


def trajectory_prompt(instruction: str, hand: str = "right") -> str:
    """The "gen" prompt for a plain task instruction (kept as is when it already is a motion prompt)."""
    text = instruction.strip()
    if text.startswith(tuple(REGISTRY[k].prompt.split("{")[0] for k in trained_kinds("stage2")
                             if REGISTRY[k].answer == "motion_tokens")):
        return text
    if hand not in HANDS:
        raise ValueError(f"hand: expected one of {HANDS}, got {hand!r}")
    return prompt("gen", hand=hand, instruction=text.rstrip("."))


def corpus_texts(instruction: str, objects: Sequence[str]) -> list[str]:
    """Every trained prompt with this instruction and these object names, motion left empty
    (the tokenizer's training text)."""
    out: list[str] = []
    for stage in STAGES:
        for name in trained_kinds(stage):
            tpl = REGISTRY[name].prompt
            for o in (objects if "{object}" in tpl else [""]):
                for h in (("right", "left") if "{hand}" in tpl else ("",)):
                    out.append(prompt(name, hand=h, object=o, instruction=instruction).strip())
    return out


# ----------------------------------------------------------------------------- records


def _vec(a: np.ndarray | None) -> list[float] | None:
    return None if a is None else [float(x) for x in np.asarray(a, np.float32)]


def qa_record(v: EpisodeView, kind: str, t: int, point_b: np.ndarray, answer: str | None = None,
              **fields: str) -> dict[str, Any]:
    """A QA record at frame t: target point ``point_b`` (camera t, metres) relative to the wrist."""
    a = v.wrist[t].astype(np.float32)
    b = np.asarray(point_b, np.float32)
    vec = b - a
    return {"id": "", "type": kind, "episode_id": v.episode.episode_id, "hand": v.hand, "frames": [int(t)],
            "frame_of_reference": int(t), "question": prompt(kind, hand=v.hand, instruction=v.instruction, **fields),
            "answer": answer if answer is not None else encode_direction_distance(vec),
            "target": {"vector": _vec(vec), "point_a": _vec(a), "point_b": _vec(b)}}


def motion_record(v: EpisodeView, kind: str, t: int, p: TaskParams, question: str, answer: str,
                  future: np.ndarray | None, past: np.ndarray | None = None) -> dict[str, Any]:
    """A motion record at frame t (waypoints in camera t's frame, metres)."""
    r = {"id": "", "type": kind, "episode_id": v.episode.episode_id, "hand": v.hand, "frames": [int(t)],
         "frame_of_reference": int(t), "question": question, "answer": answer,
         "target": {"point_a": _vec(v.wrist[t])}, "stride_s": float(p.stride_s),
         "waypoints": None if future is None else [_vec(w) for w in future]}
    if past is not None:
        r["past_waypoints"] = [_vec(w) for w in past]
    return r


def kind_order(kind: str) -> int:
    """Position of ``kind`` in the sample order (registry order)."""
    return list(REGISTRY).index(kind)


def sort_records(records: list[dict]) -> list[dict]:
    """Records in sample order: by frame, then kind (registration order); stable otherwise."""
    return sorted(records, key=lambda r: (r["frames"][0], kind_order(r["type"])))


def build_records(ep: Episode, stage: str | None = None, params: TaskParams | None = None,
                  kinds: Sequence[str] | None = None) -> list[dict]:
    """The records of ``kinds`` (default: the trained kinds) of ``stage`` (or both stages) of one
    episode. Records of untrained kinds (the paper's) come first, grouped by product ("qa",
    "motion") in the order the kinds are asked, ids "<episode>:<product>:<k:04d>"; then those of
    trained kinds per stage in sample order (``sort_records``), ids "<episode>:<stage>:<k:05d>"."""
    p = params or TaskParams()
    stages = STAGES if stage is None else (stage,)
    names = list(kinds) if kinds is not None else [k for s in stages for k in trained_kinds(s)]
    unknown = [k for k in names if k not in REGISTRY]
    if unknown:
        raise ValueError(f"task kinds: unknown {unknown}; known: {sorted(REGISTRY)}")
    v = episode_view(ep)
    out: list[dict] = []
    groups: dict[str, list[dict]] = {}
    for name in names:
        kind = REGISTRY[name]
        if kind.stage in stages and not is_trained(name):
            groups.setdefault(kind.product, []).extend(kind.build(v, p))
    for product, recs in groups.items():
        for k, r in enumerate(recs):
            r["id"] = f"{ep.episode_id}:{product}:{k:04d}"
        out += recs
    for s in stages:
        recs: list[dict] = []
        for name in names:
            if REGISTRY[name].stage == s and is_trained(name):
                recs += REGISTRY[name].build(v, p)
        recs = sort_records(recs)
        for k, r in enumerate(recs):
            r["id"] = f"{ep.episode_id}:{s}:{k:05d}"
        out += recs
    return out


def is_task_record(r: Mapping[str, Any]) -> bool:
    """True for a record of a kind the model trains on (not a paper QA / motion record)."""
    return is_trained(str(r.get("type")))


def check_record(r: Mapping[str, Any], where: str) -> None:
    """ValueError naming ``where`` (file) and the field when a task record lacks what training needs."""
    for f in ("type", "frames", "question", "answer", "hand"):
        if f not in r:
            raise ValueError(f"{where}: record {r.get('id', '?')}: missing field {f!r}")
    kind = REGISTRY[r["type"]]
    if kind.stage == "stage1" and not (isinstance(r.get("target"), Mapping) and "point_b" in r["target"]):
        raise ValueError(f"{where}: record {r.get('id', '?')}: missing field 'target.point_b'")
