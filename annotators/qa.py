"""The QA stage: Hand3D-visual QA records of an annotated Episode (``derived/qa.jsonl``).

The kinds, their builders, prompts and answer formats are defined in ``vipa.tasks`` (the
paper's four QA types in ``vipa.tasks.paper``, the QA kinds the model trains on in
``vipa.tasks.trained``); this stage picks the kinds and knobs and calls
``vipa.tasks.build_records``. The paper records come first (ids "<episode>:qa:<k>", by type,
hand, then frame), then, with ``training`` (default), those of the trained QA kinds
("spatial", "task"; ids "<episode>:stage1:<k>"), which training reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from vipa.data.episode import Episode
from vipa.tasks import PAPER_QA_TYPES, PaperQAConfig, TaskParams, build_records, trained_kinds
from vipa.tasks.paper import qa_template_fields, qa_templates  # noqa: F401  (qa_templates re-exported)
from vipa.tasks.text import check_templates

QA_TYPES = PAPER_QA_TYPES


@dataclass(frozen=True)
class QAConfig(PaperQAConfig):
    """The paper QA types to build (``types``), their knobs (``vipa.tasks.PaperQAConfig``) and
    whether the trained QA kinds' records follow (``training``)."""

    types: tuple[str, ...] = QA_TYPES
    training: bool = True  # also the records of the QA kinds the model trains on (vipa.tasks)

    def __post_init__(self) -> None:
        bad = set(self.types) - set(QA_TYPES)
        if bad:
            raise ValueError(f"types: unknown QA type(s) {sorted(bad)}; known: {QA_TYPES}")
        super().__post_init__()


def generate_qa(episode: Episode, *, seed: int = 0, config: QAConfig | None = None,
                templates: Mapping[str, list[str]] | None = None, instruction: str | None = None,
                **overrides: Any) -> list[dict]:
    """Hand3D-visual QA records of one episode (``vipa.tasks.paper``); ``overrides`` set
    ``QAConfig`` fields. Hands with no valid frame give no records; the order is by type,
    hand, then frame. With ``training`` (default) the records of the QA kinds the model trains
    on follow (types "spatial" and "task")."""
    cfg = replace(config or QAConfig(), **overrides)
    tpls = check_templates(templates, qa_template_fields(cfg.types), "templates") if templates is not None else None
    kinds = list(cfg.types) + (list(trained_kinds("stage1")) if cfg.training else [])
    params = TaskParams(seed=seed, instruction=instruction, qa=cfg, templates=tpls)
    return build_records(episode, "stage1", params, kinds)
