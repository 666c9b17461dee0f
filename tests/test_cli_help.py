"""Every `--help` of every `vipa` subcommand renders, and every numeric option says its default and
its unit (or what it counts)."""

from __future__ import annotations

import argparse
import re

import pytest

from vipa import cli

# what a number on the command line can be: a unit, or the thing it counts
UNIT = re.compile(r"\b(px|pixels?|m|metres?|mm|s|seconds?|ms|deg|degrees|rad|MiB|MB|GB|Hz|frames?/s|fps|"
                  r"frames?|steps?|episodes?|samples?|threads?|processes|CPUs|connections?|clients|count|"
                  r"values?|actions?|tokens?|rollouts?|seeds?|fraction|unitless|integer|0-1|per|port)\b", re.I)


def _parsers() -> list[tuple[list[str], argparse.ArgumentParser]]:
    parser, _ = cli.build_parser()
    out = []

    def walk(p: argparse.ArgumentParser, path: list[str]) -> None:
        out.append((path, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    walk(child, path + [name])

    walk(parser, [])
    return out


PARSERS = _parsers()


def test_the_commands_are_all_there():
    names = {" ".join(p) for p, _ in PARSERS}
    for cmd in ("annotate", "train", "eval", "predict", "export", "bench", "view", "serve", "sim collect"):
        assert cmd in names, sorted(names)


@pytest.mark.parametrize("path", [p for p, _ in PARSERS], ids=lambda p: " ".join(p) or "vipa")
def test_help_renders(path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*path, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and out.startswith("usage: vipa"), out[:300]


def _numeric(action: argparse.Action) -> bool:
    if not action.option_strings or action.help == argparse.SUPPRESS:
        return False
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                           argparse._VersionAction)):
        return False
    d = action.default
    return action.type in (int, float) or hasattr(action.type, "range") or \
        (isinstance(d, (int, float)) and not isinstance(d, bool))


def test_numeric_options_show_default_and_unit():
    problems = []
    for path, p in PARSERS:
        fmt = p._get_formatter()
        for a in p._actions:
            if not _numeric(a):
                continue
            text = " ".join(fmt._format_action(a).split())
            where = f"vipa {' '.join(path)} {a.option_strings[-1]}"
            if not a.help:
                problems.append(f"{where}: no help")
                continue
            if "default" not in text and a.required is False and "required" not in text:
                problems.append(f"{where}: no default shown ({text})")
            if not UNIT.search(a.help):
                problems.append(f"{where}: no unit ({a.help})")
    assert problems == [], "\n".join(problems)


# numeric options that take any number on purpose: intrinsics and a robot state in SI units
UNBOUNDED = {"--K", "--state"}


def _outside(rng) -> str:
    """A value just outside ``rng``, as the command line would give it."""
    if rng.hi is not None:
        return str(int(rng.hi) + (0 if rng.below else 1) if rng.integer else rng.hi + (0 if rng.below else 0.5))
    return str(int(rng.lo) if rng.above else int(rng.lo) - 1)


def test_numeric_options_refuse_values_out_of_range(capsys):
    """Every numeric option has a range (vipa.ranges) and refuses a value outside it at parsing, with
    argparse's error naming the flag, before the command runs."""
    unchecked, checked = [], 0
    for path, p in PARSERS:
        for a in p._actions:
            if not _numeric(a) or a.option_strings[-1] in UNBOUNDED:
                continue
            where = f"vipa {' '.join(path)} {a.option_strings[-1]}"
            rng = getattr(a.type, "range", None)
            if rng is None:
                unchecked.append(where)
                continue
            with pytest.raises(SystemExit) as done:
                p.parse_args([a.option_strings[-1], _outside(rng)])
            err = capsys.readouterr().err
            assert done.value.code == 2 and f"argument {a.option_strings[-1]}: must be" in err, (where, err)
            checked += 1
    assert unchecked == [], "numeric options without a range:\n" + "\n".join(unchecked)
    assert checked >= 40


def test_numeric_option_errors_name_the_flag_and_value(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "stage1", "--data", "d", "--out", "o", "--lr", "-0.001"])
    assert "argument --lr: must be > 0, got -0.001" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["eval", "ck", "--data", "d", "--max-qa", "many"])
    assert "argument --max-qa: expected an integer, got 'many'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sim", "eval", "expert", "--episodes", "nan"])
    assert "argument --episodes: expected an integer, got 'nan'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["predict", "ck", "--image", "i.png", "--instruction", "x", "--fov", "180"])
    assert "argument --fov: must be in (0, 180), got 180.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["serve", "ck", "--max-request-mb", "nan"])
    assert "argument --max-request-mb: expected a number, got nan" in capsys.readouterr().err
