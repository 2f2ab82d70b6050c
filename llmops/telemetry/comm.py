"""Distributed communication timing: a DDP comm hook that times every gradient bucket.

DDP: ``CommTimer.hook`` is registered on the wrapped model at train start and wraps the
user's hook (or PyTorch's default all-reduce), so theirs still runs. On the CPU the duration
is host time from launch to the future's completion; on CUDA it is CUDA events recorded on
the stream and read later, on the sampler thread, without synchronising. Each optimizer step's
buckets are handed to the step timer (``take_step``), which counts the communication not hidden
behind backward (``exposed_seconds``). Other strategies (FSDP, DeepSpeed): one
all-reduce sized like the gradients on the run's process group at train start
(``probe_allreduce``). Bus bandwidth follows nccl-tests: ``bytes / time × 2(n − 1) / n``.
"""

# No `from __future__ import annotations`: DDP checks the hook's annotations at registration
# (`bucket: dist.GradBucket`) and rejects string ones.
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from llmops.metrics import MetricState
from llmops.probes.clock import CudaEventClock, HostClock, StepClock

PROBE_MAX_BYTES = 256 * 2**20  # the fit-start probe never moves more than this
FAILED = object()  # the end mark of a bucket whose all-reduce failed


def bus_bandwidth(nbytes: float, seconds: float, world_size: int) -> float | None:
    """nccl-tests bus bandwidth of an all-reduce: algorithm bandwidth × 2(n − 1)/n (formulas.md §7)."""
    if seconds <= 0 or world_size < 1:
        return None
    return nbytes / seconds * 2 * (world_size - 1) / world_size


class CommTimer:
    """Times each all-reduced gradient bucket and exports duration, bytes and bus bandwidth."""

    def __init__(self, state: MetricState, world_size: int, cuda: bool = False,
                 inner: Callable[[Any, dist.GradBucket], torch.futures.Future] | None = None,
                 inner_state: Any = None, clock: StepClock | None = None) -> None:
        self.state, self.world_size, self.cuda = state, world_size, cuda
        self.clock: StepClock = clock or (CudaEventClock() if cuda else HostClock())
        self._deferred = not isinstance(self.clock, HostClock)  # events: read on the sampler thread
        self.inner = inner or allreduce_hook
        self.inner_state = inner_state
        self._lock = threading.Lock()
        self._window_bytes = 0.0
        self._window_seconds = 0.0
        self._pending: deque[tuple[Any, Any, int]] = deque()
        self._step: list[list[Any]] = []  # [start mark, end mark or None] per bucket of the step in progress
        self.buckets = 0

    def hook(self, _state: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        """The DDP comm hook: return the inner hook's own future, timed by a callback on it.

        Returning that future (not one chained with ``then``, and not a new one completed from it)
        leaves its value and its error exactly as the inner hook made them: a failed all-reduce (a
        peer that died) reaches the user with the type and message it has without the monitor.
        """
        buffer = bucket.buffer()
        nbytes = buffer.numel() * buffer.element_size()
        start = self.clock.mark()
        fut = self.inner(self.inner_state, bucket)
        marks: list[Any] = [start, None]
        with self._lock:
            self._step.append(marks)

        def done(f: torch.futures.Future) -> None:
            try:
                f.value()
            except Exception:  # noqa: BLE001 - the error is the user's, raised where they wait on it
                marks[1] = FAILED
                return
            end = self.clock.mark()  # on CUDA: on the future's streams; read later, never synchronised here
            marks[1] = end
            if self._deferred:
                self._pending.append((start, end, nbytes))
            else:
                self._record(self.clock.seconds(start, end), nbytes)

        fut.add_done_callback(done)
        return fut

    def take_step(self) -> list[list[Any]]:
        """The buckets launched since the last call (one optimizer step's), for ``exposed_seconds``."""
        with self._lock:
            buckets, self._step = self._step, []
        return buckets

    def in_flight(self) -> int:
        """Buckets of the step in progress whose all-reduce has not finished (a stall report's clue)."""
        with self._lock:
            return sum(1 for _, end in self._step if end is None)

    def ready(self, buckets: list[list[Any]]) -> bool:
        """Whether every bucket has finished (or failed) and its marks can be read without waiting."""
        return all(end is FAILED or (end is not None and self.clock.ready(end)) for _, end in buckets)

    def exposed_seconds(self, buckets: list[list[Any]]) -> float:
        """Communication not hidden behind backward: from the launch of the step's last bucket (its
        gradients are the last backward computes) to the end of the last all-reduce."""
        done = [(start, end) for start, end in buckets if end is not FAILED and end is not None]
        if not done or buckets[-1][1] is FAILED:
            return 0.0
        last_launch = buckets[-1][0]
        return max(0.0, *(self.clock.seconds(last_launch, end) for _, end in done))

    def _record(self, seconds: float, nbytes: int) -> None:
        self.state.observe("llmops_comm_allreduce_duration_seconds", seconds)
        self.state.inc("llmops_comm_allreduce_bytes_total", nbytes)
        with self._lock:
            self.buckets += 1
            self._window_bytes += nbytes
            self._window_seconds += seconds

    def flush(self, step_seconds: float | None) -> None:
        """End a window (a training step; the sampler thread): bus bandwidth and the share of the step spent
        in all-reduce."""
        while self._pending and self.clock.ready(self._pending[0][1]):  # CUDA events that have completed
            start, end, bucket_bytes = self._pending.popleft()
            self._record(self.clock.seconds(start, end), bucket_bytes)
        with self._lock:
            nbytes, seconds = self._window_bytes, self._window_seconds
            self._window_bytes = self._window_seconds = 0.0
        if seconds > 0:
            self.state.set("llmops_comm_bus_bandwidth_bytes_per_second",
                           bus_bandwidth(nbytes, seconds, self.world_size))
            if step_seconds:
                self.state.set("llmops_comm_step_time_ratio", min(1.0, seconds / step_seconds))


def take_user_hook(strategy: Any) -> tuple[Callable | None, Any]:
    """Take the comm hook a user gave Lightning's ``DDPStrategy`` so ours can wrap it.

    Lightning registers that hook on CUDA only (and ignores it on the CPU); a model takes one
    hook, so the monitor's hook calls the user's instead. Reads the strategy's constructor
    arguments, which Lightning exposes no public accessor for.
    """
    hook = getattr(strategy, "_ddp_comm_hook", None)
    if hook is None:
        return None, None
    wrapper = getattr(strategy, "_ddp_comm_wrapper", None)
    state = getattr(strategy, "_ddp_comm_state", None)
    if type(state).__name__ == "PostLocalSGDState":
        return None, None  # model averaging needs Lightning's own registration
    strategy._ddp_comm_hook = None
    strategy._ddp_comm_wrapper = None
    return (wrapper(hook) if wrapper is not None else hook), state


def probe_allreduce(state: MetricState, nbytes: int, device: torch.device, world_size: int,
                    group: Any = None) -> float | None:
    """One all-reduce of ``nbytes`` (capped) on the run's process group; returns its bus bandwidth.

    A collective: every rank must call it.
    """
    n = max(1, min(nbytes, PROBE_MAX_BYTES) // 4)
    tensor = torch.zeros(n, dtype=torch.float32, device=device)
    dist.all_reduce(tensor, group=group)  # warm-up: the first call sets up the communicator
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # fit start, not the training path
    t0 = time.perf_counter()
    dist.all_reduce(tensor, group=group)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    busbw = bus_bandwidth(n * 4, seconds, world_size)
    state.observe("llmops_comm_allreduce_duration_seconds", seconds)
    state.set("llmops_comm_bus_bandwidth_bytes_per_second", busbw)
    return busbw


def attach(model: Any, state: MetricState, world_size: int, device: torch.device,
           user_hook: tuple[Callable | None, Any] = (None, None),
           clock: StepClock | None = None) -> CommTimer | None:
    """Time gradient all-reduces of a DDP-wrapped model; other strategies get the fit-start probe.

    Raises ``RuntimeError`` when the model already has a comm hook that cannot be wrapped; the
    caller counts it and falls back to ``probe_allreduce``.
    """
    from torch.nn.parallel import DistributedDataParallel

    if world_size < 2 or not dist.is_available() or not dist.is_initialized():
        return None
    if isinstance(model, DistributedDataParallel):
        inner, inner_state = user_hook
        timer = CommTimer(state, world_size, cuda=device.type == "cuda", inner=inner, inner_state=inner_state,
                          clock=clock)
        model.register_comm_hook(None, timer.hook)
        return timer
    return None
