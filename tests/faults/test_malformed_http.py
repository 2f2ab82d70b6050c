"""Malformed HTTP to the endpoint, plain and TLS: each request is refused or dropped on its own, the
server never answers 500 and goes on serving the next scrape."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from llmops.exporter import start_exporter
from tests.exporter.test_server import PEAK, _basic, certificate, exporters, registry, scrape  # noqa: F401

MALFORMED = {
    "binary garbage": b"\x00\xff\xfe garbage \x01\r\n\r\n",
    "unknown HTTP version": b"GET /metrics HTTP/9.9\r\n\r\n",
    "no version": b"GET\r\n\r\n",
    "request line of 70 kB": b"GET /" + b"A" * 70_000 + b" HTTP/1.1\r\n\r\n",
    "header of 70 kB": b"GET /metrics HTTP/1.1\r\nX-Big: " + b"y" * 70_000 + b"\r\n\r\n",
    "200 headers": b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
    "negative Content-Length": b"POST /metrics HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    "body promised, never sent": b"POST /metrics HTTP/1.1\r\nContent-Length: 100000000\r\n\r\nabc",
    "half a request line": b"GET /met",
    "bad query escapes": b"GET /metrics?name[]=%ff%fe&%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad Authorization": b"GET /metrics HTTP/1.1\r\nAuthorization: Basic !!!\xff\r\n\r\n",
    "non-UTF-8 path": b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
}


def send(port: int, payload: bytes, wrap: ssl.SSLContext | None = None) -> bytes:
    """Send ``payload``, half-close, and return what the server answers before it closes (or 2 s pass)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock = wrap.wrap_socket(raw, server_hostname="127.0.0.1") if wrap else raw
    answer = b""  # the server may drop the connection while the payload is still being sent
    try:
        sock.sendall(payload)
        if not wrap:
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(2)
        while chunk := sock.recv(65536):
            answer += chunk
    except (TimeoutError, OSError):
        pass
    finally:
        sock.close()
    return answer


def status(answer: bytes) -> int | None:
    return int(answer.split()[1]) if answer.startswith(b"HTTP/") else None


@pytest.mark.parametrize("auth", [None, ("prom", "s3cret")])
def test_malformed_requests_to_plain_http(registry, exporters, auth):  # noqa: F811
    exporter = start_exporter(registry, port=0, basic_auth=auth)
    exporters.append(exporter)
    headers = _basic(*auth) if auth else {}
    for name, payload in MALFORMED.items():
        code = status(send(exporter.port, payload))
        assert code is None or code < 500, (name, code)  # refused or served, never a server error
        assert scrape(exporter.url, headers)[PEAK] == 7e9, name


def test_malformed_bytes_to_the_tls_port(registry, exporters, certificate):  # noqa: F811
    cert, key = certificate
    exporter = start_exporter(registry, port=0, certfile=cert, keyfile=key)
    exporters.append(exporter)
    trusted = ssl.create_default_context(cafile=cert)
    handshakes = {
        "plain HTTP": b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        "truncated ClientHello": b"\x16\x03\x01\x00\xff\x01\x00",
        "random bytes": bytes(range(256)) * 4,
    }
    for name, payload in handshakes.items():
        t0 = time.monotonic()
        send(exporter.port, payload)
        assert scrape(exporter.url, context=trusted)[PEAK] == 7e9, name
        assert time.monotonic() - t0 < 5, name
    for name, payload in MALFORMED.items():  # and the same requests inside a good TLS session
        code = status(send(exporter.port, payload, wrap=trusted))
        assert code is None or code < 500, (name, code)
        assert scrape(exporter.url, context=trusted)[PEAK] == 7e9, name
