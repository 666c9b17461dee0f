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


def upload_episode(image: np.ndarray, episode_id: str = "upload"):
    """A one-frame episode holding an uploaded frame: no hands, an assumed pinhole (the default
    field of view, principal point at the centre; K_is_estimate), the camera at the world origin,
    so a camera-frame prediction is drawn over the frame it was made from."""
    from vipa.data.episode import Episode
    from vipa.geometry import fov_intrinsics

    img = np.ascontiguousarray(np.asarray(image, np.uint8)[..., :3])
    h, w = img.shape[:2]
    return Episode(episode_id=episode_id, fps=15.0, width=w, height=h, K=fov_intrinsics(w, h), hands={},
                   num_frames=1, K_is_estimate=True, source="upload", rgb=img[None])


def predict_upload(predictor: Any, image: np.ndarray, instruction: str, recording_id: str) -> dict:
    """The Predict tab on an uploaded frame (RGB only: an upload has no depth): the predicted wrist
    trajectory drawn over the uploaded frame itself, nothing compared (there is no demonstration);
    returns {"message", "rrd", "error_m": None, "recording_id", "frame": 0}."""
    from vipa.tasks.text import template_instruction
    from vipa.viz.recording import episode_rrd_bytes

    text = (instruction or "").strip() or template_instruction()
    result = predictor.predict(image, None, None, instruction=text, mode="trajectory")
    traj = trajectory_of(result)
    if traj is None:
        return {"message": f"prediction: {result!r}"[:2000], "rrd": None, "error_m": None}
    ep = upload_episode(image)
    rrd = episode_rrd_bytes(ep, predictions={"wrist": traj}, recording_id=recording_id)
    used = inputs_words(result)
    msg = (f"{len(traj)} predicted waypoints from the uploaded frame" + (f" ({used})" if used else "")
           + f" for \"{text}\"; drawn over the upload with an assumed camera (no demonstration to compare with)")
    return {"message": msg, "rrd": rrd, "error_m": None, "recording_id": recording_id, "frame": 0}
