"""Loggers (CSV, TensorBoard), the progress bar, and the OOM post-mortem, from real CPU fits."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from llmops import LLMOpsMonitor, TrainingSpec
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader


class LM(pl.LightningModule):
    """The tiny GPT; optionally logs its loss, or raises an OOM at one step."""

    def __init__(self, log_loss: bool = False, oom_at: int | None = None):
        super().__init__()
        self.model, self.log_loss, self.oom_at = GPT(GPTConfig()), log_loss, oom_at

    def training_step(self, batch, batch_idx):
        if self.global_step == self.oom_at:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        x, y = batch
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        if self.log_loss:
            self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters())


def fit(monitor, logger, steps=4, module=None, **kw):
    module = module or make_module(pl.LightningModule, GPT(GPTConfig()))
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", callbacks=[monitor], logger=logger,
                         enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1, **kw)
    trainer.fit(module, token_loader(64, 16, 4))
    return trainer


def test_csv_logger_holds_llmops_keys_and_hyperparams(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    monitor = LLMOpsMonitor(port=0, run_dir=str(tmp_path / "runs"), memory_budget="1GB", activation_interval=1)
    fit(monitor, logger)
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    keys = set(rows[0])
    for key in ("llmops/memory_predicted_bytes/peak/refined", "llmops/memory_actual_bytes/peak",
                "llmops/memory_drift_ratio/refined", "llmops/oom_risk/prediction", "llmops/step_duration_seconds"):
        assert key in keys, key
    steps = [r for r in rows if r["llmops/step_duration_seconds"]]
    assert len(steps) == 4 and all(float(r["llmops/step_duration_seconds"]) > 0 for r in steps)
    drift = [float(r["llmops/memory_drift_ratio/refined"]) for r in rows if r["llmops/memory_drift_ratio/refined"]]
    assert drift and all(0.5 < d < 2 for d in drift)
    hparams = yaml.safe_load(open(logger.log_dir + "/hparams.yaml"))
    predicted = monitor.monitor.prediction["refined"].peak_bytes
    assert hparams["llmops/memory_predicted_bytes/peak/refined"] == predicted
    assert hparams["llmops/batch_size_max_safe/refined"] == monitor.monitor.prediction["refined"].max_batch_size


def test_tensorboard_logger_holds_llmops_keys(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = LLMOpsMonitor(port=0, run_dir=str(tmp_path / "runs"))
    fit(monitor, logger)
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"llmops/memory_predicted_bytes/peak/refined", "llmops/step_duration_seconds"} <= tags
    assert len(events.Scalars("llmops/step_duration_seconds")) == 4


def test_tensorboard_hparams_view_and_yaml_get_the_prediction(tmp_path):
    """The HParams view reads a run's first session: the prediction reaches it as a session of its own,
    with the model's hyperparameters beside it, and hparams.yaml holds both."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    class WithHparams(LM):
        def __init__(self, lr: float = 0.01):
            super().__init__()
            self.save_hyperparameters()

    logger = TensorBoardLogger(tmp_path, name="tb")
    monitor = LLMOpsMonitor(port=0, run_dir=str(tmp_path / "runs"), memory_budget="1GB")
    fit(monitor, logger, module=WithHparams())
    predicted = monitor.monitor.prediction["refined"].peak_bytes
    events = EventAccumulator(logger.log_dir + "/llmops")
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["lr"].number_value == 0.01  # the model's own, beside the prediction
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    assert "llmops/memory_predicted_bytes/peak/refined" in {m.name.tag for m in experiment.metric_infos}
    assert events.Scalars("llmops/memory_predicted_bytes/peak/refined")[0].value == pytest.approx(predicted, rel=1e-6)
    hparams = yaml.safe_load(open(logger.log_dir + "/hparams.yaml"))
    assert hparams["lr"] == 0.01 and hparams["llmops/memory_predicted_bytes/peak/refined"] == predicted


def test_logged_points_align_with_lightnings_own_step(tmp_path):
    """``self.log`` and the llmops keys land on the same step numbers, with or without accumulation, and
    the step-time histogram counts optimizer steps, not micro-batches."""
    for accumulate in (1, 2):
        logger = CSVLogger(tmp_path, name=f"align{accumulate}")
        monitor = LLMOpsMonitor(port=0, run_dir=str(tmp_path / "runs"))
        module = LM(log_loss=True)
        trainer = pl.Trainer(max_steps=10, accelerator="cpu", callbacks=[monitor], logger=logger,
                             enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=5,
                             accumulate_grad_batches=accumulate, enable_progress_bar=False)
        trainer.fit(module, token_loader(64, 16, 4))
        rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
        theirs = sorted({int(r["step"]) for r in rows if r.get("loss")})
        ours = sorted({int(r["step"]) for r in rows if r.get("llmops/step_duration_seconds")})
        assert theirs == ours == [4, 9], (accumulate, theirs, ours)
        assert monitor.monitor.state.get("llmops_step_duration_seconds").count == 10


def test_log_to_loggers_false_logs_nothing(tmp_path):
    logger = CSVLogger(tmp_path, name="off")
    fit(LLMOpsMonitor(port=0, log_to_loggers=False, run_dir=str(tmp_path / "runs")), logger, module=LM(log_loss=True))
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    assert rows and "loss" in rows[0]  # the logger works; llmops stayed out of it
    assert not any(k.startswith("llmops/") for k in rows[0])


def test_progress_bar_shows_mem_and_drift(tmp_path):
    monitor = LLMOpsMonitor(port=0, progress_bar=True, memory_budget="1GB", activation_interval=1,
                            run_dir=str(tmp_path / "runs"))
    trainer = fit(monitor, False)
    bar = trainer.progress_bar_metrics
    assert 0 < bar["mem"] < 1 and 0.5 < bar["drift"] < 2


def test_oom_post_mortem_written_and_exception_reraised(tmp_path):
    monitor = LLMOpsMonitor(port=0, run="oom", memory_budget=100_000, run_dir=str(tmp_path), activation_interval=1,
                            spec=TrainingSpec(seq_len=4))  # a wrong spec: activations will outgrow the prediction
    with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate 20.00 GiB"):
        fit(monitor, False, module=LM(oom_at=2))
    text = (tmp_path / "oom" / "postmortem-rank0.md").read_text()
    assert "step: 2" in text and "batch shape (b, s): (4, 16)" in text
    assert "Predicted by the refined model, the prediction that decided." in text  # the one verdict rule
    grew = next(line for line in text.splitlines() if line.startswith("Grew past the prediction"))
    assert "activations (" in grew and "params" not in grew
    assert "largest safe micro-batch" in text and "full activation checkpointing" in text
    assert "what would fit" in text and "FSDP across 1 GPUs" in text
