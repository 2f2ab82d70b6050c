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

from llmops.dashboards import GRAFANA
from llmops.shipped import DASHBOARDS, DEPLOY

# Keys Grafana's own frontend writes on variables that the TypeScript type does not declare (the SDK
# emits them too): the query text it shows, and the interval variables' auto options.
UNDECLARED_VARIABLE_KEYS = ("definition", "auto", "auto_count", "auto_min")
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


def type_check(tsc: Path, dashboard: dict, where: Path) -> subprocess.CompletedProcess:
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for key in UNDECLARED_VARIABLE_KEYS:
                variable.pop(key, None)
    where.mkdir(parents=True, exist_ok=True)
    (where / "check.ts").write_text("import type { Dashboard } from '@grafana/schema';\n" + LOOSE + "\n"
                                    f"export const d: Loose<Dashboard> = {json.dumps(dashboard, indent=1)};\n")
    env = {**os.environ, "NODE_PATH": str(tsc.parents[1])}
    (where / "node_modules").symlink_to(tsc.parents[1], target_is_directory=True)
    return subprocess.run([str(tsc), "--noEmit", "--strict", "--moduleResolution", "bundler", "--module", "esnext",
                           "--target", "es2022", "--skipLibCheck", str(where / "check.ts")],
                          capture_output=True, text=True, timeout=180, env=env)


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_matches_the_published_schema(tsc, path, tmp_path):
    r = type_check(tsc, json.loads(path.read_text()), tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_check_catches_a_wrong_type(tsc, tmp_path):
    dashboard = json.loads(next(DASHBOARDS.glob("*.json")).read_text())
    dashboard["editable"] = "yes"  # a boolean in the schema
    dashboard["panels"][0]["gridPos"]["w"] = "wide"
    r = type_check(tsc, dashboard, tmp_path)
    assert r.returncode != 0 and r.stdout.count("error TS") >= 2, r.stdout


def test_compose_runs_the_grafana_the_dashboards_are_checked_against():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    tag = compose["services"]["grafana"]["image"].split(":")[1]
    assert re.fullmatch(rf"{re.escape(GRAFANA)}\.\d+", tag), (tag, GRAFANA)
