"""The deployment files ship inside the package, and ``llmops deploy`` writes them out with the links wanted."""

from __future__ import annotations

import filecmp
import re
from pathlib import Path

import yaml

from llmops.cli import main
from llmops.ops.shipped import DEPLOY, RUNBOOK_BASE, RUNBOOKS
from tests.helpers.cli import llmops, one_line_exit_2

ROOT = Path(__file__).resolve().parents[2]


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_package_ships_the_repository_deploy_folder():
    assert files(DEPLOY) == files(ROOT / "deploy")
    assert {"prometheus/rules/llmops.rules.yml", "alertmanager/alertmanager.yml", "runbooks.md",
            "grafana/dashboards/llmops-training-run.json", "kubernetes/prometheusrule.yaml"} <= set(files(DEPLOY))


def test_deploy_with_the_default_base_writes_the_repository_files(tmp_path, capsys):
    assert main(["deploy", "--out", str(tmp_path)]) == 0
    assert files(tmp_path) == files(ROOT / "deploy")
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, ROOT / "deploy", files(tmp_path), shallow=False)
    assert not mismatch and not errors
    assert f"wrote {len(files(tmp_path))} files" in capsys.readouterr().out


def test_deploy_points_every_runbook_link_at_the_base_given(tmp_path):
    base = "https://wiki.example.com/ml/llmops-runbooks.md"
    assert main(["deploy", "--out", str(tmp_path), "--runbook-base", base + "/"]) == 0
    rules = yaml.safe_load((tmp_path / "prometheus/rules/llmops.rules.yml").read_text())
    links = [r["annotations"]["runbook_url"] for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(links) >= 9 and all(u.startswith(base + "#llmops") for u in links)
    headings = {h.lower() for h in re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.M)}
    assert {u.split("#")[1] for u in links} <= headings
    for path in tmp_path.rglob("*"):  # the default base is left nowhere, in any file
        assert not path.is_file() or RUNBOOK_BASE not in path.read_text(), path


def test_a_bad_runbook_base_is_one_line_and_exit_2(tmp_path):
    for bad in ("docs/runbooks.md", "ftp://x/runbooks.md", "https://x/r.md#a", "https://x/a b.md"):
        one_line_exit_2(llmops("deploy", "--out", str(tmp_path), "--runbook-base", bad), "--runbook-base", repr(bad))
    assert not any(tmp_path.iterdir())
