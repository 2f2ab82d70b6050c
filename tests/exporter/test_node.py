"""One endpoint per node: the wire format, and real Unix datagram sockets between a sender and a receiver."""

from __future__ import annotations

import math
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from llmops import LLMOpsMonitor
from llmops.exporter import LLMOpsCollector, NodeReceiver, NodeSender, node_address
from llmops.exporter.wire import decode, encode
from llmops.metrics import MetricState

RUN = "node-test"


def measured_state(step: int) -> MetricState:
    """A rank's state with a gauge, a labelled gauge, a counter, a histogram and a run-level series."""
    s = MetricState()
    s.set("llmops_train_step", step)
    s.set("llmops_memory_actual_bytes", 1000 + step, component="peak")
    s.inc("llmops_samples_total", 8 * step)
    for seconds in (0.05, 0.3, 100.0):
        s.observe("llmops_step_duration_seconds", seconds)
    s.set("llmops_memory_predicted_bytes", 5e9, component="peak", model="refined")  # run-level: rank 0 only
    s.set("llmops_memory_drift_ratio", math.inf, model="refined")
    return s


def samples(registry: CollectorRegistry, rank: str) -> set[tuple[str, tuple, float]]:
    text = generate_latest(registry).decode()
    return {(x.name, tuple(sorted(x.labels.items())), x.value) for f in text_string_to_metric_families(text)
            for x in f.samples if x.labels.get("rank") == rank}


def served_alone(state: MetricState, rank: int) -> set[tuple[str, tuple, float]]:
    """What the per-rank mode serves for this rank."""
    registry = CollectorRegistry()
    registry.register(LLMOpsCollector(state, run=RUN, rank=rank))
    return samples(registry, str(rank))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def wait_for(predicate, what: str) -> None:
    """Poll a thread's effect (no assertion on time: the deadline only keeps a broken build from hanging)."""
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def address(request) -> str:
    return node_address(f"{RUN}-{request.node.name}", 9445)


def test_the_wire_format_gives_back_every_series_exactly() -> None:
    snapshot = measured_state(7).snapshot()
    run, rank, back = decode(encode(RUN, 5, snapshot))
    assert (run, rank) == (RUN, 5)
    assert dict(back) == dict(snapshot)  # histograms (with +Inf) and an infinite gauge included


@pytest.mark.parametrize("data", [b"", b"{}", b"[1]", b'{"v": 2, "run": "r", "rank": 1, "series": {}}',
                                  b'{"v": 1, "run": "r", "rank": 1, "series": {"x": [[["a"], "1"]]}}'])
def test_anything_else_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode(data)


def test_rank_zero_serves_each_local_rank_exactly_as_the_per_rank_mode(address: str) -> None:
    own, other = measured_state(3), measured_state(4)
    errors: list[BaseException] = []
    receiver = NodeReceiver(address, stale_s=60, on_error=errors.append)
    sender = NodeSender(address, on_error=errors.append)
    try:
        registry = CollectorRegistry()
        registry.register(LLMOpsCollector(own, run=RUN, rank=0, peers=receiver.peers))
        assert sender.send(RUN, 1, other.snapshot())
        wait_for(lambda: receiver.peers(), "the receiver never got the datagram")
        assert samples(registry, "1") == served_alone(other, 1)  # rank 1's own: no run-level series
        assert samples(registry, "0") == served_alone(own, 0)
        assert ("llmops_train_step", (("rank", "1"), ("run", RUN)), 4.0) in samples(registry, "1")
        other.set("llmops_train_step", 9)
        sender.send(RUN, 1, other.snapshot())
        wait_for(lambda: receiver.peers()[0][2]["llmops_train_step"][0].value == 9, "the last snapshot wins")
        assert errors == []
    finally:
        sender.close()
        receiver.close()


def test_a_rank_not_heard_from_is_dropped_unless_it_finished(address: str) -> None:
    clock = Clock()
    receiver = NodeReceiver(address, stale_s=10, on_error=pytest.fail, clock=clock)
    sender = NodeSender(address, on_error=pytest.fail)
    try:
        sender.send(RUN, 1, measured_state(1).snapshot())
        wait_for(lambda: receiver.peers(), "no datagram")
        clock.t += 10
        assert [r for _, r, _ in receiver.peers()] == [1]
        clock.t += 0.1
        assert receiver.peers() == []  # stale: dropped
        finished = measured_state(2)
        finished.set("llmops_run_end_timestamp_seconds", time.time())
        sender.send(RUN, 1, finished.snapshot())
        wait_for(lambda: receiver.peers(), "no datagram")
        clock.t += 3600
        assert [r for _, r, _ in receiver.peers()] == [1]  # its final state stays
    finally:
        sender.close()
        receiver.close()


def test_a_dead_node_endpoint_is_counted_once_per_outage(address: str) -> None:
    errors: list[BaseException] = []
    sender = NodeSender(address, on_error=errors.append)
    snapshot = measured_state(1).snapshot()
    assert not sender.send(RUN, 1, snapshot)
    assert errors == []  # at start-up local rank 0 may not be bound yet: not counted within the grace
    receiver = NodeReceiver(address, stale_s=60, on_error=pytest.fail)
    assert sender.send(RUN, 1, snapshot)
    receiver.close()
    assert not any([sender.send(RUN, 1, snapshot) for _ in range(5)])
    assert len(errors) == 1 and "node endpoint" in str(errors[0])
    receiver = NodeReceiver(address, stale_s=60, on_error=pytest.fail)  # back: sends go through again
    try:
        assert sender.send(RUN, 1, snapshot)
    finally:
        receiver.close()
    sender.send(RUN, 1, snapshot)
    assert len(errors) == 2  # a second outage
    sender.close()


def test_startup_failures_count_past_the_grace(address: str) -> None:
    clock, errors = Clock(), []
    sender = NodeSender(address, on_error=errors.append, clock=clock)
    sender.send(RUN, 1, MetricState().snapshot())
    clock.t += 31
    sender.send(RUN, 1, MetricState().snapshot())
    sender.send(RUN, 1, MetricState().snapshot())
    assert len(errors) == 1
    sender.close()


def test_a_full_queue_does_not_block_the_sender(address: str) -> None:
    """A node endpoint that stops reading: sends fail at once (EAGAIN) instead of waiting."""
    import socket

    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # bound, never read
    stuck.bind(address)
    errors: list[BaseException] = []
    sender = NodeSender(address, on_error=errors.append)
    try:
        assert sender.send(RUN, 1, MetricState().snapshot())
        results = [sender.send(RUN, 1, measured_state(i).snapshot()) for i in range(2000)]
        assert results.count(False) > 0 and len(errors) == 1
    finally:
        sender.close()
        stuck.close()


def test_a_bad_datagram_is_counted_and_the_receiver_goes_on(address: str) -> None:
    import socket

    errors: list[BaseException] = []
    receiver = NodeReceiver(address, stale_s=60, on_error=errors.append)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"not json", address)
        NodeSender(address, on_error=pytest.fail).send(RUN, 1, measured_state(1).snapshot())
        wait_for(lambda: receiver.peers(), "the receiver stopped after a bad datagram")
        assert len(errors) == 1
    finally:
        receiver.close()


def test_endpoint_is_validated() -> None:
    with pytest.raises(ValueError, match=r"endpoint='pod' is not allowed; expected 'rank' .* or 'node'"):
        LLMOpsMonitor(endpoint="pod")
    assert LLMOpsMonitor(endpoint="node").config.endpoint == "node"
    assert LLMOpsMonitor().config.endpoint == "rank"
