"""Stalls and hangs: no training step finished for ``stall_factor`` × the recent p99 step time, and never
sooner than ``stall_min_seconds``.

The training thread only stores the end time of each step and appends its duration (``step_done``); the
sampler thread (``check``, every ``interval`` seconds) compares the time since with the threshold. On a
stall it sets ``llmops_train_stalled``, writes every thread's Python stack (``faulthandler``) with what the
comm hook still has in flight to ``<run dir>/stall-rank<R>.txt`` and the log, and under NCCL triggers
(or says how to enable) the Flight Recorder dump; when a step finishes again it clears the flag.
Validation and checkpoint saves pause the clock (``pause``/``resume``): they are no training step.
"""

from __future__ import annotations

import faulthandler
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.metrics import MetricState
from llmops.probes.base import ProbeHung, bounded

log = logging.getLogger("llmops")
RECENT_STEPS = 128  # the p99 is taken over this many recent steps
DUMP_TIMEOUT_S = 5.0  # the longest the sampler waits on the Flight Recorder's dump


def p99(durations: list[float]) -> float:
    """The 99th percentile (nearest rank) of step durations; the first step (compilation, warm-up) is left
    out once there are others."""
    xs = sorted(durations[1:] or durations)
    return xs[max(0, math.ceil(0.99 * len(xs)) - 1)]


@dataclass(frozen=True)
class FlightRecorderPlan:
    """What to do about NCCL's Flight Recorder: ``dump`` now (it records), or only the ``note`` (why not,
    how to enable it, where NCCL writes on its own timeout)."""

    dump: bool
    note: str


def flight_recorder_plan(backend: str | None, env: Mapping[str, str], rank: int) -> FlightRecorderPlan:
    """The Flight Recorder records when ``TORCH_NCCL_TRACE_BUFFER_SIZE`` > 0 on an NCCL process group;
    ``TORCH_NCCL_DUMP_ON_TIMEOUT=1`` makes NCCL's watchdog write it itself on a collective's timeout, to
    ``TORCH_NCCL_DEBUG_INFO_TEMP_FILE`` (default ``/tmp/nccl_trace_rank_``) + the rank."""
    if backend != "nccl":
        return FlightRecorderPlan(False, f"backend {backend or 'none'}: no NCCL Flight Recorder")
    try:
        size = int(env.get("TORCH_NCCL_TRACE_BUFFER_SIZE", "0") or 0)
    except ValueError:
        size = 0
    if size <= 0:
        return FlightRecorderPlan(False, "NCCL Flight Recorder off: set TORCH_NCCL_TRACE_BUFFER_SIZE=2000 and "
                                         "TORCH_NCCL_DUMP_ON_TIMEOUT=1 to record the collectives in flight")
    on_timeout = ""
    if env.get("TORCH_NCCL_DUMP_ON_TIMEOUT", "0").strip().lower() in ("1", "true", "yes"):
        prefix = env.get("TORCH_NCCL_DEBUG_INFO_TEMP_FILE", "/tmp/nccl_trace_rank_")
        on_timeout = f"; on a collective's timeout NCCL also writes {prefix}{rank}"
    return FlightRecorderPlan(True, f"NCCL Flight Recorder on ({size} entries){on_timeout}")


def _nccl_dump() -> bytes:
    import torch

    return bytes(torch._C._distributed_c10d._dump_nccl_trace())  # the pickle torch's fr_trace tool reads


def _backend() -> str | None:
    try:
        import torch.distributed as dist

        return str(dist.get_backend()) if dist.is_available() and dist.is_initialized() else None
    except Exception:  # noqa: BLE001 - no process group: no backend
        return None


class StallDetector:
    """Notices a training loop that stopped finishing steps; ``check`` returns ``"stalled"``,
    ``"resumed"`` or ``None`` (nothing changed)."""

    def __init__(self, state: MetricState, factor: float, min_seconds: float,
                 backend: Callable[[], str | None] = _backend, nccl_dump: Callable[[], bytes] = _nccl_dump,
                 env: Mapping[str, str] = os.environ) -> None:
        self.state, self.factor, self.min_seconds = state, factor, min_seconds
        self._backend, self._nccl_dump, self._env = backend, nccl_dump, env
        self._durations: deque[float] = deque(maxlen=RECENT_STEPS)
        self._last = 0.0  # perf_counter at the last step's end (or a pause's end)
        self._count = 0  # steps finished
        self._paused = 0
        self._seen = 0  # steps finished at the last check
        self.stalled_at: float | None = None  # perf_counter when the stall was noticed
        self.last_report: dict[str, Any] = {}
        self.comm: Any = None  # a CommTimer under DDP: what it has in flight goes in the report
        self.rank = 0

    # -- the training thread -----------------------------------------------------------------
    def step_done(self, now: float, seconds: float) -> None:
        self._last = now
        self._durations.append(seconds)
        self._count += 1

    def pause(self) -> None:
        """Validation or a checkpoint save begins: no step is expected until ``resume``."""
        self._paused += 1

    def resume(self) -> None:
        self._paused = max(0, self._paused - 1)
        self._last = time.perf_counter()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    # -- the sampler thread ------------------------------------------------------------------
    def threshold(self) -> float | None:
        """Seconds without a finished step that make a stall; ``None`` before the first step."""
        durations = list(self._durations)
        if not durations:
            return None
        return max(self.min_seconds, self.factor * p99(durations))

    def check(self, now: float | None = None) -> str | None:
        now = time.perf_counter() if now is None else now
        count, last = self._count, self._last
        if count != self._seen:
            self._seen = count
            self.state.set("llmops_last_step_timestamp_seconds", time.time() - (now - last))
            if self.stalled_at is not None:
                self.stalled_at = None
                self.state.set("llmops_train_stalled", 0)
                return "resumed"
            self.state.set("llmops_train_stalled", 0)
            return None
        threshold = self.threshold()
        if self.stalled_at is not None or threshold is None or self._paused or now - last <= threshold:
            return None
        self.stalled_at = now
        self.state.set("llmops_train_stalled", 1)
        self.last_report = {"since_step_s": now - last, "threshold_s": threshold, "steps": count}
        return "stalled"

    def stalled_for(self, now: float | None = None) -> float:
        return 0.0 if self.stalled_at is None else (time.perf_counter() if now is None else now) - self._last

    def write_report(self, path: Path, header: str) -> str:
        """Write the stall report (a header, the comm hook's buckets in flight, the Flight Recorder, every
        thread's stack) to ``path``; returns its text."""
        path.parent.mkdir(parents=True, exist_ok=True)
        names = {t.ident: t.name for t in threading.enumerate()}
        r = self.last_report
        lines = [header, f"no training step finished for {r.get('since_step_s', 0):.1f} s (threshold "
                         f"{r.get('threshold_s', 0):.1f} s = max(stall_min_seconds {self.min_seconds:g}, "
                         f"stall_factor {self.factor:g} × p99 of the last {len(self._durations)} steps)); "
                         f"{r.get('steps', 0)} steps finished"]
        in_flight = self.comm.in_flight() if self.comm is not None else 0
        if self.comm is not None:
            lines.append(f"gradient all-reduce buckets launched and not finished: {in_flight}"
                         + (" (this rank waits in the collective)" if in_flight else ""))
        lines.append(self._flight_recorder(path.parent))
        lines += ["threads: " + ", ".join(f"0x{ident:016x} = {name}" for ident, name in names.items() if ident),
                  "", "Python stacks of every thread (faulthandler, most recent call first):", ""]
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            faulthandler.dump_traceback(f, all_threads=True)
        return path.read_text(encoding="utf-8", errors="replace")

    def _flight_recorder(self, directory: Path) -> str:
        rank = self.rank
        plan = flight_recorder_plan(self._backend(), self._env, rank)
        if not plan.dump:
            return plan.note
        target = directory / f"nccl-trace-rank{rank}.pickle"
        try:
            target.write_bytes(bounded(self._nccl_dump, DUMP_TIMEOUT_S, "nccl trace dump"))
        except (ProbeHung, Exception) as e:  # noqa: BLE001 - the report goes on without the dump
            return f"{plan.note}; its dump failed ({type(e).__name__}: {e})"
        return f"{plan.note}; dumped to {target} (read it with torch's fr_trace)"
