"""The monitor writes the run log during a real CPU fit; on by default, off on request."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest

from llmops import LLMOpsMonitor
from llmops.runlog import read_run
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader


def fit(monitor, steps=4, module=None):
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module or make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))
    return trainer


def test_fit_writes_every_step_the_preflight_and_the_measurements(tmp_path):
    monitor = LLMOpsMonitor(port=0, run="logged", run_dir=str(tmp_path), memory_budget="1GB", activation_interval=2)
    fit(monitor, steps=5)
    run = read_run(tmp_path / "logged")
    r = run.ranks[0]
    assert [s[0] for s in r.steps] == [1, 2, 3, 4, 5] and all(s[2] > 0 for s in r.steps)
    assert r.end["status"] == "ok" and not run.crashed
    assert r.start["run"] == "logged" and r.start["device"] == "cpu"
    assert "llmops preflight" in r.preflight["text"]
    assert r.preflight["spec"]["batch_size"] == 4 and r.preflight["models"]["refined"]["peak_bytes"] > 0
    state = monitor.monitor.state
    for component in ("params", "grads", "optimizer_states", "activations", "peak"):
        assert r.last("llmops_memory_actual_bytes", component=component) == state.get(
            "llmops_memory_actual_bytes", component=component)
    assert r.last("llmops_train_step") == 5
    assert r.last("llmops_step_duration_seconds")["count"] == 5
    assert r.last("llmops_oom_risk", source="prediction") == 0


def test_default_location_is_env_or_llmops_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_RUN_DIR", str(tmp_path))
    fit(LLMOpsMonitor(port=0, run="by-env"), steps=1)
    assert (tmp_path / "by-env" / "rank0.jsonl").exists()


def test_runlog_off_writes_nothing(tmp_path):
    monitor = LLMOpsMonitor(port=0, run="off", run_dir=str(tmp_path), runlog=False)
    fit(monitor, steps=2)
    assert monitor.monitor.runlog is None and not any(tmp_path.iterdir())


def test_exception_in_training_is_the_end_status(tmp_path):
    class Boom(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("boom at 2")

    monitor = LLMOpsMonitor(port=0, run="boom", run_dir=str(tmp_path))
    trainer = pl.Trainer(max_steps=5, accelerator="cpu", callbacks=[monitor, Boom()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))
    r = read_run(tmp_path / "boom").ranks[0]
    assert r.end["status"] == "error: RuntimeError: boom at 2" and r.last_step == 2
