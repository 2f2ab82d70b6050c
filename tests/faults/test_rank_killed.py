"""A rank killed (SIGKILL) under 2-rank DDP on gloo: the survivor exits within seconds with gloo's error, of
the type and with the message it has without llmops under PyTorch's own Python all-reduce hook, and its
run log ends.

The monitor times buckets with a Python comm hook, and any Python hook's future passes through ``then``,
which prefixes an error once with "Got the following error when running the callback:" (a Python
future cannot be failed from Python in a way DDP's C++ reducer reads). The monitor adds nothing to that.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import pytest

from llmops.runlog.reader import read_rank
from tests.distributed.test_ddp import launch


def lose_rank_1(tmp_path, *extra: str) -> tuple[str, float]:
    """Run 2-rank DDP where rank 1 SIGKILLs itself at step 3; the survivor's last error line and seconds."""
    proc = launch(tmp_path / "out", "--devices", "2", "--steps", "50", "--die-rank", "1", "--die-at", "3", *extra,
                  env={"LLMOPS_RUN_DIR": str(tmp_path / "runs")})
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the surviving rank hung after its peer was killed")
    assert proc.returncode not in (0, -signal.SIGKILL), err[-2000:]
    errors = [line for line in err.splitlines() if re.match(r"(\[rank0\]: )?\w+(Error|Exception): ", line)]
    assert errors, err[-3000:]
    return errors[-1], time.monotonic() - t0


def split(line: str) -> tuple[str, str]:
    """``(types and prefixes, gloo's own message)``: gloo words a lost peer several ways ("Connection reset
    by peer", "closed by peer", "hanging" or "crashing"), by which side noticed first: a race, not ours."""
    head, _, message = line.partition("[/")
    return head, message


def test_survivor_exits_with_the_error_it_has_without_the_monitor(tmp_path):
    monitored, seconds = lose_rank_1(tmp_path / "with")
    plain, _ = lose_rank_1(tmp_path / "without", "--no-monitor", "--torch-hook")
    (head, message), (plain_head, plain_message) = split(monitored), split(plain)
    assert "gloo" in plain_message and "by peer" in plain_message, plain
    assert "gloo" in message and "by peer" in message, monitored
    assert head == plain_head and head.count("when running the callback") == 1, (monitored, plain)
    assert seconds < 60, seconds
    rank0 = read_rank(tmp_path / "with" / "runs" / "dist-test" / "rank0.jsonl")
    assert rank0.end is not None and rank0.last_step >= 3
