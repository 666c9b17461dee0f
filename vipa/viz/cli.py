"""`vipa view DATASET [--episode ID] [--out FILE.rrd | --spawn]`: an episode as a Rerun recording."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("view", help="write an episode's Rerun recording (.rrd) or open a viewer")
    p.add_argument("dataset", type=Path, help="Hand3D dataset folder")
    p.add_argument("--episode", help="episode id (default: the first)")
    p.add_argument("--out", type=Path, help="write the .rrd here (default: EPISODE.rrd in the current folder)")
    p.add_argument("--spawn", action="store_true", help="open a native Rerun viewer instead of writing a file")
    p.add_argument("--per-frame", action="store_true", help="log one rr.log per frame (slower baseline)")
    p.add_argument("--cloud-stride", type=int, default=4, help="keep every n-th depth pixel (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vipa.data.dataset import Hand3DDataset
    from vipa.viz.recording import ViewOptions, episode_rrd_bytes, save_episode_rrd

    ds = Hand3DDataset.open(args.dataset)
    ids = ds.episode_ids()
    if not ids:
        print(f"{args.dataset}: no episodes", file=sys.stderr)
        return 2
    eid = args.episode or ids[0]
    if eid not in ids:
        print(f"episode {eid!r} not in {args.dataset} (has {', '.join(ids[:10])}...)", file=sys.stderr)
        return 2
    ep = ds.load_episode(eid, media=True)
    opts = ViewOptions(cloud_stride=args.cloud_stride)
    if args.spawn:
        import rerun as rr

        data = episode_rrd_bytes(ep, opts, columnar=not args.per_frame)
        tmp = Path(args.out or f"{eid}.rrd")
        tmp.write_bytes(data)
        rr.init("vipa", spawn=True)
        rr.log_file_from_path(tmp)
        print(f"opened {eid} in a Rerun viewer ({tmp})")
        return 0
    out = save_episode_rrd(ep, args.out or Path(f"{eid}.rrd"), opts, columnar=not args.per_frame)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); open with: rerun {out}")
    return 0
