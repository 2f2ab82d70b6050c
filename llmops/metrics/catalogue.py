"""The one declarative list of the metrics llmops exports; docs/metrics.md is generated from it.

Docs, dashboards, alert rules and the exporter are all checked against ``METRICS``.
Every series also carries ``COMMON_LABELS``; they are not repeated per metric.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from llmops.vocabulary import PROBES, STEP_PHASES

MetricType = Literal["gauge", "counter", "histogram"]
Unit = Literal["bytes", "seconds", "ratio", "bytes_per_second", "count", "boolean", "info", "watts", "joules"]

COMMON_LABELS: tuple[str, ...] = ("run", "rank")
TYPES: tuple[str, ...] = ("gauge", "counter", "histogram")
UNITS: tuple[str, ...] = ("bytes", "seconds", "ratio", "bytes_per_second", "count", "boolean", "info", "watts",
                          "joules")
# Base units that Prometheus practice puts at the end of the name (before ``_total``).
SUFFIX_UNITS: tuple[str, ...] = ("bytes_per_second", "bytes", "seconds", "ratio", "watts", "joules")

_NAME = re.compile(r"^llmops_[a-z][a-z0-9_]*$")
_LABEL = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its exposed name (counters keep ``_total``), type, base unit, own labels, help.

    ``buckets`` are histogram upper bounds in the metric's unit, ascending, without ``+Inf``.
    Construction raises ``ValueError`` for a spec that breaks the naming conventions.
    """

    name: str
    type: MetricType
    unit: Unit
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _NAME.match(self.name):
            problems.append("name must match llmops_[a-z0-9_]+")
        if self.type not in TYPES:
            problems.append(f"type must be one of {TYPES}")
        if self.unit not in UNITS:
            problems.append(f"unit must be one of {UNITS}")
        if (self.type == "counter") != self.name.endswith("_total"):
            problems.append("counters, and only counters, end in _total")
        stem = self.name.removesuffix("_total")
        if self.unit in SUFFIX_UNITS and not stem.endswith("_" + self.unit):
            problems.append(f"a metric in {self.unit} ends in _{self.unit}")
        bad = [n for n in self.labels if n in COMMON_LABELS or not _LABEL.match(n)]
        if bad or len(set(self.labels)) != len(self.labels):
            problems.append(f"labels {self.labels} must be unique, valid and exclude {COMMON_LABELS}")
        if (self.type == "histogram") != (self.buckets is not None):
            problems.append("histograms, and only histograms, have buckets")
        finite = self.buckets and all(math.isfinite(b) for b in self.buckets)
        if self.buckets is not None and (not finite or list(self.buckets) != sorted(set(self.buckets))):
            problems.append("buckets must be finite, unique and ascending (+Inf is implicit)")
        if not self.help:
            problems.append("help must not be empty")
        if problems:
            raise ValueError(f"metric {self.name!r}: " + "; ".join(problems))


def _g(name: str, unit: Unit, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "gauge", unit, labels, help)


def _c(name: str, unit: Unit, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, "counter", unit, labels, help)


def _h(name: str, help: str, buckets: tuple[float, ...]) -> MetricSpec:
    return MetricSpec(name, "histogram", "seconds", (), help, buckets)


# Few, LLM-scale buckets (the series budget: README "Series per rank"): each finite bucket is one series per
# rank. The shipped rules and dashboards read only `_sum` and `_count`; the buckets serve histogram_quantile.
# A training step: 0.1 s (a small fine-tune) .. 15 s (a large model's global batch), ×5-6 apart.
STEP_BUCKETS: tuple[float, ...] = (0.1, 0.5, 2.5, 15.0)
# One DDP bucket's all-reduce (25 MB by default): 5 ms on NVLink .. half a second on a slow network.
ALLREDUCE_BUCKETS: tuple[float, ...] = (0.005, 0.05, 0.5)
# A checkpoint write: a small model on local disk .. a sharded 100B checkpoint on network storage.
CHECKPOINT_BUCKETS: tuple[float, ...] = (10.0, 60.0, 600.0)

_GPU = ("gpu", "UUID")  # UUID spelled as dcgm-exporter spells it, for joins on(UUID)

PREDICTION = (
    _g("llmops_memory_predicted_bytes", "bytes",
       "Predicted bytes per device for each component; peak is the predicted peak.", "component", "model"),
    _g("llmops_gpus_predicted", "count",
       "GPUs needed; method is rule_of_thumb or formula, phase is training or inference.", "method", "phase"),
    _g("llmops_batch_size", "count", "Micro-batch size per device in use."),
    _g("llmops_batch_size_max_safe", "count",
       "Largest micro-batch predicted to fit under the safety fraction.", "model"),
    _g("llmops_batch_accumulate_predicted", "count",
       "Gradient accumulation steps that keep the global batch at the model's largest safe micro-batch.",
       "model"),
    _g("llmops_oom_risk", "boolean",
       "1 when an OOM is likely, else 0; source is prediction, measured or trend.", "source"),
    _g("llmops_memory_budget_bytes", "bytes",
       "Device memory the OOM check uses, before the safety fraction is applied."),
    _g("llmops_memory_safety_ratio", "ratio", "Fraction of the memory budget a prediction may use."),
)
ACTUAL = (
    _g("llmops_memory_actual_bytes", "bytes",
       "Measured bytes per device per component; peak is the step's real peak: the CUDA allocator's over the "
       "last window, on the CPU the live tensors counted over a sampled step (components at that moment).",
       "component"),
    _g("llmops_memory_drift_ratio", "ratio", "Measured peak divided by predicted peak.", "model"),
    _g("llmops_gpu_memory_total_bytes", "bytes", "Device memory (NVML).", *_GPU),
    _g("llmops_gpu_memory_used_bytes", "bytes", "Device memory in use by all processes (NVML).", *_GPU),
    _g("llmops_gpu_process_memory_bytes", "bytes", "Device memory used by this process (NVML).", *_GPU),
    _g("llmops_gpu_utilization_ratio", "ratio", "GPU busy fraction (NVML).", *_GPU),
    _g("llmops_cuda_memory_reserved_bytes", "bytes", "Bytes reserved by the PyTorch CUDA allocator."),
    _c("llmops_cuda_ooms_total", "count", "CUDA allocator out-of-memory errors."),
    _c("llmops_cuda_alloc_retries_total", "count",
       "CUDA allocator retries: allocations that succeeded only after freeing cached blocks."),
    _c("llmops_activation_sample_steps_total", "count", "Training steps on which activations were measured."),
)
PROGRESS = (
    _g("llmops_train_step", "count", "Global step."),
    _h("llmops_step_duration_seconds", "Wall time of one training step on this rank.", STEP_BUCKETS),
    _c("llmops_samples_total", "count", "Samples processed by this rank."),
)
COMMUNICATION = (
    _h("llmops_comm_allreduce_duration_seconds",
       "Time of each gradient all-reduce (per DDP bucket).", ALLREDUCE_BUCKETS),
    _c("llmops_comm_allreduce_bytes_total", "bytes", "Bytes all-reduced by this rank."),
    _g("llmops_comm_bus_bandwidth_bytes_per_second", "bytes_per_second",
       "All-reduce bus bandwidth over the last window (nccl-tests definition)."),
    _g("llmops_comm_step_time_ratio", "ratio",
       "Share of the last step's wall time spent in gradient all-reduce (overlap with backward included)."),
    _g("llmops_comm_allreduce_predicted_bytes", "bytes",
       "Gradient bytes each rank all-reduces per optimizer step, once every accumulate_grad_batches micro-batches."),
    _g("llmops_train_accumulate_grad_batches", "count", "Micro-batches per optimizer step (gradient accumulation)."),
)
CHECKPOINTS = (
    _g("llmops_checkpoint_last_success_timestamp_seconds", "seconds",
       "Unix time the last checkpoint finished writing."),
    _g("llmops_run_start_timestamp_seconds", "seconds",
       "Unix time this process started training; checkpoint age counts from it until the first save."),
    _g("llmops_run_end_timestamp_seconds", "seconds",
       "Unix time the run ended normally (absent while it runs, and after a crash)."),
    _h("llmops_checkpoint_save_duration_seconds", "Time to write a checkpoint.", CHECKPOINT_BUCKETS),
    _g("llmops_checkpoint_size_bytes", "bytes", "Size of the last checkpoint written."),
    _c("llmops_checkpoint_saves_total", "count", "Checkpoints written."),
    _c("llmops_checkpoint_failures_total", "count", "Checkpoint writes that failed."),
    _c("llmops_checkpoint_restores_total", "count", "Runs resumed from a checkpoint."),
)
THROUGHPUT = (
    _c("llmops_tokens_total", "count",
       "Tokens processed by this rank: samples × sequence length, or the attention mask's non-padding tokens."),
    _c("llmops_model_flops_total", "count",
       "Model FLOPs done by this rank: tokens × (6·N + 12·L·h·s) (PaLM appendix B; recomputation not counted)."),
    _g("llmops_mfu_ratio", "ratio",
       "Model FLOPs utilisation over the last sampling window: achieved model FLOP/s over the device's dense peak "
       "(absent where the peak is unknown)."),
    _c("llmops_step_phase_seconds_total", "seconds",
       "Seconds of training steps per phase: data, forward, backward, optimizer, comm_exposed (all-reduce not "
       "hidden behind backward); they sum to the wall time between batch ends.", "phase"),
    _g("llmops_step_time_median_ratio", "ratio",
       "The last optimizer step's time on this rank, less its exposed all-reduce wait, over the median of its "
       "recent steps (the same measure): above 1 when this rank slows down against itself."),
    _g("llmops_last_step_timestamp_seconds", "seconds", "Unix time the last training step finished on this rank."),
    _g("llmops_train_stalled", "boolean",
       "1 while no training step has finished for longer than the stall threshold (max(stall_min_seconds, "
       "stall_factor × the recent p99 step time)), else 0."),
    _g("llmops_gpu_power_watts", "watts", "Power draw (NVML).", *_GPU),
    _c("llmops_gpu_energy_joules_total", "joules", "Energy since the driver loaded (NVML total energy).", *_GPU),
)
MONITOR = (
    _c("llmops_monitor_errors_total", "count",
       "Errors caught inside the monitor, by probe; the run went on.", "probe"),
    _g("llmops_build_info", "info", "Always 1; the versions and settings are the labels.",
       "version", "torch", "lightning", "strategy", "precision"),
)

# Section title -> its metrics, in the order docs/metrics.md lists them (generated: llmops/metrics/doc.py).
SECTIONS: dict[str, tuple[MetricSpec, ...]] = {
    "Prediction (set before the first step; updated when the batch changes)": PREDICTION,
    "Actual (sampled during the run)": ACTUAL,
    "Training progress": PROGRESS,
    "Communication": COMMUNICATION,
    "Checkpoints and the run's lifetime": CHECKPOINTS,
    "Throughput, phases, stalls and energy": THROUGHPUT,
    "Health of the monitor itself": MONITOR,
}
METRICS: tuple[MetricSpec, ...] = tuple(m for section in SECTIONS.values() for m in section)
# What each label means; every label a metric carries is here (a test checks it).
LABELS: dict[str, str] = {
    "run": "the run's name: set by the user, else the logger's name and version (if any), the start time and "
           "4 hex digits, the same on every rank and kept across a resume",
    "rank": "global rank of the process (0 without distribution)",
    "gpu": "NVML index of the GPU",
    "UUID": "GPU UUID, spelled as dcgm-exporter spells it, so series join with DCGM's `on(UUID)`",
    "component": "`params`, `grads`, `optimizer_states`, `activations`, `overhead`, `peak`",
    "model": "`document` (the formulas exactly as in formulas.md), `refined` (the named-term model) or `dryrun` "
             "(one step on fake tensors)",
    "method": "`rule_of_thumb` or `formula`",
    "phase": "`training` or `inference` (GPU counts); " + ", ".join(f"`{p}`" for p in STEP_PHASES) + " (step phases)",
    "source": "`prediction`, `measured` or `trend`",
    "probe": "the part of the monitor that failed: " + ", ".join(f"`{p}`" for p in PROBES),
    "version": "llmops' version", "torch": "PyTorch's version", "lightning": "Lightning's version",
    "strategy": "the Lightning strategy's class name", "precision": "the Trainer's precision",
}

# Run-level series: every rank of a run computes the same figure (the prediction, the run's settings), so only
# global rank 0 exports them; dashboards join them to any rank's series on(run). Metric -> the label values
# that make one of its series run-level (empty: all of them).
RUN_LEVEL: dict[str, dict[str, str]] = {
    "llmops_memory_predicted_bytes": {},
    "llmops_gpus_predicted": {},
    "llmops_batch_size": {},
    "llmops_memory_safety_ratio": {},
    "llmops_batch_size_max_safe": {},
    "llmops_batch_accumulate_predicted": {},
    "llmops_oom_risk": {"source": "prediction"},
    "llmops_comm_allreduce_predicted_bytes": {},
    "llmops_train_accumulate_grad_batches": {},
    "llmops_build_info": {},
}
# Counters absent until they count something: a zero on every rank costs a series each and says nothing
# (no alert reads them; a dashboard shows them with `or 0 * ...`).
ABSENT_AT_ZERO: tuple[str, ...] = (
    "llmops_cuda_ooms_total", "llmops_cuda_alloc_retries_total", "llmops_checkpoint_restores_total",
)
# The series budget of one rank in the default configuration (tests/exporter/test_series_budget.py, and the
# 2-rank DDP run in tests/distributed/test_series_budget.py count it): what every rank exports, rank 0's
# run-level series aside.
SERIES_PER_RANK_BUDGET = 50

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in METRICS}

