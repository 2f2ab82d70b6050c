"""The cluster scrape configurations are valid and keep one target per rank (or, endpoint="node", per node)
with run/rank/node."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes from Debian's prometheus (.ci/run)")
@pytest.mark.parametrize("name", ["multinode.yml", "node.yml"])
def test_multinode_config_passes_promtool(name):
    r = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus/scrape" / name)],
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


def test_node_form_one_target_per_node_and_labels_kept():
    cfg = yaml.safe_load((DEPLOY / "prometheus/scrape/node.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    static = jobs["llmops-node-static"]
    assert [t for group in static["static_configs"] for t in group["targets"]] == ["node-a:9445", "node-b:9445"]
    assert all(j["honor_labels"] for j in jobs.values())
    assert {g["labels"]["node"] for g in static["static_configs"]} == {"node-a", "node-b"}
    example = json.loads((DEPLOY / "prometheus/scrape/targets-node.example.json").read_text())
    hosts = [t.split(":")[0] for group in example for t in group["targets"]]
    assert len(hosts) == len(set(hosts)) == 2 and all("node" in group["labels"] for group in example)


def test_node_podmonitor_lists_one_endpoint_and_selects_other_pods():
    pm = yaml.safe_load((DEPLOY / "kubernetes/podmonitor-node.yaml").read_text())
    per_rank = yaml.safe_load((DEPLOY / "kubernetes/podmonitor.yaml").read_text())
    assert pm["kind"] == "PodMonitor" and pm["metadata"]["name"] != per_rank["metadata"]["name"]
    [endpoint] = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "llmops" and endpoint["honorLabels"]
    assert any(r["targetLabel"] == "node" for r in endpoint["relabelings"])
    assert pm["spec"]["selector"] != per_rank["spec"]["selector"]  # a pod is scraped in one form only
