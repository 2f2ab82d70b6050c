"""Checkpoint status from a real fit: saves, sizes on disk, timestamps, failures re-raised, async IO."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

from llmops import LLMOpsMonitor
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader
from tests.helpers.scrape import scrape, value


class Stamps(pl.Callback):
    """Records the exported success timestamp after each batch."""

    def __init__(self, monitor):
        self.monitor, self.stamps = monitor, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        t = self.monitor.monitor.state.get("llmops_checkpoint_last_success_timestamp_seconds")
        if t is not None and (not self.stamps or self.stamps[-1] != t):
            self.stamps.append(t)


def fit(tmp_path, monitor, plugins=(), steps=6, extra=()):
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", callbacks=[monitor, ckpt, *extra], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, plugins=list(plugins))
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))
    return trainer


def test_saves_sizes_and_timestamps(tmp_path):
    t0 = time.time()
    monitor = LLMOpsMonitor(port=0)
    stamps = Stamps(monitor)
    fit(tmp_path, monitor, extra=[stamps])
    files = sorted(tmp_path.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    s = scrape(monitor.metrics_url)
    assert len(files) == 3 and value(s, "llmops_checkpoint_saves_total") == 3
    assert value(s, "llmops_checkpoint_size_bytes") == files[-1].stat().st_size
    assert value(s, "llmops_checkpoint_save_duration_seconds_count") == 3
    assert value(s, "llmops_checkpoint_failures_total") in (None, 0)
    seen = [*stamps.stamps, value(s, "llmops_checkpoint_last_success_timestamp_seconds")]
    assert len(set(seen)) == 3 and seen == sorted(seen) and seen[0] >= t0  # moves with every save
    # before the first save, checkpoint age counts from the start of training
    assert t0 <= value(s, "llmops_run_start_timestamp_seconds") <= seen[0]


def test_async_checkpoint_io_is_timed_where_it_writes(tmp_path):
    monitor = LLMOpsMonitor(port=0)
    fit(tmp_path, monitor, plugins=[AsyncCheckpointIO()])
    s = scrape(monitor.metrics_url)
    files = sorted(tmp_path.glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert value(s, "llmops_checkpoint_saves_total") == len(files) == 3
    assert value(s, "llmops_checkpoint_size_bytes") == files[-1].stat().st_size


class DiskFull(OSError):
    pass


class FailingIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None):
        raise DiskFull(28, "No space left on device")


def test_failed_write_is_counted_and_reraised(tmp_path):
    monitor = LLMOpsMonitor(port=0)
    with pytest.raises(DiskFull):
        fit(tmp_path, monitor, plugins=[FailingIO()])
    s = scrape(monitor.metrics_url)
    assert value(s, "llmops_checkpoint_failures_total") == 1
    assert value(s, "llmops_checkpoint_saves_total") in (None, 0)


def test_bookkeeping_after_a_good_save_never_fails_it(tmp_path, monkeypatch):
    """A checkpoint file removed while its size is read (rotation, a cleaner): the save stands, the run goes on."""
    import llmops.telemetry.checkpoint

    def vanished(path):
        raise FileNotFoundError(path)

    monkeypatch.setattr(llmops.telemetry.checkpoint, "path_bytes", vanished)
    monitor = LLMOpsMonitor(port=0)
    trainer = fit(tmp_path, monitor)
    s = scrape(monitor.metrics_url)
    assert trainer.global_step == 6 and value(s, "llmops_checkpoint_saves_total") == 3
    assert value(s, "llmops_monitor_errors_total", probe="checkpoint") == 3
    assert value(s, "llmops_checkpoint_failures_total") in (None, 0)
