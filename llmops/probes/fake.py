"""In-memory fakes for tests: an `NvmlClient` over fake GPUs, and CUDA events, for what this machine lacks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from llmops.probes.base import (
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    NvmlError,
    NvmlMemory,
    NvmlProcess,
)


@dataclass
class FakeGpu:
    """One fake GPU in NVML order; `utilization_percent`, `processes`, `power_milliwatts` or
    `energy_millijoules` None means "not supported"."""

    index: int
    uuid: str
    name: str = "Fake GPU"
    memory_total_bytes: int = 80 * 2**30
    memory_used_bytes: int = 0
    utilization_percent: int | None = 0
    processes: list[NvmlProcess] | None = field(default_factory=list)
    power_milliwatts: int | None = 0
    energy_millijoules: int | None = 0


class FakeNvmlClient:
    """`NvmlClient` over a list of `FakeGpu`; handles are the `FakeGpu` objects.

    `library_missing` makes `init` fail as on a machine without the driver; `errors` maps a method name
    (`"memory_info"`, ...) to the `NvmlError` that call raises. `init_calls`/`shutdown_calls` count calls.
    """

    def __init__(self, gpus: list[FakeGpu], library_missing: bool = False) -> None:
        self.gpus = gpus
        self.library_missing = library_missing
        self.errors: dict[str, NvmlError] = {}
        self.initialized = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.hangs: set[str] = set()  # calls that block until `release` is set, as on a GPU fallen off the bus
        self.release = threading.Event()

    def _check(self, call: str) -> None:
        if call in self.hangs:
            self.release.wait()
        if call in self.errors:
            raise self.errors[call]
        if call != "init" and not self.initialized:
            raise NvmlError(NVML_ERROR_UNINITIALIZED, "Uninitialized")

    def init(self) -> None:
        self.init_calls += 1
        if self.library_missing:
            raise NvmlError(NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found")
        self._check("init")
        self.initialized += 1

    def shutdown(self) -> None:
        self.shutdown_calls += 1
        self._check("shutdown")
        self.initialized -= 1

    def device_count(self) -> int:
        self._check("device_count")
        return len(self.gpus)

    def handle_by_index(self, index: int) -> object:
        self._check("handle_by_index")
        if not 0 <= index < len(self.gpus):
            raise NvmlError(NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument")
        return self.gpus[index]

    @staticmethod
    def _gpu(handle: object) -> FakeGpu:
        if not isinstance(handle, FakeGpu):
            raise NvmlError(NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument")
        return handle

    def uuid(self, handle: object) -> str:
        self._check("uuid")
        return self._gpu(handle).uuid

    def name(self, handle: object) -> str:
        self._check("name")
        return self._gpu(handle).name

    def memory_info(self, handle: object) -> NvmlMemory:
        self._check("memory_info")
        gpu = self._gpu(handle)
        return NvmlMemory(total_bytes=gpu.memory_total_bytes, used_bytes=gpu.memory_used_bytes)

    def utilization_rates(self, handle: object) -> int:
        self._check("utilization_rates")
        percent = self._gpu(handle).utilization_percent
        if percent is None:
            raise NvmlError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return percent

    def compute_processes(self, handle: object) -> list[NvmlProcess]:
        self._check("compute_processes")
        processes = self._gpu(handle).processes
        if processes is None:
            raise NvmlError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return list(processes)

    def power_usage(self, handle: object) -> int:
        self._check("power_usage")
        milliwatts = self._gpu(handle).power_milliwatts
        if milliwatts is None:
            raise NvmlError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return milliwatts

    def total_energy(self, handle: object) -> int:
        self._check("total_energy")
        millijoules = self._gpu(handle).energy_millijoules
        if millijoules is None:
            raise NvmlError(NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return millijoules


class FakeCudaEvents:
    """A ``torch.cuda.Event`` factory for ``CudaEventClock`` on a machine without a GPU.

    Each event "completes" ``delay`` seconds after ``record()``, as work queued on a busy stream does;
    ``elapsed_time`` of one not yet complete raises as CUDA does (``cudaErrorNotReady``). ``calls`` lists
    ``(method, thread name)`` of every call, so a test can check which thread waited on what.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, enable_timing: bool = False) -> FakeCudaEvent:
        return FakeCudaEvent(self)

    def note(self, method: str) -> None:
        with self._lock:
            self.calls.append((method, threading.current_thread().name))


class FakeCudaEvent:
    """One event of ``FakeCudaEvents``: ``record``, ``query``, ``elapsed_time`` (ms), ``synchronize``."""

    def __init__(self, factory: FakeCudaEvents) -> None:
        self._factory = factory
        self._t: float | None = None

    def record(self, stream: object = None) -> None:
        self._factory.note("record")
        self._t = time.perf_counter()

    def query(self) -> bool:
        self._factory.note("query")
        return self._t is not None and time.perf_counter() >= self._t + self._factory.delay

    def synchronize(self) -> None:
        self._factory.note("synchronize")
        if self._t is not None:
            time.sleep(max(0.0, self._t + self._factory.delay - time.perf_counter()))

    def elapsed_time(self, end: FakeCudaEvent) -> float:
        self._factory.note("elapsed_time")
        if self._t is None or end._t is None or not (self.query() and end.query()):
            raise RuntimeError("CUDA error: device not ready")
        return (end._t - self._t) * 1e3
