"""start_exporter over real HTTP: free ports, port fallback, basic auth, TLS, close()."""

from __future__ import annotations

import base64
import logging
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from llmops.exporter import Exporter, LLMOpsCollector, start_exporter
from llmops.metrics import MetricState


@pytest.fixture
def registry() -> CollectorRegistry:
    state = MetricState()
    state.set("llmops_memory_predicted_bytes", 7e9, component="peak", model="refined")
    state.inc("llmops_samples_total", 64)
    registry = CollectorRegistry()
    registry.register(LLMOpsCollector(state, run="srv", rank=0))
    return registry


@pytest.fixture
def log() -> Iterator[list[str]]:
    """Messages of the `llmops` logger, captured on the logger itself (it may not propagate)."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("llmops")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield messages
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exporter in started:
        exporter.close()


def scrape(url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> dict:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


PEAK = ("llmops_memory_predicted_bytes",
        (("component", "peak"), ("model", "refined"), ("rank", "0"), ("run", "srv")))


def test_port_zero_serves_metrics(registry: CollectorRegistry, exporters: list, log: list[str]) -> None:
    exporter = start_exporter(registry, port=0)
    exporters.append(exporter)
    assert exporter.port > 0
    assert exporter.url == f"http://127.0.0.1:{exporter.port}/metrics"
    assert any(exporter.url in message for message in log)
    samples = scrape(exporter.url)
    assert samples[PEAK] == 7e9
    assert samples[("llmops_samples_total", (("rank", "0"), ("run", "srv")))] == 64


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def test_port_in_use_moves_to_the_next(registry: CollectorRegistry, exporters: list, log: list[str]) -> None:
    with _listening_socket() as busy:
        port = busy.getsockname()[1]
        exporter = start_exporter(registry, port=port, port_attempts=10)
        exporters.append(exporter)
        assert port < exporter.port <= port + 10
        assert any(exporter.url in m and f"port {port} in use" in m for m in log)
        assert scrape(exporter.url)[PEAK] == 7e9


def test_ports_exhausted_falls_back_to_a_free_port(registry: CollectorRegistry, exporters: list) -> None:
    with _listening_socket() as busy:
        port = busy.getsockname()[1]
        exporter = start_exporter(registry, port=port, port_attempts=0)
        exporters.append(exporter)
        assert exporter.port not in (0, port)
        assert scrape(exporter.url)[PEAK] == 7e9


def test_close_frees_the_port_and_is_idempotent(registry: CollectorRegistry, exporters: list) -> None:
    exporter = start_exporter(registry, port=0)
    port = exporter.port
    exporter.close()
    exporter.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(exporter.url, timeout=2)
    again = start_exporter(registry, port=port, port_attempts=0)  # would fall back if still bound
    exporters.append(again)
    assert again.port == port
    assert scrape(again.url)[PEAK] == 7e9


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth(registry: CollectorRegistry, exporters: list) -> None:
    exporter = start_exporter(registry, port=0, basic_auth=("prom", "s3cret"))
    exporters.append(exporter)
    for headers in ({}, _basic("prom", "wrong"), _basic("other", "s3cret")):
        with pytest.raises(urllib.error.HTTPError) as denied:
            scrape(exporter.url, headers)
        assert denied.value.code == 401
        assert denied.value.headers["WWW-Authenticate"].startswith("Basic")
    assert scrape(exporter.url, _basic("prom", "s3cret"))[PEAK] == 7e9


def test_tls_needs_both_files(registry: CollectorRegistry) -> None:
    with pytest.raises(ValueError, match="certfile"):
        start_exporter(registry, port=0, certfile="cert.pem")


def test_missing_certificate_is_named(registry: CollectorRegistry, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(OSError, match="nope.pem"):
        start_exporter(registry, port=0, certfile=missing, keyfile=missing)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("TLS test needs the openssl CLI to make a self-signed certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.mark.parametrize("auth", [None, ("prom", "s3cret")])
def test_tls(registry: CollectorRegistry, exporters: list, certificate: tuple[str, str], auth) -> None:
    cert, key = certificate
    exporter = start_exporter(registry, port=0, certfile=cert, keyfile=key, basic_auth=auth)
    exporters.append(exporter)
    assert exporter.url == f"https://127.0.0.1:{exporter.port}/metrics"
    trusted = ssl.create_default_context(cafile=cert)  # verifies the chain and the hostname
    headers = _basic(*auth) if auth else {}
    assert scrape(exporter.url, headers, context=trusted)[PEAK] == 7e9
    with pytest.raises(OSError):  # plain HTTP to a TLS port is not served
        urllib.request.urlopen(exporter.url.replace("https", "http"), timeout=5)
    if auth:
        with pytest.raises(urllib.error.HTTPError) as denied:
            scrape(exporter.url, context=trusted)
        assert denied.value.code == 401


@pytest.mark.parametrize("auth", [None, ("prom", "s3cret")])
def test_idle_tls_client_does_not_block_other_scrapes(registry: CollectorRegistry, exporters: list,
                                                      certificate: tuple[str, str], auth) -> None:
    """A TCP connection to the TLS port that never sends a byte: the handshake waits in its own thread."""
    cert, key = certificate
    exporter = start_exporter(registry, port=0, certfile=cert, keyfile=key, basic_auth=auth)
    exporters.append(exporter)
    idle = [socket.create_connection(("127.0.0.1", exporter.port)) for _ in range(3)]
    try:
        trusted = ssl.create_default_context(cafile=cert)
        t0 = time.monotonic()
        assert scrape(exporter.url, _basic(*auth) if auth else {}, context=trusted)[PEAK] == 7e9
        assert time.monotonic() - t0 < 3  # served now, not after the idle clients time out
    finally:
        for s in idle:
            s.close()


def test_a_burst_of_concurrent_scrapes_is_served(registry: CollectorRegistry, exporters: list) -> None:
    exporter = start_exporter(registry, port=0)
    exporters.append(exporter)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda _: scrape(exporter.url)[PEAK], range(200)))
    assert results == [7e9] * 200
