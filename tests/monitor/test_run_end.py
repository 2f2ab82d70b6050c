"""The end of a run as Prometheus sees it: a normal end sets llmops_run_end_timestamp_seconds, a crash
does not, and at exit the monitor waits (bounded) for one scrape after the end when a Prometheus scrapes it."""

from __future__ import annotations

import threading
import time

import lightning.pytorch as pl
import pytest
import torch

from llmops import LLMOpsMonitor
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader
from tests.helpers.scrape import scrape, value


def fit(monitor, module=None):
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module or make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))


def test_normal_end_is_marked_and_a_crash_is_not(tmp_path):
    before = time.time()
    ok = LLMOpsMonitor(port=0, run_dir=str(tmp_path))
    fit(ok)
    ended = value(scrape(ok.metrics_url), "llmops_run_end_timestamp_seconds")
    assert ended is not None and before <= ended <= time.time()
    ok.monitor.shutdown()

    class Boom(pl.Callback):
        def on_train_batch_end(self, *args):
            raise KeyError("the user's own")

    crashed = LLMOpsMonitor(port=0, run_dir=str(tmp_path))
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", callbacks=[crashed, Boom()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(KeyError, match="the user's own"):
        trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))
    assert value(scrape(crashed.metrics_url), "llmops_run_end_timestamp_seconds") is None
    crashed.monitor.shutdown()


def test_at_exit_waits_for_one_scrape_after_the_end_and_no_longer(tmp_path):
    monitor = LLMOpsMonitor(port=0, run_dir=str(tmp_path))
    fit(monitor)
    m = monitor.monitor
    scrapes = m.exporter.scrapes


    def scraped_every_half_second() -> None:  # a Prometheus whose last scrape came before the end
        scrapes.times.clear()
        scrapes.times.extend([time.time() - 1.0, time.time() - 0.5])

    scraped_every_half_second()
    m.session.ended_at = time.time()
    late = threading.Timer(0.3, lambda: scrape(monitor.metrics_url))  # its next scrape, after the end
    late.start()
    t0 = time.monotonic()
    m.session.final_scrape()
    waited = time.monotonic() - t0
    assert 0.2 < waited < 1.5, waited  # until that scrape came, not the bound (2 × 0.5 s + 1 s)
    assert scrapes.times[-1] > m.session.ended_at
    scraped_every_half_second()
    m.session.ended_at = time.time()  # and no scrape comes: the wait stops at its bound
    t0 = time.monotonic()
    m.session.final_scrape()
    assert 1.8 < time.monotonic() - t0 < 2.6
    scrapes.times.clear()  # never scraped (no Prometheus): no wait at all
    t0 = time.monotonic()
    m.session.final_scrape()
    assert time.monotonic() - t0 < 0.05
    m.shutdown()


def test_a_fit_that_fails_before_train_start_leaves_nothing_running(tmp_path):
    """configure_optimizers raises: the user's error reaches them unchanged, nothing was served or written,
    and closing the never-started monitor (teardown, then shutdown) does nothing."""
    class NoOptimizer(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        def training_step(self, batch, batch_idx):  # never reached
            return self.layer(batch[0].float()).sum()

        def configure_optimizers(self):
            raise ValueError("the user's optimizer config is wrong")

    monitor = LLMOpsMonitor(port=0, run_dir=str(tmp_path / "runs"))
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="^the user's optimizer config is wrong$"):
        trainer.fit(NoOptimizer(), token_loader(64, 16, 4))
    assert monitor.metrics_url is None and not (tmp_path / "runs").exists()
    monitor.monitor.shutdown()
    assert monitor.monitor.state.get("llmops_run_end_timestamp_seconds") is None
