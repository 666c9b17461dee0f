"""`vipa export DATASET --out DIR [--format hand3d|lerobot]`: write the merged (corrected) dataset.

DATASET may also be a LeRobot v3 folder written by this exporter: `--format hand3d` then imports
it back into a Hand3D dataset.

hand3d: a new Hand3D dataset holding base annotation + corrections (media copied unchanged).
lerobot: the LeRobot v3 layout (vipa.data.lerobot's writer): hand joints, intrinsics, poses, depth
and its scale as declared features; wrist positions as observation.state / action.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vipa.data._lerobot_export import export_hand3d, import_hand3d
from vipa.data.episode import SchemaError
from vipa.data.lerobot import LeRobotFormatError


def _is_lerobot(path: Path) -> bool:
    info = path / "meta" / "info.json"
    try:
        return info.is_file() and str(json.loads(info.read_text()).get("codebase_version", "")).startswith("v3")
    except (OSError, json.JSONDecodeError):
        return False


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="write the corrected dataset as Hand3D or LeRobot v3",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="Hand3D dataset folder (or a LeRobot v3 export to import)")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder to write (must not hold data)")
    p.add_argument("--format", choices=("hand3d", "lerobot"), default="hand3d")
    p.add_argument("--uncorrected", action="store_true", help="export the annotators' output without corrections")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vipa.data.reader import Hand3DDataset

    src, out = Path(args.dataset), Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"vipa export: {out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
        print(f"vipa export: --out {out} must lie outside the dataset {src}", file=sys.stderr)
        return 2
    if _is_lerobot(src):
        if args.format != "hand3d":
            print(f"vipa export: {src} is already LeRobot v3; use --format hand3d to import it", file=sys.stderr)
            return 2
        try:
            out_ds = import_hand3d(src, out)
        except (LeRobotFormatError, SchemaError) as exc:
            print(f"vipa export: {exc}", file=sys.stderr)
            return 2
        print(f"imported {len(out_ds.episode_ids())} episodes from LeRobot v3 into Hand3D at {out}")
        return 0
    try:
        ds = Hand3DDataset.open(src)
    except SchemaError as exc:
        print(f"vipa export: {src}: {exc}", file=sys.stderr)
        return 2
    corrected = not args.uncorrected
    if args.format == "hand3d":
        try:
            out_ds = ds.export(out, corrected=corrected)
        except SchemaError as exc:
            print(f"vipa export: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(out_ds.episode_ids())} episodes ({'corrected' if corrected else 'uncorrected'}) "
              f"as Hand3D to {out}")
        return 0
    try:
        path = export_hand3d(ds, out, corrected=corrected)
    except (ValueError, LeRobotFormatError) as exc:
        print(f"vipa export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(ds.episode_ids())} episodes ({'corrected' if corrected else 'uncorrected'}) "
          f"as LeRobot v3 to {path}")
    return 0
