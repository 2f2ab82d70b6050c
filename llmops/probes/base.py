"""The probe interface: readings, the NVML client protocol and the errors probes raise."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

T = TypeVar("T")

# NVML return codes the probes act on (nvml.h `nvmlReturn_t`).
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15
# NVML's "value not available" sentinel for unsigned long long fields such as usedGpuMemory.
NVML_VALUE_NOT_AVAILABLE = 2**64 - 1


class ProbeUnavailable(RuntimeError):
    """A measurement source is missing or can't be read (no NVML, no CUDA, GPU not found or lost)."""


class NvmlError(RuntimeError):
    """An NVML call failed; `code` is the NVML return code (`NVML_ERROR_*`)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class GpuReading:
    """One NVML sample of one GPU; `index` is the NVML index. None means NVML can't tell."""

    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    memory_used_bytes: int
    process_memory_bytes: int | None  # this process's usage on this GPU
    utilization_ratio: float | None  # 0-1, fraction of the sample period a kernel ran
    power_watts: float | None = None  # nvmlDeviceGetPowerUsage
    energy_joules: float | None = None  # nvmlDeviceGetTotalEnergyConsumption: since the driver loaded


@dataclass(frozen=True)
class AllocatorReading:
    """One sample of the PyTorch CUDA caching allocator, in bytes; peak is since the previous sample."""

    allocated_bytes: int
    peak_allocated_bytes: int
    reserved_bytes: int
    num_ooms: int
    num_alloc_retries: int


class NvmlMemory(NamedTuple):
    """Device memory from `nvmlDeviceGetMemoryInfo`, in bytes."""

    total_bytes: int
    used_bytes: int


class NvmlProcess(NamedTuple):
    """One entry of `nvmlDeviceGetComputeRunningProcesses`; memory None when NVML can't tell."""

    pid: int
    used_gpu_memory_bytes: int | None


class NvmlClient(Protocol):
    """The NVML calls the probe needs; every call raises `NvmlError` on failure."""

    def init(self) -> None: ...

    def shutdown(self) -> None: ...

    def device_count(self) -> int: ...

    def handle_by_index(self, index: int) -> object: ...

    def uuid(self, handle: object) -> str: ...

    def name(self, handle: object) -> str: ...

    def memory_info(self, handle: object) -> NvmlMemory: ...

    def utilization_rates(self, handle: object) -> int:
        """GPU utilization in percent (0-100) over NVML's last sample period."""
        ...

    def compute_processes(self, handle: object) -> list[NvmlProcess]: ...

    def power_usage(self, handle: object) -> int:
        """Power draw in milliwatts (``nvmlDeviceGetPowerUsage``)."""
        ...

    def total_energy(self, handle: object) -> int:
        """Energy in millijoules since the driver loaded (``nvmlDeviceGetTotalEnergyConsumption``, Volta and
        later; it lags the draw by tens of milliseconds)."""
        ...


class ProbeHung(RuntimeError):
    """A probe call did not return within its bound; it was left behind on a daemon thread."""


def bounded(fn: Callable[[], T], seconds: float, what: str) -> T:
    """``fn()`` on a daemon thread, waited for at most ``seconds``: a driver call that blocks (a GPU
    fallen off the bus) cannot hold the training thread. Raises ``ProbeHung`` past the bound; ``fn``'s
    own exception is raised as it is."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            result["error"] = e

    thread = threading.Thread(target=run, name=f"llmops-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ProbeHung(f"{what} did not return within {seconds:g} s; the call is left behind")
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]
