"""Figures a person reads from one rank's log: predicted vs measured, the verdict, where a run stopped."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from llmops.estimate.verdict import deciding
from llmops.render.tables import to_text
from llmops.runlog import RankLog
from llmops.units import fmt_bytes, in_unit, unit_for
from llmops.vocabulary import TENSOR_COMPONENTS

# What each figure holds at the step's peak moment (the prediction's phase; on the CPU the measured one's).
_EST_FIELD = {"params": "params_bytes", "grads": "grads_bytes", "optimizer_states": "optimizer_state_bytes",
              "activations": "activation_bytes", "temporaries": "temporary_bytes"}


# What the "measured" column is, by device (the run log's start record says which).
MEASURED = {
    "cpu": "measured: the real peak of the last sampled step, every live tensor counted over it (forward with "
           "the last step's gradients, backward, optimizer step), and what that moment held; predicted: the "
           "same moment",
    "cuda": "measured: peak from torch.cuda.max_memory_allocated() over the sampling window (overhead left out); "
            "params, grads and optimizer states counted from the tensors, activations saved for backward",
}


@dataclass(frozen=True)
class Row:
    component: str
    document: float | None
    refined: float | None
    measured: float | None

    @property
    def ratio(self) -> float | None:
        """measured / refined prediction."""
        return self.measured / self.refined if self.measured and self.refined else None


def predicted(rank: RankLog, model: str, component: str) -> float | None:
    """Bytes the preflight predicted; ``peak`` is the tensor peak (predicted peak less the fixed overhead)."""
    models = (rank.preflight or {}).get("models", {})
    est = models.get(model)
    if not est:
        return None
    if component == "peak":
        peak = est.get("peak_bytes")
        return None if peak is None else peak - (est.get("overhead_bytes") or 0)
    return est.get(_EST_FIELD[component])  # None in a run log written before the field existed


def measured_peak(rank: RankLog) -> float | None:
    """The highest measured peak over the run (allocator on CUDA, the tensors on the CPU)."""
    points = rank.get("llmops_memory_actual_bytes", component="peak")
    return max((p[2] for p in points), default=None)


def comparison_rows(rank: RankLog) -> list[Row]:
    rows = [Row(c, predicted(rank, "document", c), predicted(rank, "refined", c),
                rank.last("llmops_memory_actual_bytes", component=c)) for c in TENSOR_COMPONENTS]
    rows.append(Row("peak (live tensors)", predicted(rank, "document", "peak"), predicted(rank, "refined", "peak"),
                    measured_peak(rank)))
    return rows


def comparison_table(rank: RankLog) -> Table:
    rows = comparison_rows(rank)
    unit = unit_for(*(v for r in rows for v in (r.document, r.refined, r.measured)))
    steps = rank.last_step
    measured = MEASURED.get(str(rank.start.get("device")), "")
    table = Table(title=f"llmops: predicted vs measured memory per device, rank {rank.rank}, after step {steps} "
                        f"({unit[1]})", title_justify="left", caption=measured, caption_justify="left")
    for col, justify in (("component", "left"), ("document", "right"), ("refined", "right"),
                         ("measured", "right"), ("measured / refined", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        table.add_row(r.component, *(in_unit(v, unit) for v in (r.document, r.refined, r.measured)),
                      f"{r.ratio:.3f}" if r.ratio is not None else "—")
    return table


def comparison_text(rank: RankLog) -> str:
    return to_text(comparison_table(rank))


def verdict(rank: RankLog) -> str:
    """The preflight's OOM verdict in one sentence."""
    pre = rank.preflight
    if pre is None:
        return "no preflight was recorded (the run stopped before its first step, or the monitor could not predict)"
    models = pre.get("models", {})
    best = deciding(models)[1] or {}
    budget, peak, risk = best.get("budget_bytes"), best.get("peak_bytes"), best.get("oom_risk")
    b = (pre.get("spec") or {}).get("batch_size")
    if budget is None:
        return (f"no memory budget (no GPU, no memory_budget=): predicted peak {fmt_bytes(peak)} per device "
                f"({best.get('model', '?')} model), not checked")
    word = "OOM RISK" if risk else "fits"
    return (f"{word}: predicted peak {fmt_bytes(peak)} per device against a budget of {fmt_bytes(budget)} "
            f"({best.get('model', '?')} model); micro-batch {b}, largest safe micro-batch {best.get('max_batch_size')}")


def ending(rank: RankLog) -> tuple[str, str]:
    """``(status, sentence)``: ok, interrupted, error or died (no end record)."""
    if rank.end is None:
        when = _when(rank.last_t)
        return "died", (f"rank {rank.rank} stopped without closing its log (killed, e.g. by the OOM killer or "
                        f"SIGKILL): last step {rank.last_step}, last record at {when}")
    status = str(rank.end.get("status", "ok"))
    if status == "ok":
        return "ok", f"rank {rank.rank} finished at step {rank.last_step}"
    kind = "interrupted" if status == "interrupted" else "error"
    return kind, f"rank {rank.rank} stopped at step {rank.last_step}: {status}"


def last_memory(rank: RankLog) -> list[tuple[str, str]]:
    """Where memory stood in the last samples: ``(what, value)`` pairs for a run that did not finish."""
    out: list[tuple[str, str]] = [("last step", str(rank.last_step)), ("last record", _when(rank.last_t))]
    for c in (*TENSOR_COMPONENTS, "peak"):
        v = rank.last("llmops_memory_actual_bytes", component=c)
        if v is not None:
            pts = rank.get("llmops_memory_actual_bytes", component=c)
            out.append((f"measured {c}", f"{fmt_bytes(v)} (written at step {pts[-1][1]})"))
    for name, what in (("llmops_gpu_process_memory_bytes", "GPU memory of the process (NVML)"),
                       ("llmops_gpu_memory_used_bytes", "GPU memory used, all processes (NVML)"),
                       ("llmops_gpu_memory_total_bytes", "GPU memory total (NVML)"),
                       ("llmops_cuda_memory_reserved_bytes", "CUDA allocator reserved")):
        for _labels, pts in rank.matching(name).items():
            out.append((what, fmt_bytes(pts[-1][2])))
    budget = budget_room(rank)
    peak = rank.last("llmops_memory_actual_bytes", component="peak")
    if budget is not None and peak is not None:
        out.append(("headroom to the budget", f"{fmt_bytes(budget - peak)} ({peak / budget:.1%} of the budget used)"))
    for source in ("prediction", "measured", "trend"):
        v = rank.last("llmops_oom_risk", source=source)
        if v is not None:
            out.append((f"OOM risk ({source})", "YES" if v else "no"))
    return out


def budget_room(rank: RankLog) -> float | None:
    """Bytes the tensors may use: safety × budget less the predicted fixed overhead (as the monitor checks)."""
    models = (rank.preflight or {}).get("models", {})
    best: dict[str, Any] = deciding(models)[1] or {}
    budget = best.get("budget_bytes")
    return None if budget is None else budget - (best.get("overhead_bytes") or 0)


def _when(t: float | None) -> str:
    return "—" if t is None else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")
