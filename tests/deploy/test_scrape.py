"""The cluster scrape configurations are valid and keep one target per rank with run/rank/node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes from Debian's prometheus (.ci/run)")
def test_multinode_config_passes_promtool():
    r = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus/scrape/multinode.yml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_multinode_one_target_per_rank_and_labels_kept():
    cfg = yaml.safe_load((DEPLOY / "prometheus/scrape/multinode.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    static = jobs["llmops-static"]
    targets = [t for group in static["static_configs"] for t in group["targets"]]
    assert len(targets) == len(set(targets)) == 16  # 2 nodes × 8 ranks
    assert all(j["honor_labels"] for j in jobs.values())
    assert {g["labels"]["node"] for g in static["static_configs"]} == {"node-a", "node-b"}
    example = json.loads((DEPLOY / "prometheus/scrape/targets.example.json").read_text())
    assert all("node" in group["labels"] for group in example)


def test_podmonitor_lists_one_endpoint_per_local_rank():
    pm = yaml.safe_load((DEPLOY / "kubernetes/podmonitor.yaml").read_text())
    assert pm["kind"] == "PodMonitor"
    endpoints = pm["spec"]["podMetricsEndpoints"]
    assert [e["port"] for e in endpoints] == [f"llmops-{i}" for i in range(8)]
    assert all(e["honorLabels"] and any(r["targetLabel"] == "node" for r in e["relabelings"]) for e in endpoints)
