"""`llmops stack`: configurations rewritten for loopback, and real processes started and stopped."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest
import yaml

from llmops.cli import main
from llmops.ops.stack import (
    ALERTMANAGER_YML,
    PROMETHEUS_YML,
    RULES,
    STATE_FILE,
    Stack,
    alertmanager_config,
    free_port,
    prometheus_config,
)

needs_binaries = pytest.mark.skipif(
    not (shutil.which("prometheus") and (shutil.which("prometheus-alertmanager") or shutil.which("alertmanager"))),
    reason="needs Debian's prometheus and prometheus-alertmanager (.ci/run installs them)")


def test_prometheus_config_points_everything_at_loopback():
    base = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg = prometheus_config(base, targets=["127.0.0.1:9445"], alertmanager="127.0.0.1:19093", rule_files=[RULES],
                            scrape_interval="1s", extra_scrape_configs=[{"job_name": "extra"}])
    job = cfg["scrape_configs"][0]
    assert job["job_name"] == "llmops" and job["honor_labels"] is True
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9445"]}]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    assert cfg["rule_files"] == [str(RULES.resolve())] and cfg["global"]["scrape_interval"] == "1s"
    assert [j["job_name"] for j in cfg["scrape_configs"]] == ["llmops", "extra"]
    assert base["global"]["scrape_interval"] == "5s"  # the committed config is left as it was
    with pytest.raises(ValueError, match="llmops"):
        prometheus_config({"scrape_configs": []}, targets=[], alertmanager="x:1", rule_files=[])


def test_alertmanager_config_adds_a_webhook_to_every_receiver():
    cfg = alertmanager_config(yaml.safe_load(ALERTMANAGER_YML.read_text()), webhook_url="http://127.0.0.1:1/a",
                              group_wait="1s")
    assert all(r["webhook_configs"] == [{"url": "http://127.0.0.1:1/a", "send_resolved": True}]
               for r in cfg["receivers"])
    assert cfg["route"]["group_wait"] == "1s"


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@needs_binaries
def test_stack_serves_rules_on_loopback_and_stops(tmp_path):
    with Stack(tmp_path, prometheus_port=0, alertmanager_port=0, targets=["127.0.0.1:1"]) as stack:
        with urllib.request.urlopen(f"{stack.prometheus_url}/api/v1/rules", timeout=10) as r:
            groups = json.loads(r.read())["data"]["groups"]
        assert {g["name"] for g in groups} == {"llmops-thresholds", "llmops-recording", "llmops-ranks", "llmops-alerts"}
        with urllib.request.urlopen(f"{stack.alertmanager_url}/api/v2/status", timeout=10) as r:
            assert json.loads(r.read())["cluster"]["status"] == "disabled"  # no gossip on 0.0.0.0:9094
        procs = list(stack.processes.values())
    assert all(p.poll() is not None for p in procs)
    assert not listening(stack.prometheus_port) and not listening(stack.alertmanager_port)


@needs_binaries
def test_cli_up_prints_urls_and_down_stops(tmp_path, capsys):
    prom, am = free_port(), free_port()
    workdir = tmp_path / "stack"
    try:
        assert main(["stack", "up", "--dir", str(workdir), "--prometheus-port", str(prom),
                     "--alertmanager-port", str(am), "--target", "127.0.0.1:1",
                     "--runbook-base", "https://wiki.example.com/ml/runbooks.md"]) == 0
        out = capsys.readouterr().out
        assert f"http://127.0.0.1:{prom}" in out and f"http://127.0.0.1:{am}" in out
        assert listening(prom) and listening(am)
        with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/rules?type=alert", timeout=10) as r:
            links = {a["annotations"]["runbook_url"] for g in json.loads(r.read())["data"]["groups"]
                     for a in g["rules"]}
        assert links and all(u.startswith("https://wiki.example.com/ml/runbooks.md#llmops") for u in links), links
        assert main(["stack", "up", "--dir", str(workdir)]) == 1  # one stack per folder
        assert "already running" in capsys.readouterr().err
    finally:
        assert main(["stack", "down", "--dir", str(workdir)]) == 0
    assert "stopped alertmanager, prometheus" in capsys.readouterr().out
    assert not (workdir / STATE_FILE).exists()
    assert not listening(prom) and not listening(am)
    assert main(["stack", "down", "--dir", str(workdir)]) == 0
    assert "no stack was running" in capsys.readouterr().out


def test_missing_binary_names_the_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install prometheus prometheus-alertmanager"):
        Stack(Path(tmp_path), prometheus_port=0, alertmanager_port=0).commands()
