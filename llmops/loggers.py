"""The monitor's figures for Lightning loggers (CSV, TensorBoard, W&B, MLflow) under ``llmops/`` keys.

Values come from the same ``MetricState`` the exporter serves, so logs and Prometheus agree.
Histograms are logged as the mean over the interval since the last log.
"""

from __future__ import annotations

from .exporter import MetricState
from .exporter.state import HistogramValue

# (metric, labels left out of the key)
LOGGED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("llmops_memory_predicted_bytes", ()),
    ("llmops_memory_actual_bytes", ()),
    ("llmops_memory_drift_ratio", ()),
    ("llmops_oom_risk", ()),
    ("llmops_memory_budget_bytes", ()),
    ("llmops_gpu_memory_used_bytes", ("UUID",)),
    ("llmops_gpu_memory_total_bytes", ("UUID",)),
    ("llmops_gpu_utilization_ratio", ("UUID",)),
    ("llmops_step_duration_seconds", ()),
    ("llmops_comm_allreduce_duration_seconds", ()),
    ("llmops_comm_bus_bandwidth_bytes_per_second", ()),
    ("llmops_checkpoint_save_duration_seconds", ()),
)
HYPERPARAMS = ("llmops_memory_predicted_bytes", "llmops_batch_size_max_safe", "llmops_gpus_predicted",
               "llmops_memory_budget_bytes", "llmops_batch_size")


def _key(state: MetricState, name: str, values: tuple[str, ...], skip: tuple[str, ...]) -> str:
    labels = state.specs[name].labels
    parts = [v for label, v in zip(labels, values, strict=False) if label not in skip]
    return "/".join(["llmops", name.removeprefix("llmops_"), *parts])


class LoggerMetrics:
    """Turns the current state into a flat ``{"llmops/...": float}`` for ``logger.log_metrics``."""

    def __init__(self, state: MetricState, suffix: str = "") -> None:
        self.state, self.suffix = state, suffix
        self._last_hist: dict[str, tuple[float, int]] = {}

    def collect(self) -> dict[str, float]:
        snapshot = self.state.snapshot()
        out: dict[str, float] = {}
        for name, skip in LOGGED:
            for series in snapshot.get(name, ()):
                key = _key(self.state, name, series.labels, skip) + self.suffix
                value = series.value
                if isinstance(value, HistogramValue):
                    total, count = self._last_hist.get(key, (0.0, 0))
                    self._last_hist[key] = (value.sum, value.count)
                    if value.count > count:
                        out[key] = (value.sum - total) / (value.count - count)
                else:
                    out[key] = float(value)
        return out

    def hyperparams(self) -> dict[str, float]:
        """The preflight prediction, for ``logger.log_hyperparams`` (runs compared by predicted peak)."""
        snapshot = self.state.snapshot()
        return {_key(self.state, name, s.labels, ()): float(s.value)  # type: ignore[arg-type]
                for name in HYPERPARAMS for s in snapshot.get(name, ())}
