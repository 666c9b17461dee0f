"""Template text of the task kinds and the instruction wording they use.

Templates are data: JSON files in ``vipa/tasks/templates/`` (package data) holding lists of
strings with ``str.format`` placeholders: ``qa.json`` and ``motion.json`` (the paper kinds'
prompts, keyed by kind), ``instructions.json`` (fallback task instructions).
``load_templates`` checks that each list holds strings and that only the placeholders a caller
allows are used, and names the file and key when not.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


class TemplateError(ValueError):
    """A template file is missing, is not valid JSON, or uses an unknown placeholder."""


def placeholders(template: str) -> set[str]:
    """The ``{name}`` fields of a format string."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def load_templates(name_or_path: str | Path, allowed: Mapping[str, Iterable[str]] | None = None
                   ) -> dict[str, list[str]]:
    """Template lists from ``templates/<name>.json`` (or a path to a JSON file).

    Keys starting with "_" are comments. ``allowed`` maps a key to the placeholders its
    templates may use; every key in ``allowed`` must be present with at least one template.
    """
    p = Path(name_or_path)
    if p.suffix != ".json":
        p = TEMPLATES_DIR / f"{name_or_path}.json"
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TemplateError(f"{p}: template file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TemplateError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise TemplateError(f"{p}: expected a JSON object of template lists, got {type(raw).__name__}")
    return check_templates(raw, allowed, str(p))


def check_templates(raw: Mapping[str, Any], allowed: Mapping[str, Iterable[str]] | None = None,
                    where: str = "templates") -> dict[str, list[str]]:
    """Validated copy of a template mapping (see ``load_templates``); errors name ``where``."""
    out: dict[str, list[str]] = {}
    for key, val in raw.items():
        if key.startswith("_"):
            continue
        if not (isinstance(val, (list, tuple)) and val and all(isinstance(s, str) and s.strip() for s in val)):
            raise TemplateError(f"{where}: {key!r} must be a non-empty list of non-empty strings")
        out[key] = list(val)
    for key, names in (allowed or {}).items():
        if key not in out:
            raise TemplateError(f"{where}: missing template list {key!r}")
        for tpl in out[key]:
            try:
                used = placeholders(tpl)
            except ValueError as e:
                raise TemplateError(f"{where}: {key!r}: malformed template {tpl!r} ({e})") from None
            unknown = used - set(names)
            if unknown:
                raise TemplateError(f"{where}: {key!r}: template {tpl!r} uses unknown placeholder(s) "
                                    f"{sorted(unknown)}; allowed: {sorted(names)}")
    return out


def pick(rng: np.random.Generator, templates: Sequence[str]) -> str:
    """One of ``templates``, drawn with ``rng``."""
    return templates[int(rng.integers(len(templates)))]


def clean_instruction(text: str) -> str:
    """One line, single spaces, no trailing period (templates add their own punctuation)."""
    return " ".join(text.split()).rstrip(" .")


def inline_instruction(text: str) -> str:
    """The instruction for use inside a sentence: first letter lower-cased unless an acronym."""
    text = clean_instruction(text)
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def template_instruction(object_names: Sequence[str] = (), seed: int = 0,
                         templates: Mapping[str, Sequence[str]] | None = None) -> str:
    """A template instruction (``templates/instructions.json``), naming one of ``object_names``
    when there are any."""
    t = templates or load_templates("instructions", {"with_object": {"object"}, "without_object": set()})
    rng = np.random.default_rng(seed)
    names = [n for n in object_names if n and n.strip()]
    if names:
        return clean_instruction(pick(rng, t["with_object"]).format(object=names[int(rng.integers(len(names)))]))
    return clean_instruction(pick(rng, t["without_object"]))


def episode_instruction(episode: Any, seed: int = 0) -> str:
    """``episode.instruction`` cleaned, or a template one from its object names (not stored)."""
    text = clean_instruction(episode.instruction or "")
    return text or template_instruction([o.name for o in episode.objects], seed)
