"""Grafana dashboards as code (grafana-foundation-sdk) and the Kubernetes form of the alert rules.

``render_all()`` gives ``{file name: JSON text}``; ``llmops dashboards --out dashboards/`` writes
them. The SDK is the optional ``dashboards`` extra, imported only when a dashboard is rendered.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.ops.dashboards.prometheus_rule import prometheus_rule
from llmops.ops.dashboards.promql import base_metric, label_values, metric_names, substitute

__all__ = ["DASHBOARDS", "base_metric", "label_values", "metric_names", "panel_queries", "prometheus_rule",
           "render_all", "substitute", "variable_queries", "write_all"]


def _training_run() -> Any:
    from llmops.ops.dashboards.training_run import build

    return build()


# The Grafana the dashboards target: tests type-check them against this @grafana/schema, and
# deploy/docker-compose.yml runs this Grafana. The SDK writes schemaVersion 42 (Grafana 12.2+);
# dashboard link `placement` needs 12.3.
GRAFANA = "12.3"

# file name -> a function returning the dashboard builder
DASHBOARDS: dict[str, Callable[[], Any]] = {"llmops-training-run.json": _training_run}


def render_all() -> dict[str, str]:
    """Every dashboard as stable JSON text (sorted keys, 2-space indent, final newline)."""
    try:
        from grafana_foundation_sdk.cog.encoder import JSONEncoder
    except ImportError as e:
        raise RuntimeError("llmops dashboards needs grafana-foundation-sdk: "
                           "pip install 'llmops-lightning[dashboards]'") from e
    # The SDK warns that its schema-v2 builders are preferred. v2 dashboards need Grafana 12 with its
    # dashboard-v2 feature flags and cannot be file-provisioned everywhere; the classic JSON model
    # (schemaVersion 42) imports and provisions on every current Grafana, so we keep it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
        built = {name: json.loads(json.dumps(make().build(), cls=JSONEncoder)) for name, make in DASHBOARDS.items()}
    return {name: json.dumps(_current(d), indent=2, sort_keys=True) + "\n" for name, d in built.items()}


def _current(dashboard: dict[str, Any]) -> dict[str, Any]:
    """Drop what the SDK's model writes that Grafana's current schema (``GRAFANA``) no longer has: the
    interval options on variables that are not interval variables, and the table's legacy footer."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for key in ("auto", "auto_count", "auto_min"):
                variable.pop(key, None)
    for panel in _panels(dashboard):
        if panel.get("type") == "table":
            panel.get("options", {}).pop("footer", None)
    return dashboard


def write_all(out: str | Path) -> list[Path]:
    """Write every dashboard into ``out`` (created if missing); returns the paths written."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every target of every panel, rows' nested panels included."""
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", []) if t.get("expr")]


def variable_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """``{variable: query}`` of the query variables (``label_values(...)``)."""
    return {v["name"]: v["query"] for v in dashboard.get("templating", {}).get("list", []) if v["type"] == "query"}
