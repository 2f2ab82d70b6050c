"""``llmops report``: a finished run, a run killed with SIGKILL, the HTML is offline, the alerts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest

from llmops import LLMOpsMonitor
from llmops.cli import main
from llmops.report import write_report
from llmops.report.alerts import evaluate, load_rules
from llmops.runlog import read_run
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader

HERE = Path(__file__).parent
PLOTS = ("memory", "drift", "headroom", "step_time")


def offline(page: str) -> None:
    """Nothing to fetch: no script, no stylesheet link, no remote src or url()."""
    assert "<script" not in page and "<link" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "url(" not in page


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    monitor = LLMOpsMonitor(port=0, run="done", run_dir=str(root), memory_budget="1GB", interval=0.05,
                            activation_interval=3)
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))
    return root / "done"


def test_report_of_a_finished_run(finished, capsys):
    assert main(["report", str(finished)]) == 0
    out = capsys.readouterr().out
    assert "finished at step 12" in out
    page_path = finished / "report" / "report.html"
    assert f"report: {page_path}" in out
    page = page_path.read_text()
    offline(page)
    assert page.count('src="data:image/png;base64,') >= len(PLOTS)
    for key in PLOTS:
        assert (finished / "report" / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("Preflight verdict", "fits: predicted peak", "Predicted vs measured", "Alerts that would have fired",
                 "LLMOpsMemoryDrift", "Headroom to the budget", "Step time", "no communication recorded"):
        assert text in page, text
    assert "did not finish" not in page


def test_report_to_another_folder(finished, tmp_path):
    page = write_report(finished, tmp_path / "elsewhere")
    assert page == tmp_path / "elsewhere" / "report.html" and page.exists()


def test_missing_log_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2  # a bad RUN_DIR is the person's input: exit 2, as every bad value
    assert "no run log" in capsys.readouterr().err


def test_sigkill_mid_run_leaves_a_readable_log_and_a_report(tmp_path):
    proc = subprocess.Popen([sys.executable, str(HERE / "killable_run.py"), str(tmp_path), "killed"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        log = tmp_path / "killed" / "rank0.jsonl"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count('"kind": "step"') >= 30:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the run did not log 30 steps in time")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    run = read_run(tmp_path / "killed")
    r = run.ranks[0]
    assert r.end is None and run.crashed and r.last_step >= 30
    assert r.last("llmops_memory_actual_bytes", component="peak") > 0
    cli = "import sys; from llmops.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", cli, "report", str(tmp_path / "killed")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"last step {r.last_step}" in out.stdout and "stopped without closing" in out.stdout
    page = (tmp_path / "killed" / "report" / "report.html").read_text()
    offline(page)
    assert "The run did not finish" in page and f"last step {r.last_step}" in page
    assert "Where memory stood in the last samples" in page and "measured peak" in page
    assert "headroom to the budget" in page
    statuses = {a.name: a for a in evaluate(run)}
    assert statuses["LLMOpsTargetDown"].fired
    (tmp_path / "killed" / "postmortem-rank0.md").write_text("# OOM at step 7\ngrew: activations")
    write_report(tmp_path / "killed")
    assert "grew: activations" in (tmp_path / "killed" / "report" / "report.html").read_text()


def _rank(points):
    from llmops.runlog.reader import RankLog

    r = RankLog(Path("rank0.jsonl"), start={"rank": 0, "t": 0.0}, end={"status": "ok"}, last_t=1000.0)
    for name, labels, series in points:
        r.series[(name, tuple(sorted(labels.items())))] = series
    return r


def test_alert_conditions_and_for_durations():
    from llmops.runlog.reader import RunLog

    r = _rank([
        ("llmops_oom_risk", {"source": "prediction"}, [(0.0, 0, 1.0)]),  # held 1000 s > for 60 s
        ("llmops_memory_drift_ratio", {"model": "refined"}, [(0.0, 0, 1.0), (100.0, 10, 1.5), (400.0, 40, 1.0)]),
        ("llmops_monitor_errors_total", {"probe": "nvml"}, [(0.0, 0, 0.0), (50.0, 5, 2.0)]),
    ])
    got = {a.name: a for a in evaluate(RunLog(Path("."), {0: r}))}
    assert got["LLMOpsOOMRisk"].fired
    drift = got["LLMOpsMemoryDrift"]
    assert not drift.fired and drift.held_s == 300 and "condition held 300 s" in drift.status
    assert got["LLMOpsMonitorErrors"].fired
    assert not got["LLMOpsTargetDown"].intervals  # the run ended cleanly
    assert got["LLMOpsStraggler"].status == "no data"  # one rank


def test_checkpoint_age_counts_from_the_last_save_or_the_start():
    from llmops.report.alerts import FOR_S, THRESHOLDS
    from llmops.runlog.reader import RunLog

    rules = ({**THRESHOLDS, "checkpoint_max_age_s": 300.0}, FOR_S)
    saved = _rank([("llmops_run_start_timestamp_seconds", {}, [(0.0, 0, 0.0)]),  # the save, written twice:
                   ("llmops_checkpoint_last_success_timestamp_seconds", {}, [(500.0, 50, 490.0), (900.0, 90, 490.0)])])
    stale = {a.name: a for a in evaluate(RunLog(Path("."), {0: saved}), rules)}["LLMOpsCheckpointStale"]
    assert stale.fired
    assert [(a, b) for a, b, _ in stale.intervals] == [(300.0, 500.0), (790.0, 1000.0)]
    assert "since the process started" in stale.intervals[0][2]
    never = _rank([("llmops_run_start_timestamp_seconds", {}, [(0.0, 0, 0.0)])])
    stale = {a.name: a for a in evaluate(RunLog(Path("."), {0: never}), rules)}["LLMOpsCheckpointStale"]
    assert [(a, b) for a, b, _ in stale.intervals] == [(300.0, 1000.0)]
    often = _rank([("llmops_run_start_timestamp_seconds", {}, [(0.0, 0, 0.0)]),
                   ("llmops_checkpoint_last_success_timestamp_seconds", {},
                    [(t, t // 10, t - 5) for t in (250.0, 500.0, 750.0, 990.0)])])
    stale = {a.name: a for a in evaluate(RunLog(Path("."), {0: often}), rules)}["LLMOpsCheckpointStale"]
    assert stale.status == "quiet"


def test_comm_slow_on_bandwidth_or_on_the_share_of_step_time():
    from llmops.report.alerts import FOR_S, THRESHOLDS
    from llmops.runlog.reader import RunLog

    rules = (THRESHOLDS, {**FOR_S, "LLMOpsCommSlow": 100.0})
    # all-reduce takes 80% of each step from t=500 on: its 300 s mean passes 50% at t=700 ((0.2 + 3 × 0.8) / 4)
    busy = _rank([("llmops_comm_step_time_ratio", {},
                   [(float(t), t // 10, 0.2 if t < 500 else 0.8) for t in range(0, 1000, 100)])])
    slow = {a.name: a for a in evaluate(RunLog(Path("."), {0: busy}), rules)}["LLMOpsCommSlow"]
    assert slow.fired and slow.intervals[0][0] == 700.0 and "of each step" in slow.intervals[0][2]
    steady = _rank([("llmops_comm_step_time_ratio", {}, [(float(t), t // 10, 0.3) for t in range(0, 1000, 100)]),
                    ("llmops_comm_bus_bandwidth_bytes_per_second", {}, [(0.0, 0, 1e9), (500.0, 50, 0.9e9)])])
    assert {a.name: a for a in evaluate(RunLog(Path("."), {0: steady}), rules)}["LLMOpsCommSlow"].status == "quiet"


def test_thresholds_come_from_the_rules_file(tmp_path):
    th, fors = load_rules(tmp_path / "absent.yml")
    assert th["drift"] == 0.2 and fors["LLMOpsMemoryDrift"] == 600
    rules = tmp_path / "rules.yml"
    rules.write_text("groups:\n- name: t\n  rules:\n  - record: llmops:threshold:memory_drift_ratio\n"
                     "    expr: vector(0.05)\n  - alert: LLMOpsMemoryDrift\n    expr: up\n    for: 2m30s\n")
    th, fors = load_rules(rules)
    assert th["drift"] == 0.05 and fors["LLMOpsMemoryDrift"] == 150


def test_report_shows_where_each_step_went_and_the_throughput(finished):
    page = write_report(finished).read_text()
    assert (finished / "report" / "phases.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("Where each step went", "Throughput, MFU and energy", "tokens/s", "where the time went",
                 "forward", "backward", "optimizer"):
        assert text in page, text
    assert "MFU, last window" not in page  # a CPU run without peak_flops: no MFU, not 0 %


def test_throughput_summary_from_the_logged_counters():
    from llmops.report.throughput import joules_per_token, phase_seconds, summary
    from llmops.runlog import RankLog

    r = RankLog(Path("rank0.jsonl"))
    r.series[("llmops_gpu_energy_joules_total", (("UUID", "GPU-1"), ("gpu", "0")))] = [(10.0, 1, 5000.0),
                                                                                         (20.0, 5, 5600.0)]
    r.series[("llmops_tokens_total", ())] = [(9.0, 0, 500.0), (10.0, 1, 1000.0), (15.0, 3, 2000.0),
                                             (20.0, 5, 4000.0)]
    for phase, seconds in (("data", 1.0), ("forward", 3.0), ("backward", 5.0), ("optimizer", 1.0),
                           ("comm_exposed", 0.0)):
        r.series[("llmops_step_phase_seconds_total", (("phase", phase),))] = [(20.0, 5, seconds)]
    r.series[("llmops_mfu_ratio", ())] = [(10.0, 1, 0.30), (20.0, 5, 0.40)]
    r.preflight = {"spec": {"params": 1000, "layers": 2, "hidden": 8, "seq_len": 4, "recompute": "full"}}
    assert joules_per_token(r) == pytest.approx(600 / 3000)  # the energy between readings over their tokens
    assert sum(phase_seconds(r).values()) == 10.0
    rows = dict(summary(r))
    assert rows["tokens/s (tokens over the phases' seconds)"] == "400.0"
    assert rows["MFU, last window (range over the windows logged)"] == "40.00% (30.00%–40.00%)"
    # full recomputation: (8·1000 + 16·2·8·4) / (6·1000 + 12·2·8·4) of the model FLOPs
    assert rows["hardware FLOPs utilisation (recomputation counted), last window"] == \
        f"{0.40 * (8000 + 1024) / (6000 + 768):.2%}"
    assert rows["where the time went"].startswith("data 10.0%, forward 30.0%, backward 50.0%")


def test_report_shows_a_stall_its_stack_and_the_alert_condition(tmp_path):
    from tests.telemetry.test_stall import SleepOnce

    monitor = LLMOpsMonitor(port=0, run="stalled", run_dir=str(tmp_path), interval=0.1, stall_min_seconds=0.5,
                            stall_factor=1.5)
    trainer = pl.Trainer(max_steps=16, accelerator="cpu", callbacks=[monitor, SleepOnce(at=8, seconds=2.5)],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4))
    run = read_run(tmp_path / "stalled")
    [stalled] = [a for a in evaluate(run) if a.name == "LLMOpsTrainingStalled"]
    assert stalled.intervals and not stalled.fired  # held about a second, under the rule's for: 1m
    assert "after step 8 (threshold " in stalled.detail
    page = write_report(tmp_path / "stalled").read_text()
    stalls = page.split("<h2>Stalls</h2>")[1].split("<h2>")[0]
    assert "<td>0</td><td class='n'>8</td>" in stalls and "s after the last step" in stalls
    assert "in sleep_inside_step" in stalls  # the stack report, folded


def test_a_run_that_died_stalled_shows_its_stack_in_the_stop_box(tmp_path):
    run = tmp_path / "hung"
    run.mkdir()
    t = time.time()
    lines = [{"kind": "start", "t": t, "run": "hung", "rank": 0, "device": "cpu"},
             {"kind": "step", "t": t + 1, "step": 3, "seconds": 0.1},
             {"kind": "stall", "t": t + 200, "step": 3, "since_step_s": 121.0, "threshold_s": 120.0}]
    (run / "rank0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "stall-rank0.txt").write_text("llmops stall report\n  File \"train.py\", line 9 in load_batch\n")
    page = write_report(run).read_text()
    assert "The run did not finish." in page and "Rank 0 stalled; its stall report (stall-rank0.txt)" in page
    assert "in load_batch" in page and "never (the log ends stalled)" in page
