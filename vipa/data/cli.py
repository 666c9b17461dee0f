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
    class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    p = subparsers.add_parser("export", help="write the corrected dataset as Hand3D or LeRobot v3",
                              description=__doc__, formatter_class=Formatter)
    p.add_argument("dataset", metavar="DATASET", help="Hand3D dataset folder (or a LeRobot v3 export to import)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="new folder to write (absent or empty); written under a hidden .partial-* name "
                        "beside it and moved into place when complete")
    p.add_argument("--format", choices=("hand3d", "lerobot"), default="hand3d", help="output layout")
    p.add_argument("--uncorrected", action="store_true", help="export the annotators' output without corrections")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def _err(msg: str) -> int:
    print(f"vipa export: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vipa.data.export_check import check_episode, staging
    from vipa.data.reader import Hand3DDataset

    src, out = Path(args.dataset), Path(args.out)
    if not src.is_dir():
        return _err(f"{src}: no such dataset folder")
    if out.exists() and not out.is_dir():
        return _err(f"--out {out} is a file; give a new folder")
    if out.exists() and any(out.iterdir()):
        return _err(f"{out} exists and is not empty; choose a new folder")
    if out.resolve() == src.resolve() or out.resolve().is_relative_to(src.resolve()):
        return _err(f"--out {out} must lie outside the dataset {src}")
    if _is_lerobot(src):
        if args.format != "hand3d":
            return _err(f"{src} is already LeRobot v3; use --format hand3d to import it")
        try:
            with staging(out) as tmp:
                n = len(import_hand3d(src, tmp).episode_ids())
        except (LeRobotFormatError, SchemaError, OSError) as exc:
            return _err(str(exc))
        print(f"imported {n} episodes from LeRobot v3 into Hand3D at {out}")
        return 0
    try:
        ds = Hand3DDataset.open(src)
    except SchemaError as exc:
        return _err(f"{src}: {exc}")
    corrected = not args.uncorrected
    if corrected:
        from vipa.data.corrections import CorrectionError, snapshot

        try:
            snapshot(src, tag=f"export-{out.name}")  # a read-only copy of the log at each export
        except CorrectionError as exc:
            return _err(str(exc))
    ids = ds.episode_ids()
    bar = tqdm(total=len(ids), desc="check episodes", unit="ep", disable=args.no_progress, file=sys.stderr)
    problems = []
    for eid in ids:
        problem = check_episode(ds, eid, corrected)
        if problem:
            problems.append(problem)
        bar.update(1)
    bar.close()
    if problems:
        for line in problems:
            print(f"vipa export: {line}", file=sys.stderr)
        return _err(f"{len(problems)} of {len(ids)} episodes cannot be exported (listed above); nothing written")
    try:
        with staging(out) as tmp:
            if args.format == "hand3d":
                out_ds = ds.export(tmp, corrected=corrected)
                n = len(out_ds.episode_ids())
            else:
                bar = tqdm(total=len(ids), desc="export LeRobot v3", unit="ep", disable=args.no_progress,
                           file=sys.stderr)
                export_hand3d(ds, tmp, corrected=corrected, progress=lambda done, total, eid: bar.update(1))
                bar.close()
                n = len(ids)
    except (ValueError, LeRobotFormatError, SchemaError, OSError) as exc:
        return _err(str(exc))
    print(f"wrote {n} episodes ({'corrected' if corrected else 'uncorrected'}) as "
          f"{'Hand3D' if args.format == 'hand3d' else 'LeRobot v3'} to {out}")
    return 0
