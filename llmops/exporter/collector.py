"""A prometheus_client custom collector that builds the metric families at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from llmops.exporter.state import HistogramValue, MetricState
from llmops.metrics import COMMON_LABELS, SUFFIX_UNITS, MetricSpec


class LLMOpsCollector:
    """Exposes the latest values in ``state``; every series gets the ``run`` and ``rank`` labels.

    Register it on a registry of your own: ``registry.register(LLMOpsCollector(state, run, rank))``.
    Metrics without any series are left out, so an unavailable reading is absent, never 0.
    """

    def __init__(self, state: MetricState, run: str, rank: int) -> None:
        self.state = state
        self.run = str(run)
        self.rank = int(rank)

    def describe(self) -> list[Metric]:
        """Nothing up front: the metrics present depend on what has been measured."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per metric that has at least one series, in ``METRICS`` order."""
        snapshot = self.state.snapshot()
        common = (self.run, str(self.rank))
        for name, spec in self.state.specs.items():
            series = snapshot.get(name)
            if not series:
                continue
            family = _family(spec)
            for one in series:
                labels = [*common, *one.labels]
                value = one.value
                if isinstance(family, HistogramMetricFamily) and isinstance(value, HistogramValue):
                    buckets = [(floatToGoString(le), float(count)) for le, count in value.buckets]
                    family.add_metric(labels, buckets, value.sum)
                elif not isinstance(family, HistogramMetricFamily) and not isinstance(value, HistogramValue):
                    family.add_metric(labels, value)
            yield family


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
