"""The process's monitoring session: the metric state, the registry and its collector, the endpoint and the
node hand-off. Made on first use in a process, kept across fits (one endpoint, one series), closed at exit."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry

from llmops.exporter import LLMOpsCollector, NodeReceiver, NodeSender, node_address, start_exporter
from llmops.metrics import MetricState
from llmops.monitor.config import MonitorConfig
from llmops.telemetry.guard import Guard

log = logging.getLogger("llmops")
FINAL_SCRAPE_MAX_S = 60.0  # at exit, the longest wait for Prometheus to read the end marker
# endpoint="node": a local rank not heard from for this many sampling intervals, and at least this long, is stale
NODE_STALE_INTERVALS, NODE_STALE_MIN_S = 5, 10.0


class Session:
    """What a process keeps for as long as it runs: the state every fit writes, and what serves it."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.state = MetricState()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.guard = Guard(self.state)
        self.collector: LLMOpsCollector | None = None
        self.exporter: Any = None
        self.node: NodeReceiver | NodeSender | None = None  # endpoint="node": local rank 0 receives, the others send
        self.ended_at = 0.0  # when the last fit ended, for the final scrape at exit
        self.last_counters: dict[str, float] = {}  # cumulative readings (NVML energy) the counters follow

    @property
    def metrics_url(self) -> str | None:
        """The URL actually served, once serving."""
        return self.exporter.url if self.exporter is not None else None

    def serve(self, config: MonitorConfig, run: str, rank: int, local_rank: int, local_world_size: int) -> None:
        """Register the collector under this fit's run and rank and serve the endpoint; a later fit keeps the
        collector and the endpoint, under its own run name."""
        if self.collector is None:
            with self.guard("collector"):
                self.collector = LLMOpsCollector(self.state, run=run, rank=rank)
                self.registry.register(self.collector)
        else:
            self.collector.run, self.collector.rank = run, rank
        per_node = config.endpoint == "node" and local_world_size > 1
        if config.serve and per_node and self.node is None:
            self._start_node(config, run, rank, local_rank)
        if config.serve and self.exporter is None and not (per_node and local_rank > 0):
            with self.guard("exporter"):
                port = config.port if per_node or not config.port else config.port + local_rank
                self.exporter = start_exporter(self.registry, port=port, addr=config.addr, certfile=config.certfile,
                                               keyfile=config.keyfile, basic_auth=config.basic_auth,
                                               announce=_node_note(config.port, local_world_size, per_node)
                                               if local_rank == 0 else None)

    def _start_node(self, config: MonitorConfig, run: str, rank: int, local_rank: int) -> None:
        """endpoint="node": local rank 0 listens for the other local ranks' snapshots and serves them beside its
        own; the others send theirs from the sampler thread."""
        with self.guard("node"):
            address = node_address(run, config.port)
            if local_rank == 0:
                stale_s = max(NODE_STALE_MIN_S, NODE_STALE_INTERVALS * config.interval)
                self.node = NodeReceiver(address, stale_s, on_error=lambda e: self.guard.record("node", e),
                                         own_rank=rank)
                if self.collector is not None:
                    self.collector.peers = self.node.peers
            else:
                self.node = NodeSender(address, on_error=lambda e: self.guard.record("node_handoff", e))

    def count(self, name: str, cumulative: float, **labels: str) -> None:
        """A counter that follows a cumulative reading (its first value in full; a reset adds nothing)."""
        key = name + repr(sorted(labels.items()))
        delta = cumulative - self.last_counters.get(key, 0.0)
        self.last_counters[key] = cumulative
        self.state.inc(name, max(0.0, delta), **labels)

    def final_scrape(self) -> None:
        """At interpreter exit, when a Prometheus scrapes this endpoint (two scrapes seen): wait for one
        scrape after the run ended, at most two scrape intervals and ``FINAL_SCRAPE_MAX_S``, so it reads
        the end marker. Never on the training path: ``fit`` has returned."""
        exporter = self.exporter
        interval = exporter.scrapes.interval() if exporter is not None else None
        if exporter is None or interval is None or exporter.closed:
            return
        exporter.scrapes.wait_after(self.ended_at, min(FINAL_SCRAPE_MAX_S, 2 * interval + 1))

    def close(self) -> None:
        """Stop serving the endpoint and the node hand-off now."""
        if self.exporter is not None:
            self.exporter.close()
        if self.node is not None:
            self.node.close()


def _node_note(port: int, local_world_size: int, per_node: bool = False) -> str:
    """What local rank 0 adds to its "serving on" line about the node's other processes."""
    if local_world_size < 2:
        return ""
    if per_node:
        return f" (endpoint='node': the series of all {local_world_size} local ranks)"
    others = f"local ranks 1–{local_world_size - 1}" if local_world_size > 2 else "local rank 1"
    if not port:
        return f" ({others}: a free port each, written in each rank's run log start record as `url`)"
    return f" ({others}: ports {port + 1}–{port + local_world_size - 1}, or the next free one)"
