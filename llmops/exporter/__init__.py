"""Prometheus export: the in-memory state, a scrape-time collector, the HTTP server and a final push."""

from llmops.exporter.collector import LLMOpsCollector
from llmops.exporter.push import push_final
from llmops.exporter.server import Exporter, start_exporter
from llmops.exporter.state import HistogramValue, MetricState, Series, Snapshot

__all__ = [
    "Exporter",
    "HistogramValue",
    "LLMOpsCollector",
    "MetricState",
    "Series",
    "Snapshot",
    "push_final",
    "start_exporter",
]
