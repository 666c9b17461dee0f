"""The motion stage: Hand3D-action samples of an annotated Episode (``derived/motion.jsonl``).

The kinds, their builders, prompts, answer formats and strides are defined in ``vipa.tasks``
(the paper's three motion tasks in ``vipa.tasks.paper``, stride 0.2 s; the motion kinds the
model trains on in ``vipa.tasks.trained``, stride ``vipa.tasks.MOTION_STRIDE_S``); this stage
picks the kinds and knobs and calls ``vipa.tasks.build_records``. The paper records come first
(ids "<episode>:motion:<k>", by task, hand, then frame), then, with ``training`` (default),
those of the trained motion kinds ("gen", "translate", "context"; ids
"<episode>:stage2:<k>"), which training reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from vipa.data.episode import Episode
from vipa.data.motion import MotionTokenizer
from vipa.tasks import PAPER_MOTION_TASKS, PaperMotionConfig, TaskParams, build_records, stride_frames, trained_kinds
from vipa.tasks.paper import motion_template_fields, motion_templates  # noqa: F401  (re-exported)
from vipa.tasks.text import check_templates

MOTION_TASKS = PAPER_MOTION_TASKS
__all__ = ["MOTION_TASKS", "MotionConfig", "motion_samples", "motion_templates", "stride_frames"]


@dataclass(frozen=True)
class MotionConfig(PaperMotionConfig):
    """The paper motion tasks to build (``tasks``), their knobs (``vipa.tasks.PaperMotionConfig``)
    and whether the trained motion kinds' records follow (``training``)."""

    tasks: tuple[str, ...] = MOTION_TASKS
    training: bool = True  # also the records of the motion kinds the model trains on (vipa.tasks)

    def __post_init__(self) -> None:
        bad = set(self.tasks) - set(MOTION_TASKS)
        if bad:
            raise ValueError(f"tasks: unknown task(s) {sorted(bad)}; known: {MOTION_TASKS}")
        super().__post_init__()


def motion_samples(episode: Episode, *, seed: int = 0, config: MotionConfig | None = None,
                   tokenizer: MotionTokenizer | None = None, templates: Mapping[str, list[str]] | None = None,
                   instruction: str | None = None, **overrides: Any) -> list[dict]:
    """Hand3D-action records of one episode (``vipa.tasks.paper``); ``overrides`` set MotionConfig
    fields. With ``training`` (default) the records of the motion kinds the model trains on
    follow (types "gen", "translate", "context")."""
    cfg = replace(config or MotionConfig(), **overrides)
    tpls = check_templates(templates, motion_template_fields(), "templates") if templates is not None else None
    kinds = [t for t in MOTION_TASKS if t in cfg.tasks] + (list(trained_kinds("stage2")) if cfg.training else [])
    params = TaskParams(seed=seed, instruction=instruction, motion=cfg, templates=tpls, tokenizer=tokenizer)
    return build_records(episode, "stage2", params, kinds)
