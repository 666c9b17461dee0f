"""`vipa view DATASET [--episode ID] [--out FILE.rrd] [--per-frame]` plus Rerun's standard
`--save FILE | --connect [ADDR] | --spawn | --serve` options: an episode as a Rerun recording
(the stored video and depth embedded as they are, see vipa.viz.recording).

The episode is checked first as `vipa export` checks it (every file there, the video holding every
frame, numbers marked valid finite): a damaged one is one line on stderr, exit 2. Progress (read
media, log, write) goes to stderr; --no-progress turns it off."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    import rerun as rr

    p = subparsers.add_parser("view", help="write an episode's Rerun recording (.rrd) or send it to a viewer")
    p.add_argument("dataset", type=Path, help="Hand3D dataset folder")
    p.add_argument("--episode", help="episode id (default: the first)")
    p.add_argument("--out", type=Path, help="write the .rrd here (default: EPISODE.rrd in the current folder, "
                                            "unless --save/--connect/--spawn/--serve says otherwise)")
    p.add_argument("--per-frame", action="store_true", help="log one rr.log per frame (slower baseline)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    rr.script_add_args(p)  # Rerun's own: --headless --connect --serve --url --save FILE --stdout
    p.add_argument("--spawn", action="store_true", help="send to a newly spawned native Rerun viewer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from vipa.data.dataset import Hand3DDataset

    try:
        ds = Hand3DDataset.open(args.dataset)
    except (OSError, ValueError) as exc:
        print(f"vipa view: {exc}" if str(args.dataset) in str(exc) else f"vipa view: {args.dataset}: {exc}",
              file=sys.stderr)
        return 2
    ids = ds.episode_ids()
    if not ids:
        print(f"vipa view: {args.dataset}: no episodes", file=sys.stderr)
        return 2
    eid = args.episode or ids[0]
    if eid not in ids:
        print(f"vipa view: episode {eid!r} not in {args.dataset} (has {', '.join(ids[:10])}...)", file=sys.stderr)
        return 2
    from vipa.data.export_check import check_episode

    problem = check_episode(ds, eid)  # every file and number first: one line, not a traceback mid-way
    if problem is not None:
        print(f"vipa view: {problem}", file=sys.stderr)
        return 2
    bar = tqdm(total=3, unit="step", desc=f"view {eid}: read media", disable=args.no_progress, file=sys.stderr,
               bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]")
    try:
        return _view(args, ds, eid, bar)
    finally:
        bar.close()


def _view(args: argparse.Namespace, ds, eid: str, bar) -> int:
    import rerun as rr

    from vipa.data._io import atomic_write_bytes
    from vipa.viz.recording import APP_ID, ViewOptions, default_blueprint, episode_rrd_bytes, log_episode, \
        log_episode_per_frame, media_from_files, video_timestamps_ns

    try:
        ep = ds.load_episode(eid, media=False)
        folder = ds.episode_dir(eid)
        media = media_from_files(folder / "rgb.mp4" if ds.has_rgb(eid) else None,
                                 sorted((folder / "depth").glob("*.png")) if ds.has_depth(eid) else None)
    except (OSError, ValueError) as exc:
        bar.close()
        print(f"vipa view: episode {eid}: {exc}", file=sys.stderr)
        return 2
    if media.video is not None:
        try:  # rerun parses the mp4 when it is logged; a damaged one is named here, not as a traceback there
            video_timestamps_ns(media.video)
        except (RuntimeError, ValueError) as exc:
            bar.close()
            print(f"vipa view: episode {eid}: {folder / 'rgb.mp4'} is not a readable MP4 ({exc})", file=sys.stderr)
            return 2
    bar.update(1)
    bar.set_description_str(f"view {eid}: log {ep.num_frames} frames")
    opts = ViewOptions()
    standard = any(getattr(args, k, None) for k in ("save", "connect", "spawn", "serve", "stdout"))
    if standard:
        rec = rr.script_setup(args, APP_ID, recording_id=eid, default_blueprint=default_blueprint(eid))
        (log_episode_per_frame if args.per_frame else log_episode)(rec, ep, opts, media=media)
        rr.script_teardown(args)
        bar.update(1)
        bar.close()
        print(f"sent {eid} ({ep.num_frames} frames) to Rerun", file=sys.stderr)
        return 0
    out = Path(args.out or f"{eid}.rrd")
    data = episode_rrd_bytes(ep, opts, columnar=not args.per_frame, media=media)
    bar.update(1)
    bar.set_description_str(f"view {eid}: write {out.name}")
    atomic_write_bytes(out, data)  # 0644, never a half-written .rrd
    bar.update(1)
    bar.close()
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); open with: rerun {out}")
    return 0
