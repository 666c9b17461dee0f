"""Hand3D-visual QA from an annotated Episode: the paper's four question types.

Every vector is in the camera frame of one frame of the record (OpenCV, metres), named in
``target["frame_of_reference"]``; positions from other frames are moved into it with the
episode's ``camera_pose`` (world_from_camera), so a moving camera does not leak into hand
motion.

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
rule during a grasp; ``require_visible=True`` also requires the ``valid`` flags. Records are JSON-serialisable dicts:
``{"id", "type", "episode_id", "hand", "frames", "question", "answer", "target"}`` with
``target = {"vector": [x, y, z], "distance": m, "signs": [..], "frame_of_reference": i, ...}``.
Sampling is deterministic for a given seed and episode id.

After these paper records come the records of the kinds the model trains on, built by
``vipa.tasks`` (``training=False`` leaves them out); training reads those.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np

from annotators.language import check_templates, episode_instruction, inline_instruction, load_templates, pick
from vipa.conventions import FINGERTIPS, HANDS, INDEX_MCP, MIDDLE_MCP, PINKY_MCP, WRIST
from vipa.data.episode import Episode
from vipa.data.qa import (
    DEFAULT_GAMMA,
    direction_signs,
    encode_camera_motion,
    encode_direction_distance,
    encode_relation,
)
from vipa.geometry import invert_transform, relative_motion, transform_points
from vipa.tasks import PAPER_QA_TYPES, build_records

QA_TYPES = PAPER_QA_TYPES
PALM_JOINTS = (WRIST, INDEX_MCP, MIDDLE_MCP, PINKY_MCP)
_PLACEHOLDERS = {"hand", "object", "instruction", "n_frames"}


@dataclass(frozen=True)
class QAConfig:
    """Knobs of QA generation; defaults are the documented choices of the module docstring."""

    types: tuple[str, ...] = QA_TYPES
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
    training: bool = True  # also the records of the QA kinds the model trains on (vipa.tasks)

    def __post_init__(self) -> None:
        bad = set(self.types) - set(QA_TYPES)
        if bad:
            raise ValueError(f"types: unknown QA type(s) {sorted(bad)}; known: {QA_TYPES}")
        if self.task_goal not in ("auto", "grasp", "end"):
            raise ValueError(f"task_goal: expected 'auto', 'grasp' or 'end', got {self.task_goal!r}")
        if not 1 <= self.max_context_frames <= 4:
            raise ValueError(f"max_context_frames: expected 1..4, got {self.max_context_frames}")
        if not 1 <= self.min_gap <= self.max_gap:
            raise ValueError(f"min_gap/max_gap: need 1 <= min_gap <= max_gap, got {self.min_gap}, {self.max_gap}")


def qa_templates(path: str | None = None) -> dict[str, list[str]]:
    """The question templates (``templates/qa.json`` or ``path``), checked."""
    return load_templates(path or "qa", {t: _PLACEHOLDERS for t in QA_TYPES})


def episode_rng(episode_id: str, seed: int, salt: str = "") -> np.random.Generator:
    """A generator that depends on the seed and the episode id (so episodes differ)."""
    return np.random.default_rng([seed, zlib.crc32(f"{salt}:{episode_id}".encode())])


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


def to_frame(ep: Episode, point: np.ndarray, src: int, dst: int) -> np.ndarray:
    """A point (3,) in camera ``src``'s frame expressed in camera ``dst``'s frame (float64)."""
    if src == dst:
        return np.asarray(point, np.float64)
    dst_from_src = invert_transform(ep.camera_pose[dst].astype(np.float64)) @ ep.camera_pose[src].astype(np.float64)
    return transform_points(dst_from_src, np.asarray(point, np.float64)).astype(np.float64)


# ----------------------------------------------------------------------------- records


def _vec_target(v: np.ndarray, gamma: float, frame_ref: int, **extra: Any) -> dict[str, Any]:
    return {"vector": [float(x) for x in v], "distance": float(np.linalg.norm(v)),
            "signs": [int(s) for s in direction_signs(v, gamma)], "frame_of_reference": int(frame_ref), **extra}


def _record(ep: Episode, qa_type: str, hand: str | None, frames: Sequence[int], question: str,
            answer: str, target: dict[str, Any]) -> dict[str, Any]:
    return {"id": "", "type": qa_type, "episode_id": ep.episode_id, "hand": hand,
            "frames": [int(f) for f in frames], "question": question, "answer": answer, "target": target}


class _Questions:
    """Draws question templates with its own generator, so the sampled frames and answers do
    not depend on how many templates there are."""

    def __init__(self, templates: list[str], rng: np.random.Generator) -> None:
        self.templates, self.rng = templates, rng

    def __call__(self, **kw: Any) -> str:
        return pick(self.rng, self.templates).format(**{k: kw.get(k, "") for k in _PLACEHOLDERS})


def _sample_pairs(rng: np.random.Generator, ok: np.ndarray, cfg: QAConfig, n: int) -> list[tuple[int, int]]:
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


def _spatial(ep: Episode, side: str, rng: np.random.Generator, cfg: QAConfig, ask: _Questions) -> list[dict]:
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
        v = obj.center[t].astype(np.float64) - hand_pt
        contact = tip_dist <= cfg.contact_threshold
        q = ask(hand=side, object=obj.name or obj.object_id, n_frames=len(frames))
        tgt = _vec_target(v, cfg.gamma, t, in_contact=bool(contact), fingertip_box_distance=tip_dist,
                          object_id=obj.object_id, object_name=obj.name, anchor=anchor,
                          hand_point=[float(x) for x in hand_pt], object_center=[float(x) for x in obj.center[t]])
        out.append(_record(ep, "spatial_relationship", side, frames, q,
                           encode_relation(v, contact, cfg.gamma), tgt))
    return out


def _task_goals(ep: Episode, side: str, ok: np.ndarray, cfg: QAConfig) -> tuple[np.ndarray, np.ndarray]:
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


def _task(ep: Episode, side: str, rng: np.random.Generator, cfg: QAConfig, ask: _Questions,
          instruction: str) -> list[dict]:
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
        v = to_frame(ep, wr[g], g, t) - wr[t]
        q = ask(hand=side, instruction=instruction)
        tgt = _vec_target(v, cfg.gamma, t, goal="grasp" if is_grasp[t] else "end", goal_frame=g)
        out.append(_record(ep, "task_completion", side, [t], q, encode_direction_distance(v, cfg.gamma), tgt))
    return out


def _hand_move(ep: Episode, side: str, rng: np.random.Generator, cfg: QAConfig, ask: _Questions) -> list[dict]:
    ok = hand_valid_frames(ep, side, require_visible=cfg.require_visible)
    wr = ep.hands[side].joints_3d[:, WRIST].astype(np.float64)
    out = []
    for a, b in sorted(_sample_pairs(rng, ok, cfg, cfg.per_type)):
        v = to_frame(ep, wr[b], b, a) - wr[a]
        q = ask(hand=side)
        out.append(_record(ep, "hand_movement", side, [a, b], q, encode_direction_distance(v, cfg.gamma),
                           _vec_target(v, cfg.gamma, a)))
    return out


def _camera_move(ep: Episode, rng: np.random.Generator, cfg: QAConfig, ask: _Questions) -> list[dict]:
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


def generate_qa(episode: Episode, *, seed: int = 0, config: QAConfig | None = None,
                templates: Mapping[str, list[str]] | None = None, instruction: str | None = None,
                **overrides: Any) -> list[dict]:
    """Hand3D-visual QA records of one episode (see module docstring); ``overrides`` set
    ``QAConfig`` fields. Hands with no valid frame give no records; the order is by type,
    hand, then frame. With ``training`` (default) the records of the QA kinds the model trains
    on follow (``vipa.tasks.build_records``, types "spatial" and "task")."""
    cfg = replace(config or QAConfig(), **overrides)
    tpls = (check_templates(templates, {t: _PLACEHOLDERS for t in cfg.types}, "templates")
            if templates is not None else qa_templates())
    ep = episode
    instr = inline_instruction(instruction if instruction is not None else episode_instruction(ep, seed))
    records: list[dict] = []
    for qa_type in cfg.types:
        rng = episode_rng(ep.episode_id, seed, qa_type)
        ask = _Questions(tpls[qa_type], episode_rng(ep.episode_id, seed, f"questions:{qa_type}"))
        if qa_type == "camera_movement":
            records += _camera_move(ep, rng, cfg, ask)
            continue
        for side in HANDS:
            if not hand_valid_frames(ep, side, require_visible=cfg.require_visible).any():
                continue
            if qa_type == "spatial_relationship":
                recs = _spatial(ep, side, rng, cfg, ask)
                recs.sort(key=lambda r: (r["frames"][-1], r["target"]["object_id"]))
            elif qa_type == "task_completion":
                recs = _task(ep, side, rng, cfg, ask, instr)
            else:
                recs = _hand_move(ep, side, rng, cfg, ask)
            records += recs
    for k, r in enumerate(records):
        r["id"] = f"{ep.episode_id}:qa:{k:04d}"
    if cfg.training:
        records += build_records(ep, "stage1")
    return records
