"""The alert rules: binding names and annotations, promtool check + unit tests (each alert firing and
not firing), the Alertmanager and Prometheus configurations, and the generated PrometheusRule in sync."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.ops.dashboards import prometheus_rule
from llmops.ops.shipped import RUNBOOK_BASE

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules/llmops.rules.yml"
RULE_TESTS = sorted((ROOT / "deploy/prometheus/rules/tests").glob("*_test.yml"))
BINDING_ALERTS = {"LLMOpsMemoryDrift", "LLMOpsOOMRisk", "LLMOpsMemoryGrowth", "LLMOpsCheckpointStale",
                  "LLMOpsCheckpointFailures", "LLMOpsCommSlow", "LLMOpsStraggler", "LLMOpsMonitorErrors",
                  "LLMOpsTargetDown", "LLMOpsTrainingStalled"}
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool comes from Debian's prometheus (.ci/run installs it)")


def groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alerts() -> list[dict]:
    return [r for g in groups() for r in g["rules"] if "alert" in r]


def run(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_binding_alert_names_with_severity_summary_description_and_runbook():
    assert {a["alert"] for a in alerts()} == BINDING_ALERTS
    runbook = (ROOT / "deploy/runbooks.md").read_text()
    anchors = {"#" + re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", runbook, re.M)}
    for a in alerts():
        assert a["labels"]["severity"] in {"critical", "warning", "info"}, a["alert"]
        ann = a["annotations"]
        for text in (ann["summary"], ann["description"]):
            assert "{{ $labels.run }}" in text and "{{ $labels.rank }}" in text, a["alert"]
        assert "$value" in ann["summary"] + ann["description"] or a["alert"] in {"LLMOpsOOMRisk", "LLMOpsTargetDown"}
        url, anchor = ann["runbook_url"].split("#")
        assert url == RUNBOOK_BASE and f"#{anchor}" in anchors and anchor == a["alert"].lower()


def test_thresholds_live_in_one_group_and_every_one_is_used():
    first = groups()[0]
    assert first["name"] == "llmops-thresholds"
    thresholds = {r["record"] for r in first["rules"]}
    assert all(re.fullmatch(r"vector\([0-9.e+-]+\)", r["expr"]) for r in first["rules"])
    exprs = " ".join(a["expr"] for a in alerts())
    assert all(t in exprs for t in thresholds)
    elsewhere = [r["record"] for g in groups()[1:] for r in g["rules"] if r.get("record", "").startswith(
        "llmops:threshold:")]
    assert not elsewhere


def test_every_alert_has_a_unit_test_firing_and_not_firing():
    firing: dict[str, int] = {}
    silent: dict[str, int] = {}
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../llmops.rules.yml"], path.name
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):  # ranks_test.yml checks recordings only
                bucket = firing if check["exp_alerts"] else silent
                bucket[check["alertname"]] = bucket.get(check["alertname"], 0) + 1
    assert set(firing) == set(silent) == BINDING_ALERTS


@needs_promtool
def test_promtool_check_rules():
    # 6 thresholds, 6 recorded per rank, 12 across ranks, 12 alert rules (10 alerts: two rules each for comm
    # and stragglers)
    assert "SUCCESS: 36 rules found" in run("promtool", "check", "rules", str(RULES))


@needs_promtool
@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.stem)
def test_promtool_unit_tests(path):
    run("promtool", "test", "rules", str(path))


@needs_promtool
def test_prometheus_config_is_valid():
    run("promtool", "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml"))


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool comes from prometheus-alertmanager (.ci/run)")
def test_amtool_check_config():
    run("amtool", "check-config", str(ROOT / "deploy/alertmanager/alertmanager.yml"))


def test_alertmanager_routes_critical_to_the_pager():
    am = yaml.safe_load((ROOT / "deploy/alertmanager/alertmanager.yml").read_text())
    assert am["route"]["receiver"] == "llmops"
    assert am["route"]["routes"][0] == {"receiver": "llmops-page", "matchers": ['severity="critical"']}
    assert {"run", "alertname"} <= set(am["route"]["group_by"])


def test_prometheus_rule_is_generated_from_the_rules_file():
    committed = (ROOT / "deploy/kubernetes/prometheusrule.yaml").read_text()
    assert committed == prometheus_rule(RULES.read_text()), (
        "deploy/kubernetes/prometheusrule.yaml is out of date: run llmops dashboards --out deploy/grafana/dashboards "
        "--prometheus-rule deploy/kubernetes/prometheusrule.yaml")
    resource = yaml.safe_load(committed)
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert resource["spec"]["groups"] == groups()


def test_prometheus_rule_refuses_a_file_without_groups():
    with pytest.raises(ValueError, match="groups"):
        prometheus_rule("rules: []\n")


def test_docker_compose_is_valid_and_its_files_exist():
    deploy = ROOT / "deploy"
    compose = yaml.safe_load((deploy / "docker-compose.yml").read_text())
    assert {"prometheus", "alertmanager", "grafana"} <= set(compose["services"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (deploy / source).exists(), f"{name}: {source} does not exist"
    provisioning = deploy / "grafana/provisioning"
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus"
    provider = yaml.safe_load((provisioning / "dashboards/llmops.yml").read_text())
    assert provider["providers"][0]["options"]["path"]
