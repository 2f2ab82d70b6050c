"""The /metrics HTTP(S) endpoint: port fallback, TLS and optional basic auth."""

from __future__ import annotations

import base64
import errno
import hmac
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app

logger = logging.getLogger("llmops")


class Scrapes:
    """When the endpoint was last scraped (the last few times), so the end of a run can wait for one more."""

    def __init__(self) -> None:
        self.times: deque[float] = deque(maxlen=8)
        self._seen = threading.Condition()

    def wrap(self, app: Callable) -> Callable:
        def counted(environ: dict, start_response: Callable) -> Iterable[bytes]:
            body = app(environ, start_response)
            with self._seen:
                self.times.append(time.time())
                self._seen.notify_all()
            return body

        return counted

    def interval(self) -> float | None:
        """The median seconds between recent scrapes; None before two."""
        t = list(self.times)
        gaps = sorted(b - a for a, b in zip(t, t[1:], strict=False))
        return gaps[len(gaps) // 2] if gaps else None

    def wait_after(self, t: float, limit_s: float) -> bool:
        """Wait (at most ``limit_s``) for a scrape later than ``t``; True when one came."""
        deadline = time.monotonic() + limit_s
        with self._seen:
            while not (self.times and self.times[-1] > t):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._seen.wait(left)
        return True


class Exporter:
    """A running metrics endpoint: ``url`` and ``port`` are what is actually served."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, addr: str, tls: bool,
                 scrapes: Scrapes) -> None:
        self.scrapes = scrapes
        self._server = server
        self._thread = thread
        self._closed = False
        self._lock = threading.Lock()
        self.port: int = server.server_port
        host = f"[{addr}]" if ":" in addr else (addr or "0.0.0.0")
        self.url: str = f"{'https' if tls else 'http'}://{host}:{self.port}/metrics"

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop serving and release the port; calling it again does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_exporter(
    registry: CollectorRegistry,
    port: int = 9445,
    addr: str = "127.0.0.1",
    certfile: str | None = None,
    keyfile: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    port_attempts: int = 10,
    announce: str | None = "",
) -> Exporter:
    """Serve ``registry`` on ``addr:port`` in a daemon thread.

    A port in use moves on to the next ``port_attempts`` ports, then to a free one (``port=0`` asks
    for a free one directly); the URL actually served is logged and returned in ``Exporter.url``.
    ``certfile`` and ``keyfile`` (PEM) turn on TLS; ``basic_auth=(user, password)`` requires them.
    ``announce``: what follows "serving on URL" in the log, or ``None`` to say nothing (the other
    processes of a node: one line per node); a port that moved is always said.
    """
    if not 0 <= port <= 65535 or port_attempts < 0:
        raise ValueError(f"port {port} must be in 0..65535 and port_attempts {port_attempts} >= 0")
    if (certfile is None) != (keyfile is None):
        raise ValueError(f"TLS needs both files: got certfile={certfile!r}, keyfile={keyfile!r}")
    # Load the certificate before binding, so a bad path fails with its name and no socket leaks.
    context = _tls_context(certfile, keyfile) if certfile and keyfile else None
    if basic_auth is not None and context is None:
        logger.warning("llmops exporter: basic auth without TLS sends the password in clear text")

    scrapes = Scrapes()

    def start(candidate: int) -> tuple[WSGIServer, threading.Thread]:
        return _start_server(candidate, addr, registry, context, basic_auth, scrapes)

    last_error: OSError | None = None
    for candidate in _candidates(port, port_attempts):
        try:
            server, thread = start(candidate)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            last_error = exc
            continue
        exporter = Exporter(server, thread, addr, tls=context is not None, scrapes=scrapes)
        if last_error is not None:
            logger.warning("llmops exporter: port %d in use, serving on %s", port, exporter.url)
        elif announce is not None:
            logger.info("llmops exporter: serving on %s%s", exporter.url, announce)
        return exporter
    raise OSError(errno.EADDRINUSE, f"no free port for the llmops exporter on {addr}") from last_error


def _candidates(port: int, attempts: int) -> Iterable[int]:
    if port == 0:
        return (0,)
    return (*range(port, min(port + attempts, 65535) + 1), 0)


def _tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    except OSError as exc:
        raise type(exc)(f"cannot load TLS certificate {certfile!r} or key {keyfile!r}: {exc}") from exc
    return context


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood stderr."""


LISTEN_BACKLOG = 128  # a burst of scrapers (socketserver's default of 5 drops connections past it)
HANDSHAKE_TIMEOUT_S = 10.0  # a TLS client that connects and sends nothing is dropped after this
CLIENT_TIMEOUT_S = 30.0  # and so is one that stalls mid-request


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server with a deep listen backlog and, for TLS, the
    handshake done in each connection's own thread with a timeout: an idle client cannot stall the
    accept loop and with it every other scrape."""

    request_queue_size = LISTEN_BACKLOG
    tls: ssl.SSLContext | None = None

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S if self.tls is not None else CLIENT_TIMEOUT_S)
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)  # the handshake, bounded
            except (OSError, ssl.SSLError):
                self.shutdown_request(request)
                return
            request.settimeout(CLIENT_TIMEOUT_S)
        super().process_request_thread(request, client_address)


def _start_server(
    port: int,
    addr: str,
    registry: CollectorRegistry,
    context: ssl.SSLContext | None,
    credentials: tuple[str, str] | None,
    scrapes: Scrapes,
) -> tuple[WSGIServer, threading.Thread]:
    """prometheus_client's WSGI app (OpenMetrics negotiation included) on ``_Server``, optionally
    behind basic auth."""

    family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(_Server):
        address_family = family
        tls = context

    app = scrapes.wrap(make_wsgi_app(registry))  # inside the auth check: only a served scrape counts
    if credentials is not None:
        app = _require_basic_auth(app, *credentials)
    server = make_server(addr, port, app, Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="llmops-exporter", daemon=True)
    thread.start()
    return server, thread


def _require_basic_auth(app: Callable, user: str, password: str) -> Callable:
    """Wrap a WSGI app so that only requests with these basic-auth credentials reach it."""
    expected = base64.b64encode(f"{user}:{password}".encode())

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "basic" and hmac.compare_digest(token.strip().encode("latin-1"), expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [
            ("WWW-Authenticate", 'Basic realm="llmops", charset="UTF-8"'),
            ("Content-Type", "text/plain; charset=utf-8"),
        ])
        return [b"401 Unauthorized\n"]

    return guarded
