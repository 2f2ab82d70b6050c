"""The run log's writer and reader, without Lightning."""

from __future__ import annotations

import json

from llmops.metrics import MetricState
from llmops.runlog import RunLogWriter, read_run, run_path


def test_records_round_trip_and_only_changes_are_written(tmp_path):
    state = MetricState()
    w = RunLogWriter(tmp_path / "r" / "rank0.jsonl", state, interval=3600)  # the thread never wakes: flushes are ours
    w.open("r", 0, device="cpu")
    state.set("llmops_memory_actual_bytes", 1000, component="params")
    state.set("llmops_train_step", 1)
    state.observe("llmops_step_duration_seconds", 0.5)
    w.step(1, 0.5)
    w._flush()
    state.set("llmops_train_step", 2)  # params unchanged: not written again
    w.step(2, 0.25)
    w.record("preflight", text="table")
    w.close()
    lines = [json.loads(x) for x in (tmp_path / "r" / "rank0.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["start", "step", "metrics", "step", "preflight", "metrics", "end"]
    assert [len(x["values"]) for x in lines if x["kind"] == "metrics"] == [3, 1]
    run = read_run(tmp_path / "r")
    r = run.ranks[0]
    assert r.steps == [(1, r.steps[0][1], 0.5), (2, r.steps[1][1], 0.25)]
    assert r.last("llmops_memory_actual_bytes", component="params") == 1000
    assert [p[2] for p in r.get("llmops_train_step")] == [1, 2]
    assert r.last("llmops_step_duration_seconds") == {"sum": 0.5, "count": 1}
    assert r.preflight["text"] == "table"
    assert r.end["status"] == "ok" and not run.crashed and r.last_step == 2 and run.run == "r"


def test_step_is_only_an_append(tmp_path):
    w = RunLogWriter(tmp_path / "rank0.jsonl", None, interval=3600)
    w.open("r", 0)
    size = (tmp_path / "rank0.jsonl").stat().st_size
    for i in range(1000):
        w.step(i, 0.01)
    assert (tmp_path / "rank0.jsonl").stat().st_size == size  # nothing written on the caller's thread
    assert len(w._pending) == 1000
    w.close()
    assert read_run(tmp_path).ranks[0].last_step == 999


def test_background_thread_flushes_without_close(tmp_path):
    import time

    state = MetricState()
    w = RunLogWriter(tmp_path / "rank3.jsonl", state, interval=0.05)
    w.open("r", 3)
    state.set("llmops_train_step", 7)
    w.step(7, 0.1)
    deadline = time.time() + 5
    while time.time() < deadline and read_run(tmp_path).ranks[3].last_step is None:
        time.sleep(0.02)
    r = read_run(tmp_path).ranks[3]
    assert r.last_step == 7 and r.crashed and r.rank == 3  # no end record yet: reads as a run that died
    w.close()


def test_torn_last_line_and_sessions(tmp_path):
    path = tmp_path / "rank0.jsonl"
    for run in ("first", "second"):
        w = RunLogWriter(path, None, interval=3600)
        w.open(run, 0)
        w.step(1 if run == "first" else 5, 0.1)
        w.close()
    with open(path, "a") as f:
        f.write('{"kind": "step", "t": 1, "st')  # a kill mid-write
    r = read_run(tmp_path).ranks[0]
    assert r.start["run"] == "second" and [s[0] for s in r.steps] == [5] and r.bad_lines == 1


def test_close_twice_and_write_errors_go_to_on_error(tmp_path):
    errors = []
    w = RunLogWriter(tmp_path / "rank0.jsonl", None, interval=3600, on_error=errors.append)
    w.open("r", 0)
    w._file.close()  # writing now fails
    w.step(1, 0.1)
    w._flush()
    assert errors and isinstance(errors[0], ValueError)
    w._file = None
    w.close()
    w.close()


def test_run_path_is_safe_and_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_RUN_DIR", str(tmp_path))
    assert run_path(None, "lightning_logs-v0") == tmp_path / "lightning_logs-v0"
    escaped = run_path("x", "../../etc/a b")
    assert escaped.parent == __import__("pathlib").Path("x") and escaped.name.startswith("etc_a_b-")


def test_names_that_clean_alike_stay_apart():
    names = ["..", "日本語", "中文", "run", "a b", "a_b", "a/b"]
    paths = [run_path("x", n) for n in names]
    assert len(set(paths)) == len(names)
    assert run_path("x", "日本語").name == "日本語" and run_path("x", "run").name == "run"  # kept as they are
    assert run_path("x", "a b") == run_path("x", "a b")  # the same name, the same folder (a resume finds it)


def test_a_second_live_writer_writes_beside_the_first(tmp_path, caplog):
    import subprocess
    import sys

    path = tmp_path / "same" / "rank0.jsonl"
    code = ("import sys, time; from llmops.runlog import RunLogWriter; w = RunLogWriter(sys.argv[1], None, "
            "interval=3600); w.open('same', 0); print('open', flush=True); time.sleep(30)")
    other = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "open"
        w = RunLogWriter(path, None, interval=3600)
        w.open("same", 0)
        w.step(1, 0.1)
        w.close()
        assert w.path != path and w.path.parent.name.startswith("same-") and w.path.name == "rank0.jsonl"
        assert "being written by another process" in caplog.text
        assert [s[0] for s in read_run(w.path.parent).ranks[0].steps] == [1]
        assert read_run(path.parent).ranks[0].steps == []  # the first process's log is untouched
    finally:
        other.kill()
        other.wait()


def test_step_records_read_alike_by_the_fast_path_and_the_json_parser(tmp_path):
    """The reader reads the writer's own step lines without the JSON parser; any other spelling of the
    same record (compact separators, a float step, an exponent) goes through json and reads the same,
    and a step line with a non-number is still skipped and counted."""
    from llmops.runlog.reader import _STEP_LINE
    from llmops.runlog.writer import _dumps

    ours = _dumps({"kind": "step", "t": 1.7e9 + 0.125, "step": 7, "seconds": 0.05})
    assert _STEP_LINE.fullmatch(ours)
    lines = [json.dumps({"kind": "start", "t": 1.0, "run": "r", "rank": 0}) + "\n", ours,
             json.dumps({"kind": "step", "t": 1.7e9 + 0.125, "step": 7, "seconds": 0.05}, separators=(",", ":")) + "\n",
             '{"kind": "step", "t": 1.700000000125e9, "step": 7.0, "seconds": 5e-2}\n',
             '{"kind": "step", "t": 1.7e9, "step": 8, "seconds": NaN}\n',
             '{"kind": "step", "t": 1.7e9, "step": 8, "seconds": "fast"}\n']
    (tmp_path / "rank0.jsonl").write_text("".join(lines))
    r = read_run(tmp_path).ranks[0]
    assert list(r.steps) == [(7, 1.7e9 + 0.125, 0.05)] * 3
    assert r.bad_lines == 2 and r.last_t == 1.7e9 + 0.125
