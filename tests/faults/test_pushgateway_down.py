"""A Pushgateway that is down at the end of fit: fit returns promptly, the failure is counted."""

from __future__ import annotations

import socket
import time

from llmops import LLMOpsMonitor
from tests.helpers.models import GPT, GPTConfig
from tests.integration.test_callback_fit import fit


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once this closes


def test_pushgateway_down(tmp_path):
    monitor = LLMOpsMonitor(port=0, runlog=False, pushgateway_url=f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    trainer, _ = fit(monitor, GPT(GPTConfig()), steps=2)
    assert trainer.global_step == 2 and time.monotonic() - t0 < 60
    assert monitor.monitor.state.get("llmops_monitor_errors_total", probe="pushgateway") == 1
