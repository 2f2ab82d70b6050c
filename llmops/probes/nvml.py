"""NVML behind `NvmlClient`: the real pynvml client and the probe that reads the GPU this rank uses."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from llmops.probes.base import (
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    NVML_VALUE_NOT_AVAILABLE,
    GpuReading,
    NvmlClient,
    NvmlError,
    NvmlMemory,
    NvmlProcess,
    ProbeUnavailable,
)
from llmops.probes.cuda import cuda_device_uuid

T = TypeVar("T")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _supported(read: Callable[[], float]) -> float | None:
    """``read()``, or ``None`` where the device does not support it (NVML_ERROR_NOT_SUPPORTED); other errors go on."""
    try:
        return read()
    except NvmlError as e:
        if e.code != NVML_ERROR_NOT_SUPPORTED:
            raise
        return None


class PynvmlClient:
    """`NvmlClient` over nvidia-ml-py (import name `pynvml`), imported in `init`; raises `NvmlError`."""

    def __init__(self) -> None:
        self._nvml: Any = None

    def _call(self, fn: Callable[[Any], T]) -> T:
        if self._nvml is None:
            raise NvmlError(NVML_ERROR_UNINITIALIZED, "NVML is not initialized; call init() first")
        try:
            return fn(self._nvml)
        except self._nvml.NVMLError as e:
            raise NvmlError(int(e.value), str(e)) from e

    def init(self) -> None:
        try:
            import pynvml
        except ImportError as e:
            raise NvmlError(NVML_ERROR_LIBRARY_NOT_FOUND,
                            f"nvidia-ml-py is not installed ({e}); pip install nvidia-ml-py") from e
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise NvmlError(int(e.value), str(e)) from e
        self._nvml = pynvml

    def shutdown(self) -> None:
        self._call(lambda n: n.nvmlShutdown())
        self._nvml = None

    def device_count(self) -> int:
        return int(self._call(lambda n: n.nvmlDeviceGetCount()))

    def handle_by_index(self, index: int) -> object:
        return self._call(lambda n: n.nvmlDeviceGetHandleByIndex(index))

    def uuid(self, handle: object) -> str:
        return _text(self._call(lambda n: n.nvmlDeviceGetUUID(handle)))

    def name(self, handle: object) -> str:
        return _text(self._call(lambda n: n.nvmlDeviceGetName(handle)))

    def memory_info(self, handle: object) -> NvmlMemory:
        m = self._call(lambda n: n.nvmlDeviceGetMemoryInfo(handle))
        return NvmlMemory(total_bytes=int(m.total), used_bytes=int(m.used))

    def utilization_rates(self, handle: object) -> int:
        return int(self._call(lambda n: n.nvmlDeviceGetUtilizationRates(handle)).gpu)

    def compute_processes(self, handle: object) -> list[NvmlProcess]:
        procs = self._call(lambda n: n.nvmlDeviceGetComputeRunningProcesses(handle))
        return [NvmlProcess(int(p.pid), p.usedGpuMemory) for p in procs]

    def power_usage(self, handle: object) -> int:
        return int(self._call(lambda n: n.nvmlDeviceGetPowerUsage(handle)))

    def total_energy(self, handle: object) -> int:
        return int(self._call(lambda n: n.nvmlDeviceGetTotalEnergyConsumption(handle)))


class NvmlProbe:
    """Reads memory, this process's memory, utilization, power and energy of the GPU this rank uses, in bytes,
    0-1, watts and joules.

    The GPU is matched by UUID (`cuda_uuid`, else the UUID of CUDA device `cuda_index`), because CUDA and
    NVML number GPUs differently under CUDA_VISIBLE_DEVICES; the NVML index `cuda_index` is used only when
    no UUID is known. `open` and `read` raise `ProbeUnavailable`; values NVML can't tell are None, never 0.
    """

    def __init__(self, client: NvmlClient | None = None, cuda_uuid: str | None = None,
                 cuda_index: int | None = None, pid: int | None = None) -> None:
        self._client: NvmlClient = client if client is not None else PynvmlClient()
        self._cuda_uuid = cuda_uuid
        self._cuda_index = cuda_index
        self._pid = pid if pid is not None else os.getpid()
        self._handle: object = None
        self._index = -1
        self._uuid = ""
        self._name = ""

    def open(self) -> None:
        """Initialise NVML and find the GPU; raises `ProbeUnavailable` with NVML's message."""
        if self._handle is not None:
            return
        try:
            self._client.init()
        except NvmlError as e:
            raise ProbeUnavailable(f"NVML unavailable: {e}") from e
        try:
            handle, self._index, self._uuid = self._find_device()
            try:
                self._name = self._client.name(handle)
            except NvmlError as e:
                raise ProbeUnavailable(f"NVML could not name GPU {self._index}: {e}") from e
            self._handle = handle
        except BaseException:
            self._handle = None
            self._shutdown_quietly()
            raise

    def _find_device(self) -> tuple[object, int, str]:
        uuid = self._cuda_uuid
        if uuid is None and self._cuda_index is not None:
            uuid = cuda_device_uuid(self._cuda_index)
        try:
            count = self._client.device_count()
            if uuid is None:
                index = self._cuda_index if self._cuda_index is not None else 0
                if os.environ.get("CUDA_VISIBLE_DEVICES"):
                    warnings.warn(f"NvmlProbe: no CUDA device UUID known; reading NVML device {index}, which "
                                  "may not be this rank's GPU under CUDA_VISIBLE_DEVICES", stacklevel=3)
                if not 0 <= index < count:
                    raise ProbeUnavailable(f"NVML device index {index} out of range; NVML sees {count} GPUs")
                handle = self._client.handle_by_index(index)
                return handle, index, self._client.uuid(handle)
            seen = []
            for index in range(count):
                handle = self._client.handle_by_index(index)
                found = self._client.uuid(handle)
                if found.lower() == uuid.lower():
                    return handle, index, found
                seen.append(found)
        except NvmlError as e:
            raise ProbeUnavailable(f"NVML could not list GPUs: {e}") from e
        raise ProbeUnavailable(f"no NVML GPU has UUID {uuid!r}; NVML sees {seen}")

    def read(self) -> GpuReading:
        """One sample; raises `ProbeUnavailable` when not open or the GPU can't be read (e.g. lost)."""
        if self._handle is None:
            raise ProbeUnavailable("NvmlProbe.read() before open()")
        c, h = self._client, self._handle
        try:
            memory = c.memory_info(h)
            process_bytes = self._process_memory_bytes(h)
            utilization = _supported(lambda: c.utilization_rates(h) / 100.0)
            power = _supported(lambda: c.power_usage(h) / 1e3)  # mW -> W
            energy = _supported(lambda: c.total_energy(h) / 1e3)  # mJ -> J
        except NvmlError as e:
            raise ProbeUnavailable(f"NVML read of GPU {self._index} ({self._uuid}) failed: {e}") from e
        return GpuReading(index=self._index, uuid=self._uuid, name=self._name,
                          memory_total_bytes=memory.total_bytes, memory_used_bytes=memory.used_bytes,
                          process_memory_bytes=process_bytes, utilization_ratio=utilization,
                          power_watts=power, energy_joules=energy)

    @property
    def name(self) -> str:
        """The GPU's name as NVML reports it (``NVIDIA H100 80GB HBM3``); empty before ``open``."""
        return self._name

    def _process_memory_bytes(self, handle: object) -> int | None:
        """Sum over this pid's compute entries; None if NVML can't tell or doesn't list this pid.

        An unlisted pid is None rather than 0: inside a container NVML reports host pids.
        """
        try:
            processes = self._client.compute_processes(handle)
        except NvmlError as e:
            if e.code != NVML_ERROR_NOT_SUPPORTED:
                raise
            return None
        used = [p.used_gpu_memory_bytes for p in processes if p.pid == self._pid]
        if not used or any(u is None or u == NVML_VALUE_NOT_AVAILABLE for u in used):
            return None
        return sum(u for u in used if u is not None)

    def close(self) -> None:
        """Shut NVML down; safe to call twice or after a failed `open`."""
        if self._handle is not None:
            self._handle = None
            self._shutdown_quietly()

    def _shutdown_quietly(self) -> None:
        try:
            self._client.shutdown()
        except NvmlError:
            pass  # nothing left to release; NVML refcounts init/shutdown itself

    def __enter__(self) -> NvmlProbe:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
