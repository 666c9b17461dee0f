"""Allowed ranges of numbers, one rule and one message for config fields and command-line flags.

``Range(lo, hi, above, integer).problem(v)`` says what is wrong with ``v`` (or None); ``flag(...)``
is the same rule as an argparse ``type``, so a flag out of range stops at parsing with argparse's
usage error naming the flag, before anything is read or written.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Callable, NamedTuple


class Range(NamedTuple):
    """Allowed values of a number: ``lo`` <= v (``lo`` < v when ``above``), v <= ``hi`` (v < ``hi`` when
    ``below``) unless ``hi`` is None, and a whole number when ``integer``. NaN is never allowed."""

    lo: float
    hi: float | None = None
    above: bool = False
    integer: bool = False
    below: bool = False

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (a one-line phrase), or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"expected a number, got {json.dumps(value)[:40]}"
        if self.integer and not isinstance(value, int):
            return f"expected an integer, got {value}"
        if math.isnan(value):
            return "expected a number, got nan"
        if self.hi is not None:
            ok = (self.lo < value if self.above else self.lo <= value) and \
                (value < self.hi if self.below else value <= self.hi)
            return None if ok else (f"must be in {'(' if self.above else '['}{self.lo:g}, {self.hi:g}"
                                    f"{')' if self.below else ']'}, got {value}")
        if self.above:
            return None if value > self.lo else f"must be > {self.lo:g}, got {value}"
        return None if value >= self.lo else f"must be >= {self.lo:g}, got {value}"


def flag(rng: Range) -> Callable[[str], int | float]:
    """An argparse ``type`` that parses an int (``rng.integer``) or a float and refuses values outside
    ``rng``; the parser function carries ``.range`` for tests and help checks."""

    def parse(text: str) -> int | float:
        try:
            value: int | float = int(text) if rng.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if rng.integer else 'a number'}, got {text!r}") from None
        problem = rng.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = "int" if rng.integer else "float"
    parse.range = rng  # type: ignore[attr-defined]
    return parse


def count(lo: int = 1) -> Callable[[str], int | float]:
    """A whole number >= ``lo`` (counts, steps, sizes in pixels; ``lo`` 0 where 0 means "off" or "all")."""
    return flag(Range(lo, integer=True))


def positive() -> Callable[[str], int | float]:
    """A number > 0 (seconds, rates, scales)."""
    return flag(Range(0.0, above=True))


def nonnegative() -> Callable[[str], int | float]:
    """A number >= 0 (weights, noise levels)."""
    return flag(Range(0.0))


def fraction() -> Callable[[str], int | float]:
    """A number in [0, 1]."""
    return flag(Range(0.0, 1.0))


def tcp_port() -> Callable[[str], int | float]:
    """A TCP port, 0 (any free port) to 65535."""
    return flag(Range(0, 65535, integer=True))


def field_of_view() -> Callable[[str], int | float]:
    """A field of view in degrees, in (0, 180)."""
    return flag(Range(0.0, 180.0, above=True, below=True))
