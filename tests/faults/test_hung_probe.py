"""A probe call that never returns (a GPU fallen off the bus) must not hang the run or the end of fit."""

from __future__ import annotations

import json
import time

from llmops import LLMOpsMonitor
from llmops.monitor.core import PROBE_TIMEOUT_S
from tests.helpers.models import GPT, GPTConfig
from tests.helpers.scrape import scrape, value
from tests.integration.test_callback_fit import fake_gpu_client, fit


def test_nvml_read_that_blocks_forever_leaves_fit_returning_and_the_log_ended(tmp_path):
    client = fake_gpu_client()
    monitor = LLMOpsMonitor(port=0, nvml=True, _nvml_client=client, interval=0.01, run="hung", run_dir=str(tmp_path))
    client.hangs.add("memory_info")  # the sampler's first read blocks; open() reads no memory
    try:
        t0 = time.monotonic()
        trainer, module = fit(monitor, GPT(GPTConfig()), steps=3)
        seconds = time.monotonic() - t0
        assert trainer.global_step == 3 and module.steps_run == 3
        assert seconds < PROBE_TIMEOUT_S + 30  # bounded: the join, never the blocked call
        assert value(scrape(monitor.metrics_url), "llmops_monitor_errors_total", probe="nvml") >= 1
        records = [json.loads(line) for line in (tmp_path / "hung" / "rank0.jsonl").read_text().splitlines()]
        assert records[-1]["kind"] == "end" and records[-1]["status"] == "ok"
    finally:
        client.release.set()  # let the left-behind thread finish


def test_nvml_open_that_blocks_is_bounded_and_the_run_goes_on():
    client = fake_gpu_client()
    client.hangs.add("init")
    try:
        monitor = LLMOpsMonitor(port=0, nvml=True, _nvml_client=client, interval=0.01, runlog=False)
        trainer, _ = fit(monitor, GPT(GPTConfig()), steps=2)
        assert trainer.global_step == 2 and monitor.monitor.fit.nvml is None
        assert value(scrape(monitor.metrics_url), "llmops_monitor_errors_total", probe="nvml") == 1
    finally:
        client.release.set()
