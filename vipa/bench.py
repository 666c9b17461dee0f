"""`vipa bench`: side-by-side benchmarks with their baselines, one JSON line per benchmark.

A benchmark is a file ``benchmarks/NAME.py`` (in ``vipa.resources.REPO_ROOT``) whose module
docstring's first line says what it measures, and which defines ``run(quick: bool) -> dict``
that measures ours and the baseline in the same process and returns at least:

    metric         what is measured, e.g. "time per 640x480 frame"
    unit           unit of value and baseline, e.g. "ms"
    value          our figure
    baseline       the baseline's figure
    baseline_name  what the baseline is, e.g. "open3d.geometry.PointCloud.create_from_depth_image"
    goal           the ratio to reach (passed = ratio >= goal)

and optionally ``lower_is_better`` (default True: ratio = baseline / value, so > 1 means ours
is better either way; False: ratio = value / baseline), its own ``ratio`` and ``passed``, and
any extra figures. ``goal`` is a number, or a string starting ">= X" (X is the ratio to reach),
or any text when the benchmark decides ``passed`` itself. The harness adds ``name``, ``quick``,
and ``ratio`` / ``passed`` where the benchmark left them out. Use ``time_pair`` / ``time_it`` below for timings.

    vipa bench --list           benchmarks and what they measure
    vipa bench NAME [--quick]   run one, print its JSON line
    vipa bench all [--quick]    run all, one line each
    --check                     exit 1 when a goal is missed (default: exit 0 once it ran)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from vipa.resources import REPO_ROOT

BENCH_DIR = REPO_ROOT / "benchmarks"
REQUIRED = ("metric", "unit", "value", "baseline", "baseline_name", "goal")


class BenchmarkError(RuntimeError):
    """A benchmark is missing, malformed or returned an incomplete result; the message says which."""


# ----------------------------------------------------------------------------------------------
# Timing helpers


@dataclass
class Timing:
    """Wall-clock times of repeated calls, seconds: ``best`` (minimum), ``median``, ``runs``."""

    best: float
    median: float
    runs: int

    def ms(self) -> dict[str, float]:
        return {"best_ms": self.best * 1e3, "median_ms": self.median * 1e3, "runs": self.runs}


def time_it(fn: Callable[[], Any], repeats: int = 20, warmup: int = 2) -> Timing:
    """Time ``fn()`` ``repeats`` times with time.perf_counter after ``warmup`` untimed calls."""
    return time_pair(fn, None, repeats, warmup)[0]


def time_pair(
    ours: Callable[[], Any], baseline: Callable[[], Any] | None, repeats: int = 20, warmup: int = 2
) -> tuple[Timing, Timing | None]:
    """Time two callables interleaved (ours, baseline, ours, ...) so that load on a shared machine
    hits both alike; ``warmup`` untimed calls of each first. Returns (ours, baseline) Timings."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    fns = [f for f in (ours, baseline) if f is not None]
    for _ in range(max(0, warmup)):
        for f in fns:
            f()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    out = [Timing(min(t), statistics.median(t), len(t)) for t in times]
    return out[0], (out[1] if baseline is not None else None)


# ----------------------------------------------------------------------------------------------
# Discovery and running


def list_benchmarks(bench_dir: Path | None = None) -> dict[str, str]:
    """{name: first paragraph of the module docstring} for every benchmarks/NAME.py (no import:
    the file is parsed, so listing never runs benchmark code)."""
    import ast

    d = BENCH_DIR if bench_dir is None else Path(bench_dir)
    out: dict[str, str] = {}
    for path in sorted(d.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except SyntaxError as exc:
            doc = f"(cannot parse: {exc.msg}, line {exc.lineno})"
        first = doc.strip().split("\n\n")[0]  # the first paragraph, on one line
        out[path.stem] = " ".join(first.split()) if first else "(no docstring)"
    return out


def _load_file(module_name: str, path: Path, register: bool = False) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if register:  # before running it: dataclasses look their module up in sys.modules
        sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_helper(name: str, bench_dir: Path | None = None) -> ModuleType:
    """A shared helper file of the benchmarks (benchmarks/_NAME.py, not itself a benchmark), imported
    once per process: benchmarks are loaded by file path, not as a package."""
    module_name = f"vipa_benchmarks.{name}"
    if module_name not in sys.modules:
        path = (BENCH_DIR if bench_dir is None else Path(bench_dir)) / f"{name}.py"
        _load_file(module_name, path, register=True)
    return sys.modules[module_name]


def load_benchmark(name: str, bench_dir: Path | None = None) -> ModuleType:
    """Import benchmarks/NAME.py by file path."""
    d = BENCH_DIR if bench_dir is None else Path(bench_dir)
    if not name.isidentifier():
        raise BenchmarkError(f"benchmark name {name!r}: expected a file stem like 'unproject'")
    path = d / f"{name}.py"
    if not path.is_file():
        known = ", ".join(list_benchmarks(d)) or "none"
        raise BenchmarkError(f"no benchmark {name!r} in {d} (known: {known})")
    module = _load_file(f"vipa_benchmarks.{name}", path)
    if not callable(getattr(module, "run", None)):
        raise BenchmarkError(f"{path}: defines no run(quick: bool) -> dict")
    return module


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def run_benchmark(name: str, quick: bool = False, bench_dir: Path | None = None) -> dict[str, Any]:
    """Run one benchmark and return its completed result (see the module docstring)."""
    module = load_benchmark(name, bench_dir)
    result = module.run(quick)
    if not isinstance(result, dict):
        raise BenchmarkError(f"{name}.run() returned {type(result).__name__}, expected a dict")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise BenchmarkError(f"{name}.run() result lacks {missing}")
    for k in ("value", "baseline"):
        if not _finite(result[k]):
            raise BenchmarkError(f"{name}.run() result {k}={result[k]!r}: expected a finite number")
    value, base = float(result["value"]), float(result["baseline"])
    lower = bool(result.get("lower_is_better", True))
    if _finite(result.get("ratio")):
        ratio = float(result["ratio"])
    else:
        num, den = (base, value) if lower else (value, base)
        ratio = num / den if den > 0 else math.inf
    threshold = _goal_threshold(result["goal"])
    if "passed" in result:
        passed = bool(result["passed"])
    elif threshold is not None:
        passed = ratio >= threshold
    else:
        raise BenchmarkError(
            f"{name}.run() result goal={result['goal']!r}: expected a number (the ratio to reach) "
            "or '>= X ...', or a 'passed' field"
        )
    out = {"name": name, **result, "lower_is_better": lower, "quick": bool(quick)}
    out["ratio"] = round(ratio, 4) if math.isfinite(ratio) else None
    out["passed"] = passed
    return out


def _goal_threshold(goal: Any) -> float | None:
    """The ratio a goal asks for: a number, or a string starting '>= X' / '> X'; else None."""
    if _finite(goal):
        return float(goal)
    if isinstance(goal, str):
        m = re.match(r"\s*(?:ratio\s*)?>=?\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", goal)
        if m:
            return float(m.group(1))
    return None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Timing):
        return _jsonable(asdict(obj))
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return round(obj, 6) if math.isfinite(obj) else None
    return obj


# ----------------------------------------------------------------------------------------------
# Command line


def _cmd(args: argparse.Namespace) -> int:
    if args.list or args.name is None:
        entries = list_benchmarks()
        if not entries:
            print(f"no benchmarks in {BENCH_DIR}")
        width = max((len(n) for n in entries), default=0)
        for n, doc in entries.items():
            print(f"{n:<{width}}  {doc}")
        return 0
    names = list(list_benchmarks()) if args.name == "all" else [args.name]
    status = 0
    for n in names:
        try:
            res = run_benchmark(n, quick=args.quick)
        except BenchmarkError as exc:
            print(json.dumps({"name": n, "error": str(exc)}), flush=True)
            print(f"vipa bench: {exc}", file=sys.stderr)
            status = 2
            continue
        except Exception as exc:  # one failing benchmark does not stop `all`
            traceback.print_exc(file=sys.stderr)
            print(json.dumps({"name": n, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
            status = 2
            continue
        print(json.dumps(_jsonable(res)), flush=True)
        if args.check and not res["passed"] and status == 0:
            status = 1
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run a benchmark beside its baseline; print one JSON line",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("name", nargs="?", help="benchmark name (benchmarks/NAME.py) or 'all'")
    p.add_argument("--quick", action="store_true", help="few repetitions (smoke test, noisy figures)")
    p.add_argument("--list", action="store_true", help="list benchmarks with what they measure")
    p.add_argument("--check", action="store_true", help="exit 1 when a benchmark misses its goal")
    p.set_defaults(func=_cmd)
