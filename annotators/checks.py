"""Checks that run after the lift: hand-free episodes and a depth unit that disagrees with the hands.

``hand_free_scene(ep, metric)``
    An episode in which no frame has a hand (a tabletop RGB-D scene) is normal: its frames stay
    valid (nothing to drop them for), and with metric depth its cloud scale is 1 (the sensor is
    metric; there is no hand to calibrate against). Relative depth without hands keeps scale
    NaN: nothing gives it metres. ``ep.extra["hand_free"]`` says which case applied.
``depth_unit_warning(ep, depth_factor, sink)``
    When the lift found the sensor depth disagreeing with the hands' metric size over the whole
    episode (``ep.extra["lift"]["depth_ratio"]`` off 1 by more than its ``max_disagreement``),
    print a console WARNING naming the likely unit (``annotators.io.likely_depth_factor``) and
    the ``--depth-factor`` that would fix it.
"""

from __future__ import annotations

import numpy as np

from annotators.errors import warn
from annotators.io import DEFAULT_DEPTH_FACTOR, KNOWN_DEPTH_FACTORS, likely_depth_factor
from vipa.conventions import HANDS
from vipa.data.episode import Episode


def has_hands(ep: Episode) -> bool:
    """True when any frame of ``ep`` has a hand present."""
    return any(bool(np.asarray(ep.hands[s].present).any()) for s in HANDS)


def hand_free_scene(ep: Episode, metric: bool) -> bool:
    """Settle a hand-free episode (see the module docstring); True if ``ep`` has no hand at all."""
    if has_hands(ep):
        return False
    ep.frame_valid = np.ones(ep.num_frames, bool)
    info = {"frames_valid": True, "depth_scale": None}
    if ep.depth_raw is not None and metric:
        scale = np.asarray(ep.depth_scale, np.float32)
        ep.depth_scale = np.where(np.isfinite(scale), scale, np.float32(1.0)).astype(np.float32)
        info["depth_scale"] = "1 (metric sensor depth, no hand to calibrate against)"
    elif ep.depth_raw is not None:
        info["depth_scale"] = "NaN (relative depth and no hand: no metric scale)"
    ep.extra["hand_free"] = info
    return True


def depth_unit_warning(ep: Episode, depth_factor: float | None, sink: list | None = None,
                       counts: bool = True) -> str | None:
    """Warn on the console when the sensor depth's unit disagrees with the hands; the text or None.
    ``counts``: the depth files hold integer counts (read with ``depth_factor``), else float metres."""
    lifted = ep.extra.get("lift") or {}
    ratio = lifted.get("depth_ratio")
    limit = float(lifted.get("max_disagreement", 0.2))
    if ratio is None or lifted.get("depth_used") or not np.isfinite(ratio) or ratio <= 0 or abs(ratio - 1) <= limit:
        return None
    tail = "; hands kept from PnP, the cloud scaled by the calibration"
    if counts:
        factor = float(depth_factor or DEFAULT_DEPTH_FACTOR)
        likely, unit = likely_depth_factor(ratio, factor)
        now = KNOWN_DEPTH_FACTORS.get(factor, f"{factor:g} counts per metre")
        msg = (f"sensor depth disagrees with the hand's metric size by x{ratio:.3f}: the depth looks like {unit} "
               f"(--depth-factor {likely:g}), not {now} (depth factor {factor:g}) as read{tail}")
    else:  # float depth files are taken as metres
        likely, unit = likely_depth_factor(ratio, 1.0)
        msg = (f"sensor depth disagrees with the hand's metric size by x{ratio:.3f}: the float depth files look like "
               f"{unit} (divide by {likely:g} for metres), not metres as read{tail}")
    return warn(ep.source or ep.episode_id, msg, sink)
