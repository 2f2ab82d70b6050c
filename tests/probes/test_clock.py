"""Step clocks: the host clock, and the CUDA event clock's own code on fake events (no GPU here)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from llmops.probes import CudaEventClock, FakeCudaEvents, HostClock


def test_host_clock_marks_are_ready_and_in_seconds():
    c = HostClock()
    a = c.mark()
    time.sleep(0.01)
    b = c.mark()
    assert c.ready(a) and 0.005 < c.seconds(a, b) < 1.0
    assert c.count(torch.tensor([[1, 1, 0], [1, 0, 0]])) == 3


def test_event_clock_waits_for_completion_without_blocking():
    events = FakeCudaEvents(delay=0.2)
    c = CudaEventClock(event_factory=events)
    a = c.mark()
    b = c.mark()
    assert not c.ready(b)  # queued work not done: ready says so at once, nothing waits
    with pytest.raises(RuntimeError, match="not ready"):
        c.seconds(a, b)  # as CUDA: elapsed_time of an event not complete is an error, not a wait
    deadline = time.perf_counter() + 5
    while not c.ready(b) and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert c.ready(b) and 0 <= c.seconds(a, b) < 0.1
    methods = {m for m, _ in events.calls}
    assert "synchronize" not in methods and {"record", "query", "elapsed_time"} <= methods


def test_event_clock_counts_a_cpu_mask_in_place():
    c = CudaEventClock(event_factory=FakeCudaEvents(), stream_factory=lambda: pytest.fail("no stream on CPU"))
    assert c.count(torch.ones(2, 5, dtype=torch.long)) == 10


def test_fake_events_note_their_threads():
    events = FakeCudaEvents()
    e = events()
    t = threading.Thread(target=e.record, name="other")
    t.start()
    t.join()
    e.query()
    assert events.calls == [("record", "other"), ("query", threading.current_thread().name)]
