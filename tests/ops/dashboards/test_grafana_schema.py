"""The dashboards type-check against Grafana's published schema (npm ``@grafana/schema``, with tsc).

Needs ``npm`` and the npm registry; skipped, with the reason, where either is missing. The packages
are cached in ``~/.cache/llmops/grafana-schema-<version>``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.ops.dashboards import GRAFANA
from llmops.ops.shipped import DASHBOARDS, DEPLOY

# String enums (MappingType, …) accept their values as literals, as Grafana's JSON spells them.
LOOSE = ("type Loose<T> = T extends string ? T | `${T}` : T extends number | boolean | null | undefined ? T : "
         "T extends Array<infer U> ? Array<Loose<U>> : T extends object ? { [K in keyof T]: Loose<T[K]> } : T;")


@pytest.fixture(scope="module")
def tsc() -> Path:
    if not shutil.which("npm"):
        pytest.skip("npm is not installed (apt-get install npm)")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llmops" / f"grafana-schema-{GRAFANA}"
    binary = cache / "node_modules" / ".bin" / "tsc"
    if not binary.exists():
        r = subprocess.run(["npm", "install", "--silent", "--prefix", str(cache), f"@grafana/schema@{GRAFANA}",
                            "typescript@5"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            pytest.skip(f"npm could not install @grafana/schema@{GRAFANA}: {r.stderr.strip()[-300:]}")
    return binary


# Panel type → its module in @grafana/schema (Options and FieldConfig: the panel's options and custom field config).
PANELS = {"timeseries": "timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen",
          "table": "table/panelcfg/x/TablePanelCfg_types.gen",
          "state-timeline": "statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen"}


def panels(dashboard: dict) -> list[dict]:
    return [q for p in dashboard.get("panels", []) for q in (p, *p.get("panels", []))]


def check_source(dashboard: dict) -> str:
    """TypeScript that assigns the dashboard to ``Dashboard``, and each panel's options and custom field
    config to its plugin's ``Options`` and ``FieldConfig``."""
    lines = ["import type { Dashboard } from '@grafana/schema';", LOOSE,
             f"export const dashboard: Loose<Dashboard> = {json.dumps(dashboard, indent=1)};"]
    for i, module in enumerate(PANELS.values()):
        lines.append(f"import type {{ Options as O{i}, FieldConfig as F{i} }} from "
                     f"'./node_modules/@grafana/schema/dist/esm/raw/composable/{module}';")
    for n, panel in enumerate(panels(dashboard)):
        if panel["type"] == "row":
            continue
        assert panel["type"] in PANELS, f"no schema module listed for panel type {panel['type']!r}"
        i = list(PANELS).index(panel["type"])
        title = json.dumps(panel["title"])
        lines.append(f"// {title}")
        lines.append(f"export const options{n}: Loose<O{i}> = {json.dumps(panel.get('options', {}))};")
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        lines.append(f"export const custom{n}: Loose<F{i}> = {json.dumps(custom)};")
    return "\n".join(lines) + "\n"


def type_check(tsc: Path, dashboard: dict, where: Path) -> subprocess.CompletedProcess:
    where.mkdir(parents=True, exist_ok=True)
    (where / "check.ts").write_text(check_source(dashboard))
    (where / "node_modules").symlink_to(tsc.parents[1], target_is_directory=True)
    return subprocess.run([str(tsc), "--noEmit", "--strict", "--moduleResolution", "bundler", "--module", "esnext",
                           "--target", "es2022", "--skipLibCheck", str(where / "check.ts")],
                          capture_output=True, text=True, timeout=180, cwd=where)


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_matches_the_published_schema(tsc, path, tmp_path):
    r = type_check(tsc, json.loads(path.read_text()), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_check_catches_a_wrong_type(tsc, tmp_path):
    dashboard = json.loads(next(DASHBOARDS.glob("*.json")).read_text())
    dashboard["editable"] = "yes"  # a boolean in the schema
    dashboard["panels"][0]["gridPos"]["w"] = "wide"
    next(p for p in panels(dashboard) if p["type"] == "timeseries")["options"]["legend"]["showLegend"] = 1
    r = type_check(tsc, dashboard, tmp_path)
    assert r.returncode != 0 and r.stdout.count("error TS") >= 3, r.stdout


def test_compose_runs_the_grafana_the_dashboards_are_checked_against():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    tag = compose["services"]["grafana"]["image"].split(":")[1]
    assert re.fullmatch(rf"{re.escape(GRAFANA)}\.\d+", tag), (tag, GRAFANA)
