"""Typed errors of the annotation pipeline.

Every error names what is wrong and where (a path, a backend spec), so a batch run can record
it beside the episode and go on with the next input.

Public names: ``AnnotatorError`` (base), ``InputError`` (an input file or folder cannot be
used), ``BackendError`` (a hand/depth backend cannot be built, e.g. a missing weights path);
``warn`` prints a console warning for an input that is usable but off.
"""

from __future__ import annotations

from pathlib import Path


class AnnotatorError(Exception):
    """Base class of every error raised by ``annotators``."""


class InputError(AnnotatorError, ValueError):
    """An input (video, image folder, RGB-D sequence) cannot be read or is inconsistent.

    ``path`` is the offending file or folder, ``reason`` says what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across worker processes / Ray
        return (type(self), (self.path, self.reason))


class BackendError(AnnotatorError, ValueError):
    """A hand or depth backend cannot be created or run; ``spec`` names the backend."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"{spec}: {reason}")

    def __reduce__(self):
        return (type(self), (self.spec, self.reason))


def warn(where: str | Path, message: str, sink: list | None = None) -> str:
    """Print ``WARNING: where: message`` on the console (stderr) and append it to ``sink``.

    For inputs that are usable but off (a frame count the container overstates, a depth unit
    that disagrees with the hands): the run goes on, the user is told, and the episode keeps
    the text in ``extra["warnings"]``."""
    import sys

    text = f"{where}: {message}"
    print(f"WARNING: {text}", file=sys.stderr, flush=True)
    if sink is not None:
        sink.append(text)
    return text
