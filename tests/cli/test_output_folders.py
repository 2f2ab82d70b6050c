"""A folder or file the CLI cannot write is the person's bad --out: one line, exit code 2, never a traceback."""

import sys

import pytest

from tests.helpers.cli import llmops, one_line_exit_2


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("")
    return path  # nothing can be created under a plain file, on any system


def test_dashboards_out_that_cannot_be_made(a_file):
    one_line_exit_2(llmops("dashboards", "--out", str(a_file / "dashboards")), "--out", str(a_file / "dashboards"))


def test_dashboards_out_under_proc():
    if sys.platform != "linux":
        pytest.skip("/proc is Linux's")
    one_line_exit_2(llmops("dashboards", "--out", "/proc/nope"), "--out", "/proc/nope")


def test_prometheus_rule_that_cannot_be_written(tmp_path, a_file):
    pytest.importorskip("grafana_foundation_sdk", reason="the dashboards are written first; they need the SDK")
    r = llmops("dashboards", "--out", str(tmp_path / "d"), "--prometheus-rule", str(a_file / "pr.yaml"))
    one_line_exit_2(r, "--prometheus-rule", str(a_file / "pr.yaml"))


def test_report_out_that_cannot_be_made(tmp_path, a_file):
    from llmops.runlog import RunLogWriter

    w = RunLogWriter(tmp_path / "run" / "rank0.jsonl", None, interval=3600)
    w.open("run", 0)
    w.step(1, 0.1)
    w.close()
    one_line_exit_2(llmops("report", str(tmp_path / "run"), "--out", str(a_file / "report")), "--out")
