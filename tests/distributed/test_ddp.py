"""Real processes on the CPU with gloo: DDP, two 'nodes', and SIGKILL-and-resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.scrape import scrape, value

SCRIPT = Path(__file__).with_name("run_script.py")
ROOT = SCRIPT.parents[2]


def free_ports(n: int) -> int:
    """A port P with P .. P+n-1 free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + n > 65535:
            continue
        try:
            socks = []
            for i in range(n):
                sk = socket.socket()
                sk.bind(("127.0.0.1", p + i))
                socks.append(sk)
            return p
        except OSError:
            continue
        finally:
            for sk in socks:
                sk.close()
    raise RuntimeError("no free port range")


def launch(out: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(out), *args], cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 90) -> str:
    """Both ranks' stderr (Lightning's launcher passes its own to rank 1), once the run ends well."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the training process did not finish in time")
    assert proc.returncode == 0, err[-3000:]
    return err


def results(out: Path, n: int) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(n)]


def test_ddp_two_ranks_comm_timing_and_user_hook(tmp_path):
    port = free_ports(2)
    finish(launch(tmp_path, "--devices", "2", "--steps", "3", "--accumulate", "2", "--user-hook",
                  "--port", str(port), "--ckpt-dir", str(tmp_path / "ckpt"), "--ckpt-every", "1"))
    for rank, r in enumerate(results(tmp_path, 2)):
        s = r["samples"]
        assert r["url"] == f"http://127.0.0.1:{port + rank}/metrics"  # port + local_rank
        assert all(lab["rank"] == str(rank) for n, lab, _ in s if n.startswith("llmops_"))
        steps = r["global_step"]
        assert steps == 3
        # one all-reduce of every gradient per optimizer step, not per micro-batch (accumulate=2)
        assert value(s, "llmops_comm_allreduce_bytes_total") == r["grad_bytes"] * steps
        # run-level (the same on every rank): exported by rank 0 only, the series budget
        assert value(s, "llmops_comm_allreduce_predicted_bytes") == (r["grad_bytes"] if rank == 0 else None)
        assert value(s, "llmops_train_accumulate_grad_batches") == (2 if rank == 0 else None)
        buckets = value(s, "llmops_comm_allreduce_duration_seconds_count")
        assert buckets >= steps and value(s, "llmops_comm_allreduce_duration_seconds_sum") > 0
        assert value(s, "llmops_comm_bus_bandwidth_bytes_per_second") > 0
        assert 0 < value(s, "llmops_comm_step_time_ratio") <= 1
        assert r["hook_calls"] == buckets  # the user's hook ran, wrapped by ours, for every bucket
        assert value(s, "llmops_samples_total") == 4 * 2 * steps  # b=4, 2 micro-batches per step
        assert value(s, "llmops_tokens_total") == 4 * 16 * 2 * steps  # and s=16
        # all-reduce after the last bucket's launch is exposed: some of it on gloo, never more than it lasted
        exposed = value(s, "llmops_step_phase_seconds_total", phase="comm_exposed")
        assert 0 < exposed <= value(s, "llmops_comm_allreduce_duration_seconds_sum")
        assert value(s, "llmops_step_phase_seconds_total", phase="backward") > 0
        # rank 0 writes each checkpoint through CheckpointIO; rank 1 writes nothing but knows it succeeded
        assert value(s, "llmops_checkpoint_last_success_timestamp_seconds") >= \
            value(s, "llmops_run_start_timestamp_seconds")
        saves = value(s, "llmops_checkpoint_saves_total")
        assert saves >= steps if rank == 0 else saves is None  # every step's file, and last.ckpt


def test_two_nodes_distinct_global_ranks_and_ports(tmp_path):
    port, master = free_ports(2), free_ports(1)
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master), "LOCAL_RANK": "0"}
    procs = [launch(tmp_path, "--num-nodes", "2", "--steps", "2", "--port", str(port),
                    env={**env, "NODE_RANK": str(node)}) for node in (0, 1)]
    for p in procs:
        finish(p)
    ranks = results(tmp_path, 2)
    assert [r["rank"] for r in ranks] == [0, 1]
    urls = {r["url"] for r in ranks}
    assert len(urls) == 2 and urls <= {f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{port + 1}/metrics"}
    for rank, r in enumerate(ranks):
        assert {lab["rank"] for n, lab, _ in r["samples"] if n.startswith("llmops_")} == {str(rank)}
        assert value(r["samples"], "llmops_comm_allreduce_bytes_total") == r["grad_bytes"] * 2


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_sigkill_and_resume_same_port(tmp_path):
    port = free_ports(1)
    ckpt = tmp_path / "ckpt"
    url = f"http://127.0.0.1:{port}/metrics"
    first = launch(tmp_path / "first", "--steps", "200", "--sleep", "0.1", "--ckpt-dir", str(ckpt),
                   "--ckpt-every", "2", "--port", str(port))
    try:
        def trained() -> bool:
            try:
                s = scrape(url)
            except OSError:
                return False
            return (value(s, "llmops_train_step") or 0) >= 5 and (ckpt / "last.ckpt").exists() \
                and (value(s, "llmops_checkpoint_saves_total") or 0) >= 2

        wait_for(trained, 60, "the first run to train 5 steps and checkpoint")
        samples = scrape(url)
        assert value(samples, "llmops_checkpoint_size_bytes") > 0
        assert value(samples, "llmops_checkpoint_last_success_timestamp_seconds") > time.time() - 60
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL

    second = launch(tmp_path / "second", "--steps", "12", "--ckpt-dir", str(ckpt), "--ckpt-every", "2",
                    "--port", str(port), "--resume")
    finish(second)
    r = results(tmp_path / "second", 1)[0]
    assert r["url"] == url  # the same port: nothing left from the killed process is in the way
    assert r["start_step"] >= 4 and r["start_exported_step"] == r["start_step"]  # continues from the restore
    s = r["samples"]
    assert value(s, "llmops_checkpoint_restores_total") == 1
    assert value(s, "llmops_train_step") == 12
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)  # the second process has ended: nothing lingers


def test_a_rank_sleeping_inside_a_step_stalls_both_ranks_with_their_stacks_and_both_clear(tmp_path):
    """Rank 1 sleeps 5 s inside step 5; rank 0 waits for it in the gradient all-reduce. Both report the stall
    (threshold: the 1 s floor, or 1.5 × p99 where a loaded machine slowed a step) within a sampling interval of
    it, rank 1's stack shows the sleep, rank 0's its backward waiting for the all-reduce, and both clear when
    the steps resume."""
    port, runs = free_ports(2), tmp_path / "runs"
    proc = launch(tmp_path, "--devices", "2", "--steps", "12", "--port", str(port), "--stall-rank", "1",
                  "--stall-at", "5", "--stall-sleep", "5", "--stall-min-seconds", "1", "--stall-factor", "1.5",
                  "--interval", "0.2",
                  env={"LLMOPS_RUN_DIR": str(runs)})
    try:
        def both_stalled() -> bool:  # what Prometheus would scrape during the stall
            try:
                return all(value(scrape(f"http://127.0.0.1:{port + r}/metrics"), "llmops_train_stalled") == 1
                           for r in (0, 1))
            except OSError:
                return False

        wait_for(both_stalled, 60, "both ranks to export llmops_train_stalled 1")
    finally:
        finish(proc)
    for r in results(tmp_path, 2):
        assert r["global_step"] == 12  # the run finished
        assert value(r["samples"], "llmops_train_stalled") == 0  # and both cleared
        assert value(r["samples"], "llmops_last_step_timestamp_seconds") > time.time() - 120
        assert value(r["samples"], "llmops_step_time_median_ratio") > 0
    for rank in (0, 1):
        log = [json.loads(line) for line in (runs / "dist-test" / f"rank{rank}.jsonl").read_text().splitlines()]
        [stall] = [x for x in log if x["kind"] == "stall"]
        [end] = [x for x in log if x["kind"] == "stall_end"]
        assert 1.0 <= stall["threshold_s"] < 5.0
        # within a sampling interval of the threshold, plus a loaded CPU's scheduling
        assert stall["threshold_s"] <= stall["since_step_s"] <= stall["threshold_s"] + 0.2 + 0.8, stall
        assert end["t"] > stall["t"]
        text = (runs / "dist-test" / f"stall-rank{rank}.txt").read_text()
        assert "backend gloo: no NCCL Flight Recorder" in text
        if rank == 1:
            assert "in sleep_inside_step" in text
        else:
            assert "in sleep_inside_step" not in text
            assert "in _engine_run_backward" in text  # the main thread inside backward...
            assert "all-reduce buckets launched and not finished: 1 (this rank waits in the collective)" in text
