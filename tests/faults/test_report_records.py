"""`llmops report` on valid JSON that is not what a record should be: skipped and counted, never a traceback;
a folder without a run log is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

from llmops.runlog import read_run

WRONG = [
    {"kind": "step", "t": 1}, {"kind": "step", "step": "x", "t": 1, "seconds": 0.1},
    {"kind": "step", "step": 1, "t": None, "seconds": 0.1}, {"kind": "step", "step": 1, "t": 1, "seconds": [1]},
    {"kind": "metrics"}, {"kind": "metrics", "t": 1, "values": [["a"]]},
    {"kind": "metrics", "t": 1, "values": [["llmops_x", "not labels", 1]]},
    {"kind": "metrics", "t": 1, "values": [["llmops_x", {}, "one"]]}, {"kind": "metrics", "t": "soon", "values": []},
    {"kind": 5}, {"kind": None}, {"t": 1}, [1, 2, 3], "a string", 42,
    {"kind": "preflight", "models": [1]}, {"kind": "preflight", "models": {"refined": 3}},
    {"kind": "start", "rank": "zero"}, {"kind": "end", "status": 7},
]


def _write(tmp_path, records):
    run = tmp_path / "run"
    run.mkdir()
    good = [{"kind": "start", "t": 0, "run": "run", "rank": 0},
            {"kind": "step", "step": 1, "t": 1.0, "seconds": 0.5},
            {"kind": "metrics", "t": 1.0, "step": 1, "values": [["llmops_train_step", {}, 1]]}]
    lines = [json.dumps(r) for r in good + records] + [json.dumps({"kind": "end", "t": 2.0, "status": "ok"})]
    (run / "rank0.jsonl").write_text("\n".join(lines) + "\n")
    return run


def cli(*args):
    code = "import sys; from llmops.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "report", *args], capture_output=True, text=True)


def test_wrong_records_are_skipped_and_counted(tmp_path):
    run = _write(tmp_path, WRONG)
    r = read_run(run).ranks[0]
    assert r.bad_lines == len(WRONG) and [s[0] for s in r.steps] == [1] and r.end is not None
    out = cli(str(run))
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and f"{len(WRONG)} record(s) skipped" in out.stdout
    assert (run / "report" / "report.html").is_file()


def test_folder_without_a_run_log_is_one_line_and_exit_2(tmp_path):
    out = cli(str(tmp_path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "no run log" in out.stderr
