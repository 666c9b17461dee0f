"""The Predict tab's link to ``vipa.infer.Predictor`` (helper "model"): loading a checkpoint and
turning one prediction into what the tab shows. No model code here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vipa.resources import REPO_ROOT

DEFAULT_CHECKPOINTS = (REPO_ROOT / "checkpoints" / "tiny_sample", REPO_ROOT / "cache" / "checkpoints" / "tiny_sample")


def load_predictor(path: Path | None) -> tuple[Any | None, str]:
    """(Predictor or None, a note for the terminal). Without ``path`` the bundled sample
    checkpoint is used when one exists."""
    candidates = [Path(path)] if path is not None else [p for p in DEFAULT_CHECKPOINTS if p.exists()]
    if not candidates:
        return None, ""
    try:
        from vipa.infer import Predictor
    except ImportError as exc:
        return None, f"Predict tab disabled: vipa.infer.Predictor is not available ({exc})"
    try:
        predictor = Predictor.load(candidates[0])
        predictor.vipa_checkpoint_path = str(candidates[0])  # shown in the Predict tab
        return predictor, f"checkpoint loaded: {candidates[0]}"
    except Exception as exc:  # a bad checkpoint must not stop the workbench
        return None, f"Predict tab disabled: cannot load {candidates[0]}: {type(exc).__name__}: {exc}"


def trajectory_of(result: Any) -> np.ndarray | None:
    """(N, 3) camera-frame wrist waypoints (metres) out of a Predictor result, or None."""
    for name in ("trajectory", "wrist_trajectory"):
        val = result.get(name) if isinstance(result, dict) else getattr(result, name, None)
        if val is not None:
            a = np.asarray(val, np.float32)
            if a.ndim == 2 and a.shape[1] == 3:
                return a
    if isinstance(result, np.ndarray) and result.ndim == 2 and result.shape[1] == 3:
        return result.astype(np.float32)
    return None
