"""The PyTorch CUDA caching allocator as a probe, and the CUDA device UUID as NVML spells it."""

from __future__ import annotations

import uuid as uuidlib

import torch

from llmops.probes.base import AllocatorReading, ProbeUnavailable


def cuda_device_uuid(index: int) -> str | None:
    """UUID of CUDA device `index` as NVML writes it (`GPU-xxxxxxxx-xxxx-...`); None if unknown.

    None without CUDA, on ROCm, or on a torch without `uuid` in the device properties.
    """
    if torch.version.hip is not None or not torch.cuda.is_available():
        return None
    raw = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if raw is None:
        return None
    data = bytes(getattr(raw, "bytes", b""))
    text = str(uuidlib.UUID(bytes=data)) if len(data) == 16 else str(raw).lower()
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


class CudaAllocatorProbe:
    """Reads `torch.cuda.memory_stats` of one device, in bytes; host-side only, never synchronises.

    Each `read` resets the device's peak (`torch.cuda.reset_peak_memory_stats`), so the peak is the
    highest allocation since the previous read; other users of `max_memory_allocated` see that reset.
    """

    def __init__(self, device_index: int) -> None:
        if not torch.cuda.is_available():
            raise ProbeUnavailable("CudaAllocatorProbe needs CUDA; torch.cuda.is_available() is False")
        count = torch.cuda.device_count()
        if not 0 <= device_index < count:
            raise ProbeUnavailable(f"CUDA device index {device_index} out of range; {count} visible")
        self.device_index = device_index

    def read(self) -> AllocatorReading:
        """One sample; all zeros before the first CUDA allocation on the device."""
        stats = torch.cuda.memory_stats(self.device_index)
        if stats:  # empty until CUDA is initialised; resetting then would initialise it from this thread
            torch.cuda.reset_peak_memory_stats(self.device_index)
        return AllocatorReading(
            allocated_bytes=int(stats.get("allocated_bytes.all.current", 0)),
            peak_allocated_bytes=int(stats.get("allocated_bytes.all.peak", 0)),
            reserved_bytes=int(stats.get("reserved_bytes.all.current", 0)),
            num_ooms=int(stats.get("num_ooms", 0)),
            num_alloc_retries=int(stats.get("num_alloc_retries", 0)),
        )
