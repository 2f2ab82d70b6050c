"""Every metric named in a dashboard or an alert rule is in ``llmops.metrics.catalogue.METRICS``.

Also allowed: the rules file's own recording rules (``llmops:...``), Prometheus' ``up``, and
dcgm-exporter's ``DCGM_FI_*`` series in the optional DCGM row.
"""

from __future__ import annotations

import json

import pytest
import yaml

from llmops.metrics.catalogue import BY_NAME
from llmops.ops.dashboards import base_metric, label_values, metric_names, panel_queries, substitute, variable_queries
from llmops.ops.shipped import DASHBOARDS
from llmops.ops.shipped import RULES as RULES_FILE

RULES = yaml.safe_load(RULES_FILE.read_text())
RECORDED = {r["record"] for g in RULES["groups"] for r in g["rules"] if "record" in r}
HISTOGRAMS = {m.name for m in BY_NAME.values() if m.type == "histogram"}
EXTERNAL = {"up"}


def unknown(expr: str) -> set[str]:
    names = {base_metric(n, HISTOGRAMS) for n in metric_names(expr)}
    return {n for n in names if n not in BY_NAME and n not in RECORDED and n not in EXTERNAL
            and not n.startswith("DCGM_FI_")}


def dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    paths = sorted(DASHBOARDS.glob("*.json"))
    assert paths, f"no dashboards in {DASHBOARDS}"
    for path in paths:
        d = json.loads(path.read_text())
        out += [(f"{path.name} / {title}", expr) for title, expr in panel_queries(d)]
        out += [(f"{path.name} / ${name}", label_values(q)[0]) for name, q in variable_queries(d).items()]
    return out


def rule_exprs() -> list[tuple[str, str]]:
    return [(r.get("alert") or r["record"], r["expr"]) for g in RULES["groups"] for r in g["rules"]]


@pytest.mark.parametrize("where,expr", dashboard_exprs() + rule_exprs())
def test_metric_is_declared(where, expr):
    names = metric_names(expr)
    assert names or expr.startswith("vector("), f"{where}: no metric found in {expr!r}"
    assert not unknown(expr), f"{where}: {sorted(unknown(expr))} not in llmops.metrics.catalogue.METRICS"


def test_dashboards_and_rules_cover_the_core_metrics():
    used = {base_metric(n, HISTOGRAMS) for _, e in dashboard_exprs() + rule_exprs() for n in metric_names(e)}
    core = {"llmops_memory_predicted_bytes", "llmops_memory_actual_bytes", "llmops_memory_drift_ratio",
            "llmops_oom_risk", "llmops_batch_size", "llmops_batch_size_max_safe", "llmops_gpu_memory_used_bytes",
            "llmops_gpu_memory_total_bytes", "llmops_gpu_utilization_ratio", "llmops_step_duration_seconds",
            "llmops_comm_bus_bandwidth_bytes_per_second", "llmops_comm_allreduce_duration_seconds",
            "llmops_checkpoint_last_success_timestamp_seconds", "llmops_checkpoint_failures_total",
            "llmops_monitor_errors_total", "llmops_memory_budget_bytes"}
    assert core <= used, sorted(core - used)


@pytest.mark.parametrize("expr,names", [
    ('rate(llmops_step_duration_seconds_sum{run=~"$run"}[$__rate_interval])', {"llmops_step_duration_seconds_sum"}),
    ("predict_linear(a[15m], scalar(llmops:threshold:x)) > ignoring(component) b",
     {"a", "llmops:threshold:x", "b"}),
    ("(up == 0) * on(job, instance) group_left(run, rank) max by (job, instance, run, rank) (c[15m])", {"up", "c"}),
    ('histogram_quantile(0.9, sum by (le) (d_bucket)) > 1e9 and 0.5 * e offset 10m', {"d_bucket", "e"}),
    ('f{name="not_a_metric"} or g', {"f", "g"}),
    ("vector(0.2)", set()),
])
def test_metric_names_reads_promql(expr, names):
    assert metric_names(expr) == names


def test_histogram_suffixes_map_to_the_declared_histogram():
    assert base_metric("llmops_step_duration_seconds_bucket", HISTOGRAMS) == "llmops_step_duration_seconds"
    assert base_metric("llmops_samples_total", HISTOGRAMS) == "llmops_samples_total"
    assert unknown("llmops_not_a_metric_bytes") == {"llmops_not_a_metric_bytes"}


def test_substitute_grafana_variables():
    assert substitute('x{run=~"$run", rank=~"${rank}"}[$__rate_interval]',
                      {"run": "a", "rank": ".*", "__rate_interval": "4s"}) == 'x{run=~"a", rank=~".*"}[4s]'
    with pytest.raises(KeyError):
        substitute("$nope", {})
