"""push_final against a local HTTP server standing in for the Pushgateway."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client import CollectorRegistry

from llmops.exporter import LLMOpsCollector, push_final
from llmops.metrics import MetricState


class _Gateway(BaseHTTPRequestHandler):
    status = 200
    received: list[tuple[str, str, bytes]] = []

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(("PUT", self.path, body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Gateway", (_Gateway,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def _registry() -> CollectorRegistry:
    state = MetricState()
    state.inc("llmops_checkpoint_saves_total", 3)
    registry = CollectorRegistry()
    registry.register(LLMOpsCollector(state, run="r1", rank=2))
    return registry


def test_push_puts_the_registry_under_job_and_grouping_key(gateway) -> None:
    url, handler = gateway
    push_final(url, _registry(), grouping_key={"run": "r1", "rank": 2})
    ((method, path, body),) = handler.received
    assert method == "PUT"
    assert path == "/metrics/job/llmops/rank/2/run/r1"
    assert b'llmops_checkpoint_saves_total{rank="2",run="r1"} 3.0' in body


def test_gateway_error_is_raised_for_the_caller(gateway) -> None:
    url, handler = gateway
    handler.status = 500
    with pytest.raises(OSError, match="500"):
        push_final(url, _registry(), grouping_key={"run": "r1"})


def test_unreachable_gateway_is_raised() -> None:
    with pytest.raises(OSError):
        push_final("http://127.0.0.1:1", _registry(), timeout=2)


def test_empty_url_is_rejected() -> None:
    with pytest.raises(ValueError, match="pushgateway_url"):
        push_final("", _registry())
