"""The largest safe micro-batch, gradient accumulation and the smallest world size (§5)."""

from __future__ import annotations

import math
from fractions import Fraction

Number = Fraction | int


def max_batch(budget: Number | None, fixed: Number | None, per_sample: Number | None) -> int | None:
    """``floor((budget − fixed) / activation(b = 1))``; 0 when even ``fixed`` does not fit.

    ``fixed`` is everything that does not grow with the batch (states, overhead).
    """
    if budget is None or fixed is None or per_sample is None:
        return None
    if fixed > budget or per_sample <= 0:
        return 0
    return math.floor(Fraction(budget - fixed) / per_sample)


def accumulate_for(global_batch: int | None, b_max: int | None, world_size: int) -> int | None:
    """``ceil(global_batch / (b_max × n))``: micro-batches per step that keep the global batch."""
    if not global_batch or not b_max:
        return None
    return math.ceil(Fraction(global_batch, b_max * world_size))


def min_world_size(budget: Number, replicated: Number, sharded: Number) -> int | None:
    """Smallest n with ``replicated + sharded / n ≤ budget``; ``None`` when no n helps."""
    if replicated + sharded <= budget:
        return 1
    room = budget - replicated
    if room <= 0 or sharded <= 0:
        return None
    return max(1, math.ceil(Fraction(sharded) / room))
