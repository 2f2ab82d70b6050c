"""The OOM post-mortem: where memory stood, what grew past its prediction, and what would have fit."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from .estimate import refined
from .estimate.units import gb
from .estimate.whatif import what_if
from .tables import to_text, whatif_table

log = logging.getLogger("llmops")
GREW = 1.02  # measured over predicted by more than this counts as grown (step counters and such are noise)


def is_oom(error: BaseException) -> bool:
    """``torch.OutOfMemoryError`` (CUDA's, and what a CPU test raises)."""
    return isinstance(error, torch.OutOfMemoryError)


def postmortem_text(monitor: Any, error: BaseException, step: int, batch_shape: tuple[Any, ...],
                    device_memory: tuple[int, int] | None) -> str:
    """The post-mortem as Markdown: step, batch, predicted vs measured, what grew, what would fit."""
    lines = [f"# llmops OOM post-mortem — run {monitor.run}, rank {monitor.rank}", "",
             f"- time: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"- error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
             f"- step: {step}", f"- batch shape (b, s): {batch_shape}"]
    if device_memory is not None:
        free, total = device_memory
        lines.append(f"- device memory: {gb(free)} GB free of {gb(total)} GB")
    state = monitor.state
    pred = monitor.prediction.get("refined") or monitor.prediction.get("document")
    lines += ["", "| component | predicted (GB) | measured at the last samples (GB) |", "|---|---|---|"]
    grew = []
    for component, predicted in (pred.components() if pred else {}).items():
        measured = state.get("llmops_memory_actual_bytes", component=component)
        lines.append(f"| {component} | {gb(predicted)} | {gb(measured) if isinstance(measured, float) else '—'} |")
        if isinstance(measured, float) and predicted and measured > GREW * predicted:
            grew.append(f"{component} ({gb(measured)} GB measured > {gb(predicted)} GB predicted)")
    lines += ["", "Grew past the prediction: " + (", ".join(grew) if grew else "nothing measured did")]
    spec = monitor.intro.spec if monitor.intro else None
    if spec is not None and pred is not None:
        alt = {"largest safe micro-batch": pred.max_batch_size}
        for what, changed in (("full activation checkpointing", spec.with_(recompute="full")),
                              ("bf16-true", spec.with_(precision="bf16-true")),
                              (f"FSDP across {spec.world_size} GPUs", spec.with_(strategy="fsdp"))):
            est = refined(changed)
            verdict = "fits" if est.oom_risk is False else "does not fit"
            alt[f"peak with {what}"] = f"{gb(est.peak_bytes)} GB ({verdict})"
        lines += ["", "What would have fit:", *(f"- {k}: {v}" for k, v in alt.items()), "", "```",
                  to_text(whatif_table(what_if(spec))).rstrip(), "```"]
    return "\n".join(lines) + "\n"


def write_postmortem(directory: Path, rank: int, text: str, snapshot: bool) -> Path:
    """Write the post-mortem (and the allocator history for pytorch.org/memory_viz when recorded)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"postmortem-rank{rank}.md"
    path.write_text(text)
    if snapshot and torch.cuda.is_available():
        torch.cuda.memory._dump_snapshot(str(directory / f"memory-snapshot-rank{rank}.pickle"))
    log.error("%s\nllmops: post-mortem written to %s", text, path)
    return path
