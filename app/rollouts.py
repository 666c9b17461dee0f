"""The Rollouts tab's logic (no gradio): simulator results in a folder — the Rerun recordings,
videos and evaluation reports that `vipa sim eval --out DIR` writes (``report.json``,
``rollouts/*.rrd``, ``videos/*.mp4``), and the committed results folder (``docs/sim_results``:
a comparison ``report.json`` of several runs, per-run subfolders). Only files inside the folder
are served."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vipa.data._io import resolve_inside

MAX_DEPTH = 3  # folder levels searched below the root


class RolloutFolder:
    """``root``: any folder holding simulator results (searched up to MAX_DEPTH levels down)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"--rollouts {root}: no such folder")
        self._recordings = self._index("*.rrd")
        self._videos = self._index("*.mp4")
        self.reports = sorted(p for p in self._find("report.json"))

    def _find(self, pattern: str) -> list[Path]:
        return [p for p in self.root.rglob(pattern)
                if p.is_file() and len(p.relative_to(self.root).parts) <= MAX_DEPTH + 1]

    def _index(self, pattern: str) -> dict[str, Path]:
        """name -> file; the name is the path below the root without the suffix, without a
        leading ``rollouts/`` or ``videos/`` (``{task}_seed{S}`` for an eval folder)."""
        out = {}
        for p in sorted(self._find(pattern)):
            parts = list(p.relative_to(self.root).with_suffix("").parts)
            if len(parts) > 1 and parts[-2] in ("rollouts", "videos"):
                del parts[-2]
            out["/".join(parts)] = p
        return out

    def names(self) -> list[str]:
        """Recording names, sorted."""
        return sorted(self._recordings)

    def video_names(self) -> list[str]:
        return sorted(self._videos)

    def recording(self, name: str) -> str:
        """Path of one recording; refuses names that would leave the folder."""
        if name not in self._recordings:
            raise ValueError(f"rollout {name!r}: not in {self.root}")
        return str(resolve_inside(self.root, self._recordings[name].relative_to(self.root)))

    def video(self, name: str) -> str:
        if name not in self._videos:
            raise ValueError(f"video {name!r}: not in {self.root}")
        return str(resolve_inside(self.root, self._videos[name].relative_to(self.root)))

    def summary_markdown(self) -> str:
        """Each report's success rates as a Markdown table, and a line on what the folder lacks."""
        parts = []
        for rep in self.reports:
            rel = rep.parent.relative_to(self.root)
            title = f"**{self.root.name}/{rel}**" if str(rel) != "." else f"**{self.root.name}**"
            try:
                parts.append(f"{title}\n\n{report_markdown(json.loads(rep.read_text()))}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                parts.append(f"{title}: `{rep.name}` could not be read ({type(exc).__name__}: {exc})")
        if not self.reports:
            parts.append(f"No `report.json` in `{self.root}` (written by `vipa sim eval CHECKPOINT --out DIR`).")
        if not self._recordings:
            parts.append("No rollout recordings (`*.rrd`) here" + (
                f"; {len(self._videos)} video(s) below." if self._videos else
                ": run `vipa sim eval CHECKPOINT --out DIR --save-videos N` to save some."))
        return "\n\n".join(parts)


def report_markdown(r: dict[str, Any]) -> str:
    """A report of `vipa sim eval` (``tasks`` as a list of results) or a comparison of runs
    (``runs: {name: {tasks: {task: {...}}}}``) as a Markdown table."""
    if isinstance(r.get("runs"), dict):
        runs = r["runs"]
        tasks = r.get("tasks") or sorted({t for v in runs.values() for t in v.get("tasks", {})})
        rows = ["| run | " + " | ".join(tasks) + " | mean |", "|---" * (len(tasks) + 2) + "|"]
        for name, run in runs.items():
            cells = []
            for t in tasks:
                x = run.get("tasks", {}).get(t)
                cells.append("–" if x is None else f"{x['successes']}/{x['episodes']} "
                             f"({x['ci95'][0]:.0%}-{x['ci95'][1]:.0%})")
            rows.append(f"| {name} | " + " | ".join(cells) + f" | {run.get('mean_rate', float('nan')):.1%} |")
        diffs = r.get("differences_pooled") or {}
        if diffs:
            rows.append("\npooled differences (mean, 95% CI): " + ", ".join(
                f"{k} {v[0]:+.1%} [{v[1]:+.1%}, {v[2]:+.1%}]" for k, v in diffs.items()))
        return "\n".join(rows)
    if isinstance(r.get("tasks"), list):
        rows = ["| task | success | 95% CI |", "|---|---|---|"]
        for t in r["tasks"]:
            lo, hi = t["ci95"]
            rows.append(f"| {t['task']} | {t['successes']}/{t['episodes']} = {t['success_rate']:.0%} | "
                        f"{lo:.0%}-{hi:.0%} |")
        rows.append(f"\nmean success rate **{r.get('mean_success_rate', 0):.1%}**, replan {r.get('replan')}")
        return "\n".join(rows)
    raise ValueError("neither a `vipa sim eval` report (tasks: [...]) nor a comparison of runs (runs: {...})")
