"""LLMOpsCollector: families built at scrape time, run/rank on every series, absent stays absent."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from llmops.exporter import LLMOpsCollector
from llmops.metrics import MetricState
from llmops.metrics.catalogue import BY_NAME

RUN = {"run": "gpt-test", "rank": "3"}


@pytest.fixture
def state() -> MetricState:
    return MetricState()


@pytest.fixture
def registry(state: MetricState) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(LLMOpsCollector(state, run="gpt-test", rank=3))
    return registry


def test_gauge_with_labels(state: MetricState, registry: CollectorRegistry) -> None:
    state.set("llmops_memory_drift_ratio", 1.5, model="refined")
    labels = {**RUN, "model": "refined"}
    assert registry.get_sample_value("llmops_memory_drift_ratio", labels) == 1.5
    assert registry.get_sample_value("llmops_memory_drift_ratio", {**labels, "model": "document"}) is None


def test_values_are_read_at_scrape_time(state: MetricState, registry: CollectorRegistry) -> None:
    state.set("llmops_train_step", 1)
    assert registry.get_sample_value("llmops_train_step", RUN) == 1
    state.set("llmops_train_step", 2)
    assert registry.get_sample_value("llmops_train_step", RUN) == 2
    state.remove("llmops_train_step")
    assert registry.get_sample_value("llmops_train_step", RUN) is None


def test_absent_series_are_absent_not_zero(state: MetricState, registry: CollectorRegistry) -> None:
    state.set("llmops_gpu_utilization_ratio", None, gpu=0, UUID="GPU-a")
    state.set("llmops_gpu_memory_used_bytes", float("nan"), gpu=0, UUID="GPU-a")
    assert list(registry.collect()) == []
    assert generate_latest(registry) == b""


def test_counter_is_exposed_with_total_suffix(state: MetricState, registry: CollectorRegistry) -> None:
    state.inc("llmops_monitor_errors_total", probe="nvml")
    state.inc("llmops_monitor_errors_total", 2, probe="nvml")
    assert registry.get_sample_value("llmops_monitor_errors_total", {**RUN, "probe": "nvml"}) == 3
    text = generate_latest(registry).decode()
    assert "# TYPE llmops_monitor_errors_total counter" in text
    assert "llmops_monitor_errors_total_total" not in text
    (family,) = text_string_to_metric_families(text)
    assert family.type == "counter"


def test_histogram_series(state: MetricState, registry: CollectorRegistry) -> None:
    for seconds in (0.003, 0.2, 0.2, 45.0):
        state.observe("llmops_step_duration_seconds", seconds)
    name = "llmops_step_duration_seconds"
    assert registry.get_sample_value(f"{name}_count", RUN) == 4
    assert registry.get_sample_value(f"{name}_sum", RUN) == pytest.approx(45.403)
    assert registry.get_sample_value(f"{name}_bucket", {**RUN, "le": "0.1"}) == 1
    assert registry.get_sample_value(f"{name}_bucket", {**RUN, "le": "0.5"}) == 3
    assert registry.get_sample_value(f"{name}_bucket", {**RUN, "le": "2.5"}) == 3
    assert registry.get_sample_value(f"{name}_bucket", {**RUN, "le": "15.0"}) == 3
    assert registry.get_sample_value(f"{name}_bucket", {**RUN, "le": "+Inf"}) == 4


def test_every_metric_round_trips_with_run_and_rank(state: MetricState) -> None:
    registry = CollectorRegistry()
    registry.register(LLMOpsCollector(state, run="gpt-test", rank=3, run_level_on_every_rank=True))
    write = {"gauge": state.set, "counter": state.inc, "histogram": state.observe}
    for spec in BY_NAME.values():
        write[spec.type](spec.name, 1, **{label: f"v-{label}" for label in spec.labels})
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for spec in BY_NAME.values():
        # The text parser reports counter families without `_total`.
        family = families[spec.name.removesuffix("_total") if spec.type == "counter" else spec.name]
        assert family.type == spec.type
        assert family.samples, spec.name
        for sample in family.samples:
            assert sample.labels["run"] == "gpt-test" and sample.labels["rank"] == "3", sample
            for label in spec.labels:
                assert sample.labels[label] == f"v-{label}", sample
    assert len(families) == len(BY_NAME)


def test_openmetrics_exposition_carries_units(state: MetricState, registry: CollectorRegistry) -> None:
    state.set("llmops_comm_bus_bandwidth_bytes_per_second", 1e11)
    state.set("llmops_train_step", 8)
    text = generate_openmetrics(registry).decode()
    assert "# UNIT llmops_comm_bus_bandwidth_bytes_per_second bytes_per_second" in text
    assert "llmops_train_step{" in text and "llmops_train_step_count" not in text


def test_describe_is_empty_and_the_registry_is_our_own() -> None:
    state = MetricState()
    collector = LLMOpsCollector(state, run="a", rank=0)
    assert collector.describe() == []
    registry = CollectorRegistry()
    registry.register(collector)
    state.set("llmops_batch_size", 4)
    assert registry.get_sample_value("llmops_batch_size", {"run": "a", "rank": "0"}) == 4
    assert REGISTRY.get_sample_value("llmops_batch_size", {"run": "a", "rank": "0"}) is None


def test_run_level_series_only_on_rank_zero(state: MetricState, registry: CollectorRegistry) -> None:
    """The series budget: a prediction every rank makes alike is exported once, by rank 0, with its run label."""
    state.set("llmops_memory_predicted_bytes", 12e9, component="peak", model="refined")
    state.set("llmops_oom_risk", 1, source="prediction")
    state.set("llmops_oom_risk", 0, source="measured")
    rank0 = CollectorRegistry()
    rank0.register(LLMOpsCollector(state, run="gpt-test", rank=0))
    peak = {"component": "peak", "model": "refined"}
    assert rank0.get_sample_value("llmops_memory_predicted_bytes", {"run": "gpt-test", "rank": "0", **peak}) == 12e9
    assert registry.get_sample_value("llmops_memory_predicted_bytes", {**RUN, **peak}) is None
    # only the prediction's source is run-level: a rank's measured risk is its own
    assert registry.get_sample_value("llmops_oom_risk", {**RUN, "source": "prediction"}) is None
    assert registry.get_sample_value("llmops_oom_risk", {**RUN, "source": "measured"}) == 0
    assert rank0.get_sample_value("llmops_oom_risk", {"run": "gpt-test", "rank": "0", "source": "prediction"}) == 1
    every = CollectorRegistry()
    every.register(LLMOpsCollector(state, run="gpt-test", rank=3, run_level_on_every_rank=True))
    assert every.get_sample_value("llmops_memory_predicted_bytes", {**RUN, **peak}) == 12e9


def test_counters_absent_until_they_count(state: MetricState, registry: CollectorRegistry) -> None:
    state.inc("llmops_checkpoint_restores_total", 0)
    state.inc("llmops_cuda_ooms_total", 0)
    state.inc("llmops_checkpoint_failures_total", 0)  # not in ABSENT_AT_ZERO: the alert reads it from 0
    assert registry.get_sample_value("llmops_checkpoint_restores_total", RUN) is None
    assert registry.get_sample_value("llmops_cuda_ooms_total", RUN) is None
    assert registry.get_sample_value("llmops_checkpoint_failures_total", RUN) == 0
    state.inc("llmops_checkpoint_restores_total", 1)
    assert registry.get_sample_value("llmops_checkpoint_restores_total", RUN) == 1
