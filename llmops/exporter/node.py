"""One endpoint per node: the other local ranks hand their state to local rank 0 over a Unix datagram socket.

Each sender's sampler thread sends its whole snapshot, one datagram, without blocking: a node endpoint
that is gone (the socket refuses) or slow (its queue is full) costs a failed ``send`` and nothing else.
Local rank 0 reads them on a thread of its own and serves each rank's last one until it is stale.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from llmops.exporter.wire import decode, encode
from llmops.metrics.state import Snapshot

log = logging.getLogger("llmops")
MAX_DATAGRAM_BYTES = 4 * 1024 * 1024  # a rank's snapshot is a few kB (50 series); the send buffer is sized to this
STARTUP_GRACE_S = 30.0  # before local rank 0 has received once, its socket may simply not be bound yet
RUN_END = "llmops_run_end_timestamp_seconds"


def node_address(run: str, port: int) -> str:
    """The socket every local rank of ``run`` on this node agrees on, from the run and the configured port:
    Linux's abstract namespace (nothing on disk, released when the process dies), else a temp file."""
    key = hashlib.sha256(f"{run}\0{port}".encode()).hexdigest()[:16]
    if sys.platform.startswith("linux"):
        return f"\0llmops-node-{key}"
    return str(Path(tempfile.gettempdir()) / f"llmops-node-{key}.sock")


class NodeSender:
    """A local rank above 0: ``send`` its snapshot to the node endpoint, never blocking.

    ``on_error`` is called once per outage (the first failure after a success; before any success, only past
    ``STARTUP_GRACE_S``), so a dead node endpoint is counted once, not every interval.
    """

    def __init__(self, address: str, on_error: Callable[[BaseException], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self._on_error = on_error
        self._clock = clock
        self._started = clock()
        self._ok: bool | None = None  # None: nothing sent yet
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_DATAGRAM_BYTES)
        self.sent = 0

    def send(self, run: str, rank: int, snapshot: Snapshot) -> bool:
        """One datagram; True when the node endpoint's queue took it."""
        try:
            self._sock.sendto(encode(run, rank, snapshot), self.address)
        except OSError as e:  # refused or missing (gone), EAGAIN (slow), EMSGSIZE
            if self._ok or (self._ok is None and self._clock() - self._started > STARTUP_GRACE_S):
                self._on_error(OSError(e.errno, f"cannot hand this rank's state to the node endpoint: {e.strerror}"))
                self._ok = False
            return False
        self._ok = True
        self.sent += 1
        return True

    def close(self) -> None:
        self._sock.close()


class NodeReceiver:
    """Local rank 0: the last snapshot of every other local rank, read on a daemon thread.

    ``peers()`` gives ``(run, rank, snapshot)`` for each rank heard from within ``stale_s``; a rank whose last
    snapshot has the run's end marker finished and is kept. ``on_error`` gets what cannot be read.
    """

    def __init__(self, address: str, stale_s: float, on_error: Callable[[BaseException], None],
                 own_rank: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.address, self.stale_s, self.own_rank = address, stale_s, own_rank
        self._on_error, self._clock = on_error, clock
        self._last: dict[int, tuple[float, str, Snapshot]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if not address.startswith("\0"):
            Path(address).unlink(missing_ok=True)  # left by a process that was killed
        self._sock.bind(address)
        self._sock.settimeout(0.5)  # how soon ``close`` is noticed
        self._thread = threading.Thread(target=self._loop, name="llmops-node", daemon=True)
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._stop.is_set()

    def peers(self) -> list[tuple[str, int, Snapshot]]:
        """The other ranks' last snapshots that are fresh (or final), by rank."""
        now = self._clock()
        with self._lock:
            last = sorted(self._last.items())
        return [(run, rank, snap) for rank, (t, run, snap) in last
                if rank != self.own_rank and (now - t <= self.stale_s or RUN_END in snap)]

    def close(self) -> None:
        """Stop reading and release the address; senders then fail (and count it once)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=2)
        if not self.address.startswith("\0"):
            Path(self.address).unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM_BYTES)
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            try:
                run, rank, snapshot = decode(data)
            except ValueError as e:
                self._on_error(e)
                continue
            with self._lock:
                self._last[rank] = (self._clock(), run, snapshot)
