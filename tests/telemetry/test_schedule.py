"""Which steps memory is measured on: the schedule by hand, and a real fit that stretches it."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from llmops import LLMOpsMonitor
from llmops.telemetry.schedule import BUDGET, MAX_STRETCH, MeasureSchedule, stretch
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader


def run(schedule: MeasureSchedule, steps: int, plain_s: float, measured_s: float) -> list[int]:
    """Drive the schedule as the hooks do: ``due`` at a step's start, ``measured`` and ``step_seconds`` at its end."""
    measured = []
    for step in range(steps):
        if schedule.due(step):
            measured.append(step)
            schedule.measured(step)
            schedule.step_seconds(measured_s)
        else:
            schedule.step_seconds(plain_s)
    return measured


@pytest.mark.parametrize(("cost", "intervals"), [
    (0.0, 1), (-0.2, 1),  # free (or faster, by noise): the plain interval
    (0.1, 1),  # 0.1 / 100 steps = 0.1%: within the budget
    (0.1001, 2), (0.33, 4),  # 0.33 / 400 = 0.0825% ≤ 0.1% < 0.33 / 300
    (50.0, MAX_STRETCH),  # capped: a drift still shows within 1,000 steps
])
def test_stretch_is_the_fewest_whole_intervals_within_the_budget(cost, intervals):
    assert stretch(cost, 100) == intervals
    if 1 < intervals < MAX_STRETCH:
        assert cost / (intervals * 100) <= BUDGET < cost / ((intervals - 1) * 100)


def test_default_schedule_stretches_by_the_measured_cost():
    """A measured step 1.33× a plain one: 0 and 1, then 100 (the first cost known), then every 400."""
    s = MeasureSchedule()
    assert run(s, 1801, plain_s=0.050, measured_s=0.0665) == [0, 1, 100, 500, 900, 1300, 1700]
    assert s.cost == pytest.approx(0.33)


def test_cheap_measurements_keep_the_interval():
    assert run(MeasureSchedule(), 401, plain_s=0.050, measured_s=0.0502) == [0, 1, 100, 200, 300, 400]


def test_an_interval_given_is_kept_whatever_measuring_costs():
    s = MeasureSchedule(3)
    assert run(s, 11, plain_s=0.050, measured_s=0.5) == [0, 1, 3, 6, 9]
    assert s.cost == pytest.approx(9.0)  # still read, for whoever wants it


def test_a_resumed_run_measures_its_first_step():
    """From a checkpoint at step 5,000 the first step is measured, then the schedule goes on from there."""
    s = MeasureSchedule()
    measured = []
    for step in range(5000, 5201):
        if s.due(step):
            measured.append(step)
            s.measured(step)
        s.step_seconds(0.05)
    assert measured == [5000, 5100, 5200]


def test_a_cpu_fit_measures_on_the_default_schedule():
    """130 steps of the nano GPT with the default interval: measured on steps 0, 1 and 100 only (the
    counter, per optimizer step), and the next measurement put where the cost measured on step 100 says."""
    monitor = LLMOpsMonitor(port=0, runlog=False, serve=False)
    trainer = pl.Trainer(max_steps=130, accelerator="cpu", devices=1, callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4, n=4 * 130))
    schedule = monitor.monitor.fit.schedule
    assert monitor.monitor.state.get("llmops_activation_sample_steps_total") == 3
    assert schedule.cost is not None and schedule.next == 100 * (1 + stretch(schedule.cost, 100)) > 100
