"""An in-memory `NvmlClient` for tests: fake GPUs whose readings and failures a test can change."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from .base import (
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
    """One fake GPU in NVML order; `utilization_percent` or `processes` None means "not supported"."""

    index: int
    uuid: str
    name: str = "Fake GPU"
    memory_total_bytes: int = 80 * 2**30
    memory_used_bytes: int = 0
    utilization_percent: int | None = 0
    processes: list[NvmlProcess] | None = field(default_factory=list)


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
