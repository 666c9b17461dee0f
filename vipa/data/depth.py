"""Depth on disk: metric depth quantised to lossless 16-bit PNG counts, and back.

metric depth (m) = raw count * depth_unit * depth_scale; count 0 = invalid. ``depth_unit`` (metres
per count) is stored in the episode row; the calibration scale ``depth_scale`` per frame is stored
beside it in frames.parquet, never baked into the counts.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vipa.data._io import atomic_write_bytes
from vipa.data.episode import SchemaError

__all__ = ["MAX_UINT16", "counts_to_metres", "quantize_depth", "read_depth_png", "write_depth_pngs"]

MAX_UINT16 = 65535


def _nice_unit(needed: float) -> float:
    """Smallest 1, 2 or 5 x 10^k that is >= ``needed``."""
    k = math.floor(math.log10(needed))
    for m in (1.0, 2.0, 5.0, 10.0):
        c = m * 10.0**k
        if c >= needed * (1 - 1e-12):
            return float(f"{c:.12g}")
    return float(10.0 ** (k + 1))


def quantize_depth(depth_raw: np.ndarray, depth_unit: float) -> tuple[np.ndarray, float]:
    """(T, H, W) raw depth in ``depth_unit`` -> (uint16 counts, unit of one count in metres).

    Integer raw values that fit in uint16 are kept exactly with the same unit. Otherwise a
    unit of the form {1, 2, 5} x 10^k is chosen so the largest value fits in 65535 counts.
    NaN, inf and values <= 0 become 0 (invalid); positive values never round to 0.
    """
    d = np.asarray(depth_raw, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    if not valid.any():
        return np.zeros(d.shape, np.uint16), float(depth_unit)
    vals = d[valid]
    mx = float(vals.max())
    if mx <= MAX_UINT16 and np.all(vals == np.round(vals)):
        return np.where(valid, d, 0).astype(np.uint16), float(depth_unit)
    unit = _nice_unit(mx * depth_unit / MAX_UINT16)
    counts = np.rint(np.where(valid, d, 0) * (depth_unit / unit))
    counts = np.where(valid, np.clip(counts, 1, MAX_UINT16), 0)
    return counts.astype(np.uint16), unit


def write_depth_pngs(counts: np.ndarray, folder: Path) -> None:
    """(T, H, W) uint16 counts -> ``folder``/000000.png ... (16-bit PNG, each written atomically)."""
    import cv2

    folder.mkdir()
    for i in range(counts.shape[0]):
        ok, buf = cv2.imencode(".png", counts[i], [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise OSError(f"depth frame {i}: PNG encoding failed")
        atomic_write_bytes(folder / f"{i:06d}.png", buf.tobytes())


def read_depth_png(path: Path, height: int, width: int, where: str) -> np.ndarray:
    """One depth PNG as (H, W) uint16 counts; SchemaError naming ``where`` if missing or malformed."""
    import cv2

    if not path.is_file():
        raise SchemaError(f"{where}: missing")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16 or img.shape != (height, width):
        got = "unreadable" if img is None else f"{img.dtype} {img.shape}"
        raise SchemaError(f"{where}: expected uint16 ({height}, {width}), got {got}")
    return img


def counts_to_metres(counts: np.ndarray, depth_unit: float, scale: float) -> np.ndarray:
    """uint16 counts -> float32 metric depth (m): counts * depth_unit * scale; count 0 -> NaN.
    A non-finite ``scale`` (unknown calibration) reads as 1."""
    s = 1.0 if not math.isfinite(scale) else scale
    out = counts.astype(np.float32) * np.float32(depth_unit * s)
    out[counts == 0] = np.nan
    return out
