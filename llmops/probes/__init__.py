"""Measurements behind small interfaces: NVML, the CUDA allocator, tensor state and saved activations."""

from .activations import ActivationMeter
from .base import (
    AllocatorReading,
    GpuReading,
    NvmlClient,
    NvmlError,
    NvmlMemory,
    NvmlProcess,
    ProbeUnavailable,
)
from .cuda import CudaAllocatorProbe, cuda_device_uuid
from .fake import FakeGpu, FakeNvmlClient
from .live import LiveBytes, LivePeak, tensors_of
from .nvml import NvmlProbe, PynvmlClient
from .tensors import state_bytes

__all__ = [
    "ActivationMeter",
    "AllocatorReading",
    "CudaAllocatorProbe",
    "FakeGpu",
    "FakeNvmlClient",
    "GpuReading",
    "LiveBytes",
    "LivePeak",
    "NvmlClient",
    "NvmlError",
    "NvmlMemory",
    "NvmlProbe",
    "NvmlProcess",
    "ProbeUnavailable",
    "PynvmlClient",
    "cuda_device_uuid",
    "state_bytes",
    "tensors_of",
]
