"""The `vipa` command line: `vipa annotate | train | eval | predict | export | bench | view | sim | serve`.

Subcommands are entry points in the group ``vipa.commands`` (see pyproject.toml). Each names a
module with ``register(subparsers) -> None`` that adds its parser and sets ``func`` (a
callable taking the parsed args and returning an exit code). A subcommand whose module cannot
be imported (an optional extra not installed) is listed as unavailable, with the reason.

Every `--help` shows each option's default. An error ends the command with one line on stderr
(``vipa COMMAND: what went wrong``) and exit status 1; ``--debug`` (anywhere on the command line, or
VIPA_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from importlib.metadata import PackageNotFoundError, entry_points, version

GROUP = "vipa.commands"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written and adds "(default: X)" to every option that has a default
    (not for flags that default to off, or options without one)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or "default:" in text or not _shows_default(action)):
            return text
        return f"{text} (default: %(default)s)"


def _shows_default(action: argparse.Action) -> bool:
    d = action.default
    return (d is not None and d is not False and d is not argparse.SUPPRESS and d != []
            and bool(action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)))


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every sub-parser below it the HelpFormatter (RawDescription ones included)."""
    if parser.formatter_class in (argparse.HelpFormatter, argparse.RawDescriptionHelpFormatter) or (
            isinstance(parser.formatter_class, type) and issubclass(parser.formatter_class,
                                                                    argparse.ArgumentDefaultsHelpFormatter)):
        parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if action.help is None and _shows_default(action):
            action.help = "(default: %(default)s)"
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _use_formatter(child)


def package_version() -> str:
    try:
        return version("vipa")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
    parser.add_argument("--version", action="version", version=f"vipa {package_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (also: VIPA_DEBUG=1; allowed anywhere)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    unavailable = _load_commands(sub)
    if unavailable:
        parser.epilog = "unavailable here: " + "; ".join(f"{k} ({v})" for k, v in unavailable.items())
    _use_formatter(parser)
    return parser, unavailable


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or text}"
    known = isinstance(exc, (ValueError, OSError, LookupError)) and type(exc).__module__ != "builtins"
    return text if known or isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("VIPA_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
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
    except Exception as exc:  # the last line of defence: one line, never a traceback (unless --debug)
        if debug:
            raise
        print(f"vipa {args.command}: {_one_line(exc)} (--debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
