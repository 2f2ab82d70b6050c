"""The alert rules as a Prometheus Operator ``PrometheusRule``, generated from the one rules file."""

from __future__ import annotations

import yaml

HEADER = """\
# Generated from deploy/prometheus/rules/llmops.rules.yml: do not edit, change that file and run
#   llmops dashboards --out deploy/grafana/dashboards --prometheus-rule deploy/kubernetes/prometheusrule.yaml
# Thresholds: the llmops-thresholds group (the same recording rules as in the rules file).
"""


def prometheus_rule(rules_text: str, name: str = "llmops", labels: dict[str, str] | None = None) -> str:
    """The ``monitoring.coreos.com/v1`` PrometheusRule holding the groups of ``rules_text``, as YAML text."""
    rules = yaml.safe_load(rules_text)
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ValueError("a Prometheus rules file has a top-level 'groups' list")
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": name, "labels": labels or {"app.kubernetes.io/name": "llmops",
                                                        "app.kubernetes.io/component": "alert-rules"}},
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.safe_dump(resource, sort_keys=False, width=120, allow_unicode=True)
