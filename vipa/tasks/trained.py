"""The kinds the model trains on: single-frame variants of the paper's kinds (``vipa.tasks.paper``).

The current model sees one image and predicts from the hand's wrist, so each trained kind is
the paper kind's concept reduced to that: one frame, the main hand's wrist as the hand point,
one fixed wording (the checkpoints were trained with it), a sample at every usable frame and
waypoints at the model's stride (``TaskParams.stride_s``, the model config's
``motion_stride_s``). Both exist because the paper kinds are the dataset's products (several
images, both hands, templated wording, sampled frames) and the trained kinds are what the
single-frame model can learn; ``doc`` of each says how it differs from the kind it is a
variant of. Their records must not change: ``checkpoints/tiny_sample``'s evaluation depends on
them (``tests/test_tasks.py``).
"""

from __future__ import annotations

import numpy as np

from vipa.tasks.base import (
    MIN_TASK_DISTANCE,
    MOTION_STRIDE_S,
    EpisodeView,
    TaskKind,
    TaskParams,
    motion_record,
    motion_text,
    prompt,
    qa_record,
    register,
    stride_frames,
    waypoints,
)
import vipa.tasks.paper  # noqa: F401  (the kinds these are variants of, registered first)


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


register(TaskKind(
    "spatial", "stage1", "Where is the {object} relative to the {hand} hand?", "direction_distance", _spatial,
    variant_of="spatial_relationship",
    doc="Object centre - wrist at frame t, for every usable frame and visible object. Differs from "
        "spatial_relationship: one image (not 1-4), the wrist (not the palm centre) as the hand point, "
        "no contact flag, every (frame, object) pair rather than a few sampled ones."))
register(TaskKind(
    "task", "stage1", "How should the {hand} hand move to {instruction}?", "direction_distance", _task,
    variant_of="task_completion",
    doc="Last known wrist of the episode - wrist at t (in camera t), at every frame at least "
        "MIN_TASK_DISTANCE from it. Differs from task_completion: the goal is always the episode end "
        "(not the next grasp onset), every frame rather than sampled ones."))
register(TaskKind(
    "gen", "stage2", "Predict the {hand} wrist motion to {instruction}.", "motion_tokens", _gen,
    stride_s=MOTION_STRIDE_S, variant_of="instruction_to_motion",
    doc="Instruction + image at t -> the next n_future wrist waypoints (held at the last known wrist). "
        "Differs from instruction_to_motion: the future from every frame t at the model's stride, not "
        "the whole trajectory from the first frame."))
register(TaskKind(
    "translate", "stage2", "Describe this motion: {motion}", "instruction", _translate,
    stride_s=MOTION_STRIDE_S, variant_of="motion_to_text",
    doc="Motion tokens of gen's waypoints -> the instruction. Differs from motion_to_text: the answer "
        "is the instruction, not the net displacement in words."))
register(TaskKind(
    "context", "stage2", "Past motion: {past}. Predict the next motion.", "motion_tokens", _context,
    stride_s=MOTION_STRIDE_S, variant_of="contextual_prediction",
    doc="Image at t + the n_past waypoints before t -> the next n_future waypoints. Differs from "
        "contextual_prediction: every frame with a known past rather than a few sampled per hand, "
        "the model's stride and fixed wording."))
