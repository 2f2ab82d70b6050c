"""Prometheus export: the in-memory state, a scrape-time collector, the HTTP server, a final push, and the
local ranks' hand-off to one endpoint per node."""

from llmops.exporter.collector import LLMOpsCollector
from llmops.exporter.node import NodeReceiver, NodeSender, node_address
from llmops.exporter.push import push_final
from llmops.exporter.server import Exporter, start_exporter
from llmops.exporter.state import HistogramValue, MetricState, Series, Snapshot

__all__ = [
    "Exporter",
    "HistogramValue",
    "LLMOpsCollector",
    "MetricState",
    "NodeReceiver",
    "NodeSender",
    "Series",
    "Snapshot",
    "node_address",
    "push_final",
    "start_exporter",
]
