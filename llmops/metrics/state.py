"""A thread-safe store of the latest metric values, read by the collector at scrape time."""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from llmops.metrics.catalogue import METRICS, MetricSpec


@dataclass(frozen=True)
class HistogramValue:
    """A histogram's cumulative ``(upper_bound, count)`` buckets, ending with ``+Inf``, its sum and count."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


class Series(NamedTuple):
    """One series of a metric: its own label values (in the spec's label order) and its value. A named
    tuple: a snapshot makes one per series, and a frozen dataclass costs several times more to make."""

    labels: tuple[str, ...]
    value: float | HistogramValue


Snapshot = Mapping[str, tuple[Series, ...]]


class MetricState:
    """Latest values of the metrics in ``metrics``, validated against their specs.

    Writers (the training thread, probes) call ``set``/``inc``/``observe``: a lock and a dict update.
    ``None`` and NaN values are skipped, so an unavailable reading never shows up as 0; the series
    keeps its previous value, if any (``remove`` drops it). Readers take ``snapshot()``.
    """

    def __init__(self, metrics: Iterable[MetricSpec] = METRICS) -> None:
        self.specs: Mapping[str, MetricSpec] = MappingProxyType({m.name: m for m in metrics})
        self._label_sets = {m.name: frozenset(m.labels) for m in self.specs.values()}
        self._lock = threading.Lock()
        # gauges/counters: key -> value; histograms: key -> [count per bucket..., +Inf count, sum]
        self._series: dict[str, dict[tuple[str, ...], float | list[float]]] = {n: {} for n in self.specs}

    def set(self, name: str, value: float | None, **labels: object) -> None:
        """Set a gauge (bytes, seconds, ratio... as the spec says)."""
        _, key = self._check(name, "gauge", labels)
        number = _number(name, value)
        if number is not None:
            with self._lock:
                self._series[name][key] = number

    def inc(self, name: str, amount: float | None = 1.0, **labels: object) -> None:
        """Add ``amount`` (>= 0) to a counter; ``inc(name, 0, ...)`` makes a zero series exist."""
        _, key = self._check(name, "counter", labels)
        number = _amount(name, amount)
        if number is None:
            return
        with self._lock:
            series = self._series[name]
            series[key] = series.get(key, 0.0) + number  # type: ignore[operator]

    def inc_many(self, name: str, amounts: Iterable[float | None], **labels: object) -> None:
        """``inc(name, a, **labels)`` for each of ``amounts`` in order, the same sums to the bit, under one
        label check and one lock; an invalid amount raises after those before it were added, as ``inc``."""
        _, key = self._check(name, "counter", labels)

        def add(numbers: list[float]) -> None:
            series = self._series[name]
            total = series.get(key, 0.0)
            for number in numbers:  # one by one, not sum(): float addition is not associative
                total += number  # type: ignore[operator]
            series[key] = total

        self._apply_valid(name, amounts, _amount, add)

    def observe(self, name: str, value: float | None, **labels: object) -> None:
        """Record one observation in a histogram."""
        spec, key = self._check(name, "histogram", labels)
        number = _number(name, value)
        if number is None:
            return
        assert spec.buckets is not None
        index = bisect_left(spec.buckets, number)  # first bound >= value: Prometheus' `le`
        with self._lock:
            counts = self._series[name].get(key)
            if counts is None:
                counts = self._series[name][key] = [0.0] * (len(spec.buckets) + 2)
            counts[index] += 1  # type: ignore[index]
            counts[-1] += number  # type: ignore[index]

    def observe_many(self, name: str, values: Iterable[float | None], **labels: object) -> None:
        """``observe(name, v, **labels)`` for each of ``values`` in order, under one label check and one
        lock; a value that is not a number raises after those before it were recorded, as ``observe``."""
        spec, key = self._check(name, "histogram", labels)
        bounds = spec.buckets
        assert bounds is not None

        def add(numbers: list[float]) -> None:
            counts = self._series[name].get(key)
            if counts is None:
                counts = self._series[name][key] = [0.0] * (len(bounds) + 2)
            for number in numbers:
                counts[bisect_left(bounds, number)] += 1  # type: ignore[index]
                counts[-1] += number  # type: ignore[index]

        self._apply_valid(name, values, _number, add)

    def _apply_valid(self, name: str, values: Iterable[float | None],
                     convert: Callable[[str, float | None], float | None],
                     add: Callable[[list[float]], None]) -> None:
        """``add`` (under the lock) the values ``convert`` accepts, in order; ``None`` results are skipped,
        and one that raises does so after those before it were added."""
        numbers: list[float] = []
        try:
            for value in values:
                number = convert(name, value)
                if number is not None:
                    numbers.append(number)
        finally:
            if numbers:
                with self._lock:
                    add(numbers)

    def remove(self, name: str, **labels: object) -> None:
        """Drop one series (no error when it does not exist)."""
        _, key = self._check(name, None, labels)
        with self._lock:
            self._series[name].pop(key, None)

    def clear(self, name: str) -> None:
        """Drop every series of ``name``."""
        self._spec(name)
        with self._lock:
            self._series[name].clear()

    def get(self, name: str, **labels: object) -> float | HistogramValue | None:
        """The current value of one series, or ``None`` when it has none."""
        spec, key = self._check(name, None, labels)
        with self._lock:
            value = self._series[name].get(key)
            if isinstance(value, list):
                value = value[:]
        return _histogram(spec.buckets, value) if isinstance(value, list) else value  # type: ignore[arg-type]

    def snapshot(self, names: Iterable[str] | None = None) -> Snapshot:
        """An immutable copy: metric name -> its series; metrics without series are left out. ``names``:
        only these metrics (a reader that needs a few does not copy and rebuild every histogram)."""
        wanted = self._series.keys() if names is None else [self._spec(n).name for n in names]
        with self._lock:
            raw = {
                name: [(key, v[:] if isinstance(v, list) else v) for key, v in series.items()]
                for name in wanted
                if (series := self._series[name])
            }
        out = {}
        for name, items in raw.items():
            bounds = self.specs[name].buckets
            out[name] = tuple(
                Series(key, v if bounds is None else _histogram(bounds, v)) for key, v in items  # type: ignore[arg-type]
            )
        return MappingProxyType(out)

    def _spec(self, name: str) -> MetricSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise ValueError(f"unknown metric {name!r}: not in llmops.metrics.catalogue.METRICS")
        return spec

    def _check(self, name: str, kind: str | None, labels: Mapping[str, object]) -> tuple[MetricSpec, tuple]:
        spec = self._spec(name)
        if kind is not None and spec.type != kind:
            raise ValueError(f"metric {name!r} is a {spec.type}, not a {kind}")
        if labels.keys() != self._label_sets[name]:
            raise ValueError(f"metric {name!r}: got labels {sorted(labels)}, expected {list(spec.labels)}")
        return spec, tuple(str(labels[n]) for n in spec.labels)


def _number(name: str, value: object) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r}: value {value!r} is not a number") from None
    return None if math.isnan(number) else number


def _amount(name: str, amount: object) -> float | None:
    """A counter's increment: ``None`` to skip (``None``, NaN), else a finite number >= 0."""
    number = _number(name, amount)
    if number is not None and not 0 <= number < math.inf:
        raise ValueError(f"counter {name!r}: amount {amount!r} not allowed, only finite >= 0")
    return number


def _histogram(bounds: tuple[float, ...], counts: list[float]) -> HistogramValue:
    cumulative, total = [], 0
    for bound, count in zip((*bounds, math.inf), counts[:-1], strict=True):
        total += int(count)
        cumulative.append((bound, total))
    return HistogramValue(tuple(cumulative), counts[-1], total)
