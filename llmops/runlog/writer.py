"""Append a run's records to ``<root>/<run>/rank<R>.jsonl`` from a background thread.

Records, one JSON object a line, each with ``kind`` and ``t`` (Unix seconds):

- ``start``: ``run``, ``rank``, ``pid``, ``host``, ``format`` and what the monitor adds (settings)
- ``preflight``: ``text`` (the preflight table), ``spec``, ``models`` (each ``Estimate`` as a dict)
- ``step``: ``step``, ``seconds`` (wall time of that training step)
- ``metrics``: ``step`` and ``values``, a list of ``[name, {labels}, value]`` for every series of the
  ``MetricState`` that changed since the last such record; histograms as ``{"sum", "count"}``
- ``end``: ``status`` (``ok``, or what stopped the run); a log without it is a run that died
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops.metrics.state import HistogramValue, MetricState

try:  # POSIX: a second process writing the same log is detected by an advisory lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = 1
DEFAULT_ROOT = "llmops_runs"
log = logging.getLogger("llmops")


def run_path(root: str | os.PathLike[str] | None, run: str) -> Path:
    """The run's directory: ``root`` (default ``$LLMOPS_RUN_DIR`` or ``llmops_runs``) / a safe ``run``."""
    base = Path(root if root is not None else os.environ.get("LLMOPS_RUN_DIR", DEFAULT_ROOT))
    cleaned = re.sub(r"[^\w.=-]+", "_", run).strip("._")  # \w keeps letters of every script
    if cleaned != run:  # names that clean alike ("..", "a b", "a_b") stay apart: the original's short hash
        cleaned = f"{cleaned or 'run'}-{hashlib.sha1(run.encode()).hexdigest()[:8]}"
    return base / cleaned


def _lock(f: Any) -> bool:
    """An exclusive advisory lock on the open log, held until it is closed or the process dies (so a
    crashed run's log is free for its resume); ``False`` when another process holds it."""
    if fcntl is None:  # not POSIX: no check
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: write as before
        return True


class RunLogWriter:
    """One rank's log. ``step`` and ``record`` only append to a deque; a thread writes and flushes.

    ``interval`` seconds between writes (each a flush to the kernel, so SIGKILL loses at most
    that much); ``fsync_interval`` seconds between fsyncs (for a machine that loses power), each after
    a check that the path still names the open file (a deleted run directory is recreated and what was
    written since the last check is written again).
    Write errors go to ``on_error(exception)`` and the run goes on.
    """

    def __init__(self, path: str | os.PathLike[str], state: MetricState | None = None, interval: float = 1.0,
                 fsync_interval: float = 10.0, on_error: Callable[[BaseException], None] | None = None) -> None:
        self.path = Path(path)
        self.interval = interval
        self.fsync_interval = fsync_interval
        self._state = state
        self._on_error = on_error
        self._pending: deque[tuple[Any, ...]] = deque()  # appended by any thread, drained by the writer
        self._last: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._last_step: float | None = None
        self._file: Any = None
        self._start: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._last_fsync = -math.inf  # the first flush fsyncs, however young the monotonic clock (near boot)
        self._unchecked: list[str] = []  # written since the last check that the path names the open file
        self.closed = False

    # -- any thread: cheap ---------------------------------------------------------------------
    def step(self, step: int, seconds: float) -> None:
        """One training step (the training thread's only per-step cost: a deque append)."""
        self._pending.append(("step", time.time(), step, seconds))

    def record(self, kind: str, **fields: Any) -> None:
        """Any other record (preflight, events); written with the next batch."""
        self._pending.append((kind, time.time(), fields))

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, run: str, rank: int, **meta: Any) -> None:
        """Create the directory, append a ``start`` record and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
        if not _lock(self._file):  # another live process writes this log: write beside it, never into it
            self._file.close()
            taken, self.path = self.path, self.path.parent.with_name(
                f"{self.path.parent.name}-{os.getpid()}") / self.path.name
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
            _lock(self._file)
            log.warning("llmops: run log %s is being written by another process under the same run name; "
                        "this one writes %s", taken, self.path)
        self._start = dict(run=run, rank=rank, pid=os.getpid(), host=socket.gethostname(), format=FORMAT, **meta)
        self.record("start", **self._start)
        self._flush()
        self._thread = threading.Thread(target=self._loop, name="llmops-runlog", daemon=True)
        self._thread.start()

    def close(self, status: str = "ok") -> None:
        """Stop the thread, write the last state and an ``end`` record, fsync. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 2 * self.interval))
            self._thread = None
        if self._file is None:
            return
        self._flush()  # the steps and the state as they stood at the end
        self.record("end", status=status)
        self._flush(fsync=True)
        with self._write_lock:
            self._file.close()
            self._file = None

    # -- the writer thread -------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._flush()

    def _flush(self, fsync: bool = False) -> None:
        try:
            lines = self._drain()
            with self._write_lock:
                if self._file is None:
                    return
                now = time.monotonic()
                # the check's stat calls once per fsync, not every write: _unchecked keeps what it replays
                due = fsync or now - self._last_fsync >= self.fsync_interval
                if due:
                    self._reopen_if_gone()  # a reopened file gets every series: it clears what was last written
                metrics = self._metrics_line()
                if metrics:
                    lines.append(metrics)
                if lines:
                    text = "".join(lines)
                    self._file.write(text)
                    self._file.flush()  # into the kernel: survives SIGKILL of this process
                    self._unchecked.append(text)
                if due:
                    os.fsync(self._file.fileno())
                    self._last_fsync = now
        except Exception as e:  # noqa: BLE001 - the log never stops the run
            if self._on_error is not None:
                self._on_error(e)
            else:
                log.warning("llmops: run log %s: %s: %s", self.path, type(e).__name__, e)

    def _reopen_if_gone(self) -> None:
        """The path no longer names the open file (the run directory was deleted or moved): what is
        written would be lost. Open the path anew, start it with the start record and what was written
        since the last check, say so once."""
        try:
            same = os.path.samestat(os.fstat(self._file.fileno()), os.stat(self.path))
        except FileNotFoundError:
            same = False
        if same:
            self._unchecked.clear()
            return
        self._file.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
        _lock(self._file)
        self._file.write(_dumps({"kind": "start", "t": time.time(), "reopened": True, **self._start}))
        self._file.write("".join(line for text in self._unchecked for line in text.splitlines(keepends=True)
                                 if not line.startswith('{"kind": "start"')))  # a start resets the reader
        self._unchecked.clear()
        self._last.clear()  # the new file gets every series again, not only what changes next
        error = FileNotFoundError(f"run log {self.path} was removed during the run; reopened it (what was written "
                                  "before its last check is lost)")
        if self._on_error is not None:
            self._on_error(error)
        else:
            log.warning("llmops: %s", error)

    def _drain(self) -> list[str]:
        lines = []
        while self._pending:
            item = self._pending.popleft()
            if item[0] == "step":
                _, t, step, seconds = item
                self._last_step = step
                lines.append(_step_line(t, step, seconds))
            else:
                kind, t, fields = item
                lines.append(_dumps({"kind": kind, "t": t, **fields}))
        return lines

    def _metrics_line(self) -> str | None:
        """The series that changed since the last write, as one ``metrics`` record."""
        if self._state is None:
            return None
        snapshot = self._state.snapshot()
        changed = []
        for name, series in snapshot.items():
            label_names = self._state.specs[name].labels
            for s in series:
                value: Any = s.value
                if isinstance(value, HistogramValue):
                    value = {"sum": value.sum, "count": value.count}
                key = (name, s.labels)
                if self._last.get(key) != value:
                    self._last[key] = value
                    changed.append([name, dict(zip(label_names, s.labels, strict=True)), value])
        if not changed:
            return None
        step_series = snapshot.get("llmops_train_step")
        step = step_series[0].value if step_series else self._last_step
        return _dumps({"kind": "metrics", "t": time.time(), "step": step, "values": changed})


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, default=_default, separators=(", ", ": ")) + "\n"


def _step_line(t: Any, step: Any, seconds: Any) -> str:
    """``_dumps`` of a step record, byte for byte; formatted directly for a finite float ``t`` and
    ``seconds`` and an int ``step`` (JSON writes both with ``repr``), about a quarter of the cost."""
    if (type(t) is float and type(seconds) is float and type(step) is int
            and -math.inf < t < math.inf and -math.inf < seconds < math.inf):
        return f'{{"kind": "step", "t": {t!r}, "step": {step!r}, "seconds": {seconds!r}}}\n'
    return _dumps({"kind": "step", "t": t, "step": step, "seconds": seconds})


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)  # Fractions, paths, enums: readable, never an error
