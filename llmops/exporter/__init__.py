"""Prometheus export of the metric state: a scrape-time collector, the HTTP(S) server, a final push, and the
local ranks' hand-off to one endpoint per node."""

from llmops.exporter.collector import LLMOpsCollector
from llmops.exporter.node import NodeReceiver, NodeSender, node_address
from llmops.exporter.push import push_final
from llmops.exporter.server import Exporter, start_exporter

__all__ = ["Exporter", "LLMOpsCollector", "NodeReceiver", "NodeSender", "node_address", "push_final",
           "start_exporter"]
