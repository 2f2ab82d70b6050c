"""Drift and trend: measured memory against the prediction and the budget (pure math)."""

from __future__ import annotations

from collections import deque
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


class SlidingSlope:
    """The least-squares slope of the points in a sliding window, in O(1) per point: running sums of
    x, y, x², xy, taken relative to the first point so that large byte counts do not cancel."""

    def __init__(self) -> None:
        self._points: deque[tuple[float, float]] = deque()
        self._origin: tuple[float, float] | None = None
        self._n = 0
        self._sx = self._sy = self._sxx = self._sxy = 0.0
        self._dropped = 0  # points dropped since the sums were last rebuilt

    def add(self, x: float, y: float) -> None:
        if self._origin is None:
            self._origin = (x, y)
        x, y = x - self._origin[0], y - self._origin[1]
        self._points.append((x, y))
        self._update(x, y, +1)

    def drop_before(self, x: float) -> None:
        """Forget the points with x below ``x`` (the window's start)."""
        if self._origin is None:
            return
        dropped = 0
        while self._points and self._points[0][0] < x - self._origin[0]:
            self._update(*self._points.popleft(), -1)
            dropped += 1
        self._dropped += dropped
        if self._points and self._dropped >= max(8, len(self._points)):
            self._rebase()  # amortised O(1): about once per window's worth of points

    def _rebase(self) -> None:
        """Sums anew, relative to the window's first point: what the window dropped leaves no rounding."""
        ox, oy = self._points[0]
        points = [(x - ox, y - oy) for x, y in self._points]
        assert self._origin is not None
        self._origin = (self._origin[0] + ox, self._origin[1] + oy)
        self._points = deque(points)
        self._n, self._sx, self._sy, self._sxx, self._sxy, self._dropped = 0, 0.0, 0.0, 0.0, 0.0, 0
        for px, py in points:
            self._update(px, py, +1)

    def _update(self, x: float, y: float, sign: int) -> None:
        self._n += sign
        self._sx += sign * x
        self._sy += sign * y
        self._sxx += sign * x * x
        self._sxy += sign * x * y

    def __len__(self) -> int:
        return self._n

    @property
    def slope(self) -> float:
        var = self._sxx - self._sx * self._sx / self._n if self._n else 0.0
        return 0.0 if var <= 0 else (self._sxy - self._sx * self._sy / self._n) / var


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
