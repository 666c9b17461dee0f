"""The paper's Hand3D kinds: four QA types (Hand3D-visual) and three motion tasks (Hand3D-action).

They are the dataset's products (``derived/qa.jsonl``, ``derived/motion.jsonl``), registered
with ``trained=False``: several images, both hands, sampled frames and templated wording
(``vipa/tasks/templates/qa.json``, ``motion.json``; one template drawn per record with the
seed), which the single-frame model does not train on; its kinds are single-frame variants of
these (``vipa.tasks.trained``). ``hand_movement`` and ``camera_movement`` compare two images
and have no trained variant.

Every vector is in the camera frame of one frame of the record (OpenCV, metres), named in
``target["frame_of_reference"]`` (QA) or ``frame_of_reference`` (motion); positions from other
frames are moved into it with ``EpisodeView.to_frame`` (the episode's ``camera_pose``,
world_from_camera), so a moving camera does not leak into hand motion.

QA (``PaperQAConfig``):

* **spatial_relationship** (frames: 1-4 frames, the question is about the last one, which is
  the frame of reference): vector = object box centre - hand point. The hand point is the
  palm centre (mean of wrist, index MCP, middle MCP and pinky MCP: where the hand "is" for a
  grasp; the wrist when one of those joints is unknown, recorded in ``target["anchor"]``).
  In contact when a fingertip lies within ``contact_threshold`` (2 cm) of the object's
  3D box (distance 0 inside it).
* **task_completion** (frames: [t]): vector = wrist at the goal - wrist now, goal = the next
  grasp onset after t (first frame of a run of contact frames) or, when there is none, the
  last frame where the hand is valid; ``target["goal"]`` says which. The instruction is in
  the question.
* **hand_movement** (frames: [a, b], a < b, frame of reference a): wrist(b) - wrist(a).
* **camera_movement** (frames: [a, b], frame of reference a): camera b's pose in camera a's
  frame as axis-angle + translation (``vipa.geometry.relative_motion``); skipped when the
  camera did not move (< 0.5 degrees and < 5 mm) unless ``include_static_camera``.

Frames with ``frame_valid`` False are never used; hand questions need the hand present and
the joints they use known (finite 3D: the schema marks missing values NaN). A joint hidden
from view but estimated (``valid`` False, finite) is used, since occluded fingertips are the
rule during a grasp; ``require_visible=True`` also requires the ``valid`` flags. QA records:
``{"id", "type", "episode_id", "hand", "frames", "question", "answer", "target"}`` with
``target = {"vector": [x, y, z], "distance": m, "signs": [..], "frame_of_reference": i, ...}``.

Motion (``PaperMotionConfig``): waypoints are wrist positions at frames taken every
``stride_s`` seconds (``PAPER_MOTION_STRIDE_S`` = 0.2 s: 5 waypoints a second, so 16 waypoints
span 3.2 s); frames where the wrist is unknown (frame dropped, hand absent, NaN; with
``require_visible`` also hidden) are skipped, and ``waypoint_frames`` records which frames were
used. All waypoints of a record are in the camera frame of its reference frame (the image the
model sees). Tokens come from ``vipa.data.motion.MotionTokenizer`` (coordinates outside
MOTION_RANGE are clipped; the count is in ``clipped``; ``drop_clipped`` drops such records).

* ``instruction_to_motion``: instruction (+ first image) -> tokens of the whole wrist
  trajectory from the first valid waypoint, the current position included. A trajectory
  longer than ``max_waypoints`` (16) keeps its even timing: the period becomes the smallest
  multiple k of the stride that leaves at most 16 waypoints (``stride_frames`` records it), so
  its end may fall up to k strides before the last valid frame.
* ``motion_to_text``: the same tokens -> the net displacement in the QA direction encoding
  ("left and forward, 0.30m", ``vipa.data.qa``).
* ``contextual_prediction``: an image at frame r + the past ``n_past`` waypoints up to r
  (r included) -> the next ``n_future`` waypoints. Several r per hand.

The low-motion filter (``vipa.data.motion.LowMotionFilter``) is applied to the trajectory a
record asks for (whole trajectory, or the future from r with r's position as its start).
Motion records: ``{"id", "type", "episode_id", "hand", "frames", "question", "answer", "tokens",
"waypoints", "waypoint_frames", "stride_frames", "stride_s", "frame_of_reference", "clipped",
"instruction", ...}`` (contextual records add ``past_tokens``, ``past_waypoints``,
``past_frames``); ``question``/``answer`` are the training text, ``tokens``/``waypoints`` the
machine-readable target. The three motion kinds are drawn together per hand (one template
generator per hand), so a record does not depend on which of them are asked.

Sampling is deterministic for a given seed and episode id.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vipa.conventions import FINGERTIPS, HANDS, INDEX_MCP, MIDDLE_MCP, PINKY_MCP, WRIST
from vipa.data.episode import Episode
from vipa.data.motion import LowMotionFilter, MotionTokenizer
from vipa.data.qa import (
    DEFAULT_GAMMA,
    direction_signs,
    encode_camera_motion,
    encode_direction_distance,
    encode_relation,
)
from vipa.geometry import relative_motion
from vipa.tasks.base import EpisodeView, TaskKind, TaskParams, register, stride_frames
from vipa.tasks.text import (
    clean_instruction,
    episode_instruction,
    inline_instruction,
    load_templates,
    pick,
)

PAPER_QA_TYPES = ("spatial_relationship", "task_completion", "hand_movement", "camera_movement")
PAPER_MOTION_TASKS = ("instruction_to_motion", "motion_to_text", "contextual_prediction")
PAPER_MOTION_STRIDE_S = 0.2  # seconds between the paper motion kinds' waypoints
PALM_JOINTS = (WRIST, INDEX_MCP, MIDDLE_MCP, PINKY_MCP)
QA_PLACEHOLDERS = {"hand", "object", "instruction", "n_frames"}
MOTION_PLACEHOLDERS = {"hand", "instruction", "tokens", "past_tokens", "n_waypoints", "stride_s", "motion"}


@dataclass(frozen=True)
class PaperQAConfig:
    """Knobs of the paper QA kinds; defaults are the documented choices of the module docstring."""

    per_type: int = 4  # records per type, per hand for hand types
    gamma: float = DEFAULT_GAMMA
    contact_threshold: float = 0.02  # metres, fingertip to object box
    max_context_frames: int = 4  # spatial relationship shows 1..this many frames
    context_stride: int = 5  # frames between context frames
    min_gap: int = 3  # frames between a and b for movement questions
    max_gap: int = 60
    task_goal: str = "auto"  # "auto" (next grasp, else end), "grasp", "end"
    include_static_camera: bool = False
    static_angle_deg: float = 0.5
    static_translation: float = 0.005  # metres
    max_tries: int = 50  # sampling attempts per requested record
    require_visible: bool = False  # also require joints' valid (visibility) flags

    def __post_init__(self) -> None:
        if self.task_goal not in ("auto", "grasp", "end"):
            raise ValueError(f"task_goal: expected 'auto', 'grasp' or 'end', got {self.task_goal!r}")
        if not 1 <= self.max_context_frames <= 4:
            raise ValueError(f"max_context_frames: expected 1..4, got {self.max_context_frames}")
        if not 1 <= self.min_gap <= self.max_gap:
            raise ValueError(f"min_gap/max_gap: need 1 <= min_gap <= max_gap, got {self.min_gap}, {self.max_gap}")


@dataclass(frozen=True)
class PaperMotionConfig:
    """Knobs of the paper motion kinds; defaults as in the module docstring."""

    stride_s: float = PAPER_MOTION_STRIDE_S  # seconds between waypoints
    max_waypoints: int = 16  # instruction_to_motion / motion_to_text trajectory length
    n_past: int = 4  # contextual: past waypoints before r (r itself is added)
    n_future: int = 8  # contextual: future waypoints after r
    min_future: int = 2  # contextual: fewer valid future waypoints -> no record
    per_hand_contextual: int = 4
    gamma: float = DEFAULT_GAMMA
    low_motion: LowMotionFilter = field(default_factory=LowMotionFilter)
    drop_clipped: bool = False
    require_visible: bool = False  # also require the wrist's valid (visibility) flag

    def __post_init__(self) -> None:
        if not self.stride_s > 0:
            raise ValueError(f"stride_s: must be > 0, got {self.stride_s}")
        if self.max_waypoints < 2 or self.n_future < 1 or self.n_past < 0 or self.min_future < 1:
            raise ValueError("max_waypoints >= 2, n_future >= 1, n_past >= 0, min_future >= 1 required")


def qa_template_fields(types: Sequence[str] = PAPER_QA_TYPES) -> dict[str, set[str]]:
    """Template key -> allowed placeholders of the QA kinds ``types``."""
    return {t: QA_PLACEHOLDERS for t in types}


def motion_template_fields() -> dict[str, set[str]]:
    """Template key -> allowed placeholders of the motion kinds (with the motion_to_text answer)."""
    allowed = {t: MOTION_PLACEHOLDERS for t in PAPER_MOTION_TASKS}
    allowed["motion_to_text_answer"] = {"motion", "hand"}
    return allowed


def qa_templates(path: str | None = None) -> dict[str, list[str]]:
    """The QA question templates (``templates/qa.json`` or ``path``), checked."""
    return load_templates(path or "qa", qa_template_fields())


def motion_templates(path: str | None = None) -> dict[str, list[str]]:
    """The motion prompt templates (``templates/motion.json`` or ``path``), checked."""
    return load_templates(path or "motion", motion_template_fields())


def episode_rng(episode_id: str, seed: int, salt: str = "") -> np.random.Generator:
    """A generator that depends on the seed and the episode id (so episodes differ)."""
    return np.random.default_rng([seed, zlib.crc32(f"{salt}:{episode_id}".encode())])


def _templates(v: EpisodeView, p: TaskParams, product: str) -> Mapping[str, Sequence[str]]:
    if p.templates is not None:
        return p.templates
    key = ("templates", product)
    if key not in v.memo:
        v.memo[key] = qa_templates() if product == "qa" else motion_templates()
    return v.memo[key]


# ----------------------------------------------------------------------------- geometry


def usable_joints(ep: Episode, side: str, require_visible: bool = False) -> np.ndarray:
    """(T, 21) bool: the joint has a 3D value (finite) in a valid frame where the hand is present;
    with ``require_visible`` also its ``valid`` (visibility) flag."""
    h = ep.hands[side]
    ok = np.isfinite(h.joints_3d).all(-1) & (ep.frame_valid & h.present)[:, None]
    return ok & h.valid if require_visible else ok


def hand_valid_frames(ep: Episode, side: str, joints: Sequence[int] = (WRIST,),
                      require_visible: bool = False) -> np.ndarray:
    """(T,) bool: frame valid, hand present, ``joints`` usable (see ``usable_joints``)."""
    return usable_joints(ep, side, require_visible)[:, list(joints)].all(1)


def palm_centre(ep: Episode, side: str, t: int, require_visible: bool = False) -> tuple[np.ndarray, str]:
    """(3,) palm centre (or wrist) of one frame in its camera frame, and which it is."""
    h = ep.hands[side]
    j = list(PALM_JOINTS)
    if usable_joints(ep, side, require_visible)[t, j].all():
        return h.joints_3d[t, j].astype(np.float64).mean(0), "palm_centre"
    return h.joints_3d[t, WRIST].astype(np.float64), "wrist"


def fingertip_box_distances(ep: Episode, side: str, obj_index: int, require_visible: bool = False) -> np.ndarray:
    """(T,) smallest distance (metres) of a usable fingertip to object ``obj_index``'s 3D box in
    each frame; inf where no fingertip or no object position is known."""
    h, o = ep.hands[side], ep.objects[obj_index]
    tips = h.joints_3d[:, list(FINGERTIPS)].astype(np.float64)  # (T, 5, 3)
    ok = usable_joints(ep, side, require_visible)[:, list(FINGERTIPS)] & np.isfinite(o.center).all(-1)[:, None]
    c = np.nan_to_num(o.center.astype(np.float64))[:, None, :]
    d = np.linalg.norm(np.maximum(np.abs(np.nan_to_num(tips) - c) - o.size.astype(np.float64) / 2, 0.0), axis=-1)
    return np.where(ok, d, np.inf).min(1)


def contact_frames(ep: Episode, side: str, threshold: float, require_visible: bool = False) -> np.ndarray:
    """(T,) bool: the hand touches some object (a fingertip within ``threshold`` of its box)."""
    out = np.zeros(ep.num_frames, bool)
    for k in range(len(ep.objects)):
        out |= fingertip_box_distances(ep, side, k, require_visible) <= threshold
    return out


def wrist_in_frame(v: EpisodeView, side: str, frames: Sequence[int] | np.ndarray, ref: int) -> np.ndarray:
    """(N, 3) float64 wrist positions of hand ``side`` at ``frames`` expressed in camera ``ref``'s frame."""
    frames = np.asarray(frames, np.int64)
    return v.to_frame(v.episode.hands[side].joints_3d[frames, WRIST], frames, ref, np.float64)


# ----------------------------------------------------------------------------- QA records


def _vec_target(vec: np.ndarray, gamma: float, frame_ref: int, **extra: Any) -> dict[str, Any]:
    return {"vector": [float(x) for x in vec], "distance": float(np.linalg.norm(vec)),
            "signs": [int(s) for s in direction_signs(vec, gamma)], "frame_of_reference": int(frame_ref), **extra}


def _record(ep: Episode, qa_type: str, hand: str | None, frames: Sequence[int], question: str,
            answer: str, target: dict[str, Any]) -> dict[str, Any]:
    return {"id": "", "type": qa_type, "episode_id": ep.episode_id, "hand": hand,
            "frames": [int(f) for f in frames], "question": question, "answer": answer, "target": target}


class _Questions:
    """Draws question templates with its own generator, so the sampled frames and answers do
    not depend on how many templates there are."""

    def __init__(self, templates: Sequence[str], rng: np.random.Generator) -> None:
        self.templates, self.rng = templates, rng

    def __call__(self, **kw: Any) -> str:
        return pick(self.rng, self.templates).format(**{k: kw.get(k, "") for k in QA_PLACEHOLDERS})


def _sample_pairs(rng: np.random.Generator, ok: np.ndarray, cfg: PaperQAConfig, n: int) -> list[tuple[int, int]]:
    """Up to n distinct (a, b) with ok[a], ok[b], min_gap <= b - a <= max_gap."""
    idx = np.flatnonzero(ok)
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    if len(idx) < 2:
        return pairs
    for _ in range(n * cfg.max_tries):
        if len(pairs) >= n:
            break
        a = int(idx[rng.integers(len(idx))])
        later = idx[(idx >= a + cfg.min_gap) & (idx <= a + cfg.max_gap)]
        if len(later) == 0:
            continue
        b = int(later[rng.integers(len(later))])
        if (a, b) not in seen:
            seen.add((a, b))
            pairs.append((a, b))
    return pairs


def _spatial_side(ep: Episode, side: str, rng: np.random.Generator, cfg: PaperQAConfig, ask: _Questions) -> list[dict]:
    ok = hand_valid_frames(ep, side, require_visible=cfg.require_visible)
    if not ep.objects:
        return []
    tip_dists = np.stack([fingertip_box_distances(ep, side, k, cfg.require_visible)
                          for k in range(len(ep.objects))], 1)  # (T, O)
    centers = np.stack([o.center for o in ep.objects], 1)  # (T, O, 3)
    has_obj = np.isfinite(centers).all(-1)  # (T, O)
    cand = np.flatnonzero(ok & has_obj.any(1))
    out: list[dict] = []
    seen: set[tuple[int, int]] = set()
    for _ in range(cfg.per_type * cfg.max_tries):
        if len(out) >= cfg.per_type or len(cand) == 0:
            break
        t = int(cand[rng.integers(len(cand))])
        objs = np.flatnonzero(has_obj[t])
        k = int(objs[rng.integers(len(objs))])
        if (t, k) in seen:
            continue
        seen.add((t, k))
        tip_dist = float(tip_dists[t, k])
        if not np.isfinite(tip_dist):
            continue  # no fingertip known: contact unknown
        n_ctx = int(rng.integers(1, cfg.max_context_frames + 1))
        earlier = [t - cfg.context_stride * i for i in range(n_ctx - 1, 0, -1)]
        frames = [f for f in earlier if f >= 0 and ep.frame_valid[f]] + [t]
        hand_pt, anchor = palm_centre(ep, side, t, cfg.require_visible)
        obj = ep.objects[k]
        vec = obj.center[t].astype(np.float64) - hand_pt
        contact = tip_dist <= cfg.contact_threshold
        q = ask(hand=side, object=obj.name or obj.object_id, n_frames=len(frames))
        tgt = _vec_target(vec, cfg.gamma, t, in_contact=bool(contact), fingertip_box_distance=tip_dist,
                          object_id=obj.object_id, object_name=obj.name, anchor=anchor,
                          hand_point=[float(x) for x in hand_pt], object_center=[float(x) for x in obj.center[t]])
        out.append(_record(ep, "spatial_relationship", side, frames, q,
                           encode_relation(vec, contact, cfg.gamma), tgt))
    out.sort(key=lambda r: (r["frames"][-1], r["target"]["object_id"]))
    return out


def _task_goals(ep: Episode, side: str, ok: np.ndarray, cfg: PaperQAConfig) -> tuple[np.ndarray, np.ndarray]:
    """Goal frame per frame t (-1 when none) and whether each goal is a grasp."""
    t_count = ep.num_frames
    goal = np.full(t_count, -1, np.int64)
    is_grasp = np.zeros(t_count, bool)
    valid_idx = np.flatnonzero(ok)
    if len(valid_idx) == 0:
        return goal, is_grasp
    onsets = np.empty(0, np.int64)
    if cfg.task_goal in ("auto", "grasp") and ep.objects:
        c = contact_frames(ep, side, cfg.contact_threshold, cfg.require_visible) & ok
        prev = np.concatenate([[False], c[:-1]])
        onsets = np.flatnonzero(c & ~prev)
    last = int(valid_idx[-1])
    for t in valid_idx:
        nxt = onsets[onsets > t]
        if len(nxt):
            goal[t], is_grasp[t] = int(nxt[0]), True
        elif cfg.task_goal in ("auto", "end") and last > t:
            goal[t] = last
    return goal, is_grasp


def _qa_instruction(v: EpisodeView, p: TaskParams) -> str:
    return inline_instruction(p.instruction if p.instruction is not None else episode_instruction(v.episode, p.seed))


def _task_side(v: EpisodeView, side: str, rng: np.random.Generator, cfg: PaperQAConfig, ask: _Questions,
               instruction: str) -> list[dict]:
    ep = v.episode
    ok = hand_valid_frames(ep, side, require_visible=cfg.require_visible)
    goal, is_grasp = _task_goals(ep, side, ok, cfg)
    cand = np.flatnonzero(ok & (goal >= 0))
    if len(cand) == 0:
        return []
    picks = rng.choice(cand, size=min(cfg.per_type, len(cand)), replace=False)
    out = []
    wr = ep.hands[side].joints_3d[:, WRIST].astype(np.float64)
    for t in sorted(int(x) for x in picks):
        g = int(goal[t])
        vec = v.to_frame(wr[g], g, t, np.float64)[0] - wr[t]
        q = ask(hand=side, instruction=instruction)
        tgt = _vec_target(vec, cfg.gamma, t, goal="grasp" if is_grasp[t] else "end", goal_frame=g)
        out.append(_record(ep, "task_completion", side, [t], q, encode_direction_distance(vec, cfg.gamma), tgt))
    return out


def _hand_move_side(v: EpisodeView, side: str, rng: np.random.Generator, cfg: PaperQAConfig,
                    ask: _Questions) -> list[dict]:
    ep = v.episode
    ok = hand_valid_frames(ep, side, require_visible=cfg.require_visible)
    wr = ep.hands[side].joints_3d[:, WRIST].astype(np.float64)
    out = []
    for a, b in sorted(_sample_pairs(rng, ok, cfg, cfg.per_type)):
        vec = v.to_frame(wr[b], b, a, np.float64)[0] - wr[a]
        q = ask(hand=side)
        out.append(_record(ep, "hand_movement", side, [a, b], q, encode_direction_distance(vec, cfg.gamma),
                           _vec_target(vec, cfg.gamma, a)))
    return out


def _qa_kind(qa_type: str):
    """The builder of paper QA type ``qa_type``: both hands (hand types), in hand then frame order."""

    def build(v: EpisodeView, p: TaskParams) -> list[dict]:
        ep, cfg = v.episode, p.qa or PaperQAConfig()
        rng = episode_rng(ep.episode_id, p.seed, qa_type)
        ask = _Questions(_templates(v, p, "qa")[qa_type], episode_rng(ep.episode_id, p.seed, f"questions:{qa_type}"))
        if qa_type == "camera_movement":
            return _camera_move(ep, rng, cfg, ask)
        out: list[dict] = []
        for side in HANDS:
            if not hand_valid_frames(ep, side, require_visible=cfg.require_visible).any():
                continue
            if qa_type == "spatial_relationship":
                out += _spatial_side(ep, side, rng, cfg, ask)
            elif qa_type == "task_completion":
                out += _task_side(v, side, rng, cfg, ask, _qa_instruction(v, p))
            else:
                out += _hand_move_side(v, side, rng, cfg, ask)
        return out

    return build


def _camera_move(ep: Episode, rng: np.random.Generator, cfg: PaperQAConfig, ask: _Questions) -> list[dict]:
    ok = ep.frame_valid & np.isfinite(ep.camera_pose).all((1, 2))
    chosen = []
    # Oversample: pairs where the camera stood still are dropped, the rest kept in drawn order.
    for a, b in _sample_pairs(rng, ok, cfg, 4 * cfg.per_type):
        if len(chosen) >= cfg.per_type:
            break
        rm = relative_motion(ep.camera_pose[a], ep.camera_pose[b])
        static = rm.angle_deg < cfg.static_angle_deg and np.linalg.norm(rm.translation) < cfg.static_translation
        if not static or cfg.include_static_camera:
            chosen.append((a, b, rm, static))
    out = []
    for a, b, rm, static in sorted(chosen, key=lambda c: (c[0], c[1])):
        t = rm.translation.astype(np.float64)
        q = ask()
        tgt = _vec_target(t, cfg.gamma, a, axis=[float(x) for x in rm.axis], angle_deg=float(rm.angle_deg),
                          rotation_signs=[int(s) for s in direction_signs(rm.axis, cfg.gamma, 0.0)]
                          if rm.angle_deg >= cfg.static_angle_deg else [0, 0, 0], static=bool(static))
        out.append(_record(ep, "camera_movement", None, [a, b], q,
                           encode_camera_motion(rm.axis, rm.angle_deg, t, cfg.gamma,
                                                still_angle_deg=cfg.static_angle_deg), tgt))
    return out


# ----------------------------------------------------------------------------- motion records


def coarse_waypoints(frames: np.ndarray, step: int, max_waypoints: int) -> tuple[np.ndarray, int]:
    """The valid grid ``frames`` (multiples of ``step``) thinned to a k * step period so that at
    most ``max_waypoints`` remain, starting at the first; returns (frames, k)."""
    k = 1
    while True:
        keep = frames[(frames - frames[0]) % (k * step) == 0]
        if len(keep) <= max_waypoints:
            return keep, k
        k += 1


def _tokens(tok: MotionTokenizer, xyz: np.ndarray) -> tuple[str, int]:
    idx, clipped = tok.encode(xyz, return_clipped=True)
    return tok.to_text(idx), int(clipped.sum())


def _motion_records(v: EpisodeView, p: TaskParams) -> list[dict]:
    """The records of the three paper motion kinds, per hand (memoised on ``v``)."""
    key = ("paper-motion", p)
    if key in v.memo:
        return v.memo[key]
    ep, cfg = v.episode, p.motion or PaperMotionConfig()
    tok = p.tokenizer or MotionTokenizer()
    tpls = _templates(v, p, "motion")
    instr = clean_instruction(p.instruction) if p.instruction is not None else episode_instruction(ep, p.seed)
    step = stride_frames(ep.fps, cfg.stride_s)
    grid = np.arange(0, ep.num_frames, step)
    out: list[dict] = []
    for side in HANDS:
        ok = hand_valid_frames(ep, side, require_visible=cfg.require_visible)
        wp_frames = grid[ok[grid]]
        if len(wp_frames) < 2:
            continue
        rng = episode_rng(ep.episode_id, p.seed, f"motion:{side}")
        trng = episode_rng(ep.episode_id, p.seed, f"motion-questions:{side}")  # templates only
        fmt = dict(hand=side, instruction=inline_instruction(instr), stride_s=f"{cfg.stride_s:g}")

        def base(kind: str, frames: list[int], ref: int, xyz: np.ndarray, wf: np.ndarray,
                 period: int) -> dict[str, Any]:
            text, n_clip = _tokens(tok, xyz)
            return {"id": "", "type": kind, "episode_id": ep.episode_id, "hand": side,
                    "frames": [int(f) for f in frames], "question": "", "answer": "",
                    "tokens": text, "waypoints": np.asarray(xyz, np.float32).tolist(),
                    "waypoint_frames": [int(f) for f in wf], "stride_frames": int(period),
                    "stride_s": float(cfg.stride_s), "frame_of_reference": int(ref),
                    "clipped": n_clip, "instruction": instr}

        # Whole trajectory: instruction_to_motion and motion_to_text.
        wf, mult = coarse_waypoints(wp_frames, step, cfg.max_waypoints)
        ref = int(wf[0])
        xyz = wrist_in_frame(v, side, wf, ref)
        if cfg.low_motion(xyz):
            r = base("instruction_to_motion", [ref], ref, xyz, wf, mult * step)
            r["question"] = pick(trng, tpls["instruction_to_motion"]).format(**fmt, n_waypoints=len(wf))
            r["answer"] = r["tokens"]
            out.append(r)
            r = base("motion_to_text", [ref], ref, xyz, wf, mult * step)
            vec = xyz[-1] - xyz[0]
            motion = encode_direction_distance(vec, cfg.gamma)
            r["question"] = pick(trng, tpls["motion_to_text"]).format(**fmt, tokens=r["tokens"])
            r["answer"] = pick(trng, tpls["motion_to_text_answer"]).format(hand=side, motion=motion)
            r["target"] = {"vector": [float(x) for x in vec], "distance": float(np.linalg.norm(vec)),
                           "frame_of_reference": ref}
            out.append(r)

        cands = [int(f) for f in wp_frames
                 if np.sum((wp_frames > f) & (wp_frames <= f + cfg.n_future * step)) >= cfg.min_future]
        order = rng.permutation(len(cands)) if cands else []
        kept = 0
        for i in order:
            if kept >= cfg.per_hand_contextual:
                break
            r0 = cands[int(i)]
            fut = wp_frames[(wp_frames > r0) & (wp_frames <= r0 + cfg.n_future * step)]
            past = wp_frames[(wp_frames < r0) & (wp_frames >= r0 - cfg.n_past * step)]
            past = np.concatenate([past, [r0]]).astype(np.int64)
            fut_xyz = wrist_in_frame(v, side, fut, r0)
            past_xyz = wrist_in_frame(v, side, past, r0)
            if not cfg.low_motion(np.concatenate([past_xyz[-1:], fut_xyz])):
                continue
            r = base("contextual_prediction", [r0], r0, fut_xyz, fut, step)
            past_text, past_clip = _tokens(tok, past_xyz)
            r.update(past_tokens=past_text, past_waypoints=np.asarray(past_xyz, np.float32).tolist(),
                     past_frames=[int(f) for f in past], clipped=r["clipped"] + past_clip)
            r["question"] = pick(trng, tpls["contextual_prediction"]).format(
                **fmt, past_tokens=past_text, n_waypoints=len(fut))
            r["answer"] = r["tokens"]
            out.append(r)
            kept += 1
    if cfg.drop_clipped:
        out = [r for r in out if r["clipped"] == 0]
    v.memo[key] = out
    return out


def _motion_kind(task: str):
    """The builder of paper motion task ``task``: its records, in hand then frame order."""

    def build(v: EpisodeView, p: TaskParams) -> list[dict]:
        recs = [dict(r) for r in _motion_records(v, p) if r["type"] == task]
        return sorted(recs, key=lambda r: (HANDS.index(r["hand"]), r["frames"][0]))

    return build


_QA_DOC = {
    "spatial_relationship": "Object box centre - palm centre in the last of 1-4 images, with contact (module docstring).",
    "task_completion": "Wrist at the goal (next grasp onset, else the end) - wrist now, with the instruction.",
    "hand_movement": "Wrist displacement between two images (a -> b, in camera a). No trained variant: two images.",
    "camera_movement": "Camera b's pose in camera a (axis-angle + translation). No trained variant: two images.",
}
_QA_ANSWER = {"spatial_relationship": "relation", "task_completion": "direction_distance",
              "hand_movement": "direction_distance", "camera_movement": "camera_motion"}
_MOTION_DOC = {
    "instruction_to_motion": "Instruction + first image -> tokens of the whole wrist trajectory (<= 16 waypoints).",
    "motion_to_text": "Tokens of the whole trajectory -> its net displacement in words.",
    "contextual_prediction": "Image at r + past waypoints up to r -> the next n_future waypoints.",
}
_MOTION_ANSWER = {"instruction_to_motion": "motion_tokens", "motion_to_text": "direction_distance",
                  "contextual_prediction": "motion_tokens"}

for _name in PAPER_QA_TYPES:
    register(TaskKind(_name, "stage1", "", _QA_ANSWER[_name], _qa_kind(_name), templates="qa",
                      doc=_QA_DOC[_name]), trained=False)
for _name in PAPER_MOTION_TASKS:
    register(TaskKind(_name, "stage2", "", _MOTION_ANSWER[_name], _motion_kind(_name), stride_s=PAPER_MOTION_STRIDE_S,
                      templates="motion", doc=_MOTION_DOC[_name]), trained=False)

