"""Task instructions for episodes, and the loader of the text templates (``annotators/templates``).

Where an instruction comes from, first match wins:

1. the user (``user=``: a command-line flag or the app);
2. a sidecar text file beside the input: ``clip.txt`` for ``clip.mp4``, ``frames.txt`` or
   ``frames/instruction.txt`` for an image folder ``frames/`` (the first non-empty line);
3. a JSON mapping ``{"clip.mp4" | "clip" | "/abs/path/clip.mp4": "instruction", ...}``, given
   as ``mapping=`` or found as ``instructions.json`` in the input's folder;
4. a template instruction drawn with the seed from ``templates/instructions.json``, using an
   object name of the episode when there is one ("pick up the red cup").

Templates are data: JSON files in ``annotators/templates/`` holding lists of strings with
``str.format`` placeholders. ``load_templates`` checks that each list holds strings and that
only the placeholders a caller allows are used, and names the file and key when not.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
SOURCES = ("user", "sidecar-txt", "sidecar-json", "template")


class TemplateError(ValueError):
    """A template file is missing, is not valid JSON, or uses an unknown placeholder."""


@dataclass(frozen=True)
class Instruction:
    """A task instruction and where it came from (one of ``SOURCES``; ``path`` for sidecars)."""

    text: str
    source: str
    path: str = ""


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
    return templates[int(rng.integers(len(templates)))]


def clean_instruction(text: str) -> str:
    """One line, single spaces, no trailing period (templates add their own punctuation)."""
    return " ".join(text.split()).rstrip(" .")


def inline_instruction(text: str) -> str:
    """The instruction for use inside a sentence: first letter lower-cased unless an acronym."""
    text = clean_instruction(text)
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def _first_line(p: Path) -> str:
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: instruction sidecar is not UTF-8 text ({e})") from None
    for line in text.splitlines():
        if line.strip():
            return clean_instruction(line)
    return ""


def _sidecar_txt(path: Path) -> Path | None:
    cands = [path.with_suffix(".txt")] if path.suffix else []
    cands.append(path.parent / f"{path.name}.txt")
    if path.is_dir():
        cands.append(path / "instruction.txt")
    for c in cands:
        if c != path and c.is_file():
            return c
    return None


def _from_mapping(path: Path | None, mapping: Path | Mapping[str, str] | None) -> tuple[str, str] | None:
    src = ""
    if mapping is None and path is not None and (path.parent / "instructions.json").is_file():
        mapping = path.parent / "instructions.json"
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping):
        src = str(mapping)
        try:
            mapping = json.loads(Path(mapping).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"{src}: instruction mapping file not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{src}: instruction mapping is not valid JSON ({e})") from None
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"{src}: instruction mapping must be a JSON object of strings")
    if path is None:
        return None
    for key in (str(path.resolve()), str(path), path.name, path.stem):
        if key in mapping and clean_instruction(mapping[key]):
            return clean_instruction(mapping[key]), src
    return None


def template_instruction(object_names: Sequence[str] = (), seed: int = 0,
                         templates: Mapping[str, Sequence[str]] | None = None) -> str:
    """A template instruction, naming one of ``object_names`` when there are any."""
    t = templates or load_templates("instructions", {"with_object": {"object"}, "without_object": set()})
    rng = np.random.default_rng(seed)
    names = [n for n in object_names if n and n.strip()]
    if names:
        return clean_instruction(pick(rng, t["with_object"]).format(object=names[int(rng.integers(len(names)))]))
    return clean_instruction(pick(rng, t["without_object"]))


def resolve_instruction(video_path: str | Path | None = None, user: str | None = None,
                        mapping: str | Path | Mapping[str, str] | None = None,
                        object_names: Sequence[str] = (), seed: int = 0) -> Instruction:
    """The instruction for one input, by the precedence in the module docstring."""
    if user is not None and clean_instruction(user):
        return Instruction(clean_instruction(user), "user")
    path = Path(video_path) if video_path is not None else None
    if path is not None:
        side = _sidecar_txt(path)
        if side is not None:
            text = _first_line(side)
            if text:
                return Instruction(text, "sidecar-txt", str(side))
    found = _from_mapping(path, mapping)
    if found is not None:
        return Instruction(found[0], "sidecar-json", found[1])
    return Instruction(template_instruction(object_names, seed), "template")


def episode_instruction(episode, seed: int = 0) -> str:
    """``episode.instruction`` cleaned, or a template one from its object names (not stored)."""
    text = clean_instruction(episode.instruction or "")
    return text or template_instruction([o.name for o in episode.objects], seed)
