"""The monitor's DDP comm hook hands a failed all-reduce on with its own type and message, and times a good one."""

from __future__ import annotations

import pytest
import torch

from llmops.metrics import MetricState
from llmops.telemetry.comm import CommTimer


class Bucket:
    def __init__(self, n: int = 8) -> None:
        self._buffer = torch.ones(n)

    def buffer(self) -> torch.Tensor:
        return self._buffer


def failing(_state, _bucket):
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_exception(ConnectionResetError("[gloo] Connection closed by peer [10.0.0.2]:29500"))
    return fut


def passing(_state, bucket):
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(bucket.buffer() * 2)
    return fut


def test_failed_allreduce_reaches_the_user_unchanged():
    timer = CommTimer(MetricState(), world_size=2, cuda=False, inner=failing)
    with pytest.raises(ConnectionResetError) as e:
        timer.hook(None, Bucket()).wait()
    assert str(e.value) == "[gloo] Connection closed by peer [10.0.0.2]:29500"  # nothing prepended
    assert timer.buckets == 0


def test_good_allreduce_passes_its_result_and_is_timed():
    state = MetricState()
    timer = CommTimer(state, world_size=2, cuda=False, inner=passing)
    out = timer.hook(None, Bucket(4)).wait()
    assert torch.equal(out, torch.full((4,), 2.0)) and timer.buckets == 1
    assert state.get("llmops_comm_allreduce_bytes_total") == 16
