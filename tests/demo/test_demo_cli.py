"""``llmops demo`` end to end, as a person runs it: the console script in a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from llmops.runlog import read_run
from tests.helpers.scrape import scrape, value

LLMOPS = str(Path(sys.executable).parent / "llmops")


def start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """Run the demo; its merged output is collected line by line on a thread."""
    proc = subprocess.Popen([LLMOPS, "demo", "--port", "0", "--run-dir", str(tmp_path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "120"}, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines


def wait_for(lines: list[str], pattern: str, timeout: float = 120) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(lines):
            m = re.search(pattern, line)
            if m:
                return m
        time.sleep(0.05)
    pytest.fail(f"no line matching {pattern!r} in:\n{''.join(lines)}")


def finish(proc: subprocess.Popen, lines: list[str], timeout: float = 300) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.2)  # the reader thread takes the last lines
    return "".join(lines)


def the_run(tmp_path: Path) -> Path:
    (run_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
    return run_dir


def test_demo_20_steps_serves_metrics_and_writes_an_offline_report(tmp_path):
    proc, lines = start(tmp_path, "--steps", "20")
    url = wait_for(lines, r"metrics at (http://\S+/metrics)").group(1)
    samples = scrape(url)  # while the demo runs
    assert value(samples, "llmops_batch_size") is None or value(samples, "llmops_batch_size") == 16
    assert any(n == "llmops_build_info" for n, _, _ in samples)
    out = finish(proc, lines)
    assert proc.returncode == 0, out
    assert "llmops preflight: predicted memory per device" in out
    assert "predicted vs measured memory per device, rank 0, after step 20" in out
    assert re.search(r"peak \(live tensors\)\s+│\s+[\d.]+\s+│\s+[\d.]+\s+│\s+[\d.]+", out), out
    assert "text sampled from the model" in out
    page_path = Path(wait_for(lines, r"report (\S+report\.html)").group(1))
    page = page_path.read_text()
    assert "<script" not in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert page.count('src="data:image/png;base64,') >= 4
    assert "Memory per component" in page and "Checkpoint timeline" in page
    r = read_run(page_path.parent.parent).ranks[0]
    assert r.end["status"] == "ok" and r.last_step == 20


def test_ctrl_c_stops_cleanly(tmp_path):
    proc, lines = start(tmp_path, "--steps", "100000", "--no-progress")
    wait_for(lines, r"metrics at")
    run_dir = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # let a few steps run and be logged
        runs = [p for p in tmp_path.iterdir() if p.name.startswith("demo-")]
        if runs and (runs[0] / "rank0.jsonl").exists() and \
                (runs[0] / "rank0.jsonl").read_text().count('"kind": "step"') >= 5:
            run_dir = runs[0]
            break
        time.sleep(0.1)
    assert run_dir is not None, "".join(lines)
    os.kill(proc.pid, signal.SIGINT)
    out = finish(proc, lines, timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out
    assert "interrupted at step" in out
    r = read_run(run_dir).ranks[0]
    assert r.end["status"] == "interrupted" and r.last_step >= 5
    assert (run_dir / "report" / "report.html").exists()


def test_budget_shows_the_oom_verdict(tmp_path):
    proc, lines = start(tmp_path, "--steps", "3", "--budget", "20MB", "--no-progress")
    out = finish(proc, lines)
    assert proc.returncode == 0, out
    assert "OOM risk" in out and "largest safe micro-batch" in out
    page = (the_run(tmp_path) / "report" / "report.html").read_text()
    assert "OOM RISK: predicted peak" in page


def test_two_cpu_processes_with_ddp(tmp_path):
    proc, lines = start(tmp_path, "--steps", "6", "--devices", "2", "--no-progress", "--seq-len", "32")
    out = finish(proc, lines)
    assert proc.returncode == 0, out
    run = read_run(the_run(tmp_path))
    assert sorted(run.ranks) == [0, 1] and not run.crashed
    assert all(r.last_step == 6 for r in run.ranks.values())
    assert run.ranks[0].preflight["spec"]["world_size"] == 2
    urls = re.search(r"metrics at (\S+) \(rank 0\), (\S+) \(rank 1\)", out)  # each rank's own port
    assert urls and urls[1] != urls[2], out
    assert [run.ranks[r].start["url"] for r in (0, 1)] == [urls[1], urls[2]]
    assert out.count("serving on") == 1, out  # one line per node, from local rank 0


def test_stack_unavailable_says_so(monkeypatch, capsys):
    from llmops.cli import demo_cmd

    monkeypatch.setitem(sys.modules, "llmops.ops.stack", None)  # import fails as when the module is absent
    assert demo_cmd._start_stack(9445, 1) is None
    assert "--stack needs llmops.ops.stack" in capsys.readouterr().err


def test_bad_arguments_are_one_line_errors():
    out = subprocess.run([LLMOPS, "demo", "--steps", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "--steps" in out.stderr


@pytest.mark.skipif(not (shutil.which("prometheus") and (shutil.which("prometheus-alertmanager")
                                                        or shutil.which("alertmanager"))),
                    reason="needs Debian's prometheus and prometheus-alertmanager")
def test_stack_scrapes_the_demo(tmp_path):
    proc, lines = start(tmp_path, "--steps", "5", "--no-progress", "--stack")
    prometheus = wait_for(lines, r"Prometheus at (http://127\.0\.0\.1:\d+)").group(1)
    out = finish(proc, lines)
    assert proc.returncode == 0, out
    assert "Alertmanager at http://127.0.0.1:" in out
    with pytest.raises(OSError):  # stopped with the demo
        urllib.request.urlopen(prometheus + "/-/ready", timeout=5)
