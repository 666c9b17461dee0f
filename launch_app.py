"""Start the VIPA workbench.

    python launch_app.py [--data DIR] [--port N] [--host 127.0.0.1] [--checkpoint PATH]

With no ``--data`` it opens on the bundled sample (built into ``cache/sample_dataset`` on
first launch: the real hand video annotated, plus synthetic RGB-D episodes with ground truth;
the page is up at once and shows the progress). Binds 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="VIPA workbench (Gradio + Rerun)")
    p.add_argument("--data", type=Path, help="Hand3D dataset folder (default: the bundled sample)")
    p.add_argument("--port", type=int, default=int(os.environ.get("VIPA_PORT", 7860)))
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint for the Predict tab")
    p.add_argument("--author", default=None, help="name recorded with every correction (default: the OS user)")
    p.add_argument("--sample-root", type=Path, help="where the bundled sample is built (default cache/sample_dataset)")
    p.add_argument("--max-upload-mb", type=int, default=20)
    p.add_argument("--rollouts", type=Path, help="a `vipa sim eval --out` folder to show in the Rollouts tab")
    return p.parse_args(argv)


def make_app(args: argparse.Namespace):
    """(gradio Blocks, status function, sample builder or None). The dataset opens at once for
    ``--data``; the bundled sample is built in the background."""
    from app.predict import load_predictor
    from app.sample import DEFAULT_SAMPLE_ROOT, SampleBuilder
    from app.ui import build_ui
    from app.workbench import Workbench

    author = args.author or _user()
    holder: dict = {"wb": None}
    builder = None

    def on_ready(root: Path) -> None:
        wb = Workbench(root, author=author)
        holder["wb"] = wb
        threading.Thread(target=wb.prefetch, daemon=True, name="vipa-prefetch").start()

    if args.data is not None:
        on_ready(args.data)
        msg = f"dataset: `{Path(args.data).resolve()}`"
        status = lambda: {"ready": True, "message": msg, "progress": None}
    else:
        builder = SampleBuilder(args.sample_root or DEFAULT_SAMPLE_ROOT)
        builder.start(on_ready)
        status = builder.status
    predictor, note = load_predictor(args.checkpoint)
    if note:
        print(note, file=sys.stderr)
    rollouts = None
    if args.rollouts is not None:
        from app.rollouts import RolloutFolder

        rollouts = RolloutFolder(args.rollouts)
    demo = build_ui(lambda: holder["wb"], status, predictor=predictor, max_upload_mb=args.max_upload_mb,
                    rollouts=rollouts)
    return demo, holder, builder


def _user() -> str:
    try:
        return getpass.getuser() or "app"
    except Exception:  # no user database entry (containers)
        return "app"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.data is not None and not (Path(args.data) / "meta" / "info.json").is_file():
        print(f"--data {args.data}: not a Hand3D dataset (no meta/info.json)", file=sys.stderr)
        return 2
    demo, _, _ = make_app(args)
    print(f"VIPA workbench on http://{args.host}:{args.port}", flush=True)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, max_file_size=f"{args.max_upload_mb}mb",
        show_error=True, quiet=False, head=_head(), ssr_mode=False,
    )
    return 0


def _head() -> str:
    from app.ui import SHORTCUTS_JS

    return SHORTCUTS_JS


if __name__ == "__main__":
    sys.exit(main())
