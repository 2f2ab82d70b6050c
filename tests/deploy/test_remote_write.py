"""The remote_write example: merged into the shipped prometheus.yml it is a valid configuration, and it keeps
every series the dashboards and rules read. (Writing to a real store and reading back: tests/bench/test_scale.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from llmops.ops.dashboards import metric_names
from llmops.ops.shipped import DEPLOY, PROMETHEUS_YML
from tests.ops.dashboards.test_metric_names import dashboard_exprs, rule_exprs

EXAMPLE = DEPLOY / "prometheus" / "remote-write" / "victoria-metrics.yml"


def keep_regex() -> re.Pattern[str]:
    (rule,) = yaml.safe_load(EXAMPLE.read_text())["remote_write"][0]["write_relabel_configs"]
    assert rule["action"] == "keep" and rule["source_labels"] == ["__name__"]
    return re.compile(rule["regex"])  # Prometheus anchors relabel regexes: fullmatch below


def test_the_store_keeps_every_series_dashboards_and_rules_read():
    keep = keep_regex()
    names = {n for _, e in dashboard_exprs() + rule_exprs() for n in metric_names(e)}
    assert names and all(keep.fullmatch(n) for n in names), sorted(n for n in names if not keep.fullmatch(n))
    assert not keep.fullmatch("process_cpu_seconds_total")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes from Debian's prometheus")
def test_merged_into_the_shipped_config_promtool_accepts_it(tmp_path):
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg.update(yaml.safe_load(EXAMPLE.read_text()))
    cfg["rule_files"] = []  # promtool resolves them relative to the file; the rules have their own test
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
