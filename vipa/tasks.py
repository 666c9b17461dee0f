"""The training tasks, defined once: kinds, prompts, answer formats, the motion stride (seconds)
and the builders of the records that the annotators write and training reads.

A *task kind* is registered here with its stage ("stage1" Hand3D-visual QA, "stage2"
Hand3D-action motion), its prompt template, its answer format and its record builder.
``TRAINED`` declares which kinds the model trains on (the current model is single-frame:
"spatial" and "task" QA, "gen", "translate" and "context" motion). Adding a kind is one
``register`` call plus its builder; training, evaluation, the annotators' ``derived/*.jsonl``
and the tokenizer's corpus pick it up from here.

Records are JSON-serialisable dicts, one per training sample, for the episode's main hand
(the hand with most frames that have a known wrist)::

    {"id", "type": kind, "episode_id", "hand", "frames": [t], "frame_of_reference": t,
     "question": prompt, "answer": text,
     "target": {"vector": [3], "point_a": [3], "point_b": [3] | None},   # QA kinds
     "waypoints": [[3] * n], "past_waypoints": [[3] * m], "stride_s": s}  # motion kinds

Every position is in the camera frame of frame ``t`` (OpenCV, metres); positions from other
frames are moved into it with the episode's ``camera_pose`` (world_from_camera), so a moving
camera does not leak into hand motion. ``point_a`` is the wrist at t, ``point_b`` the QA
target point, ``vector`` = point_b - point_a. Waypoints are the wrist every ``stride_s``
seconds after t (the future; held at the last known wrist near the episode end) and before t
(the past, oldest first).
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

# Seconds between motion waypoints: 2 frames at the synthetic episodes' 15 fps, what
# checkpoints/tiny_sample was trained with (checkpoints without the config field get it).
MOTION_STRIDE_S = 2.0 / 15.0
LEGACY_MOTION_STRIDE_S = MOTION_STRIDE_S
FUTURE_WAYPOINTS = 8  # waypoints after t ("gen", "context"); = ModelConfig.traj_horizon
PAST_WAYPOINTS = 4  # waypoints before t ("context"); = ModelConfig.past_horizon
MIN_TASK_DISTANCE = 0.01  # metres; shorter "task" answers are not asked
DEFAULT_INSTRUCTION = "do the task"
STAGES = ("stage1", "stage2")

# The annotators' own (paper) products, written beside the trained kinds' records.
PAPER_QA_TYPES = ("spatial_relationship", "task_completion", "hand_movement", "camera_movement")
PAPER_MOTION_TASKS = ("instruction_to_motion", "motion_to_text", "contextual_prediction")
PAPER_MOTION_STRIDE_S = 0.2  # seconds between the paper motion records' waypoints

_MT = MotionTokenizer()


@dataclass(frozen=True)
class TaskParams:
    """What the builders need beyond the episode: stride (s), horizons, low-motion filter."""

    stride_s: float = MOTION_STRIDE_S
    n_future: int = FUTURE_WAYPOINTS
    n_past: int = PAST_WAYPOINTS
    low_motion: LowMotionFilter = LowMotionFilter()


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

    def to_frame(self, points: np.ndarray, src: Sequence[int] | int, dst: int) -> np.ndarray:
        """(N, 3) float32 points, each in camera ``src[i]``'s frame, expressed in camera ``dst``'s."""
        p = np.asarray(points, np.float32).reshape(-1, 3)
        if self.static_camera:
            return p
        poses = self.episode.camera_pose.astype(np.float64)
        src = np.broadcast_to(np.asarray(src), (len(p),))
        dst_from_src = invert_transform(poses[dst]) @ poses[src]
        return transform_points(dst_from_src, p.astype(np.float64)[:, None, :])[:, 0, :].astype(np.float32)


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
    """One training task: its stage, prompt template (``str.format`` fields: hand, object,
    instruction, motion, past), answer format and record builder."""

    name: str
    stage: str
    prompt: str
    answer: str  # "direction_distance" | "motion_tokens" | "instruction"
    build: Callable[[EpisodeView, TaskParams], list[dict[str, Any]]]


REGISTRY: dict[str, TaskKind] = {}
TRAINED: dict[str, tuple[str, ...]] = {"stage1": ("spatial", "task"), "stage2": ("gen", "translate", "context")}


def register(kind: TaskKind, trained: bool = True) -> TaskKind:
    """Add ``kind`` to the registry (and to the kinds its stage trains on when ``trained``)."""
    if kind.stage not in STAGES:
        raise ValueError(f"task {kind.name!r}: stage must be one of {STAGES}, got {kind.stage!r}")
    REGISTRY[kind.name] = kind
    if trained and kind.name not in TRAINED[kind.stage]:
        TRAINED[kind.stage] = TRAINED[kind.stage] + (kind.name,)
    return kind


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
    f = {k: "" for k in ("hand", "object", "instruction", "motion", "past")}
    f.update(fields)
    return REGISTRY[kind].prompt.format(**f)


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


def _spatial(v: EpisodeView, p: TaskParams) -> list[dict]:
    return [qa_record(v, "spatial", int(t), centre[t], object=name)
            for t in v.frames for name, centre in v.objects if np.isfinite(centre[t]).all()]


def _task(v: EpisodeView, p: TaskParams) -> list[dict]:
    known = np.flatnonzero(np.isfinite(v.wrist).all(1))
    if not len(known):
        return []
    last = int(known[-1])
    out = []
    for t in v.frames:
        end = v.to_frame(v.wrist[last], last, int(t))[0]
        if np.linalg.norm(end - v.wrist[t]) >= MIN_TASK_DISTANCE:
            out.append(qa_record(v, "task", int(t), end))
    return out


def _futures(v: EpisodeView, p: TaskParams) -> dict[int, np.ndarray]:
    """Frame -> future waypoints for the frames whose future is not low-motion (memoised on ``v``)."""
    if ("futures", p) in v.memo:
        return v.memo[("futures", p)]
    step = stride_frames(v.episode.fps, p.stride_s)
    out = v.memo[("futures", p)] = {}
    for t in v.frames:
        fut = waypoints(v, int(t), step, p.n_future, +1)
        if fut is not None and not p.low_motion.is_low_motion(np.concatenate([v.wrist[t][None], fut])):
            out[int(t)] = fut
    return out


def _gen(v: EpisodeView, p: TaskParams) -> list[dict]:
    q = prompt("gen", hand=v.hand, instruction=v.instruction)
    return [motion_record(v, "gen", t, p, q, motion_text(f), f) for t, f in _futures(v, p).items()]


def _translate(v: EpisodeView, p: TaskParams) -> list[dict]:
    return [motion_record(v, "translate", t, p, prompt("translate", motion=motion_text(f)), v.instruction, None)
            for t, f in _futures(v, p).items()]


def _context(v: EpisodeView, p: TaskParams) -> list[dict]:
    step = stride_frames(v.episode.fps, p.stride_s)
    out = []
    for t, f in _futures(v, p).items():
        past = waypoints(v, t, step, p.n_past, -1)
        if past is not None:
            out.append(motion_record(v, "context", t, p, prompt("context", past=motion_text(past)),
                                     motion_text(f), f, past))
    return out


register(TaskKind("spatial", "stage1", "Where is the {object} relative to the {hand} hand?", "direction_distance",
                  _spatial))
register(TaskKind("task", "stage1", "How should the {hand} hand move to {instruction}?", "direction_distance", _task))
register(TaskKind("gen", "stage2", "Predict the {hand} wrist motion to {instruction}.", "motion_tokens", _gen))
register(TaskKind("translate", "stage2", "Describe this motion: {motion}", "instruction", _translate))
register(TaskKind("context", "stage2", "Past motion: {past}. Predict the next motion.", "motion_tokens", _context))


def kind_order(kind: str) -> int:
    """Position of ``kind`` in the sample order (registry order)."""
    return list(REGISTRY).index(kind)


def sort_records(records: list[dict]) -> list[dict]:
    """Records in sample order: by frame, then kind (registration order); stable otherwise."""
    return sorted(records, key=lambda r: (r["frames"][0], kind_order(r["type"])))


def build_records(ep: Episode, stage: str | None = None, params: TaskParams | None = None,
                  kinds: Sequence[str] | None = None) -> list[dict]:
    """The records of the trained kinds (of ``stage``, or both stages) of one episode, in sample
    order, ids "<episode>:<stage>:<k>"."""
    p = params or TaskParams()
    stages = STAGES if stage is None else (stage,)
    v = episode_view(ep)
    out: list[dict] = []
    for s in stages:
        recs: list[dict] = []
        for name in (kinds if kinds is not None else trained_kinds(s)):
            if REGISTRY[name].stage == s:
                recs += REGISTRY[name].build(v, p)
        recs = sort_records(recs)
        for k, r in enumerate(recs):
            r["id"] = f"{ep.episode_id}:{s}:{k:05d}"
        out += recs
    return out


def is_task_record(r: Mapping[str, Any]) -> bool:
    """True for a record of a registered training kind (not a paper QA / motion record)."""
    return r.get("type") in REGISTRY


def check_record(r: Mapping[str, Any], where: str) -> None:
    """ValueError naming ``where`` (file) and the field when a task record lacks what training needs."""
    for f in ("type", "frames", "question", "answer", "hand"):
        if f not in r:
            raise ValueError(f"{where}: record {r.get('id', '?')}: missing field {f!r}")
    kind = REGISTRY[r["type"]]
    if kind.stage == "stage1" and not (isinstance(r.get("target"), Mapping) and "point_b" in r["target"]):
        raise ValueError(f"{where}: record {r.get('id', '?')}: missing field 'target.point_b'")
