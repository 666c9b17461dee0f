"""Wrist motion tokens (paper, "Hand3D-action") and the low-motion filter.

A waypoint is the wrist position (x, y, z) in the camera frame (OpenCV, metres). Each axis is
clipped to ``MOTION_RANGE`` (x, y in [-0.5, 0.5] m, z in [0, 1] m) and binned uniformly into
``MOTION_BINS`` = 1024 bins: bin i of an axis covers [lo + i*w, lo + (i+1)*w) with
w = (hi - lo)/1024 (0.98 mm here) and decodes to its centre lo + (i + 0.5)*w, so a point
inside the range decodes to within half a bin (0.49 mm) of itself. The upper edge hi falls in
the last bin. Points outside the range are clipped to it; ``encode`` reports which.

Vocabulary: one token set per axis, ``<mx_0000>`` .. ``<mx_1023>``, ``<my_...>``,
``<mz_...>``: 3 x 1024 = 3072 tokens, three per waypoint, always in the order x, y, z. Axis-
specific tokens let the LLM know which axis a token is without counting positions, and make a
sequence whose order is broken detectable. ``token_strings`` lists them in id order (x
tokens, then y, then z); ``ids`` / ``from_ids`` map to offsets 0..3071 inside that block, for
a model that adds them to its vocabulary. A waypoint sequence is written as text by
concatenating its tokens without separators: "<mx_0512><my_0300><mz_0700><mx_...>...".
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from vipa.conventions import MOTION_BINS, MOTION_RANGE

AXES = ("x", "y", "z")


class MotionTokenError(ValueError):
    """A motion-token sequence is malformed (unknown token, wrong axis order, incomplete)."""


class MotionClippedWarning(UserWarning):
    """Some waypoint coordinates lay outside MOTION_RANGE and were clipped."""


@dataclass(frozen=True)
class MotionTokenizer:
    """Uniform per-axis binning of camera-frame wrist positions into motion tokens."""

    bins: int = MOTION_BINS
    ranges: tuple[tuple[float, float], ...] = MOTION_RANGE
    _lo: np.ndarray = field(init=False, repr=False, compare=False)
    _hi: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.bins, (int, np.integer)) and 2 <= self.bins <= 10000):
            raise ValueError(f"bins: expected an int in [2, 10000], got {self.bins!r}")
        r = np.asarray(self.ranges, dtype=np.float64)
        if r.shape != (3, 2) or not np.all(r[:, 1] > r[:, 0]):
            raise ValueError(f"ranges: expected 3 (lo, hi) pairs with hi > lo, got {self.ranges!r}")
        object.__setattr__(self, "_lo", r[:, 0])
        object.__setattr__(self, "_hi", r[:, 1])

    # ------------------------------------------------------------------ numbers

    @property
    def bin_width(self) -> np.ndarray:
        """(3,) metres per bin on each axis."""
        return (self._hi - self._lo) / self.bins

    def encode(self, xyz: np.ndarray | Sequence, *, return_clipped: bool = False):
        """(..., 3) int64 bin indices in [0, bins) of positions ``xyz`` (..., 3) metres, camera frame.

        Coordinates outside ``ranges`` are clipped. With ``return_clipped=True`` returns
        ``(indices, clipped)`` where ``clipped`` (..., 3) bool marks the clipped coordinates;
        otherwise a ``MotionClippedWarning`` with the count is issued when any were clipped.
        NaN or infinite input raises ValueError.
        """
        a = np.asarray(xyz, dtype=np.float64)
        if a.ndim == 0 or a.shape[-1] != 3:
            raise ValueError(f"xyz: expected shape (..., 3), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"xyz: {int(np.sum(~np.isfinite(a)))} non-finite coordinates cannot be tokenised")
        clipped = (a < self._lo) | (a > self._hi)
        idx = np.floor((a - self._lo) / (self._hi - self._lo) * self.bins).astype(np.int64)
        idx = np.clip(idx, 0, self.bins - 1)
        if return_clipped:
            return idx, clipped
        n = int(clipped.sum())
        if n:
            warnings.warn(f"{n} of {clipped.size} motion coordinates outside {self.ranges} were clipped",
                          MotionClippedWarning, stacklevel=2)
        return idx

    def decode(self, indices: np.ndarray | Sequence) -> np.ndarray:
        """(..., 3) float32 bin centres (metres, camera frame) of bin ``indices`` (..., 3)."""
        i = np.asarray(indices)
        if i.ndim == 0 or i.shape[-1] != 3:
            raise ValueError(f"indices: expected shape (..., 3), got {i.shape}")
        if not np.issubdtype(i.dtype, np.integer):
            raise ValueError(f"indices: expected integers, got dtype {i.dtype}")
        if i.size and (i.min() < 0 or i.max() >= self.bins):
            raise ValueError(f"indices: must lie in [0, {self.bins}), got [{i.min()}, {i.max()}]")
        return (self._lo + (i + 0.5) * self.bin_width).astype(np.float32)

    def quantize(self, xyz: np.ndarray | Sequence) -> np.ndarray:
        """Positions snapped to their bin centres (clipped silently), (..., 3) float32."""
        return self.decode(self.encode(xyz, return_clipped=True)[0])

    # ------------------------------------------------------------------ tokens

    @property
    def _digits(self) -> int:
        return len(str(self.bins - 1))

    def token(self, axis: int, index: int) -> str:
        """The token string of bin ``index`` on ``axis`` (0, 1, 2 = x, y, z)."""
        if not 0 <= index < self.bins:
            raise ValueError(f"index: must lie in [0, {self.bins}), got {index}")
        return f"<m{AXES[axis]}_{index:0{self._digits}d}>"

    @property
    def token_strings(self) -> tuple[str, ...]:
        """All 3 * bins token strings in id order: x bins, then y bins, then z bins."""
        return tuple(self.token(a, i) for a in range(3) for i in range(self.bins))

    @property
    def vocab_size(self) -> int:
        return 3 * self.bins

    def ids(self, indices: np.ndarray | Sequence) -> np.ndarray:
        """(..., 3) bin indices -> (..., 3) ids in [0, 3*bins) (offsets into ``token_strings``)."""
        i = np.asarray(indices, dtype=np.int64)
        if i.ndim == 0 or i.shape[-1] != 3:
            raise ValueError(f"indices: expected shape (..., 3), got {i.shape}")
        return i + np.arange(3, dtype=np.int64) * self.bins

    def from_ids(self, ids: np.ndarray | Sequence) -> np.ndarray:
        """(..., 3) ids -> (..., 3) bin indices; raises MotionTokenError on a wrong axis."""
        d = np.asarray(ids, dtype=np.int64)
        if d.ndim == 0 or d.shape[-1] != 3:
            raise ValueError(f"ids: expected shape (..., 3), got {d.shape}")
        axis = d // self.bins
        if d.size and (d.min() < 0 or not np.all(axis == np.arange(3))):
            raise MotionTokenError("ids: each waypoint must be an x, a y and a z id, in that order")
        return d - np.arange(3, dtype=np.int64) * self.bins

    def to_tokens(self, indices: np.ndarray | Sequence) -> list[str]:
        """Flat token list (x, y, z per waypoint) of bin ``indices`` (N, 3) or (3,)."""
        i = np.asarray(indices, dtype=np.int64).reshape(-1, 3) if np.size(indices) else np.zeros((0, 3), np.int64)
        if i.size and (i.min() < 0 or i.max() >= self.bins):
            raise ValueError(f"indices: must lie in [0, {self.bins}), got [{i.min()}, {i.max()}]")
        return [self.token(a, int(v)) for row in i for a, v in enumerate(row)]

    def from_tokens(self, tokens: Iterable[str], *, strict: bool = True) -> np.ndarray:
        """(N, 3) int64 bin indices from tokens in x, y, z order.

        ``strict``: an unknown token, a wrong axis order or a trailing incomplete waypoint raises
        MotionTokenError. Non-strict: unknown tokens are skipped and the sequence is read as
        the longest run of complete, well-ordered waypoints from the start.
        """
        out: list[list[int]] = []
        cur: list[int] = []
        for k, tok in enumerate(tokens):
            m = _TOKEN_RE.fullmatch(tok.strip())
            if m is None or int(m.group(2)) >= self.bins or len(m.group(2)) != self._digits:
                if strict:
                    raise MotionTokenError(f"token {k}: {tok!r} is not a motion token of this tokenizer")
                continue
            axis = AXES.index(m.group(1))
            if axis != len(cur):
                if strict:
                    raise MotionTokenError(
                        f"token {k}: {tok!r} is an {m.group(1)} token where a {AXES[len(cur)]} token was expected")
                break
            cur.append(int(m.group(2)))
            if len(cur) == 3:
                out.append(cur)
                cur = []
        if cur and strict:
            raise MotionTokenError(f"incomplete last waypoint: {len(cur)} of 3 tokens")
        return np.asarray(out, dtype=np.int64).reshape(-1, 3)

    def to_text(self, indices: np.ndarray | Sequence) -> str:
        """Concatenated token text of bin ``indices`` (N, 3)."""
        return "".join(self.to_tokens(indices))

    def from_text(self, text: str, *, strict: bool = True) -> np.ndarray:
        """(N, 3) bin indices from token text; ``strict`` also rejects any non-token text."""
        if strict:
            rest = _TOKEN_RE.sub("", text)
            if rest.strip():
                raise MotionTokenError(f"text holds non-motion-token content: {rest.strip()[:60]!r}")
        return self.from_tokens((m.group(0) for m in _TOKEN_RE.finditer(text)), strict=strict)

    def encode_text(self, xyz: np.ndarray | Sequence) -> str:
        """Token text of waypoints ``xyz`` (N, 3) metres (clipping warns, see ``encode``)."""
        idx, clipped = self.encode(xyz, return_clipped=True)
        if clipped.any():
            warnings.warn(f"{int(clipped.sum())} motion coordinates outside {self.ranges} were clipped",
                          MotionClippedWarning, stacklevel=2)
        return self.to_text(idx)

    def decode_text(self, text: str, *, strict: bool = True) -> np.ndarray:
        """(N, 3) float32 waypoints (bin centres, metres) from token text."""
        return self.decode(self.from_text(text, strict=strict))


_TOKEN_RE = re.compile(r"<m([xyz])_(\d+)>")


# ----------------------------------------------------------------------------- low motion

def path_length(xyz: np.ndarray | Sequence) -> float:
    """Total length (metres) of the polyline through waypoints ``xyz`` (N, 3)."""
    a = _traj(xyz)
    return float(np.linalg.norm(np.diff(a, axis=0), axis=1).sum()) if len(a) > 1 else 0.0


def net_displacement(xyz: np.ndarray | Sequence) -> float:
    """|last - first| (metres) of waypoints ``xyz`` (N, 3)."""
    a = _traj(xyz)
    return float(np.linalg.norm(a[-1] - a[0])) if len(a) > 1 else 0.0


def _traj(xyz: np.ndarray | Sequence) -> np.ndarray:
    a = np.asarray(xyz, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"trajectory: expected shape (N, 3), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("trajectory: contains non-finite waypoints")
    return a


@dataclass(frozen=True)
class LowMotionFilter:
    """Paper: "low-motion samples are filtered out". A trajectory is low-motion when

    * its wrist path length is below ``min_path_length`` (default 5 cm: the hand barely moved;
      monocular wrist estimates jitter by about 1 cm), or
    * its net displacement is below ``min_displacement`` (default 2 cm: jitter in place adds
      path length without going anywhere, so the path length alone does not catch it). An
      out-and-back motion that ends within 2 cm of its start is filtered too; lower the
      threshold to keep such motions.
    """

    min_path_length: float = 0.05
    min_displacement: float = 0.02

    def is_low_motion(self, xyz: np.ndarray | Sequence) -> bool:
        return path_length(xyz) < self.min_path_length or net_displacement(xyz) < self.min_displacement

    def __call__(self, xyz: np.ndarray | Sequence) -> bool:
        """True when the trajectory is kept (not low-motion)."""
        return not self.is_low_motion(xyz)
