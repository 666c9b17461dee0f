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


INPUT_WORDS = {"rgb": "RGB only", "rgb+depth": "RGB + depth", "rgb+points": "RGB + point map"}


def inputs_words(result: Any) -> str:
    """What the model was given for ``result`` (``Prediction.inputs``), in words ("" if unknown)."""
    return INPUT_WORDS.get(getattr(result, "inputs", ""), "")


def upload_episode(image: np.ndarray, episode_id: str = "upload", depth: np.ndarray | None = None,
                   K: np.ndarray | None = None):
    """A one-frame episode holding an uploaded frame: no hands, the camera at the world origin, so a
    camera-frame prediction is drawn over the frame it was made from. ``K`` (3, 3) pixels when given,
    else an assumed pinhole (the default field of view, principal point at the centre; K_is_estimate);
    ``depth`` (H, W) metres (NaN invalid) when given, so the viewer shows its cloud."""
    from vipa.data.episode import Episode
    from vipa.geometry import fov_intrinsics

    img = np.ascontiguousarray(np.asarray(image, np.uint8)[..., :3])
    h, w = img.shape[:2]
    extra = {}
    if depth is not None:
        extra = {"depth_raw": np.asarray(depth, np.float32)[None], "depth_unit": 1.0,
                 "depth_scale": np.ones(1, np.float32)}
    return Episode(episode_id=episode_id, fps=15.0, width=w, height=h,
                   K=fov_intrinsics(w, h) if K is None else np.asarray(K, np.float32), hands={},
                   num_frames=1, K_is_estimate=K is None, source="upload", rgb=img[None], **extra)


def parse_intrinsics(text: str | None) -> np.ndarray | None:
    """(3, 3) K from "fx fy cx cy" (pixels; commas allowed), None for an empty text; ValueError naming
    the field otherwise."""
    from vipa.geometry import pinhole_intrinsics

    parts = (text or "").replace(",", " ").split()
    if not parts:
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in parts)
    except ValueError:
        raise ValueError(f"intrinsics: give four numbers 'fx fy cx cy' in pixels, got {text!r}") from None
    return pinhole_intrinsics(fx, fy, cx, cy, name="intrinsics")


def load_upload_depth(path: str | Path, unit_m: float, shape: tuple[int, int], max_mb: int = 20) -> np.ndarray:
    """(H, W) float32 metres from an uploaded 16-bit PNG depth map (counts x ``unit_m``; 0 = no reading
    -> NaN); refuses another size than the colour frame's ``shape`` and non-positive units."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not (np.isfinite(unit_m) and 0 < unit_m < 1):
        raise ValueError(f"depth unit: metres per count must be in (0, 1), e.g. 0.001 for millimetres; got {unit_m}")
    if p.stat().st_size > max_mb * 1024 * 1024:
        raise ValueError(f"The depth file {p.name} is over the {max_mb} MB limit; please upload a smaller one.")
    try:
        with Image.open(p) as im:
            if im.format != "PNG":
                raise ValueError(f"The depth file {p.name} is a {im.format} image; please upload a 16-bit PNG.")
            counts = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise ValueError(f"The depth file {p.name} is not a readable PNG; please upload a 16-bit PNG.") from None
    if counts.ndim != 2:
        raise ValueError(f"The depth file {p.name} has {counts.ndim} dimensions; a depth map is one channel (16-bit PNG).")
    if counts.shape != tuple(shape):
        raise ValueError(f"The depth map {p.name} is {counts.shape[1]}x{counts.shape[0]} but the frame is "
                         f"{shape[1]}x{shape[0]}; upload the depth map that belongs to this frame.")
    from vipa.data.depth import counts_to_metres

    return counts_to_metres(counts, unit_m, 1.0)


def predict_upload(predictor: Any, image: np.ndarray, instruction: str, recording_id: str,
                   depth: np.ndarray | None = None, K: np.ndarray | None = None) -> dict:
    """The Predict tab on an uploaded frame, RGB only or with an uploaded metric ``depth`` (H, W) metres
    and intrinsics ``K`` (3, 3) (assumed from the frame size when None): the predicted wrist trajectory
    drawn over the uploaded frame itself, nothing compared (there is no demonstration); returns
    {"message", "rrd", "error_m": None, "recording_id", "frame": 0}."""
    from vipa.geometry import fov_intrinsics
    from vipa.tasks.text import template_instruction
    from vipa.viz.recording import episode_rrd_bytes

    text = (instruction or "").strip() or template_instruction()
    h, w = np.asarray(image).shape[:2]
    K_used = K if K is not None or depth is None else fov_intrinsics(w, h)
    result = predictor.predict(image, depth, K_used, instruction=text, mode="trajectory")
    traj = trajectory_of(result)
    if traj is None:
        return {"message": f"prediction: {result!r}"[:2000], "rrd": None, "error_m": None}
    ep = upload_episode(image, depth=depth, K=K)
    rrd = episode_rrd_bytes(ep, predictions={"wrist": traj}, recording_id=recording_id)
    used = inputs_words(result)
    camera = "the given camera" if K is not None else "an assumed camera"
    msg = (f"{len(traj)} predicted waypoints from the uploaded frame" + (f" ({used})" if used else "")
           + f" for \"{text}\"; drawn over the upload with {camera} (no demonstration to compare with)")
    return {"message": msg, "rrd": rrd, "error_m": None, "recording_id": recording_id, "frame": 0}
