"""cuda_device_uuid and CudaAllocatorProbe: logic with a patched torch.cuda here, the real thing on a GPU."""

from __future__ import annotations

import re
import uuid
from types import SimpleNamespace

import pytest
import torch

from llmops.probes import AllocatorReading, CudaAllocatorProbe, ProbeUnavailable, cuda_device_uuid

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
NVML_UUID = re.compile(r"^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class FakeCUuuid:
    """Like torch._C._CUuuid: `bytes` is a list of 16 ints, str() is 8-4-4-4-12 hex without a prefix."""

    def __init__(self, raw: bytes) -> None:
        self.bytes = list(raw)

    def __str__(self) -> str:
        return str(uuid.UUID(bytes=bytes(self.bytes)))


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    cuda = SimpleNamespace(stats={}, resets=[], props=SimpleNamespace(uuid=FakeCUuuid(bytes(range(16)))))
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: cuda.props)
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device: dict(cuda.stats))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", cuda.resets.append)
    return cuda


def test_uuid_is_formatted_as_nvml_does(fake_cuda: SimpleNamespace) -> None:
    assert cuda_device_uuid(0) == "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f"


def test_uuid_unknown_is_none(fake_cuda: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cuda.props = SimpleNamespace()  # a torch without `uuid`
    assert cuda_device_uuid(0) is None
    monkeypatch.setattr(torch.version, "hip", "6.0")  # ROCm: no NVML to match
    assert cuda_device_uuid(0) is None


@no_cuda
def test_without_cuda_there_is_no_uuid_and_no_allocator_probe() -> None:
    assert cuda_device_uuid(0) is None
    with pytest.raises(ProbeUnavailable, match="torch.cuda.is_available"):
        CudaAllocatorProbe(0)


def test_device_index_out_of_range(fake_cuda: SimpleNamespace) -> None:
    with pytest.raises(ProbeUnavailable, match="index 2 out of range; 2 visible"):
        CudaAllocatorProbe(2)


def test_reads_stats_and_resets_the_peak(fake_cuda: SimpleNamespace) -> None:
    probe = CudaAllocatorProbe(1)
    assert probe.read() == AllocatorReading(0, 0, 0, 0, 0)
    assert fake_cuda.resets == []  # CUDA not initialised yet: nothing to reset
    fake_cuda.stats = {"allocated_bytes.all.current": 10, "allocated_bytes.all.peak": 30,
                       "reserved_bytes.all.current": 64, "num_ooms": 1, "num_alloc_retries": 2}
    assert probe.read() == AllocatorReading(allocated_bytes=10, peak_allocated_bytes=30, reserved_bytes=64,
                                            num_ooms=1, num_alloc_retries=2)
    assert fake_cuda.resets == [1]


@pytest.mark.gpu
@needs_cuda
def test_real_uuid_matches_nvml_format() -> None:
    assert NVML_UUID.match(cuda_device_uuid(0) or "")


@pytest.mark.gpu
@needs_cuda
def test_real_allocator_peak_since_last_read() -> None:
    probe = CudaAllocatorProbe(0)
    kept = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda:0")
    probe.read()
    temp = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda:0")
    del temp
    r = probe.read()
    assert r.allocated_bytes >= kept.numel()
    assert r.peak_allocated_bytes >= kept.numel() + 256 * 2**20
    assert r.reserved_bytes >= r.allocated_bytes
    assert r.num_ooms >= 0 and r.num_alloc_retries >= 0
    again = probe.read()  # the temporary is gone and the peak was reset
    assert kept.numel() <= again.peak_allocated_bytes < kept.numel() + 256 * 2**20
