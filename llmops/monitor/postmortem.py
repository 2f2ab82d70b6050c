"""The OOM post-mortem: where memory stood, what grew past its prediction, and what would have fit."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from llmops.estimate import refined
from llmops.estimate.verdict import NAMES, deciding
from llmops.estimate.whatif import what_if
from llmops.render.tables import to_text, whatif_table
from llmops.units import fmt_bytes, in_unit, unit_for

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
    stall = getattr(monitor, "stall", None)
    if stall is not None and stall.last_report:
        r = stall.last_report
        lines.append(f"- stalled before: no step for {r['since_step_s']:.1f} s (threshold {r['threshold_s']:.1f} s; "
                     f"{'still stalled' if stall.stalled_at is not None else 'steps resumed'}), every thread's stack "
                     f"in stall-rank{monitor.rank}.txt")
    if device_memory is not None:
        free, total = device_memory
        lines.append(f"- device memory: {fmt_bytes(free, unit_for(total))} free of {fmt_bytes(total)}")
    state = monitor.state
    name, pred = deciding(monitor.prediction)
    predicted = pred.components() if pred else {}
    measured = {c: state.get("llmops_memory_actual_bytes", component=c) for c in predicted}
    measured = {c: v for c, v in measured.items() if isinstance(v, float)}
    unit = unit_for(*predicted.values(), *measured.values())
    lines += ["", f"Predicted by {NAMES[name]}, the prediction that decided." if name else "No prediction was made.",
              "", f"| component | predicted ({unit[1]}) | measured at the last samples ({unit[1]}) |", "|---|---|---|"]
    grew = []
    for component, want in predicted.items():
        got = measured.get(component)
        lines.append(f"| {component} | {in_unit(want, unit)} | {in_unit(got, unit)} |")
        if got is not None and want and got > GREW * want:
            grew.append(f"{component} ({fmt_bytes(got, unit)} measured > {fmt_bytes(want, unit)} predicted)")
    lines += ["", "Grew past the prediction: " + (", ".join(grew) if grew else "nothing measured did")]
    spec = monitor.intro.spec if monitor.intro else None
    if spec is not None and pred is not None:
        alt = {"largest safe micro-batch": pred.max_batch_size}
        for what, changed in (("full activation checkpointing", spec.with_(recompute="full")),
                              ("bf16-true", spec.with_(precision="bf16-true")),
                              (f"FSDP across {spec.world_size} GPUs", spec.with_(strategy="fsdp"))):
            est = refined(changed)
            verdict = "fits" if est.oom_risk is False else "does not fit"
            alt[f"peak with {what}"] = f"{fmt_bytes(est.peak_bytes)} ({verdict})"
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
