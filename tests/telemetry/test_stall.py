"""Stalls: the detector's threshold and its pauses on a clock the test sets, the Flight Recorder's decision,
and a real CPU fit with a step that sleeps: the stall is reported within the threshold, with the sleeping
frame in the stack, and cleared when steps resume."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

from llmops import LLMOpsMonitor
from llmops.metrics import MetricState
from llmops.telemetry import stall as stall_mod
from llmops.telemetry.stall import StallDetector, flight_recorder_plan, p99
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader

CFG = GPTConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=16, dropout=0.0)


def detector(**kw) -> tuple[StallDetector, MetricState]:
    state = MetricState()
    return StallDetector(state, kw.pop("factor", 5.0), kw.pop("min_seconds", 2.0), **kw), state


def test_p99_by_nearest_rank_without_the_first_step():
    assert p99([100.0]) == 100.0  # one step: all there is
    assert p99([100.0, *[0.1] * 98, 0.5]) == 0.5  # the compiling first step left out; 99 others: the max
    assert p99([9.0] + [float(i) for i in range(1, 201)]) == 198.0  # ceil(0.99 × 200) = 198th


def test_threshold_is_the_floor_for_short_steps_and_k_p99_for_long_ones():
    d, _ = detector(factor=5.0, min_seconds=2.0)
    assert d.threshold() is None  # no step yet: nothing to compare with
    for t in range(1, 11):
        d.step_done(float(t), 0.1)
    assert d.threshold() == 2.0  # 5 × 0.1 under the floor
    d2, _ = detector(factor=5.0, min_seconds=2.0)
    for t in range(1, 11):
        d2.step_done(float(t), 3.0)
    assert d2.threshold() == 15.0


def test_stall_set_after_the_threshold_kept_once_and_cleared_by_the_next_step():
    d, s = detector(factor=5.0, min_seconds=2.0)
    for t in range(1, 6):
        d.step_done(100.0 + t * 0.1, 0.1)
    last = 100.5
    assert d.check(now=last + 0.1) is None
    assert s.get("llmops_train_stalled") == 0
    stamp = s.get("llmops_last_step_timestamp_seconds")
    assert abs(stamp - (time.time() - 0.1)) < 0.05  # the step's end in Unix time
    assert d.check(now=last + 1.99) is None
    assert d.check(now=last + 2.01) == "stalled"
    assert s.get("llmops_train_stalled") == 1
    assert d.last_report["since_step_s"] == pytest.approx(2.01) and d.last_report["threshold_s"] == 2.0
    assert d.check(now=last + 5.0) is None  # reported once per stall
    assert s.get("llmops_last_step_timestamp_seconds") == stamp  # kept while stalled
    d.step_done(last + 6.0, 6.0)
    assert d.check(now=last + 6.1) == "resumed"
    assert s.get("llmops_train_stalled") == 0
    assert d.threshold() == 30.0  # the long step now counts in the p99


def test_validation_and_saves_pause_the_clock():
    d, s = detector(factor=5.0, min_seconds=1.0)
    d.step_done(time.perf_counter(), 0.01)
    d.check()
    with d.paused():
        assert d.check(now=time.perf_counter() + 10) is None  # a long validation is no stall
    assert d.check(now=time.perf_counter() + 0.5) is None  # the clock restarted at the pause's end
    assert d.check(now=time.perf_counter() + 1.5) == "stalled"


def test_flight_recorder_decision():
    assert not flight_recorder_plan("gloo", {"TORCH_NCCL_TRACE_BUFFER_SIZE": "2000"}, 0).dump
    assert not flight_recorder_plan(None, {}, 0).dump
    off = flight_recorder_plan("nccl", {}, 3)
    assert not off.dump and "TORCH_NCCL_TRACE_BUFFER_SIZE=2000" in off.note
    assert not flight_recorder_plan("nccl", {"TORCH_NCCL_TRACE_BUFFER_SIZE": "0"}, 0).dump
    assert not flight_recorder_plan("nccl", {"TORCH_NCCL_TRACE_BUFFER_SIZE": "lots"}, 0).dump
    on = flight_recorder_plan("nccl", {"TORCH_NCCL_TRACE_BUFFER_SIZE": "2000"}, 3)
    assert on.dump and "on a collective's timeout" not in on.note
    timeout = flight_recorder_plan("nccl", {"TORCH_NCCL_TRACE_BUFFER_SIZE": "2000", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1",
                                            "TORCH_NCCL_DEBUG_INFO_TEMP_FILE": "/scratch/fr_"}, 3)
    assert timeout.dump and "/scratch/fr_3" in timeout.note


def _stalled(d: StallDetector) -> None:
    d.step_done(time.perf_counter() - 10, 0.01)
    assert d.check() is None  # the step seen
    assert d.check() == "stalled"


def test_report_has_every_threads_stack_and_the_flight_recorder_dump(tmp_path):
    env = {"TORCH_NCCL_TRACE_BUFFER_SIZE": "2000"}
    d, _ = detector(min_seconds=1.0, backend=lambda: "nccl", nccl_dump=lambda: b"pickled trace", env=env)
    d.rank = 1
    _stalled(d)
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="waiting-thread", daemon=True)
    other.start()
    text = d.write_report(tmp_path / "stall-rank1.txt", "header line")
    release.set()
    assert text.startswith("header line\nno training step finished for 10.")
    assert "= waiting-thread" in text and "= MainThread" in text
    assert "in write_report" in text and "in wait" in text  # this thread's stack and the other's
    assert (tmp_path / "nccl-trace-rank1.pickle").read_bytes() == b"pickled trace"
    assert "dumped to" in text and "nccl-trace-rank1.pickle" in text


def test_a_failing_or_hanging_dump_is_noted_and_the_report_goes_on(tmp_path, monkeypatch):
    env = {"TORCH_NCCL_TRACE_BUFFER_SIZE": "2000"}

    def broken() -> bytes:
        raise RuntimeError("no NCCL here")

    d, _ = detector(min_seconds=1.0, backend=lambda: "nccl", nccl_dump=broken, env=env)
    _stalled(d)
    assert "its dump failed (RuntimeError: no NCCL here)" in d.write_report(tmp_path / "a.txt", "h")
    monkeypatch.setattr(stall_mod, "DUMP_TIMEOUT_S", 0.2)
    hang = threading.Event()
    d2, _ = detector(min_seconds=1.0, backend=lambda: "nccl", nccl_dump=lambda: hang.wait(60) or b"", env=env)
    _stalled(d2)
    t0 = time.perf_counter()
    assert "ProbeHung" in d2.write_report(tmp_path / "b.txt", "h")
    assert time.perf_counter() - t0 < 5
    hang.set()


@pytest.mark.parametrize(("name", "value"), [("stall_factor", 1.0), ("stall_factor", float("nan")),
                                             ("stall_factor", "5"), ("stall_min_seconds", 0),
                                             ("stall_min_seconds", -1.0), ("stall_min_seconds", True)])
def test_bad_stall_settings_raise_naming_the_value(name, value):
    with pytest.raises(ValueError, match=rf"LLMOpsMonitor: {name}={value!r} is not allowed; expected"):
        LLMOpsMonitor(**{name: value})


def sleep_inside_step(seconds: float) -> None:
    time.sleep(seconds)


class SleepOnce(pl.Callback):
    """Sleeps inside one training step (after the monitor's batch-start hook), or in validation."""

    def __init__(self, at: int, seconds: float, where: str = "train") -> None:
        self.at, self.seconds, self.where = at, seconds, where
        self.slept = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.where == "train" and batch_idx == self.at:
            sleep_inside_step(self.seconds)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "validation" and trainer.global_step == self.at and batch_idx == 0:
            sleep_inside_step(self.seconds)
            self.slept = True


def fit(tmp_path: Path, callback: pl.Callback, steps: int = 30, **kw) -> LLMOpsMonitor:
    # factor 1.5: a step slowed by the shared machine (up to 2 s × 1/1.5) stays under the 3 s sleep's threshold
    monitor = LLMOpsMonitor(port=0, run="stall", run_dir=str(tmp_path), interval=0.1, stall_min_seconds=0.6,
                            stall_factor=1.5)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[monitor, callback], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, **kw)
    module = make_module(pl.LightningModule, GPT(CFG))
    loader = token_loader(CFG.vocab_size, CFG.block_size, 2, n=2 * steps)
    if "val_check_interval" in kw:
        type(module).validation_step = lambda self, batch, batch_idx: None
        trainer.fit(module, loader, val_dataloaders=token_loader(CFG.vocab_size, CFG.block_size, 2, n=4))
    else:
        trainer.fit(module, loader)
    return monitor


def records(path: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == kind]


def test_a_step_that_sleeps_is_reported_with_its_stack_and_cleared(tmp_path):
    monitor = fit(tmp_path, SleepOnce(at=10, seconds=3.0))
    s = monitor.monitor.state
    assert s.get("llmops_train_stalled") == 0  # cleared: the run went on and finished
    assert s.get("llmops_train_step") == 30
    log = tmp_path / "stall" / "rank0.jsonl"
    [stall], [end] = records(log, "stall"), records(log, "stall_end")
    # noticed past the threshold (the 0.6 s floor, or 1.5 × p99 where the loaded machine made a step slow),
    # within one sampling interval of it (plus a loaded machine's scheduling)
    assert stall["threshold_s"] >= 0.6
    assert stall["threshold_s"] <= stall["since_step_s"] <= stall["threshold_s"] + 0.1 + 0.4, stall
    assert stall["step"] == 10 and end["t"] > stall["t"]
    stalled = [v for name, _, v in (x for r in records(log, "metrics") for x in r["values"])
               if name == "llmops_train_stalled"]
    assert 1 in stalled and stalled[-1] == 0
    text = (tmp_path / "stall" / "stall-rank0.txt").read_text()
    assert "in sleep_inside_step" in text and "in on_train_batch_start" in text
    assert "backend none: no NCCL Flight Recorder" in text


def test_a_slow_validation_is_no_stall(tmp_path):
    sleeper = SleepOnce(at=10, seconds=1.5, where="validation")
    monitor = fit(tmp_path, sleeper, steps=20, val_check_interval=10)
    assert sleeper.slept  # the validation ran, and slept past the threshold
    assert not records(tmp_path / "stall" / "rank0.jsonl", "stall")
    assert not (tmp_path / "stall" / "stall-rank0.txt").exists()
    assert monitor.monitor.state.get("llmops_train_stalled") == 0


def test_the_oom_postmortem_says_the_rank_stalled_before():
    from types import SimpleNamespace

    import torch

    from llmops.monitor.postmortem import postmortem_text

    d, state = detector(min_seconds=1.0)
    _stalled(d)
    monitor = SimpleNamespace(run="r", rank=2, state=state, prediction={}, intro=None, stall=d)
    text = postmortem_text(monitor, torch.OutOfMemoryError("oom"), 7, (4, 16), None)
    assert "- stalled before: no step for 10." in text and "still stalled" in text and "stall-rank2.txt" in text
