"""The run-log writer's cheaper paths write what the plain ones did: step lines byte for byte as
``json.dumps``, and a deleted run directory noticed at the next fsync loses nothing written since."""

from __future__ import annotations

import json
import math
import shutil
from fractions import Fraction

import pytest

from llmops.metrics import MetricState
from llmops.runlog import RunLogWriter, read_run
from llmops.runlog.writer import _default, _step_line


@pytest.mark.parametrize(("t", "step", "seconds"), [
    (1.7e9 + 0.125, 7, 0.05), (1767225600.1234567, 0, 1e-7), (1.0, 123456789012, 0.30000000000000004),
    (1e22, -1, 5e-324), (0.0, 3, -0.0), (1.7e9, 2, 2.0), (1.7e9, 2, 1 / 3),  # the fast path
    (1.7e9, 2, None), (1.7e9, 2, math.nan), (1.7e9, 2, math.inf), (1.7e9, 2, -math.inf), (1.7e9, True, 0.5),
    (1.7e9, 2.0, 0.5), (1.7e9, 2, 1), (1700000000, 2, 0.5), (1.7e9, None, 0.5), (1.7e9, 2, Fraction(1, 3)),
])
def test_step_line_is_json_dumps_byte_for_byte(t, step, seconds):
    expected = json.dumps({"kind": "step", "t": t, "step": step, "seconds": seconds}, default=_default,
                          separators=(", ", ": ")) + "\n"
    assert _step_line(t, step, seconds) == expected


def test_deleted_run_dir_noticed_at_the_next_fsync_loses_nothing_written_since(tmp_path):
    state = MetricState()
    path = tmp_path / "r" / "rank0.jsonl"
    w = RunLogWriter(path, state, interval=3600, fsync_interval=3600)  # flushes are ours; no fsync falls due
    checks = []
    reopen = w._reopen_if_gone
    w._reopen_if_gone = lambda: checks.append(1) or reopen()
    w.open("r", 0)
    assert len(checks) == 1  # open's flush fsyncs: the first fsync is due at once
    state.set("llmops_memory_actual_bytes", 1000, component="params")
    w.step(1, 0.5)
    w._flush()
    shutil.rmtree(tmp_path / "r")
    for step in (2, 3):  # written into the deleted file: not checked, every flush
        state.set("llmops_train_step", step)
        w.step(step, 0.25)
        w._flush()
    assert len(checks) == 1 and not path.exists()
    errors = []
    w._on_error = errors.append
    w.step(4, 0.125)
    w.close()  # its last flush fsyncs: checked, reopened, what was written since the last check replayed
    assert len(checks) == 2 and len(errors) == 1 and "was removed" in str(errors[0])
    r = read_run(tmp_path / "r").ranks[0]
    assert r.start.get("reopened") is True and r.end["status"] == "ok"
    assert [s[0] for s in r.steps] == [1, 2, 3, 4]  # step 1 too: written after the last check
    assert r.last("llmops_train_step") == 3 and r.last("llmops_memory_actual_bytes", component="params") == 1000


def test_the_first_flush_fsyncs_on_a_machine_booted_less_than_an_interval_ago(tmp_path, monkeypatch):
    """time.monotonic counts from boot on Linux: on a machine up for a minute, a first fsync taken as due
    ``fsync_interval`` after 0 came an hour late (this suite failed on a machine up under an hour)."""
    monkeypatch.setattr("llmops.runlog.writer.time.monotonic", lambda: 60.0)
    synced = []
    monkeypatch.setattr("llmops.runlog.writer.os.fsync", lambda fd: synced.append(fd))
    w = RunLogWriter(tmp_path / "r" / "rank0.jsonl", MetricState(), interval=3600, fsync_interval=3600)
    w.open("r", 0)
    assert len(synced) == 1
    w._flush()
    assert len(synced) == 1  # the next is an interval away
    w.close()


def test_reopened_log_gets_every_series_in_the_same_flush(tmp_path):
    state = MetricState()
    w = RunLogWriter(tmp_path / "r" / "rank0.jsonl", state, interval=3600, fsync_interval=3600)
    w.open("r", 0)
    state.set("llmops_memory_actual_bytes", 1000, component="params")
    state.set("llmops_train_step", 1)
    w._flush(fsync=True)  # checked, then this metrics line written: the replay
    shutil.rmtree(tmp_path / "r")
    state.set("llmops_train_step", 2)
    w._flush(fsync=True)
    lines = [json.loads(x) for x in (tmp_path / "r" / "rank0.jsonl").read_text().splitlines()]
    assert [x["kind"] for x in lines] == ["start", "metrics", "metrics"] and lines[0]["reopened"] is True
    assert {v[0]: v[2] for v in lines[2]["values"]} == {"llmops_memory_actual_bytes": 1000, "llmops_train_step": 2}
    w.close()
