"""The series budget on a real single-rank CPU fit: every series counted, the prediction included."""

from __future__ import annotations

import time

import lightning.pytorch as pl

from llmops import LLMOpsMonitor
from llmops.metrics.catalogue import SERIES_PER_RANK_BUDGET
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader
from tests.helpers.scrape import scrape
from tests.helpers.series import split


class ScrapeAtEnd(pl.Callback):
    """Scrape after the sampler thread has read the last steps (its interval is 0.2 s here)."""

    def __init__(self, monitor: LLMOpsMonitor) -> None:
        self.monitor, self.samples = monitor, []

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        time.sleep(0.6)
        self.samples = scrape(self.monitor.metrics_url)


def test_single_cpu_rank_stays_within_the_budget_with_everything_it_measures():
    monitor = LLMOpsMonitor(port=0, run="budget", interval=0.2, runlog=False)
    grab = ScrapeAtEnd(monitor)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=64, block_size=16)
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", devices=1, callbacks=[monitor, grab], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(cfg)), token_loader(64, 16, 4))
    names = {n for n, _, _ in grab.samples}
    # the figures of the time issue are there: the budget is not met by leaving them out
    for name in ("llmops_step_duration_seconds_count", "llmops_tokens_total", "llmops_model_flops_total",
                 "llmops_step_phase_seconds_total", "llmops_last_step_timestamp_seconds", "llmops_train_stalled",
                 "llmops_step_time_median_ratio", "llmops_memory_actual_bytes", "llmops_memory_predicted_bytes"):
        assert name in names, name
    per_rank, run_level = split(grab.samples)
    print(f"series: {per_rank} per-rank + {run_level} run-level")
    # rank 0 of a one-rank run: its run-level prediction counts against the same budget
    assert per_rank + run_level <= SERIES_PER_RANK_BUDGET, (per_rank, run_level)
    assert run_level > 0
