"""The all-reduce time not hidden behind backward, from each bucket's launch and end marks."""

from __future__ import annotations

from llmops.metrics import MetricState
from llmops.telemetry.comm import FAILED, CommTimer


class Marks:
    """A clock whose marks the test sets: ``seconds`` is their difference, ``ready`` always."""

    def mark(self):
        return 0.0

    def ready(self, mark):
        return True

    def seconds(self, start, end):
        return end - start

    def count(self, tensor):
        return 0


def timer() -> CommTimer:
    return CommTimer(MetricState(), world_size=2, clock=Marks())


def test_exposed_is_from_the_last_launch_to_the_last_end():
    # three buckets launched during backward at 1, 2, 3 s; all-reduces end at 2.5, 3.5 and 4.2 s
    assert timer().exposed_seconds([[1.0, 2.5], [2.0, 3.5], [3.0, 4.2]]) == 4.2 - 3.0
    # an earlier bucket that ends last (queued behind the others) sets the end
    assert timer().exposed_seconds([[1.0, 5.0], [3.0, 3.4]]) == 2.0
    # all hidden: every all-reduce ended when backward launched its last bucket (no wait after it)
    assert timer().exposed_seconds([[1.0, 2.0], [3.0, 3.0]]) == 0.0


def test_failed_or_unfinished_buckets():
    t = timer()
    assert t.exposed_seconds([]) == 0.0
    assert t.exposed_seconds([[1.0, 2.0], [3.0, FAILED]]) == 0.0  # the step's last all-reduce failed: no figure
    assert not t.ready([[1.0, 2.0], [3.0, None]])  # a bucket still in flight
    assert t.ready([[1.0, 2.0], [3.0, FAILED]])
