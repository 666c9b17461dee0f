"""The Rollouts tab's logic (no gradio): the simulator rollouts of a `vipa sim eval --out DIR`
folder — their Rerun recordings and the evaluation report. Only files inside DIR are served."""

from __future__ import annotations

import json
from pathlib import Path

from vipa.data._io import resolve_inside


class RolloutFolder:
    """``root`` is an evaluation output folder (report.json, rollouts/*.rrd, videos/)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise FileNotFoundError(f"--rollouts {root}: no such folder")

    def names(self) -> list[str]:
        """Recording names (``{task}_seed{S}``), sorted."""
        return sorted(p.stem for p in (self.root / "rollouts").glob("*.rrd"))

    def recording(self, name: str) -> str:
        """Path of one recording; refuses names that would leave the folder."""
        if name not in self.names():
            raise ValueError(f"rollout {name!r}: not in {self.root / 'rollouts'}")
        return str(resolve_inside(self.root, Path("rollouts") / f"{name}.rrd"))

    def summary_markdown(self) -> str:
        """The report's success rates as a Markdown table (or a note when there is no report)."""
        report = self.root / "report.json"
        if not report.is_file():
            return f"No report.json in `{self.root}`."
        r = json.loads(report.read_text())
        rows = ["| task | success | 95% CI |", "|---|---|---|"]
        for t in r.get("tasks", []):
            lo, hi = t["ci95"]
            rows.append(f"| {t['task']} | {t['successes']}/{t['episodes']} = {t['success_rate']:.0%} | "
                        f"{lo:.0%}-{hi:.0%} |")
        rows.append(f"\nmean success rate **{r.get('mean_success_rate', 0):.1%}**, replan {r.get('replan')}")
        return "\n".join(rows)
