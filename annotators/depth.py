"""Depth backends: a frame -> an (H, W) float32 depth map aligned with it (NaN = no value).

Public names
    ``DepthBackend`` (interface: ``predict(frame_rgb, sensor_depth=None)``, ``close()``,
    context manager, attributes ``name``, ``metric``), ``SensorDepth`` (``sensor``),
    ``HFDepth`` (``hf:PATH``), ``NoDepth`` (``none``), ``parse(spec, **kwargs) -> DepthBackend``.

Backends
    ``sensor``  the RGB-D input's own depth (``annotators.io.Frame.depth``), metres, metric;
                NaN where the sensor gave no reading. A frame without depth is a BackendError.
    ``hf:PATH`` a transformers depth-estimation model loaded from the local folder PATH with
                ``AutoModelForDepthEstimation`` and ``AutoImageProcessor`` (``local_files_only``;
                no download ever). Output resized to the frame by the processor's
                ``post_process_depth_estimation`` (else bicubic interpolation). The result is **relative** depth in
                arbitrary units (``metric=False``): the annotator scale-calibrates it against the
                metric hand joints afterwards (the paper's median ratio). Relative models
                (DPT/MiDaS, Depth Anything "relative") predict *inverse* depth (disparity);
                ``output="auto"`` turns that into depth as 1 / disparity (NaN where disparity <= 0)
                so a single scale can calibrate it. This is exact only up to the disparity's
                unknown shift, which the calibration residual then shows. Models that predict
                depth (ZoeDepth, GLPN, Depth Anything "metric") are passed through.
                ``output="disparity"`` / ``"depth"`` force the interpretation.
    ``none``    no depth: hands only, no cloud; ``predict`` returns None.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from annotators.errors import BackendError

DEPTH_MODEL_TYPES = ("zoedepth", "glpn")  # model types whose output is depth, not disparity


class DepthBackend(ABC):
    """Interface of depth backends; ``metric`` says whether the output is in metres."""

    name: str = "depth"
    metric: bool = False

    @abstractmethod
    def predict(self, frame_rgb: np.ndarray, sensor_depth: np.ndarray | None = None) -> np.ndarray | None:
        """(H, W) float32 depth for one (H, W, 3) uint8 frame, NaN = no value; None if none."""

    def __call__(self, frame: Any) -> np.ndarray | None:
        """``predict`` on an ``annotators.io.Frame`` (uses its ``rgb`` and ``depth``)."""
        return self.predict(frame.rgb, getattr(frame, "depth", None))

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable settings, stored as provenance."""
        return {"name": self.name, "metric": self.metric}

    def close(self) -> None:
        """Release models."""

    def __enter__(self) -> "DepthBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NoDepth(DepthBackend):
    """No depth (hands only)."""

    name = "none"
    metric = False

    def predict(self, frame_rgb: np.ndarray, sensor_depth: np.ndarray | None = None) -> None:
        return None


class SensorDepth(DepthBackend):
    """The input's own sensor depth, metres (RGB-D inputs)."""

    name = "sensor"
    metric = True

    def predict(self, frame_rgb: np.ndarray, sensor_depth: np.ndarray | None = None) -> np.ndarray:
        if sensor_depth is None:
            raise BackendError("sensor", "this input has no depth; use an RGB-D input, hf:PATH or none")
        if sensor_depth.shape != frame_rgb.shape[:2]:
            raise BackendError("sensor", f"depth is {sensor_depth.shape[::-1]} but the frame is {frame_rgb.shape[1::-1]}")
        return np.asarray(sensor_depth, np.float32)


class HFDepth(DepthBackend):
    """A transformers depth-estimation model from a local folder (relative depth, see module doc)."""

    metric = False

    def __init__(self, path: str | Path, *, output: str = "auto", device: str = "cpu") -> None:
        path = Path(path)
        self.spec = f"hf:{path}"
        self.name = self.spec
        if not path.is_dir():
            raise BackendError(self.spec, "model folder does not exist")
        if not (path / "config.json").is_file():
            raise BackendError(self.spec, "no config.json in the folder (expected a save_pretrained model)")
        if output not in ("auto", "disparity", "depth"):
            raise ValueError(f"output must be 'auto', 'disparity' or 'depth', got {output!r}")
        try:
            import torch
            from transformers import AutoImageProcessor, AutoModelForDepthEstimation
        except ImportError as exc:
            raise BackendError(self.spec, f"needs torch and transformers ({exc})") from None
        self._torch = torch
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModelForDepthEstimation.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise BackendError(self.spec, f"cannot load the model or its processor: {exc}") from None
        self.model.eval().to(device)
        self.device = device
        cfg = self.model.config
        if output == "auto":
            is_depth = cfg.model_type in DEPTH_MODEL_TYPES or getattr(cfg, "depth_estimation_type", None) == "metric"
            output = "depth" if is_depth else "disparity"
        self.output = output

    def describe(self) -> dict[str, Any]:
        return {"name": self.spec, "metric": False, "output": self.output,
                "model_type": self.model.config.model_type}

    def predict(self, frame_rgb: np.ndarray, sensor_depth: np.ndarray | None = None) -> np.ndarray:
        return self.predict_batch([frame_rgb])[0]

    def predict_batch(self, frames_rgb: list[np.ndarray]) -> list[np.ndarray]:
        """Relative depth for several frames in one forward pass (one (H, W) float32 each)."""
        torch = self._torch
        for f in frames_rgb:
            if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
                raise ValueError(f"frames must be (H, W, 3) uint8, got {f.shape} {f.dtype}")
        sizes = [f.shape[:2] for f in frames_rgb]
        inputs = self.processor(images=list(frames_rgb), return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**inputs)
        maps = None
        post = getattr(self.processor, "post_process_depth_estimation", None)
        if post is not None:  # the model's own resize (and padding removal) back to the frame
            try:
                maps = [r["predicted_depth"] for r in post(out, target_sizes=sizes)]
            except (TypeError, ValueError, KeyError):
                maps = None
        if maps is None:
            maps = [torch.nn.functional.interpolate(p[None, None].float(), size=hw, mode="bicubic",
                                                    align_corners=False)[0, 0] for p, hw in zip(out.predicted_depth, sizes)]
        outs = []
        for m in maps:
            d = m.detach().float().cpu().numpy().astype(np.float32)
            if self.output == "disparity":
                with np.errstate(divide="ignore", invalid="ignore"):
                    d = np.where(d > 0, 1.0 / d, np.nan).astype(np.float32)
            else:
                d[~(d > 0)] = np.nan
            outs.append(d)
        return outs

    def close(self) -> None:
        self.model = None
        self.processor = None


def parse(spec: str, **kwargs: Any) -> DepthBackend:
    """``"sensor"`` | ``"hf:/path/to/model"`` | ``"none"`` -> a DepthBackend (kwargs go to HFDepth)."""
    if not isinstance(spec, str) or not spec:
        raise BackendError(str(spec), "empty depth backend spec; use sensor, hf:PATH or none")
    s = spec.strip()
    if s == "none":
        return NoDepth()
    if s == "sensor":
        return SensorDepth()
    if s.startswith("hf:"):
        path = s[3:]
        if not path:
            raise BackendError(spec, "hf: needs a local model folder, e.g. hf:/models/depth-anything-small")
        return HFDepth(Path(path).expanduser(), **kwargs)
    raise BackendError(spec, "unknown depth backend; use sensor, hf:PATH or none")
