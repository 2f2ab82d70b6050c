"""Which training steps memory is measured on: steps 0 and 1, then every ``interval`` steps, stretched
so that measuring costs the run at most ``BUDGET`` of its time.

A measured step costs more than a plain one: on the CPU it runs under the live-bytes count, a Python
dispatch mode on every operator (about a third slower on the demo model). At a fixed 100 steps that is
~0.3% of the run, more than the monitor's whole share (0.5%) allows. So when the interval is left to
the monitor, each measurement's cost is read off the step clock (the measured step against the median
of the last plain ones) and the next measurement is pushed out, in whole intervals, until
cost / gap ≤ BUDGET, at most ``MAX_STRETCH`` intervals (a drift still shows within 1,000 steps). An
interval the user chose is kept exactly. Torch-free; the hooks call ``due``, ``measured`` and
``step_seconds``, each a few attribute operations.
"""

from __future__ import annotations

import math
import statistics
from collections import deque

DEFAULT_INTERVAL = 100  # steps between measurements before any stretch
BUDGET = 0.001  # the most of the run's time the measurements may take: 0.1% (the monitor's whole share: 0.5%)
MAX_STRETCH = 10  # the farthest apart measurements go, in intervals
_RECENT = 5  # plain steps whose median a measured step is compared with


def stretch(cost: float, interval: int, budget: float = BUDGET) -> int:
    """Intervals to the next measurement for one that made its step ``cost`` (a fraction) slower: the
    fewest whole intervals g with cost / (g · interval) ≤ budget, between 1 and ``MAX_STRETCH``."""
    return min(MAX_STRETCH, max(1, math.ceil(cost / (budget * interval))))


class MeasureSchedule:
    """``interval``: the user's, kept as given; None: ``DEFAULT_INTERVAL``, stretched to the budget."""

    def __init__(self, interval: int | None = None) -> None:
        self.interval = interval or DEFAULT_INTERVAL
        self.adaptive = interval is None
        self.next = 0  # the first step at or after which memory is measured again
        self.cost: float | None = None  # the last measured step's extra time, a fraction of a plain step
        self._recent: deque[float] = deque(maxlen=_RECENT)  # plain steps' seconds
        self._pending: int | None = None  # a step measured, its seconds not yet seen

    def due(self, step: int) -> bool:
        """Measure this optimizer step (steps 0 and 1 always: the second is the first with the previous
        step's gradients alive through its forward, as every later one)."""
        return step < 2 or step >= self.next

    def measured(self, step: int) -> None:
        """A measurement ran on ``step``: the next is one interval on, until its cost is known."""
        self.next = (step // self.interval + 1) * self.interval
        self._pending = step

    def step_seconds(self, seconds: float) -> None:
        """An optimizer step took ``seconds`` (every step, on the training thread)."""
        step = self._pending
        if step is None:
            self._recent.append(seconds)
            return
        self._pending = None
        if self._recent:  # none yet on steps 0 and 1, measured back to back
            self.cost = seconds / statistics.median(self._recent) - 1
            if self.adaptive:
                self.next = (step // self.interval + stretch(self.cost, self.interval)) * self.interval
