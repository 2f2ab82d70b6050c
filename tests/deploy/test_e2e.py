"""End to end with real components: a CPU fit with the monitor, Prometheus scraping it every second,
the repository's alert rules and Alertmanager routing, and a webhook receiver.

The fit's prediction is made wrong on purpose (``spec=TrainingSpec(seq_len=1024)`` while the
batches hold 16 tokens), so the measured peak is a small fraction of the refined prediction from
the first step: ``LLMOpsMemoryDrift`` must reach the webhook with the run and rank in its labels.
Its ``for:`` is shortened to 2 s by a copy of the rules file; everything else is the committed files.
Afterwards every panel query of every dashboard (variables substituted) must return a series, except
the communication panels: a one-process run does no all-reduce (they are checked as valid PromQL,
and tests/distributed covers the comm metrics under DDP).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml

from llmops import LLMOpsMonitor, TrainingSpec
from llmops.ops.dashboards import label_values, panel_queries, substitute, variable_queries
from llmops.ops.shipped import DASHBOARDS, RUNBOOKS
from llmops.ops.stack import RULES, Stack, free_port
from tests.deploy.e2e_helpers import Receiver, api, finite_series
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader

pytestmark = pytest.mark.skipif(
    not (shutil.which("prometheus") and (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager"))),
    reason="needs Debian's prometheus and prometheus-alertmanager (.ci/run installs them)")


RUN = "e2e-drift"
GPU_UUID = "GPU-11111111-2222-3333-4444-555555555555"
DRIFT_FOR = "2s"
ALERT_DEADLINE_S = 40.0  # the fit stops at the latest then, alert or not
# Panels that only a distributed run fills: a single process does no all-reduce.
NEEDS_DDP = {"All-reduce time", "All-reduce share of step time", "Bus bandwidth"}
VARIABLES = {"run": RUN, "rank": ".*", "gpu": ".*", "datasource": "prometheus", "__rate_interval": "4s"}


def rules_with_short_drift_for(path: Path) -> Path:
    doc = yaml.safe_load(RULES.read_text())
    found = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == "LLMOpsMemoryDrift"]
    assert len(found) == 1
    found[0]["for"] = DRIFT_FOR
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fake_gpu_client():
    """NVML's interface with one 80 GB GPU (this CPU machine has none); reads fail from step 6 on."""
    import os

    from llmops.probes.base import NvmlProcess
    from llmops.probes.fake import FakeGpu, FakeNvmlClient

    gpu = FakeGpu(index=0, uuid=GPU_UUID, memory_total_bytes=80 * 10**9, memory_used_bytes=20 * 10**9,
                  utilization_percent=70, processes=[NvmlProcess(os.getpid(), 3 * 10**9)])
    return FakeNvmlClient([gpu])


def wait_until_scraping(prometheus_url: str, target: str, timeout: float = 20.0) -> None:
    """Until Prometheus has tried the target once: its discovery hands over targets only every 5 s at start,
    a start-up delay that would otherwise be counted in the drift-to-webhook time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = api(prometheus_url, "/api/v1/targets")["activeTargets"]
        if any(t["labels"].get("instance") == target and not t["lastScrape"].startswith("0001") for t in active):
            return
        time.sleep(0.2)
    raise AssertionError(f"Prometheus did not scrape {target} within {timeout} s")


class UntilAlerted(pl.Callback):
    """Paces the fit, notes when drift is first exported, and stops once the alert has arrived."""

    def __init__(self, monitor: LLMOpsMonitor, receiver: Receiver, client, min_steps: int = 12) -> None:
        self.monitor, self.receiver, self.client, self.min_steps = monitor, receiver, client, min_steps
        self.drift_at: float | None = None
        self.deadline = time.monotonic() + ALERT_DEADLINE_S

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.drift_at is None and self.monitor.monitor.state.get("llmops_memory_drift_ratio", model="refined"):
            self.drift_at = time.time()
        if trainer.global_step == 6:  # a probe failing mid-run: counted in llmops_monitor_errors_total
            from llmops.probes.base import NvmlError

            self.client.errors["utilization_rates"] = NvmlError(999, "GPU is lost")
        time.sleep(0.1)  # a few steps a second, so Prometheus (1 s) sees the run progress
        alerted = self.receiver.first_alert("LLMOpsMemoryDrift") is not None
        if (alerted and trainer.global_step >= self.min_steps) or time.monotonic() > self.deadline:
            trainer.should_stop = True


def test_drift_alert_reaches_webhook_and_every_panel_has_data(tmp_path, record_property):
    receiver = Receiver(GPU_UUID)
    port = free_port()
    client = fake_gpu_client()
    monitor = LLMOpsMonitor(port=port, run=RUN, spec=TrainingSpec(seq_len=1024), memory_budget="1GB",
                            interval=0.2, activation_interval=1, nvml=True, _nvml_client=client,
                            peak_flops=2e11)  # a CPU run: MFU needs the peak given (absent otherwise)
    host = receiver.url.removeprefix("http://")
    stack = Stack(tmp_path / "stack", prometheus_port=0, alertmanager_port=0, targets=[f"127.0.0.1:{port}"],
                  rule_files=[rules_with_short_drift_for(tmp_path / "rules.yml")],
                  webhook_url=f"{receiver.url}/alerts", scrape_interval="1s", evaluation_interval="1s",
                  group_wait="1s", group_interval="1s",
                  extra_scrape_configs=[{"job_name": "dcgm", "metrics_path": "/dcgm/metrics",
                                         "static_configs": [{"targets": [host]}]}])
    try:
        stack.start(timeout=30)
        wait_until_scraping(stack.prometheus_url, f"127.0.0.1:{port}")
        watcher = UntilAlerted(monitor, receiver, client)
        trainer = pl.Trainer(max_steps=400, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path,
                             callbacks=[monitor, watcher, pl.callbacks.ModelCheckpoint(
                                 dirpath=tmp_path / "ckpt", every_n_train_steps=4)])
        fit_start = time.time()
        trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig(block_size=16))), token_loader(64, 16, 4))
        assert monitor.metrics_url == f"http://127.0.0.1:{port}/metrics"

        # -- the alert, through Prometheus and Alertmanager, at the webhook -----------------------
        got = receiver.first_alert("LLMOpsMemoryDrift")
        assert got is not None, f"no LLMOpsMemoryDrift at the webhook in {ALERT_DEADLINE_S} s; " \
            f"Prometheus alerts: {api(stack.prometheus_url, '/api/v1/alerts')}"
        arrived, alert = got
        labels = alert["labels"]
        assert (labels["run"], labels["rank"], labels["model"]) == (RUN, "0", "refined")
        assert labels["severity"] == "warning"
        # the link opens the installed runbooks (a file:// URL: the stack runs on this machine)
        runbook, anchor = alert["annotations"]["runbook_url"].split("#")
        assert (runbook, anchor) == (RUNBOOKS.as_uri(), "llmopsmemorydrift")
        with urllib.request.urlopen(runbook) as page:
            assert "\n## LLMOpsMemoryDrift" in page.read().decode()
        assert f"run {RUN} rank 0" in alert["annotations"]["description"]
        assert watcher.drift_at is not None
        latency = arrived - watcher.drift_at
        record_property("drift_to_webhook_seconds", round(latency, 2))
        # startsAt: when the alert fired in Prometheus (after its for:)
        fired_at = datetime.fromisoformat(alert["startsAt"].replace("Z", "+00:00")).timestamp()
        print(f"\ndrift exported -> webhook: {latency:.1f} s (exported -> firing {fired_at - watcher.drift_at:.1f} s, "
              f"firing -> webhook {arrived - fired_at:.1f} s; scrape 1 s, eval 1 s, for {DRIFT_FOR}, "
              f"group_wait 1 s); steps run: {trainer.global_step}")
        assert 0 < latency < ALERT_DEADLINE_S

        # -- every panel query of every dashboard ------------------------------------------------
        end = time.time()
        checked, missing = 0, []
        for path in sorted(DASHBOARDS.glob("*.json")):
            dashboard = json.loads(path.read_text())
            for name, query in variable_queries(dashboard).items():
                expr, label = label_values(query)
                values = api(stack.prometheus_url, f"/api/v1/label/{label}/values",
                             **{"match[]": substitute(expr, VARIABLES), "start": f"{fit_start:.0f}"})
                assert values, f"{path.name}: variable {name} has no values"
            for title, expr in panel_queries(dashboard):
                series = finite_series(stack.prometheus_url, substitute(expr, VARIABLES), fit_start - 5, end)
                checked += 1
                if not series and title not in NEEDS_DDP:
                    missing.append(f"{path.name} / {title}: {expr}")
        assert checked > 30
        assert not missing, "panel queries without a series:\n" + "\n".join(missing)
    finally:
        monitor.monitor.shutdown()
        stack.stop()
        receiver.close()
