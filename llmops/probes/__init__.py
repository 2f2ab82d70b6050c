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
from .clock import CudaEventClock, HostClock, StepClock
from .cuda import CudaAllocatorProbe, cuda_device_uuid
from .fake import FakeCudaEvents, FakeGpu, FakeNvmlClient
from .live import LiveBytes, LivePeak, tensors_of
from .nvml import NvmlProbe, PynvmlClient
from .tensors import state_bytes

__all__ = [
    "ActivationMeter",
    "AllocatorReading",
    "CudaAllocatorProbe",
    "CudaEventClock",
    "FakeCudaEvents",
    "FakeGpu",
    "FakeNvmlClient",
    "GpuReading",
    "HostClock",
    "LiveBytes",
    "LivePeak",
    "NvmlClient",
    "NvmlError",
    "NvmlMemory",
    "NvmlProbe",
    "NvmlProcess",
    "ProbeUnavailable",
    "PynvmlClient",
    "StepClock",
    "cuda_device_uuid",
    "state_bytes",
    "tensors_of",
]
