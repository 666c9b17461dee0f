"""The `vipa` command line: `vipa annotate | train | eval | predict | export | bench | view | sim | serve`.

Subcommands are entry points in the group ``vipa.commands`` (see pyproject.toml). Each names a
module with ``register(subparsers) -> None`` that adds its parser and sets ``func`` (a
callable taking the parsed args and returning an exit code). A subcommand whose module cannot
be imported (an optional extra not installed) is listed as unavailable, with the reason.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib.metadata import entry_points

GROUP = "vipa.commands"


def _load_commands(sub: argparse._SubParsersAction) -> dict[str, str]:
    unavailable: dict[str, str] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        try:
            module = importlib.import_module(ep.value)
        except ModuleNotFoundError as exc:
            unavailable[ep.name] = f"needs {exc.name}"
            continue
        register = getattr(module, "register", None)
        if register is None:
            unavailable[ep.name] = f"{ep.value} has no register()"
            continue
        register(sub)
    return unavailable


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="vipa",
        description="VIPA-VLA: Hand3D data from human video, training and running the model.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = _load_commands(sub)
    if unavailable:
        parser.epilog = "unavailable here: " + "; ".join(f"{k} ({v})" for k, v in unavailable.items())
    return parser, unavailable


def main(argv: list[str] | None = None) -> int:
    parser, unavailable = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    func = getattr(args, "func", None)
    if func is None:
        parser.error(f"{args.command}: not available ({unavailable.get(args.command, 'no handler')})")
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
