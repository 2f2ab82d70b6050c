"""A run directory deleted mid-run: detected, counted in llmops_monitor_errors_total{probe="runlog"}, reopened."""

from __future__ import annotations

import shutil
import time

import lightning.pytorch as pl

from llmops import LLMOpsMonitor
from llmops.runlog import read_run
from tests.helpers.models import GPT, GPTConfig
from tests.integration.test_callback_fit import fit


def test_deleted_run_dir_is_reopened_and_counted(tmp_path):
    monitor = LLMOpsMonitor(port=0, run="gone", run_dir=str(tmp_path), interval=0.05)

    class DeleteAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                time.sleep(0.2)  # the writer has written the first steps
                shutil.rmtree(tmp_path / "gone")
            if batch_idx == 5:
                time.sleep(0.3)  # steps written after the deletion; the writer notices at its next fsync or at close

    trainer, _ = fit(monitor, GPT(GPTConfig()), steps=8, callbacks_extra=[DeleteAt()])
    assert trainer.global_step == 8
    assert monitor.monitor.state.get("llmops_monitor_errors_total", probe="runlog") >= 1
    r = read_run(tmp_path / "gone").ranks[0]
    assert r.start.get("reopened") is True and r.end is not None and r.end["status"] == "ok"
    assert r.last_step == 8 and r.last("llmops_train_step") == 8
