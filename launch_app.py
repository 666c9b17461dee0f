"""Start the VIPA workbench.

    python launch_app.py [--data DIR] [--port N] [--host 127.0.0.1] [--checkpoint PATH]
                         [--rollouts DIR] [--auth USER:PASSWORD | --auth-file FILE] [--debug]

With no ``--data`` it opens on the bundled sample (built into ``cache/sample_dataset`` on
first launch: the real hand video and the seven clips of samples/real_clips annotated, plus
synthetic RGB-D episodes with ground truth;
the page is up at once and shows the progress). Binds 127.0.0.1 unless ``--host`` says otherwise;
any other address needs a login (``--auth`` or ``--auth-file``). Errors print one line; ``--debug``
prints their tracebacks.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
from pathlib import Path

from vipa.ranges import count, tcp_port

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="VIPA workbench (Gradio + Rerun)")
    p.add_argument("--data", type=Path, help="Hand3D dataset folder (default: the bundled sample)")
    p.add_argument("--port", type=tcp_port(), default=int(os.environ.get("VIPA_PORT", 7860)),
                   help="TCP port (default: $VIPA_PORT, else 7860)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--checkpoint", type=Path, help="model checkpoint for the Predict tab")
    p.add_argument("--author", default=None, help="name recorded with every correction (default: the OS user)")
    p.add_argument("--sample-root", type=Path, help="where the bundled sample is built (default cache/sample_dataset)")
    p.add_argument("--max-upload-mb", type=count(), default=20, help="largest upload in MB (default 20)")
    p.add_argument("--rollouts", type=Path,
                   help="a folder of simulator results to show in the Rollouts tab (`vipa sim eval --out DIR`, "
                        "or docs/sim_results)")
    p.add_argument("--auth", metavar="USER:PASSWORD", action="append", default=[],
                   help="require this login (repeatable); required when --host is not a loopback address")
    p.add_argument("--auth-file", type=Path, metavar="FILE",
                   help="file of logins, one USER:PASSWORD a line (# comments allowed)")
    p.add_argument("--debug", action="store_true", help="print tracebacks of errors in the terminal")
    return p.parse_args(argv)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) only accepts connections from this machine."""
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def logins(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(user, password) pairs from --auth and --auth-file; ValueError names a malformed one."""
    entries = [("--auth", a) for a in args.auth]
    if args.auth_file is not None:
        try:
            text = Path(args.auth_file).read_text()
        except OSError as exc:
            raise ValueError(f"--auth-file {args.auth_file}: {exc.strerror or exc}") from None
        entries += [(f"{args.auth_file}:{n}", line.strip()) for n, line in enumerate(text.splitlines(), 1)
                    if line.strip() and not line.lstrip().startswith("#")]
    out = []
    for where, e in entries:
        user, sep, pw = e.partition(":")
        if not sep or not user.strip() or not pw:
            raise ValueError(f"{where}: expected USER:PASSWORD with a non-empty user and password")
        out.append((user.strip(), pw))
    return out


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
    def load():
        predictor, note = load_predictor(args.checkpoint)
        if note:
            print(note, file=sys.stderr)
        return predictor, note

    from app.ui import PredictorSlot

    predictor = PredictorSlot(load)  # torch and the model load while the page is already served
    rollouts = None
    if args.rollouts is not None:
        from app.rollouts import RolloutFolder

        rollouts = RolloutFolder(args.rollouts)  # FileNotFoundError: one line from main()
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
    if args.rollouts is not None and not Path(args.rollouts).is_dir():
        print(f"--rollouts {args.rollouts}: no such folder", file=sys.stderr)
        return 2
    try:
        auth = logins(args)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not auth and not is_loopback(args.host):
        print(f"--host {args.host} is reachable from other machines: give a login with --auth USER:PASSWORD "
              "or --auth-file FILE", file=sys.stderr)
        return 2
    from app import ui

    ui.DEBUG["tracebacks"] = bool(args.debug)
    try:
        demo, _, _ = make_app(args)
    except Exception as exc:  # a bad dataset, log or checkpoint: one line (traceback with --debug)
        if args.debug:
            raise
        print(f"vipa workbench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(f"VIPA workbench on http://{args.host}:{args.port}" + (" (login required)" if auth else ""), flush=True)
    demo.queue(default_concurrency_limit=4).launch(
        server_name=args.host, server_port=args.port, max_file_size=f"{args.max_upload_mb}mb",
        show_error=True, quiet=False, head=_head(), ssr_mode=False, auth=auth or None, theme=_theme(),
        app_kwargs={"middleware": _middleware()},
    )
    return 0


def _theme():
    """Gradio's default look with the system's fonts (the stock theme loads web fonts from the internet)."""
    import gradio as gr

    return gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"),
                             font_mono=("ui-monospace", "Consolas", "monospace"))


def _head() -> str:
    from app.assets import preload_link
    from app.ui import PAGE_HEAD

    return PAGE_HEAD + preload_link()


def _middleware() -> list:
    """The viewer bundle served from a stored compressed copy with an ETag (app/assets.py)."""
    from app.assets import middleware

    return middleware()


if __name__ == "__main__":
    sys.exit(main())
