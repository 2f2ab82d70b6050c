"""The built wheel stands alone: installed in a fresh venv outside the repository, its commands run.

The wheel is built from this checkout and installed with ``--no-deps``; its dependencies (torch,
Lightning, …) come from the test environment through a ``.pth`` path line, which adds their folder
to ``sys.path`` but runs none of its ``.pth`` files, so the checkout's editable install cannot leak
in. Every command runs from a folder outside the repository; a test asserts ``llmops`` imports
from the new venv.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from llmops import DISTRIBUTION

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLMOPS_RUN_DIR")}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the new venv's bin folder) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
         str(ROOT)], cwd=tmp, timeout=600)
    wheel = next((tmp / "dist").glob("*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    new_site = Path(run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp).strip())
    (new_site / "borrowed-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(wheel)], cwd=tmp)
    return wheel, env_dir / "bin"


def test_the_wheel_holds_the_deploy_files_and_the_license(installed):
    wheel, _ = installed
    assert wheel.name.startswith(DISTRIBUTION.replace("-", "_") + "-")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"llmops/ops/deploy/{p.relative_to(ROOT / 'deploy')}"
               for p in (ROOT / "deploy").rglob("*") if p.is_file()}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "llmops/demo/data/sonnets.txt" in names


def test_llmops_imports_from_the_new_venv(installed, tmp_path):
    _, bin_dir = installed
    where = run([str(bin_dir / "python"), "-c", "import llmops, llmops.ops.shipped as s; print(llmops.__file__); "
                 "print(s.RULES.is_file())"], cwd=tmp_path).split()
    assert Path(where[0]).is_relative_to(bin_dir.parent) and where[1] == "True", where


def test_demo_runs_from_the_wheel(installed, tmp_path):
    _, bin_dir = installed
    out = run([str(bin_dir / "llmops"), "demo", "--steps", "20", "--no-progress", "--port", "0",
               "--run-dir", str(tmp_path / "runs")], cwd=tmp_path, timeout=600)
    assert "report" in out.lower() and list((tmp_path / "runs").rglob("*.html")), out[-2000:]


def test_deploy_dashboards_and_the_rules_from_the_wheel(installed, tmp_path):
    _, bin_dir = installed
    run([str(bin_dir / "llmops"), "deploy", "--out", str(tmp_path / "deploy"),
         "--runbook-base", "https://wiki.example.com/runbooks.md"], cwd=tmp_path)
    rules = tmp_path / "deploy/prometheus/rules/llmops.rules.yml"
    assert "https://wiki.example.com/runbooks.md#llmopsoomrisk" in rules.read_text()
    pytest.importorskip("grafana_foundation_sdk", reason="llmops dashboards needs the SDK (Python >= 3.11)")
    run([str(bin_dir / "llmops"), "dashboards", "--out", str(tmp_path / "d"), "--prometheus-rule",
         str(tmp_path / "pr.yaml")], cwd=tmp_path)
    assert (tmp_path / "d/llmops-training-run.json").read_text() == \
        (ROOT / "deploy/grafana/dashboards/llmops-training-run.json").read_text()
    if shutil.which("promtool"):
        run(["promtool", "check", "rules", str(rules)], cwd=tmp_path)
        run(["promtool", "test", "rules", *map(str, sorted((rules.parent / "tests").glob("*_test.yml")))],
            cwd=tmp_path)


@pytest.mark.skipif(not (shutil.which("prometheus") and shutil.which("prometheus-alertmanager")),
                    reason="needs Debian's prometheus and prometheus-alertmanager (.ci/run installs them)")
def test_stack_up_and_down_from_the_wheel(installed, tmp_path):
    _, bin_dir = installed
    llmops = str(bin_dir / "llmops")
    try:
        out = run([llmops, "stack", "up", "--dir", str(tmp_path / "s"), "--prometheus-port", "0",
                   "--alertmanager-port", "0", "--target", "127.0.0.1:1"], cwd=tmp_path)
        assert "Prometheus:   http://127.0.0.1:" in out
    finally:
        assert "stopped" in run([llmops, "stack", "down", "--dir", str(tmp_path / "s")], cwd=tmp_path)
