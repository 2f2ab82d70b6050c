"""``llmops report RUN_DIR``: the run log as one self-contained HTML page plus a PNG per plot.

Reads ``llmops_runs/<run>/rank*.jsonl`` (``llmops.runlog``), draws with matplotlib, and writes
``<RUN_DIR>/report/report.html`` (plots inline as base64 PNG, so it opens offline) and the PNGs.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_report"]


def write_report(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the report for ``run_dir``; returns the HTML's path. ``FileNotFoundError`` when there is no log."""
    from llmops.report import plots
    from llmops.report.alerts import evaluate
    from llmops.report.html import render
    from llmops.runlog import read_run

    run = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    r0 = run.ranks[min(run.ranks)]
    figures = {
        "memory": ("Memory per component: predicted vs measured", plots.memory(r0),
                   "no memory was measured (the run stopped before its first step ended)"),
        "drift": ("Drift", plots.drift(r0), "no drift ratio: no prediction or no measured peak"),
        "headroom": ("Headroom to the budget", plots.headroom(r0),
                     "no budget to measure headroom against (no GPU and no memory_budget=)"),
        "step_time": ("Step time", plots.step_time(run), "no step finished"),
        "phases": ("Where each step went", plots.phases(run),
                   "no step phases were recorded (the run stopped before its first step ended, or a log written "
                   "before llmops timed phases)"),
        "comm": ("Communication: all-reduce time and bus bandwidth", plots.comm(run),
                 "no communication recorded (a single process, or a strategy the monitor does not time)"),
        "checkpoints": ("Checkpoint timeline", plots.checkpoints(run), "no checkpoint was recorded"),
    }
    for key, (_title, png, _empty) in figures.items():
        if png:
            (out / f"{key}.png").write_bytes(png)
    page = out / "report.html"
    page.write_text(render(run, figures, evaluate(run)), encoding="utf-8")
    return page
