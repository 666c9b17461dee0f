"""``vipa annotate INPUT... --out DATASET``: human video / RGB-D inputs -> a Hand3D dataset.

Registered as the ``annotate`` subcommand of ``vipa`` (entry point in pyproject.toml).
Exit codes: 0 all inputs annotated or skipped, 1 some failed (recorded in the dataset),
2 bad arguments or an unwritable output folder, 130 interrupted (the dataset stays readable).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from annotators.io import IMAGE_EXTS
from vipa.data.qa import GAMMA_RANGE
from vipa.ranges import count, field_of_view, flag, positive

VIDEO_EXTS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


def _backend_help(kind: str, title: str, flag: str, opt_flag: str, extra: list[tuple[str, str]] = ()) -> str:
    """The ``--help`` block listing the registered ``kind`` backends with their options' defaults."""
    from annotators import registry

    lines = [f"{title} backends ({flag}; options {opt_flag}):"]
    for name, text in extra:
        lines.append(f"  {name:<16} {text}")
    for name, be in sorted(registry.backends(kind).items()):
        shown = f"{name}:{be.arg.upper()}" if be.arg else name
        lines.append(f"  {shown:<16} {be.description}")
        opts = registry.describe_defaults(be.config_cls, exclude=(be.arg,) if be.arg else ())
        if opts:
            lines += textwrap.wrap(f"options: {opts}", width=100, initial_indent=" " * 21,
                                   subsequent_indent=" " * 23, break_on_hyphens=False)
    return "\n".join(lines)


def _epilog() -> str:
    from annotators import registry

    stage_lines = ["stages, in order (--set STAGE.FIELD=VALUE):"]
    for st in registry.stages():
        stage_lines.append(f"  {st.name:<10} {st.description}")
        opts = registry.describe_defaults(st.config_cls)
        if opts:
            stage_lines += textwrap.wrap(opts, width=100, initial_indent=" " * 15, subsequent_indent=" " * 15,
                                         break_on_hyphens=False)
    return "\n\n".join([
        _backend_help("hands", "hand", "--hands NAME, default mediapipe, or package.module:Class", "--hands-opt KEY=VALUE"),
        _backend_help("depth", "depth", "--depth NAME[:ARG], default auto", "--depth-opt KEY=VALUE",
                      [("auto", "sensor depth when the input has it, else none")]),
        _backend_help("objects", "object", "--objects NAME[:ARG],..., default grasp,tabletop", "--objects-opt NAME.KEY=VALUE"),
        "\n".join(stage_lines),
    ])


def register(subparsers: argparse._SubParsersAction) -> None:
    import annotators.pipeline  # noqa: F401 - registers the stages listed in --help
    from annotators import registry

    kinds = {k: ", ".join(sorted(registry.backends(k))) for k in registry.KINDS}
    p = subparsers.add_parser(
        "annotate", help="annotate human videos / RGB-D sequences into a Hand3D dataset",
        description="Annotate inputs (video files, image folders, RGB-D sequences; a folder of videos "
                    "is expanded) into the Hand3D dataset at --out. Resumable: episodes already in the "
                    "dataset are skipped; a failing input is recorded with its error and the rest go on.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video file, image folder, RGB-D folder, or a folder of videos")
    p.add_argument("--out", required=True, metavar="DATASET", help="dataset folder (created if missing)")
    p.add_argument("--hands", default="mediapipe", metavar="NAME",
                   help=f"hand backend: {kinds['hands']} or package.module:Class (default mediapipe)")
    p.add_argument("--hands-opt", action="append", default=[], metavar="KEY=VALUE", help="hand backend option (repeatable)")
    p.add_argument("--depth", default="auto", metavar="NAME[:ARG]",
                   help=f"depth backend: auto, {kinds['depth'].replace('hf', 'hf:PATH')} "
                        "(default auto: sensor depth when the input has it, else none)")
    p.add_argument("--depth-opt", action="append", default=[], metavar="KEY=VALUE", help="depth backend option (repeatable)")
    p.add_argument("--objects", default=None, metavar="NAME[:ARG],...",
                   help=f"object backends, comma-separated: {kinds['objects']} (default grasp,tabletop)")
    p.add_argument("--objects-opt", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="object backend option (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="STAGE.FIELD=VALUE", dest="stage_set",
                   help="set a stage's config field (repeatable; see the stages below)")
    p.add_argument("--fps", type=positive(), default=None, help="sample the input at about this frame rate, frames/s (default: every frame)")
    p.add_argument("--max-width", type=count(0), default=640, help="downscale wider frames to this width in pixels (0 = keep)")
    p.add_argument("--max-frames", type=count(), default=None, help="annotate at most this many frames per input (default: all)")
    p.add_argument("--fov", type=field_of_view(), default=None, help="horizontal field of view in degrees assumed when K is unknown (default: 60, vipa.conventions.DEFAULT_FOV_DEG)")
    p.add_argument("--intrinsics", default=None, metavar="FILE", help="K of the input (json fx/fy/cx/cy, Open3D or ROS camera file, or 3x3 text); a file stating "
                        "another width/height is scaled to the input (same aspect ratio) or refused")
    p.add_argument("--depth-factor", type=positive(), default=None, help="uint16 depth counts per metre, e.g. 1000 for millimetres (default: the layout's meta file, else 5000 as TUM)")
    p.add_argument("--instruction", default=None, help="task instruction for every input (default: sidecar files, else a template)")
    p.add_argument("--gamma", type=flag(GAMMA_RANGE), default=None, help="QA direction threshold: an axis is named when its share of the unit displacement exceeds it, 0-1 (1 excluded) (default: 0.3, vipa.data.qa.DEFAULT_GAMMA)")
    p.add_argument("--no-smooth", action="store_true", help="keep the raw lifted 3D joints (no temporal filter)")
    p.add_argument("--no-objects", action="store_true", help="no object backends (same as --objects '')")
    p.add_argument("--require-hands", action="store_true",
                   help="an input without any hand is an error (default: hand-free inputs are annotated too)")
    p.add_argument("--detector", default=None, metavar="PATH",
                   help="local zero-shot detector (OWLv2 / Grounding DINO): adds detector:PATH to --objects")
    p.add_argument("--labels", default="", help="comma-separated object names for --detector")
    p.add_argument("--workers", type=count(), default=1, help="worker processes, count (or Ray CPUs with --ray local)")
    p.add_argument("--ray", default=None, metavar="ADDRESS|local", help="run episodes as Ray tasks")
    p.add_argument("--no-resume", action="store_true", help="re-annotate episodes already in the dataset")
    p.add_argument("--no-overlap-write", action="store_true",
                   help="one worker: write each episode before annotating the next (default: the next episode "
                        "is annotated while the previous one is written, at most one write pending)")
    p.add_argument("--report", default=None, metavar="FILE", help="write the batch report as JSON")
    p.add_argument("--quiet", "--no-progress", action="store_true", help="no progress bars on stderr")
    p.set_defaults(func=run)


def expand_inputs(inputs: list[str]) -> list[str]:
    """Folders holding videos (and no images) become their video files; a folder that is no
    RGB-D sequence itself and holds no media but RGB-D sequence folders (any layout of
    ``annotators.io.rgbd_layout``) becomes those folders; everything else as given."""
    from annotators.io import rgbd_layout

    out: list[str] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir() and rgbd_layout(p) is None:
            files = sorted(f for f in p.iterdir() if f.is_file())
            vids = [f for f in files if f.suffix.lower() in VIDEO_EXTS]
            imgs = [f for f in files if f.suffix.lower() in IMAGE_EXTS]
            if vids and not imgs:
                out += [str(f) for f in vids]
                continue
            seqs = [d for d in sorted(p.iterdir()) if d.is_dir() and rgbd_layout(d) is not None]
            if seqs and not vids and not imgs:
                out += [str(d) for d in seqs]
                continue
        out.append(s)
    return out


def _backend_options(kind: str, spec: str, pairs: list[str], flag: str) -> dict:
    """Typed options of the backend named by ``spec`` from ``KEY=VALUE`` strings."""
    from annotators import registry

    if not pairs:
        return {}
    name, _ = registry.split_spec(spec)
    if ":" in spec and name not in registry.backends(kind):  # an import path: options as JSON or strings
        return {k.strip(): registry.parse_value(v, None) for k, _, v in (p.partition("=") for p in pairs)}
    return registry.parse_options(pairs, registry.get_backend(kind, name).config_cls, f"{flag} ({name})")


def build_config(args: argparse.Namespace):
    """The AnnotateConfig named by the command line (ValueError / BackendError on bad values)."""
    from annotators import registry
    from annotators.io import read_intrinsics_file
    from annotators.pipeline import AnnotateConfig

    objects = [x.strip() for x in (args.objects if args.objects is not None else "grasp,tabletop").split(",") if x.strip()]
    if args.no_objects:
        objects = []
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    obj_opts: dict[str, dict] = {}
    if args.detector:
        objects.append(f"detector:{args.detector}")
    if labels:
        obj_opts.setdefault("detector", {})["labels"] = labels
    for pair in args.objects_opt:
        name, dot, rest = pair.partition(".")
        if not dot:
            raise ValueError(f"--objects-opt: expected NAME.KEY=VALUE, got {pair!r}")
        cls = registry.get_backend("objects", name).config_cls
        obj_opts.setdefault(name, {}).update(registry.parse_options([rest], cls, f"--objects-opt ({name})"))
    decode = {"fps": args.fps, "max_width": args.max_width or None, "max_frames": args.max_frames,
              "depth_factor": args.depth_factor}
    if args.fov is not None:
        decode["fov_deg"] = args.fov
    if args.intrinsics:
        K, size = read_intrinsics_file(args.intrinsics)
        decode["K"] = K.tolist()
        decode["K_size"] = None if size is None else list(size)
    cfg = AnnotateConfig(
        decode=decode,
        hands={"backend": args.hands, "options": _backend_options("hands", args.hands, args.hands_opt, "--hands-opt"),
               "require_hands": bool(getattr(args, "require_hands", False))},
        depth={"backend": args.depth, "options": _backend_options("depth", args.depth, args.depth_opt, "--depth-opt")},
        smooth={"enabled": not args.no_smooth},
        objects={"backends": tuple(objects), "options": obj_opts},
        language={"instruction": args.instruction},
        qa={"gamma": args.gamma}, motion={"gamma": args.gamma},
    )
    for pair in args.stage_set:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set: expected STAGE.FIELD=VALUE, got {pair!r}")
        cfg.set(key.strip(), value)
    return cfg.validate()


def run(args: argparse.Namespace) -> int:
    from annotators.batch import OutputError, annotate_to_dataset, check_output, preflight
    from annotators.errors import AnnotatorError

    try:
        config = build_config(args)
        preflight(config)  # files named by options, before any input is decoded
    except (ValueError, AnnotatorError) as exc:
        print(f"vipa annotate: error: {exc}", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("vipa annotate: error: --workers must be >= 1", file=sys.stderr)
        return 2
    inputs = expand_inputs(args.inputs)
    try:
        check_output(args.out)
    except OutputError as exc:
        print(f"vipa annotate: error: output folder {exc}", file=sys.stderr)
        return 2
    bar = frame_bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(inputs), unit="episode", desc="annotate", file=sys.stderr)
        if args.workers == 1 or len(inputs) <= 1:  # frames of the episode in progress (a long clip)
            frame_bar = tqdm(total=0, unit="frame", desc="frames", file=sys.stderr, position=1, leave=False)

    def on_frame(episode_id: str, done: int, total: int) -> None:
        if frame_bar is None:
            return
        if done == 1 or frame_bar.total != total:
            frame_bar.reset(total=total)
            frame_bar.set_description_str(f"{episode_id} frames", refresh=False)
        frame_bar.update(done - frame_bar.n)
        if done == total:
            frame_bar.refresh()  # the last frame is shown even when it came within tqdm's refresh interval

    def progress(outcome, done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.set_postfix_str(f"{outcome.episode_id}: {outcome.status}", refresh=False)
            bar.update(1)
        if outcome.status == "failed":
            msg = f"failed: {outcome.source}: {outcome.error.splitlines()[0] if outcome.error else ''}"
            (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))

    try:
        report = annotate_to_dataset(inputs, args.out, config, workers=args.workers, progress=progress,
                                     on_frame=on_frame, ray=args.ray, skip_finished=not args.no_resume,
                                     overlap_writes=not args.no_overlap_write)
    except OutputError as exc:
        print(f"vipa annotate: error: output folder {exc}", file=sys.stderr)
        return 2
    finally:
        for b in (frame_bar, bar):
            if b is not None:
                b.close()
    print(report.summary())
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2, default=str))
    if report.interrupted:
        return 130
    return 1 if report.failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vipa")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["annotate", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
