"""Hand3D-action samples from an annotated Episode: the paper's three motion-language tasks.

Waypoints are wrist positions (camera frame, metres) at frames taken every
``stride_s`` seconds (default 0.2 s: 5 waypoints a second, so 16 waypoints span 3.2 s; the
hand moves at most a few cm between them); frames where the wrist is unknown (frame dropped,
hand absent, NaN; with ``require_visible`` also hidden) are skipped, and ``waypoint_frames``
records which frames were used. All waypoints of a record are in
the camera frame of its reference frame (``frame_of_reference``, the image the model sees),
moved there with ``camera_pose`` when the camera moves. Tokens come from
``vipa.data.motion.MotionTokenizer`` (coordinates outside MOTION_RANGE are clipped; the count
is in ``clipped``; ``drop_clipped`` drops such records).

Tasks (``type``):

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
Records: ``{"id", "type", "episode_id", "hand", "frames", "question", "answer", "tokens",
"waypoints", "waypoint_frames", "frame_of_reference", "clipped", ...}`` (contextual records
add ``past_tokens``, ``past_waypoints``, ``past_frames``); ``question``/``answer`` are the
training text, ``tokens``/``waypoints`` the machine-readable target.

After these paper records come the records of the kinds the model trains on, built by
``vipa.tasks`` (``training=False`` leaves them out); training reads those.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from annotators.language import (
    check_templates,
    clean_instruction,
    episode_instruction,
    inline_instruction,
    load_templates,
    pick,
)
from annotators.qa import episode_rng, hand_valid_frames
from vipa.conventions import HANDS, WRIST
from vipa.data.episode import Episode
from vipa.data.motion import LowMotionFilter, MotionTokenizer
from vipa.data.qa import DEFAULT_GAMMA, encode_direction_distance
from vipa.geometry import invert_transform, transform_points
from vipa.tasks import PAPER_MOTION_STRIDE_S, PAPER_MOTION_TASKS, build_records, stride_frames

MOTION_TASKS = PAPER_MOTION_TASKS
_PLACEHOLDERS = {"hand", "instruction", "tokens", "past_tokens", "n_waypoints", "stride_s", "motion"}


@dataclass(frozen=True)
class MotionConfig:
    """Knobs of motion-sample generation; defaults as in the module docstring."""

    tasks: tuple[str, ...] = MOTION_TASKS
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
    training: bool = True  # also the records of the motion kinds the model trains on (vipa.tasks)

    def __post_init__(self) -> None:
        bad = set(self.tasks) - set(MOTION_TASKS)
        if bad:
            raise ValueError(f"tasks: unknown task(s) {sorted(bad)}; known: {MOTION_TASKS}")
        if not self.stride_s > 0:
            raise ValueError(f"stride_s: must be > 0, got {self.stride_s}")
        if self.max_waypoints < 2 or self.n_future < 1 or self.n_past < 0 or self.min_future < 1:
            raise ValueError("max_waypoints >= 2, n_future >= 1, n_past >= 0, min_future >= 1 required")


def _allowed() -> dict[str, set[str]]:
    allowed = {t: _PLACEHOLDERS for t in MOTION_TASKS}
    allowed["motion_to_text_answer"] = {"motion", "hand"}
    return allowed


def motion_templates(path: str | None = None) -> dict[str, list[str]]:
    """The prompt templates (``templates/motion.json`` or ``path``), checked."""
    return load_templates(path or "motion", _allowed())


def coarse_waypoints(frames: np.ndarray, step: int, max_waypoints: int) -> tuple[np.ndarray, int]:
    """The valid grid ``frames`` (multiples of ``step``) thinned to a k * step period so that at
    most ``max_waypoints`` remain, starting at the first; returns (frames, k)."""
    k = 1
    while True:
        keep = frames[(frames - frames[0]) % (k * step) == 0]
        if len(keep) <= max_waypoints:
            return keep, k
        k += 1


def wrist_in_frame(ep: Episode, side: str, frames: np.ndarray, ref: int) -> np.ndarray:
    """(N, 3) float64 wrist positions of ``frames`` expressed in camera ``ref``'s frame."""
    wr = ep.hands[side].joints_3d[frames, WRIST].astype(np.float64)
    poses = ep.camera_pose[frames].astype(np.float64)  # world_from_camera per frame
    ref_from_frame = invert_transform(ep.camera_pose[ref].astype(np.float64)) @ poses
    return transform_points(ref_from_frame, wr[:, None, :])[:, 0, :].astype(np.float64)


def _tokens(tok: MotionTokenizer, xyz: np.ndarray) -> tuple[str, int]:
    idx, clipped = tok.encode(xyz, return_clipped=True)
    return tok.to_text(idx), int(clipped.sum())


def motion_samples(episode: Episode, *, seed: int = 0, config: MotionConfig | None = None,
                   tokenizer: MotionTokenizer | None = None, templates: Mapping[str, list[str]] | None = None,
                   instruction: str | None = None, **overrides: Any) -> list[dict]:
    """Hand3D-action records of one episode (module docstring); ``overrides`` set MotionConfig fields.
    With ``training`` (default) the records of the motion kinds the model trains on follow
    (``vipa.tasks.build_records``: types "gen", "translate", "context", stride ``vipa.tasks.MOTION_STRIDE_S``)."""
    cfg = replace(config or MotionConfig(), **overrides)
    tok = tokenizer or MotionTokenizer()
    tpls = check_templates(templates, _allowed(), "templates") if templates is not None else motion_templates()
    ep = episode
    instr = clean_instruction(instruction) if instruction is not None else episode_instruction(ep, seed)
    step = stride_frames(ep.fps, cfg.stride_s)
    grid = np.arange(0, ep.num_frames, step)
    out: list[dict] = []
    for side in HANDS:
        ok = hand_valid_frames(ep, side, require_visible=cfg.require_visible)
        wp_frames = grid[ok[grid]]
        if len(wp_frames) < 2:
            continue
        rng = episode_rng(ep.episode_id, seed, f"motion:{side}")
        trng = episode_rng(ep.episode_id, seed, f"motion-questions:{side}")  # templates only
        fmt = dict(hand=side, instruction=inline_instruction(instr), stride_s=f"{cfg.stride_s:g}")

        def base(kind: str, frames: list[int], ref: int, xyz: np.ndarray, wf: np.ndarray,
                 period: int) -> dict[str, Any]:
            text, n_clip = _tokens(tok, xyz)
            return {"id": "", "type": kind, "episode_id": ep.episode_id, "hand": side,
                    "frames": [int(f) for f in frames], "question": "", "answer": "",
                    "tokens": text, "waypoints": np.asarray(xyz, np.float32).tolist(),
                    "waypoint_frames": [int(f) for f in wf], "stride_frames": int(period),
                    "frame_of_reference": int(ref),
                    "clipped": n_clip, "instruction": instr}

        # Whole trajectory: instruction_to_motion and motion_to_text.
        if {"instruction_to_motion", "motion_to_text"} & set(cfg.tasks):
            wf, mult = coarse_waypoints(wp_frames, step, cfg.max_waypoints)
            ref = int(wf[0])
            xyz = wrist_in_frame(ep, side, wf, ref)
            if cfg.low_motion(xyz):
                if "instruction_to_motion" in cfg.tasks:
                    r = base("instruction_to_motion", [ref], ref, xyz, wf, mult * step)
                    r["question"] = pick(trng, tpls["instruction_to_motion"]).format(**fmt, n_waypoints=len(wf))
                    r["answer"] = r["tokens"]
                    out.append(r)
                if "motion_to_text" in cfg.tasks:
                    r = base("motion_to_text", [ref], ref, xyz, wf, mult * step)
                    v = xyz[-1] - xyz[0]
                    motion = encode_direction_distance(v, cfg.gamma)
                    r["question"] = pick(trng, tpls["motion_to_text"]).format(**fmt, tokens=r["tokens"])
                    r["answer"] = pick(trng, tpls["motion_to_text_answer"]).format(hand=side, motion=motion)
                    r["target"] = {"vector": [float(x) for x in v], "distance": float(np.linalg.norm(v)),
                                   "frame_of_reference": ref}
                    out.append(r)

        if "contextual_prediction" in cfg.tasks:
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
                fut_xyz = wrist_in_frame(ep, side, fut, r0)
                past_xyz = wrist_in_frame(ep, side, past, r0)
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
    out.sort(key=lambda r: (MOTION_TASKS.index(r["type"]), HANDS.index(r["hand"]), r["frames"][0]))
    for k, r in enumerate(out):
        r["id"] = f"{ep.episode_id}:motion:{k:04d}"
    if cfg.training:
        out += build_records(ep, "stage2")
    return out
