"""NvmlProbe against FakeNvmlClient, the pynvml adapter with a patched pynvml, and the real NVML."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest
import torch

from llmops.probes import FakeGpu, FakeNvmlClient, NvmlError, NvmlProbe, NvmlProcess, ProbeUnavailable
from llmops.probes import nvml as nvml_module
from llmops.probes.base import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    NVML_ERROR_UNINITIALIZED,
    NVML_VALUE_NOT_AVAILABLE,
)
from llmops.probes.cuda import cuda_device_uuid
from llmops.probes.nvml import PynvmlClient

PID = 4242
UUID_A = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
UUID_B = "GPU-bbbbbbbb-0000-0000-0000-000000000000"


@pytest.fixture
def client() -> FakeNvmlClient:
    return FakeNvmlClient([
        FakeGpu(0, UUID_A, "H100 A", memory_total_bytes=80 * 2**30, memory_used_bytes=2**30,
                utilization_percent=10, processes=[NvmlProcess(PID, 111)]),
        FakeGpu(1, UUID_B, "H100 B", memory_total_bytes=80 * 2**30, memory_used_bytes=5 * 2**30,
                utilization_percent=37, processes=[NvmlProcess(PID, 3 * 2**30), NvmlProcess(7, 2**30),
                                                   NvmlProcess(PID, 2**20)]),
    ])


@pytest.fixture(autouse=True)
def no_cuda_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's own UUID lookup sees no CUDA, whatever this machine has."""
    monkeypatch.setattr(nvml_module, "cuda_device_uuid", lambda index: None)


def test_picks_gpu_by_uuid_when_cuda_and_nvml_indices_differ(client: FakeNvmlClient) -> None:
    # CUDA_VISIBLE_DEVICES=1: CUDA device 0 is NVML device 1.
    with NvmlProbe(client, cuda_uuid=UUID_B, cuda_index=0, pid=PID) as probe:
        r = probe.read()
    assert (r.index, r.uuid, r.name) == (1, UUID_B, "H100 B")
    assert (r.memory_total_bytes, r.memory_used_bytes) == (80 * 2**30, 5 * 2**30)
    assert r.utilization_ratio == pytest.approx(0.37)


def test_uuid_of_cuda_index_is_looked_up(client: FakeNvmlClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_module, "cuda_device_uuid", {0: UUID_B}.get)
    with NvmlProbe(client, cuda_index=0, pid=PID) as probe:
        assert probe.read().index == 1


def test_uuid_match_ignores_case(client: FakeNvmlClient) -> None:
    with NvmlProbe(client, cuda_uuid=UUID_B.upper(), pid=PID) as probe:
        assert probe.read().uuid == UUID_B


def test_falls_back_to_index_without_uuid_and_warns_under_visible_devices(
        client: FakeNvmlClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with NvmlProbe(client, cuda_index=1, pid=PID) as probe:
        assert probe.read().uuid == UUID_B
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.warns(UserWarning, match="CUDA_VISIBLE_DEVICES"), NvmlProbe(client, pid=PID) as probe:
        assert probe.read().index == 0


def test_readings_follow_the_device(client: FakeNvmlClient) -> None:
    with NvmlProbe(client, cuda_uuid=UUID_A, pid=PID) as probe:
        assert probe.read().memory_used_bytes == 2**30
        client.gpus[0].memory_used_bytes = 7 * 2**30
        client.gpus[0].utilization_percent = 100
        r = probe.read()
    assert (r.memory_used_bytes, r.utilization_ratio) == (7 * 2**30, 1.0)


def test_process_memory_sums_this_pid_only(client: FakeNvmlClient) -> None:
    with NvmlProbe(client, cuda_uuid=UUID_B, pid=PID) as probe:
        assert probe.read().process_memory_bytes == 3 * 2**30 + 2**20


def test_default_pid_is_this_process(client: FakeNvmlClient) -> None:
    client.gpus[0].processes = [NvmlProcess(os.getpid(), 123)]
    with NvmlProbe(client, cuda_uuid=UUID_A) as probe:
        assert probe.read().process_memory_bytes == 123


@pytest.mark.parametrize("processes", [
    [NvmlProcess(PID, None)],  # pynvml's translation of NVML_VALUE_NOT_AVAILABLE
    [NvmlProcess(PID, NVML_VALUE_NOT_AVAILABLE)],
    [NvmlProcess(PID, 100), NvmlProcess(PID, None)],  # a partial sum would understate
    [NvmlProcess(PID + 1, 100)],  # not listed: no context yet, or a container's pid namespace
    [],
    None,  # compute processes not supported
], ids=["none", "sentinel", "partial", "other-pid", "empty", "not-supported"])
def test_unknown_process_memory_is_none_not_zero(client: FakeNvmlClient, processes: object) -> None:
    client.gpus[0].processes = processes  # type: ignore[assignment]
    with NvmlProbe(client, cuda_uuid=UUID_A, pid=PID) as probe:
        assert probe.read().process_memory_bytes is None


def test_unsupported_utilization_is_none_not_zero(client: FakeNvmlClient) -> None:
    client.gpus[0].utilization_percent = None
    with NvmlProbe(client, cuda_uuid=UUID_A, pid=PID) as probe:
        r = probe.read()
    assert r.utilization_ratio is None and r.process_memory_bytes == 111


def test_power_and_energy_in_watts_and_joules(client: FakeNvmlClient) -> None:
    client.gpus[0].power_milliwatts, client.gpus[0].energy_millijoules = 412_250, 7_200_000_123
    with NvmlProbe(client, cuda_uuid=UUID_A, pid=PID) as probe:
        r = probe.read()
        assert (r.power_watts, r.energy_joules) == (412.25, 7_200_000.123)
        client.gpus[0].energy_millijoules += 5_000
        assert probe.read().energy_joules == pytest.approx(7_200_005.123)


def test_unsupported_power_and_energy_are_none_not_zero(client: FakeNvmlClient) -> None:
    client.gpus[0].power_milliwatts = client.gpus[0].energy_millijoules = None
    with NvmlProbe(client, cuda_uuid=UUID_A, pid=PID) as probe:
        r = probe.read()
    assert r.power_watts is None and r.energy_joules is None and r.memory_used_bytes == 2**30


def test_missing_library_is_unavailable_with_nvml_message() -> None:
    client = FakeNvmlClient([], library_missing=True)
    with pytest.raises(ProbeUnavailable, match="NVML Shared Library Not Found") as info:
        NvmlProbe(client).open()
    assert isinstance(info.value.__cause__, NvmlError)
    assert info.value.__cause__.code == NVML_ERROR_LIBRARY_NOT_FOUND


def test_unknown_uuid_is_unavailable_and_shuts_nvml_down(client: FakeNvmlClient) -> None:
    with pytest.raises(ProbeUnavailable, match="GPU-cccc.*NVML sees") as info:
        NvmlProbe(client, cuda_uuid="GPU-cccc").open()
    assert UUID_A in str(info.value) and UUID_B in str(info.value)
    assert client.initialized == 0


def test_index_out_of_range_is_unavailable(client: FakeNvmlClient) -> None:
    with pytest.raises(ProbeUnavailable, match="index 5 out of range; NVML sees 2"):
        NvmlProbe(client, cuda_index=5).open()
    assert client.initialized == 0


def test_failing_listing_is_unavailable(client: FakeNvmlClient) -> None:
    client.errors["device_count"] = NvmlError(NVML_ERROR_UNINITIALIZED, "Uninitialized")
    with pytest.raises(ProbeUnavailable, match="could not list GPUs: Uninitialized"):
        NvmlProbe(client, cuda_uuid=UUID_A).open()
    assert client.initialized == 0


def test_read_before_open_is_unavailable(client: FakeNvmlClient) -> None:
    with pytest.raises(ProbeUnavailable, match="before open"):
        NvmlProbe(client, cuda_uuid=UUID_A).read()


@pytest.mark.parametrize("call", ["memory_info", "utilization_rates", "compute_processes", "power_usage",
                                  "total_energy"])
def test_lost_gpu_on_read_is_unavailable(client: FakeNvmlClient, call: str) -> None:
    with NvmlProbe(client, cuda_uuid=UUID_A, pid=PID) as probe:
        client.errors[call] = NvmlError(NVML_ERROR_GPU_IS_LOST, "GPU is lost")
        with pytest.raises(ProbeUnavailable, match=f"GPU 0 \\({UUID_A}\\).*GPU is lost"):
            probe.read()
        del client.errors[call]
        assert probe.read().memory_used_bytes == 2**30  # a later read works again


def test_close_is_idempotent_and_quiet(client: FakeNvmlClient) -> None:
    probe = NvmlProbe(client, cuda_uuid=UUID_A)
    probe.open()
    probe.open()  # already open: NVML is not initialised twice
    client.errors["shutdown"] = NvmlError(NVML_ERROR_UNINITIALIZED, "Uninitialized")
    probe.close()
    probe.close()
    assert (client.init_calls, client.shutdown_calls) == (1, 1)
    with pytest.raises(ProbeUnavailable):
        probe.read()


# -- PynvmlClient: the adapter over a patched pynvml, then the real library --------------------------


@pytest.fixture
def patched_pynvml(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    import pynvml

    calls = SimpleNamespace(shutdown=0)

    def not_supported(handle: object) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def shutdown() -> None:
        calls.shutdown += 1

    fakes = {
        "nvmlInit": lambda: None, "nvmlShutdown": shutdown, "nvmlDeviceGetCount": lambda: 2,
        "nvmlDeviceGetHandleByIndex": lambda i: f"h{i}",
        "nvmlDeviceGetUUID": lambda h: {"h0": UUID_A, "h1": UUID_B.encode()}[h],
        "nvmlDeviceGetName": lambda h: b"NVIDIA H100",
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=100, used=40, free=60),
        "nvmlDeviceGetUtilizationRates": not_supported,
        "nvmlDeviceGetComputeRunningProcesses":
            lambda h: [SimpleNamespace(pid=PID, usedGpuMemory=30), SimpleNamespace(pid=1, usedGpuMemory=5)],
        "nvmlDeviceGetPowerUsage": lambda h: 300_500,  # mW
        "nvmlDeviceGetTotalEnergyConsumption": not_supported,
    }
    for name, fn in fakes.items():
        monkeypatch.setattr(pynvml, name, fn)
    return calls


def test_pynvml_client_adapts_pynvml(patched_pynvml: SimpleNamespace) -> None:
    with NvmlProbe(PynvmlClient(), cuda_uuid=UUID_B, pid=PID) as probe:
        r = probe.read()
    assert (r.index, r.uuid, r.name) == (1, UUID_B, "NVIDIA H100")  # bytes decoded
    assert (r.memory_total_bytes, r.memory_used_bytes, r.process_memory_bytes) == (100, 40, 30)
    assert r.utilization_ratio is None  # pynvml's NVMLError_NotSupported became NvmlError(3)
    assert r.power_watts == 300.5 and r.energy_joules is None
    assert patched_pynvml.shutdown == 1


def test_pynvml_client_translates_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    client = PynvmlClient()
    with pytest.raises(NvmlError, match="not initialized") as info:
        client.device_count()
    assert info.value.code == NVML_ERROR_UNINITIALIZED
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    client.init()

    def lost() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lost)
    with pytest.raises(NvmlError, match="GPU is lost") as info:
        client.device_count()
    assert info.value.code == NVML_ERROR_GPU_IS_LOST
    assert NVML_ERROR_NOT_SUPPORTED == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert NVML_VALUE_NOT_AVAILABLE == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value


def test_pynvml_not_installed_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    with pytest.raises(ProbeUnavailable, match="pip install nvidia-ml-py"):
        NvmlProbe(PynvmlClient()).open()


def test_real_nvml_without_a_gpu_is_unavailable() -> None:
    probe = NvmlProbe(PynvmlClient())
    try:
        probe.open()
    except ProbeUnavailable as e:
        assert str(e).startswith("NVML unavailable:") or "UUID" in str(e) or "index" in str(e)
        return
    probe.close()
    pytest.skip("an NVIDIA driver is present here, so NVML opened")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_probe_reads_the_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_module, "cuda_device_uuid", cuda_device_uuid)
    block = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda:0")
    torch.cuda.synchronize()
    with NvmlProbe(PynvmlClient(), cuda_index=0) as probe:
        r = probe.read()
    assert r.uuid == cuda_device_uuid(0)
    assert 0 < r.memory_used_bytes <= r.memory_total_bytes
    cuda_total = torch.cuda.get_device_properties(0).total_memory  # excludes a driver reservation
    assert abs(r.memory_total_bytes - cuda_total) < 0.05 * cuda_total
    assert r.utilization_ratio is None or 0.0 <= r.utilization_ratio <= 1.0
    # None where NVML can't tell (e.g. a container's pid namespace); else it covers our tensors.
    assert r.process_memory_bytes is None or r.process_memory_bytes >= block.numel()
