"""A full disk under the run log (writes fail with ENOSPC, as on /dev/full): the run goes on, the error is counted."""

from __future__ import annotations

import os

import pytest

from llmops import LLMOpsMonitor
from tests.helpers.models import GPT, GPTConfig
from tests.integration.test_callback_fit import fit


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_run_log_on_a_full_disk(tmp_path):
    (tmp_path / "full").mkdir()
    os.symlink("/dev/full", tmp_path / "full" / "rank0.jsonl")  # every write: ENOSPC
    monitor = LLMOpsMonitor(port=0, run="full", run_dir=str(tmp_path), interval=0.05)
    trainer, module = fit(monitor, GPT(GPTConfig()), steps=3)
    assert trainer.global_step == 3 and module.steps_run == 3
    assert monitor.monitor.state.get("llmops_monitor_errors_total", probe="runlog") >= 1
