"""The deployment files that ship inside the package, and how to write them out.

``llmops/ops/deploy`` is the repository's ``deploy/`` (a symlink in a checkout; real files in a wheel):
Prometheus and Alertmanager configs, the alert rules and their promtool tests, the Grafana
dashboards and provisioning, compose and Kubernetes manifests, and the runbooks. Alerts link to the
runbooks by ``runbook_url``: ``RUNBOOK_BASE`` by default, or where an operator hosts their copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules" / "llmops.rules.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "prometheusrule.yaml"
RUNBOOKS = DEPLOY / "runbooks.md"
# Where the project publishes deploy/runbooks.md; every runbook_url in the shipped files starts with it.
RUNBOOK_BASE = "https://github.com/llmops-lightning/llmops/blob/main/deploy/runbooks.md"
# Files whose text carries runbook links (the rules, their promtool tests, the PrometheusRule, dashboards).
_LINKED = ("*.rules.yml", "*_test.yml", "prometheusrule.yaml", "dashboards/*.json")


def check_base(base: str) -> str:
    """``base`` without a trailing ``/`` or ``#``; ``ValueError`` unless it is an http(s) or file URL."""
    if not base.startswith(("http://", "https://", "file://")) or any(c.isspace() for c in base) or "#" in base:
        raise ValueError(f"runbook base {base!r}: give an http(s):// or file:// URL of runbooks.md, without '#'")
    return base.rstrip("/")


def with_runbook_base(text: str, base: str) -> str:
    """``text`` (a shipped file) with every runbook link pointing at ``base`` instead of ``RUNBOOK_BASE``."""
    return text.replace(RUNBOOK_BASE, check_base(base))


def local_runbooks() -> str:
    """The installed runbooks as a file:// URL: right for a stack on this machine."""
    return RUNBOOKS.as_uri()


def export(out: str | Path, runbook_base: str = RUNBOOK_BASE) -> list[Path]:
    """Copy every shipped file into ``out`` (created), links rewritten to ``runbook_base``; the paths written."""
    base = check_base(runbook_base)
    folder = Path(out)
    written = []
    for src in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        dst = folder / src.relative_to(DEPLOY)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if any(src.match(pattern) for pattern in _LINKED):
            dst.write_text(with_runbook_base(src.read_text(encoding="utf-8"), base), encoding="utf-8")
        else:
            shutil.copyfile(src, dst)
        written.append(dst)
    return written
