"""`vipa export DATASET --out DIR [--format hand3d|lerobot]`: write the merged (corrected) dataset.

hand3d: a new Hand3D dataset holding base annotation + corrections (media copied unchanged).
lerobot: the LeRobot v3 layout (vipa.data.lerobot's writer): hand joints, intrinsics, poses, depth
and its scale as declared features; wrist positions as observation.state / action.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from vipa.data.episode import SchemaError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="write the corrected dataset as Hand3D or LeRobot v3",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="Hand3D dataset folder")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder to write (must not hold data)")
    p.add_argument("--format", choices=("hand3d", "lerobot"), default="hand3d")
    p.add_argument("--uncorrected", action="store_true", help="export the annotators' output without corrections")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vipa.data.dataset import Hand3DDataset

    src, out = Path(args.dataset), Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"vipa export: {out} exists and is not empty; choose a new folder", file=sys.stderr)
        return 2
    try:
        if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
            print(f"vipa export: --out {out} must lie outside the dataset {src}", file=sys.stderr)
            return 2
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
        lerobot = importlib.import_module("vipa.data.lerobot")
    except ModuleNotFoundError as exc:
        if exc.name != "vipa.data.lerobot":
            raise
        print("vipa export: --format lerobot needs vipa.data.lerobot, which is not installed here; "
              "use --format hand3d", file=sys.stderr)
        return 2
    export = getattr(lerobot, "export_hand3d", None)
    if export is None:
        from vipa.data._lerobot_export import export_hand3d as export
    try:
        path = export(ds, out, corrected=corrected)
    except (ValueError, lerobot.LeRobotFormatError) as exc:
        print(f"vipa export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(ds.episode_ids())} episodes ({'corrected' if corrected else 'uncorrected'}) "
          f"as LeRobot v3 to {path}")
    return 0
