"""MetricState: validation, skipping of unavailable readings, histograms, snapshots, threads."""

from __future__ import annotations

import math
import threading

import pytest

from llmops.metrics.catalogue import BY_NAME, MetricSpec
from llmops.metrics.state import HistogramValue, MetricState, Series

PREDICTED = "llmops_memory_predicted_bytes"


def test_set_stores_latest_value_per_label_set() -> None:
    state = MetricState()
    state.set(PREDICTED, 10, component="peak", model="document")
    state.set(PREDICTED, 20, component="peak", model="document")
    state.set(PREDICTED, 5, component="params", model="refined")
    assert state.get(PREDICTED, component="peak", model="document") == 20.0
    assert state.get(PREDICTED, component="params", model="refined") == 5.0
    assert state.get(PREDICTED, component="grads", model="refined") is None
    assert len(state.snapshot()[PREDICTED]) == 2


def test_label_values_are_strings_in_spec_order() -> None:
    state = MetricState()
    state.set("llmops_gpu_memory_total_bytes", 80e9, UUID="GPU-abc", gpu=0)
    (series,) = state.snapshot()["llmops_gpu_memory_total_bytes"]
    assert series == Series(("0", "GPU-abc"), 80e9)


def test_unknown_metric_is_rejected_with_its_name() -> None:
    with pytest.raises(ValueError, match="llmops_nope_bytes"):
        MetricState().set("llmops_nope_bytes", 1)


@pytest.mark.parametrize(
    "labels", [{}, {"component": "peak"}, {"component": "peak", "model": "x", "gpu": "0"}]
)
def test_wrong_label_set_is_rejected(labels: dict) -> None:
    with pytest.raises(ValueError, match=rf"{PREDICTED}.*expected \['component', 'model'\]"):
        MetricState().set(PREDICTED, 1, **labels)


def test_run_and_rank_are_not_per_metric_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        MetricState().set("llmops_batch_size", 1, rank=0)


def test_wrong_type_is_rejected() -> None:
    state = MetricState()
    with pytest.raises(ValueError, match="counter, not a gauge"):
        state.set("llmops_samples_total", 1)
    with pytest.raises(ValueError, match="gauge, not a counter"):
        state.inc("llmops_batch_size")
    with pytest.raises(ValueError, match="gauge, not a histogram"):
        state.observe("llmops_batch_size", 1)


@pytest.mark.parametrize("missing", [None, math.nan, float("nan")])
def test_unavailable_readings_are_never_stored(missing: float | None) -> None:
    state = MetricState()
    state.set("llmops_gpu_utilization_ratio", missing, gpu=0, UUID="GPU-a")
    state.inc("llmops_samples_total", missing)
    state.observe("llmops_step_duration_seconds", missing)
    assert state.snapshot() == {}
    state.set("llmops_batch_size", 8)
    state.set("llmops_batch_size", missing)
    assert state.get("llmops_batch_size") == 8.0, "an unavailable reading keeps the last real one"


def test_non_numbers_are_rejected() -> None:
    with pytest.raises(ValueError, match="not a number"):
        MetricState().set("llmops_batch_size", "eight")


def test_counters_accumulate_and_never_decrease() -> None:
    state = MetricState()
    state.inc("llmops_cuda_ooms_total", 0)
    assert state.get("llmops_cuda_ooms_total") == 0.0, "inc(0) makes a real zero series"
    state.inc("llmops_samples_total", 32)
    state.inc("llmops_samples_total", 32)
    state.inc("llmops_monitor_errors_total", probe="nvml")
    state.inc("llmops_monitor_errors_total", probe="nvml")
    assert state.get("llmops_samples_total") == 64.0
    assert state.get("llmops_monitor_errors_total", probe="nvml") == 2.0
    for bad in (-1, math.inf):
        with pytest.raises(ValueError, match="llmops_samples_total"):
            state.inc("llmops_samples_total", bad)
    assert state.get("llmops_samples_total") == 64.0


def test_histogram_buckets_are_cumulative_with_le_semantics() -> None:
    spec = BY_NAME["llmops_step_duration_seconds"]
    assert spec.buckets is not None
    state = MetricState()
    for value in (0.1, 0.2, 2.5, 1e6):  # on a bound, between bounds, on a bound, past the last
        state.observe(spec.name, value)
    hist = state.get(spec.name)
    assert isinstance(hist, HistogramValue)
    bounds = dict(hist.buckets)
    assert list(bounds) == [*spec.buckets, math.inf]
    assert bounds[0.1] == 1  # le is inclusive
    assert bounds[0.5] == 2
    assert bounds[2.5] == 3
    assert bounds[15.0] == 3
    assert bounds[math.inf] == 4 == hist.count
    assert hist.sum == pytest.approx(1e6 + 2.8)


def test_remove_and_clear() -> None:
    state = MetricState()
    state.set(PREDICTED, 1, component="peak", model="document")
    state.set(PREDICTED, 2, component="peak", model="refined")
    state.remove(PREDICTED, component="peak", model="document")
    state.remove(PREDICTED, component="peak", model="document")  # idempotent
    assert state.get(PREDICTED, component="peak", model="document") is None
    assert state.get(PREDICTED, component="peak", model="refined") == 2.0
    state.clear(PREDICTED)
    assert PREDICTED not in state.snapshot()
    with pytest.raises(ValueError, match="llmops_nope"):
        state.clear("llmops_nope")


def test_snapshot_is_an_immutable_copy() -> None:
    state = MetricState()
    state.set("llmops_batch_size", 4)
    state.observe("llmops_step_duration_seconds", 0.2)
    snap = state.snapshot()
    state.set("llmops_batch_size", 8)
    state.observe("llmops_step_duration_seconds", 0.2)
    assert snap["llmops_batch_size"][0].value == 4.0
    assert snap["llmops_step_duration_seconds"][0].value.count == 1  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        snap["llmops_batch_size"] = ()  # type: ignore[index]


def test_custom_metric_list_is_a_parameter() -> None:
    state = MetricState([MetricSpec("llmops_x_bytes", "gauge", "bytes", (), "X.")])
    state.set("llmops_x_bytes", 3)
    assert state.get("llmops_x_bytes") == 3.0
    with pytest.raises(ValueError, match="unknown metric"):
        state.set("llmops_batch_size", 1)


def test_concurrent_writers_lose_no_updates() -> None:
    state = MetricState()
    per_thread, threads = 2000, 8

    def work() -> None:
        for i in range(per_thread):
            state.inc("llmops_samples_total")
            state.observe("llmops_comm_allreduce_duration_seconds", 0.01)
            if i % 200 == 0:
                state.snapshot()  # readers interleave with writers

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert state.get("llmops_samples_total") == per_thread * threads
    hist = state.get("llmops_comm_allreduce_duration_seconds")
    assert isinstance(hist, HistogramValue) and hist.count == per_thread * threads
