"""Drift and trend: measured memory against the prediction and the budget (pure math)."""

from __future__ import annotations

from collections.abc import Sequence


def drift_ratio(measured_peak: float | None, predicted_peak: float | None) -> float | None:
    """``measured / predicted``; ``None`` when either is unknown."""
    if not measured_peak or not predicted_peak:
        return None
    return measured_peak / predicted_peak


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points (bytes per step)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var


def steps_to_budget(points: Sequence[tuple[float, float]], budget: float,
                    min_growth: float = 1e-4) -> float | None:
    """Steps until memory growing at its recent rate reaches ``budget``; ``None`` if it is not growing.

    Growth under ``min_growth × budget`` per step is noise, not a trend.
    """
    if len(points) < 3:
        return None
    rate = slope(points)
    if rate <= min_growth * budget:
        return None
    last = points[-1][1]
    return max(0.0, (budget - last) / rate)


def trend_risk(points: Sequence[tuple[float, float]], budget: float | None, horizon_steps: int) -> bool:
    """Memory that keeps growing and would reach the budget within ``horizon_steps`` steps."""
    if budget is None:
        return False
    left = steps_to_budget(points, budget)
    return left is not None and left <= horizon_steps
