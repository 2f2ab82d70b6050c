"""A prometheus_client custom collector that builds the metric families at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from llmops.metrics.catalogue import ABSENT_AT_ZERO, COMMON_LABELS, RUN_LEVEL, SUFFIX_UNITS, MetricSpec
from llmops.metrics.state import HistogramValue, MetricState, Series, Snapshot


class LLMOpsCollector:
    """Exposes the latest values in ``state``; every series gets the ``run`` and ``rank`` labels.

    Register it on a registry of your own: ``registry.register(LLMOpsCollector(state, run, rank))``.
    Metrics without any series are left out, so an unavailable reading is absent, never 0. The series
    budget: run-level series (``llmops.metrics.catalogue.RUN_LEVEL``, the same on every rank) are exported by rank 0
    only unless ``run_level_on_every_rank``, and the ``ABSENT_AT_ZERO`` counters only once non-zero.
    ``peers`` (one endpoint per node): other ranks' ``(run, rank, snapshot)``, exported beside this rank's by
    the same rules, each under its own ``run`` and ``rank``.
    """

    def __init__(self, state: MetricState, run: str, rank: int, run_level_on_every_rank: bool = False,
                 peers: Callable[[], Iterable[tuple[str, int, Snapshot]]] | None = None) -> None:
        self.state = state
        self.run = str(run)
        self.rank = int(rank)
        self.run_level_on_every_rank = bool(run_level_on_every_rank)
        self.peers = peers

    def describe(self) -> list[Metric]:
        """Nothing up front: the metrics present depend on what has been measured."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per metric that has at least one series, in ``METRICS`` order."""
        sources = [(self.run, self.rank, self.state.snapshot())]
        if self.peers is not None:
            sources.extend((str(run), int(rank), snap) for run, rank, snap in self.peers())
        for name, spec in self.state.specs.items():
            family = None
            for run, rank, snapshot in sources:
                for one in snapshot.get(name, ()):
                    if len(one.labels) != len(spec.labels) or not self._exported(spec, one, rank):
                        continue
                    family = family or _family(spec)
                    labels = [run, str(rank), *one.labels]
                    value = one.value
                    if isinstance(family, HistogramMetricFamily) and isinstance(value, HistogramValue):
                        buckets = [(floatToGoString(le), float(count)) for le, count in value.buckets]
                        family.add_metric(labels, buckets, value.sum)
                    elif not isinstance(family, HistogramMetricFamily) and not isinstance(value, HistogramValue):
                        family.add_metric(labels, value)
            if family is not None:
                yield family

    def _exported(self, spec: MetricSpec, one: Series, rank: int) -> bool:
        if spec.name in ABSENT_AT_ZERO and one.value == 0:
            return False
        match = RUN_LEVEL.get(spec.name)
        if match is None or rank == 0 or self.run_level_on_every_rank:
            return True
        labels = dict(zip(spec.labels, one.labels, strict=True))
        return not all(labels.get(k) == v for k, v in match.items())


def _family(spec: MetricSpec) -> GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily:
    labels = [*COMMON_LABELS, *spec.labels]
    # A counter family is named without `_total`; prometheus_client appends it to the sample.
    name = spec.name.removesuffix("_total") if spec.type == "counter" else spec.name
    # The OpenMetrics UNIT line only fits units that end the name; others would be appended to it.
    unit = spec.unit if spec.unit in SUFFIX_UNITS and name.endswith("_" + spec.unit) else ""
    if spec.type == "counter":
        return CounterMetricFamily(name, spec.help, labels=labels, unit=unit)
    if spec.type == "histogram":
        return HistogramMetricFamily(name, spec.help, labels=labels, unit=unit)
    return GaugeMetricFamily(name, spec.help, labels=labels, unit=unit)
