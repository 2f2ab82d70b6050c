"""Rich tables a person reads: the estimate (CLI) and the preflight (the monitor's log)."""

from __future__ import annotations

import io
from collections.abc import Iterable

from rich.console import Console
from rich.table import Table

from llmops.estimate import Estimate
from llmops.estimate.whatif import WhatIf
from llmops.units import Unit, in_unit, unit_for

ROWS: tuple[tuple[str, str], ...] = (
    ("inference_bytes", "inference weights"),
    ("params_bytes", "parameters"),
    ("grads_bytes", "gradients"),
    ("optimizer_state_bytes", "optimizer states"),
    ("model_state_bytes", "model states"),
    ("activation_bytes", "activations"),
    ("temporary_bytes", "temporaries"),
    ("overhead_bytes", "overhead"),
    ("peak_bytes", "peak per device"),
    ("budget_bytes", "budget (safety × memory)"),
)


def _fmt(value: object, unit: Unit | None = None) -> str:
    """Bytes in ``unit``; counts as they are (``unit=None``); a verdict in colour."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "[bold red]YES[/]" if value else "[green]no[/]"
    if unit is None:
        return str(value)
    return in_unit(value, unit)  # type: ignore[arg-type]


def estimate_table(models: Iterable[Estimate], binary: bool = False, title: str | None = None) -> Table:
    """Models side by side: memory in the one unit that suits the largest figure (GB at most; GiB, MiB with
    ``binary``), the verdict and the GPU counts."""
    models = list(models)
    unit = unit_for(*(getattr(m, attr) for m in models for attr, _ in ROWS), binary=binary)
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for m in models:
        table.add_column(f"{m.model} ({unit[1]})", justify="right")
    for attr, label in ROWS:
        table.add_row(label, *(_fmt(getattr(m, attr), unit) for m in models))
    table.add_section()
    table.add_row("peak falls in", *(m.peak_phase or "—" for m in models))
    table.add_row("OOM risk", *(_fmt(m.oom_risk) for m in models))
    table.add_row("largest safe micro-batch", *(_fmt(m.max_batch_size) for m in models))
    table.add_row("grad. accumulation for global batch", *(_fmt(m.accumulate) for m in models))
    table.add_row("GPUs, training", *(_gpus_training(m) for m in models))
    table.add_row("GPUs, inference", *(_fmt(m.gpus_inference) for m in models))
    return table


def _gpus_training(m: Estimate) -> str:
    if m.model == "document":
        return f"{_fmt(m.gpus_training)} (rule of thumb)"
    fsdp = m.extra.get("gpus_training_fsdp")
    if m.budget_bytes is None or m.peak_bytes is None:
        return "—"
    text = _fmt(m.gpus_training) if m.gpus_training is not None else "none fits"
    return f"{text} (formula; fsdp {_fmt(fsdp)})"


def whatif_table(rows: Iterable[WhatIf], binary: bool = False) -> Table:
    """The what-if planner's rows: change, predicted peak per device, whether it fits."""
    rows = list(rows)
    table = Table(title="what would fit (refined model, ranked by how little the run changes)", title_justify="left")
    table.add_column("change")
    unit = unit_for(*(r.peak_bytes for r in rows), binary=binary)
    table.add_column(f"peak ({unit[1]})", justify="right")
    table.add_column("fits", justify="center")
    for r in rows:
        fits = "—" if r.fits is None else "[green]yes[/]" if r.fits else "[red]no[/]"
        table.add_row(r.change, _fmt(r.peak_bytes, unit), fits)
    return table


def inputs_table(rows: Iterable[tuple[str, object, str]]) -> Table:
    """What the estimate assumed: name, value, where it came from."""
    table = Table(title="inputs", title_justify="left")
    for col in ("input", "value", "from"):
        table.add_column(col)
    for name, value, source in rows:
        table.add_row(name, "—" if value is None else f"{value:,}" if isinstance(value, int)
                      and not isinstance(value, bool) else str(value), source)
    return table


def to_text(*renderables: object, width: int = 110) -> str:
    """Render to plain text, for logs and files."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, no_color=True, highlight=False, force_terminal=False)
    for r in renderables:
        console.print(r)
    return buf.getvalue()
