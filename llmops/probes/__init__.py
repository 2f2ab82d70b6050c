"""Measurements behind small interfaces: NVML, the CUDA allocator, tensor state and saved activations."""

from llmops.probes.activations import ActivationMeter
from llmops.probes.base import (
    AllocatorReading,
    GpuReading,
    NvmlClient,
    NvmlError,
    NvmlMemory,
    NvmlProcess,
    ProbeUnavailable,
)
from llmops.probes.clock import CudaEventClock, HostClock, StepClock
from llmops.probes.cuda import CudaAllocatorProbe, cuda_device_uuid
from llmops.probes.fake import FakeCudaEvents, FakeGpu, FakeNvmlClient
from llmops.probes.live import LiveBytes, LivePeak, tensors_of
from llmops.probes.nvml import NvmlProbe, PynvmlClient
from llmops.probes.tensors import state_bytes

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
