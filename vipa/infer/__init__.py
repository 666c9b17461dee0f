"""Inference: ``Predictor`` (checkpoint -> answer text | wrist trajectory | action chunk).

``from vipa.infer import Predictor`` imports torch lazily, on first use of the name."""

from __future__ import annotations

from typing import Any

__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vipa.infer import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'vipa.infer' has no attribute {name!r}")
