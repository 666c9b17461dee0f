"""`vipa predict CHECKPOINT --image RGB.png [--depth DEPTH.png --depth-unit 0.001 | --points P.npy] --K ...
--instruction TEXT [--mode auto|answer|trajectory|action] [--state ...]`: one prediction as JSON
("inputs" says what the model used: rgb, rgb+depth or rgb+points; without depth or points the model
runs on RGB only)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vipa.ranges import count, field_of_view, positive


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _read_depth(path: str, unit: float) -> np.ndarray:
    """(H, W) float32 metres: a .npy in metres, or a 16-bit PNG of counts x ``unit`` (0 -> NaN)."""
    p = Path(path)
    if p.suffix == ".npy":
        d = np.load(p, allow_pickle=False).astype(np.float32)
    else:
        from PIL import Image

        from vipa.data.depth import counts_to_metres

        with Image.open(p) as im:
            counts = np.asarray(im)
        if counts.ndim != 2:
            raise ValueError(f"depth {path}: expected a single-channel image, got shape {counts.shape}")
        return counts_to_metres(counts, unit, 1.0)  # count 0 = no reading -> NaN, as in the Predict tab
    if d.ndim != 2:
        raise ValueError(f"depth {path}: expected a single-channel image, got shape {d.shape}")
    return d


def _K(values: list[float] | None, width: int, height: int, fov: float) -> np.ndarray:
    from vipa.geometry import fov_intrinsics, pinhole_intrinsics

    if values is None:
        return fov_intrinsics(width, height, fov)
    if len(values) != 4:
        raise ValueError("--K: give fx fy cx cy")
    return pinhole_intrinsics(*values, name="--K")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("predict", help="run a checkpoint on one frame + instruction", description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--image", required=True, help="RGB image file")
    p.add_argument("--depth", help="metric depth: 16-bit PNG (times --depth-unit) or .npy")
    p.add_argument("--depth-unit", type=positive(), default=0.001, help="metres per depth count (PNG)")
    p.add_argument("--points", help="(H, W, 3) camera-frame point map .npy, metres (instead of depth)")
    p.add_argument("--K", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                   help="intrinsics (pixels); default: 60 degree horizontal field of view")
    p.add_argument("--fov", type=field_of_view(), default=60.0, help="horizontal field of view in degrees, used when --K is not given")
    p.add_argument("--instruction", required=True, help="the task in words")
    p.add_argument("--mode", default="auto", choices=("auto", "answer", "trajectory", "action"),
                   help="auto: action when the checkpoint is post-trained and --state is given, else by the instruction")
    p.add_argument("--state", type=float, nargs="+", help="robot state in SI units (m, rad), action mode (default: none)")
    p.add_argument("--flow-steps", type=count(), default=None, help="flow-matching integration steps (default: the checkpoint's)")
    p.add_argument("--threads", type=count(), default=None, help="CPU threads for torch (default: torch's choice)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vipa.infer.predictor import Predictor
    from vipa.model.checkpoint import CheckpointError

    try:
        pred = Predictor.load(args.checkpoint, threads=args.threads)
        img = _read_image(args.image)
        depth = _read_depth(args.depth, args.depth_unit) if args.depth else None
        points = np.load(args.points, allow_pickle=False) if args.points else None
        K = _K(args.K, img.shape[1], img.shape[0], args.fov)
        out = pred.predict(img, depth, K, args.instruction, points=points, mode=args.mode,
                           state=np.asarray(args.state, np.float32) if args.state else None, flow_steps=args.flow_steps)
    except (ValueError, FileNotFoundError, CheckpointError, OSError) as exc:
        print(f"vipa predict: {exc}", file=sys.stderr)
        return 1
    res = {"mode": out.mode, "inputs": out.inputs, "text": out.text, "lm_text": out.lm_text, "timings_ms": out.timings_ms,
           "wrist_m": out.wrist.tolist() if out.wrist is not None else None}
    for k in ("trajectory", "trajectory_tokens", "actions"):
        v = getattr(out, k)
        res[k + ("_m" if k.startswith("traj") else "")] = v.round(4).tolist() if v is not None else None
    print(json.dumps(res))
    return 0
