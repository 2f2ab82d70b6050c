"""One drain of many micro-batches counts exactly what a drain after each would: the same values to the
bit (``inc_many``/``observe_many`` add one by one, in order), the median ratio of the last step."""

from __future__ import annotations

import math

import pytest
import torch

from llmops.metrics import MetricState
from llmops.telemetry.steps import StepTimer
from llmops.vocabulary import STEP_PHASES as PHASES
from tests.telemetry.test_throughput import ScriptedClock

# micro-batch durations with awkward floats; every third batch ends a step of gradient accumulation
DURATIONS = [0.1, 0.2, 0.30000000000000004, 1 / 3, 0.7, 1e-9, 0.05, 0.11, 2.0, 0.013, 0.9, 0.0, 0.4, 0.6]


def _run(drain_every: int) -> MetricState:
    marks, t = [], 0.0
    for d in DURATIONS:
        marks += [t + d / 7, t + d / 3, t + d / 2, t + d]  # the first mark after the previous end: data time
        t += d
    state = MetricState()
    timer = StepTimer(state, ScriptedClock(marks))
    timer.flops_per_token = lambda s: 6.1e6 * (s or 1)
    for i, _ in enumerate(DURATIONS):
        stepped = i % 3 == 2
        mask = torch.tensor([[1, 1, 0], [1, 0, 0]]) if i % 2 else None
        timer.batch_start({"input_ids": torch.zeros(2, 3), **({"attention_mask": mask} if mask is not None else {})})
        timer.backward_start()
        if stepped:
            timer.optimizer_start()
        timer.batch_end(stepped)
        if (i + 1) % drain_every == 0:
            timer.drain()
    timer.drain()
    return state


@pytest.mark.parametrize("drain_every", [2, 5, len(DURATIONS) + 1])
def test_one_drain_of_many_batches_counts_as_a_drain_after_each(drain_every):
    each, batched = _run(1), _run(drain_every)
    for name, labels in [("llmops_tokens_total", {}), ("llmops_model_flops_total", {}),
                         *[("llmops_step_phase_seconds_total", {"phase": p}) for p in PHASES]]:
        assert batched.get(name, **labels) == each.get(name, **labels), (name, labels)  # exact, not approx
    assert batched.get("llmops_step_time_median_ratio") == each.get("llmops_step_time_median_ratio") is not None
    assert batched.get("llmops_tokens_total") > 0 and batched.get("llmops_step_phase_seconds_total", phase="data") > 0


def test_inc_many_and_observe_many_equal_one_call_each():
    amounts = [0.1, None, 0.2, math.nan, 3, 1e-17, 0.0, 7.25]
    one, many = MetricState(), MetricState()
    for a in amounts:
        one.inc("llmops_step_phase_seconds_total", a, phase="data")
        one.observe("llmops_step_duration_seconds", a)
    many.inc_many("llmops_step_phase_seconds_total", amounts, phase="data")
    many.observe_many("llmops_step_duration_seconds", amounts)
    assert many.get("llmops_step_phase_seconds_total", phase="data") == one.get(
        "llmops_step_phase_seconds_total", phase="data") == 0.1 + 0.2 + 3 + 1e-17 + 0.0 + 7.25
    assert many.get("llmops_step_duration_seconds") == one.get("llmops_step_duration_seconds")
    many.inc_many("llmops_tokens_total", [None, math.nan])  # nothing to count: no series, as inc
    many.observe_many("llmops_step_duration_seconds", [])  # nothing: the histogram is unchanged
    assert many.get("llmops_tokens_total") is None
    assert many.get("llmops_step_duration_seconds") == one.get("llmops_step_duration_seconds")


def test_inc_many_raises_as_inc_after_adding_what_came_before():
    state = MetricState()
    with pytest.raises(ValueError, match="only finite >= 0"):
        state.inc_many("llmops_tokens_total", [5, 6, -1, 7])
    assert state.get("llmops_tokens_total") == 11
    with pytest.raises(ValueError, match="labels"):
        state.inc_many("llmops_step_phase_seconds_total", [1.0])
    with pytest.raises(ValueError, match="not a histogram"):
        state.observe_many("llmops_tokens_total", [1.0])
