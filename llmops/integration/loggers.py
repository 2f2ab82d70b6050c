"""The monitor's figures for Lightning loggers (CSV, TensorBoard, W&B, MLflow) under ``llmops/`` keys.

Values come from the same ``MetricState`` the exporter serves, so logs and Prometheus agree.
Histograms are logged as the mean over the interval since the last log.
"""

from __future__ import annotations

from typing import Any

from llmops.metrics import MetricState
from llmops.metrics.state import HistogramValue

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
_LOGGED_NAMES = tuple(name for name, _ in LOGGED)
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
        self._keys: dict[tuple[str, tuple[str, ...]], str] = {}  # (metric, label values) -> its key, made once

    def collect(self) -> dict[str, float]:
        """On the training thread every ``log_every_n_steps``: only the logged metrics are copied."""
        snapshot = self.state.snapshot(_LOGGED_NAMES)
        out: dict[str, float] = {}
        for name, skip in LOGGED:
            for series in snapshot.get(name, ()):
                key = self._keys.get((name, series.labels))
                if key is None:
                    key = self._keys[name, series.labels] = _key(self.state, name, series.labels, skip) + self.suffix
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
        snapshot = self.state.snapshot(HYPERPARAMS)
        return {_key(self.state, name, s.labels, ()): float(s.value)  # type: ignore[arg-type]
                for name in HYPERPARAMS for s in snapshot.get(name, ())}


def log_prediction(logger: Any, prediction: dict[str, float]) -> None:
    """Give ``logger`` the preflight prediction as hyperparameters.

    TensorBoard's HParams view keeps a run's first session (Lightning writes the model's before step 1,
    and the prediction needs the first batch), and ``hparams.yaml`` is written once: for a
    ``TensorBoardLogger`` the model's hyperparameters and the prediction go, as one session, to the run
    ``<log_dir>/llmops`` (with the prediction as its metrics), and ``hparams.yaml`` is rewritten with both.
    """
    logger.log_hyperparams(prediction)
    if type(logger).__name__ != "TensorBoardLogger":
        return
    import importlib
    import os

    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    # the logger's own namespace (lightning.pytorch or pytorch_lightning) writes its hparams.yaml
    saving = importlib.import_module(type(logger).__module__.split(".loggers")[0] + ".core.saving")

    params = {k: v for k, v in logger.hparams.items() if isinstance(v, (bool, int, float, str))}
    writer = SummaryWriter(os.path.join(logger.log_dir, "llmops"))
    try:
        for summary in hparams(params, prediction):
            writer.file_writer.add_summary(summary)
        for key, value in prediction.items():
            writer.add_scalar(key, value, 0)
    finally:
        writer.close()
    saving.save_hparams_to_yaml(os.path.join(logger.log_dir, logger.NAME_HPARAMS_FILE), logger.hparams)
