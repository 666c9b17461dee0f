"""Task instructions for the inputs of an annotation run.

Where an instruction comes from, first match wins:

1. the user (``user=``: a command-line flag or the app);
2. a sidecar text file beside the input: ``clip.txt`` for ``clip.mp4``, ``frames.txt`` or
   ``frames/instruction.txt`` for an image folder ``frames/`` (the first non-empty line);
3. a JSON mapping ``{"clip.mp4" | "clip" | "/abs/path/clip.mp4": "instruction", ...}``, given
   as ``mapping=`` or found as ``instructions.json`` in the input's folder;
4. a template instruction drawn with the seed from ``vipa/tasks/templates/instructions.json``,
   using an object name of the episode when there is one ("pick up the red cup").

The templates, their loader and the instruction wording live with the task kinds
(``vipa.tasks.text``) and are re-exported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from vipa.tasks.text import (  # noqa: F401  (re-exported: the annotators' and tests' names)
    TEMPLATES_DIR,
    TemplateError,
    check_templates,
    clean_instruction,
    episode_instruction,
    inline_instruction,
    load_templates,
    pick,
    placeholders,
    template_instruction,
)

SOURCES = ("user", "sidecar-txt", "sidecar-json", "template")


@dataclass(frozen=True)
class Instruction:
    """A task instruction and where it came from (one of ``SOURCES``; ``path`` for sidecars)."""

    text: str
    source: str
    path: str = ""


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
