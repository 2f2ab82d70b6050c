"""The committed dashboards are what the builders make; panels have units, variables and refIds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmops.cli import main
from llmops.metrics.catalogue import RUN_LEVEL
from llmops.ops.dashboards import DASHBOARDS, panel_queries, render_all

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "deploy" / "grafana" / "dashboards"


def load(name: str = "llmops-training-run.json") -> dict:
    return json.loads((COMMITTED / name).read_text())


def panels(d: dict) -> list[dict]:
    flat = []
    for p in d["panels"]:
        flat.append(p)
        flat.extend(p.get("panels", []))
    return flat


def needs_sdk() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="grafana-foundation-sdk (dev extra) needs Python >= 3.11")


def test_committed_json_is_what_the_builders_make():
    needs_sdk()
    rendered = render_all()
    assert sorted(rendered) == sorted(p.name for p in COMMITTED.glob("*.json")) == sorted(DASHBOARDS)
    for name, text in rendered.items():
        assert (COMMITTED / name).read_text() == text, (
            f"deploy/grafana/dashboards/{name} is out of date: run "
            "`llmops dashboards --out deploy/grafana/dashboards` and commit it")


def test_cli_writes_dashboards_and_prometheus_rule(tmp_path, capsys):
    needs_sdk()
    assert main(["dashboards", "--out", str(tmp_path / "d"), "--prometheus-rule", str(tmp_path / "k/pr.yaml")]) == 0
    assert (tmp_path / "d/llmops-training-run.json").read_text() == (COMMITTED / "llmops-training-run.json").read_text()
    assert (tmp_path / "k/pr.yaml").read_text() == (ROOT / "deploy/kubernetes/prometheusrule.yaml").read_text()
    assert "wrote" in capsys.readouterr().out


def test_cli_missing_rules_file_is_one_line_error(tmp_path, capsys):
    code = main(["dashboards", "--out", str(tmp_path), "--prometheus-rule", str(tmp_path / "pr.yaml"),
                 "--rules", str(tmp_path / "nope.yml")])
    assert code == 1 and "nope.yml" in capsys.readouterr().err


def test_variables_datasource_run_rank_gpu():
    d = load()
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert list(variables) == ["datasource", "run", "rank", "gpu"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("rank", "gpu"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_every_panel_has_a_unit_a_datasource_and_ids():
    d = load()
    ids = [p["id"] for p in panels(d)]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for p in panels(d):
        if p["type"] == "row":
            continue
        assert p["fieldConfig"]["defaults"].get("unit"), f"{p['title']}: no unit"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in p["targets"]]
        assert refs == [chr(ord("A") + i) for i in range(len(refs))], p["title"]


@pytest.mark.parametrize("title,unit", [
    ("Predicted vs actual memory per component", "decbytes"), ("Drift ratio (measured / predicted peak)",
                                                                 "percentunit"),
    ("Step time per rank", "s"), ("Bus bandwidth", "Bps"), ("Time since the last checkpoint", "s"),
    ("GPU utilisation", "percentunit"), ("Headroom to the budget", "decbytes")])
def test_units_follow_the_metrics(title, unit):
    (panel,) = [p for p in panels(load()) if p["title"] == title]
    assert panel["fieldConfig"]["defaults"]["unit"] == unit


def test_every_llmops_query_filters_on_run_and_rank():
    for title, expr in panel_queries(load()):
        if "llmops_" not in expr and "llmops:run_" not in expr:
            continue  # thresholds from the rules file; its per-run recordings (llmops:run_*) filter on run
        assert 'run=~"$run"' in expr, title
        # The run's median spans every rank; run-level series (the prediction) come from rank 0 alone.
        unfiltered = {m.group(1) for m in re.finditer(r"(llmops_\w+)\{([^}]*)\}", expr) if "rank=" not in m.group(2)}
        if not expr.startswith("quantile by (run)"):
            assert unfiltered <= set(RUN_LEVEL), (title, unfiltered - set(RUN_LEVEL))


def test_the_issue_panels_are_there():
    titles = {p["title"] for p in panels(load())}
    assert {"Predicted vs actual memory per component", "Predicted vs measured peak per rank",
            "Drift ratio (measured / predicted peak)", "OOM risk by source", "Headroom to the budget",
            "Batch size vs largest safe batch", "GPU memory used / total", "GPU utilisation", "Step time per rank",
            "All-reduce time", "Bus bandwidth", "Time since the last checkpoint", "Checkpoint save duration",
            "Checkpoint saves, failures and restores", "Monitor errors by probe"} <= titles
    dcgm = [p for p in load()["panels"] if p["title"].startswith("DCGM")]
    assert dcgm and dcgm[0]["collapsed"] and all("on(UUID)" in t["expr"] for p in dcgm[0]["panels"]
                                                 for t in p["targets"])


# The fields dcgm-exporter exports with its default configuration (NVIDIA/dcgm-exporter,
# etc/default-counters.csv, uncommented lines); DCGM_FI_PROF_* need its dcp-metrics file.
DCGM_DEFAULT_COUNTERS = {
    "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP", "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_XID_ERRORS", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
}


def test_the_dcgm_row_reads_only_dcgm_exporters_default_counters():
    import re

    used = {n for _, expr in panel_queries(load()) for n in re.findall(r"DCGM_FI_\w+", expr)}
    assert used and used <= DCGM_DEFAULT_COUNTERS, sorted(used - DCGM_DEFAULT_COUNTERS)


def test_panels_that_can_be_empty_say_why():
    for p in panels(load()):
        exprs = [t["expr"] for t in p.get("targets", []) if t.get("expr")]
        needs = ("llmops_gpu_", "llmops_comm_", "llmops:comm_", "DCGM_FI_")  # a GPU, a second rank, dcgm-exporter
        if exprs and all(any(n in e for n in needs) for e in exprs if not e.startswith("llmops:threshold")):
            assert p["fieldConfig"]["defaults"].get("noValue", "").startswith("No "), p["title"]
