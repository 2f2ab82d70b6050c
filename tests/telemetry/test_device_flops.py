"""The dense peak table by the names NVML reports, and the matmul dtype of a run."""

from __future__ import annotations

import pytest

from llmops.telemetry.device_flops import PEAKS, find_peak, matmul_dtype, peak_flops

T = 1e12


@pytest.mark.parametrize(("nvml_name", "dtype", "expected"), [
    ("NVIDIA A100-SXM4-80GB", "bf16", 312 * T), ("NVIDIA A100-PCIE-40GB", "tf32", 156 * T),
    ("NVIDIA A100 80GB PCIe", "fp32", 19.5 * T),
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5 * T), ("NVIDIA H100 PCIe", "bf16", 756.5 * T),
    ("NVIDIA H100 PCIe", "tf32", 378 * T), ("NVIDIA H200", "fp16", 989.5 * T),
    ("NVIDIA L40S", "bf16", 362.05 * T), ("NVIDIA L4", "bf16", 121 * T), ("NVIDIA L4", "fp32", 30.3 * T),
    ("NVIDIA GeForce RTX 4090", "fp16", 165.15 * T),
    ("Tesla V100-SXM2-16GB", "fp16", 125 * T), ("Tesla V100-PCIE-32GB", "fp16", 112 * T),
    ("Tesla V100-SXM2-32GB", "tf32", 15.7 * T),  # no TF32 on Volta: fp32 matmuls run at the FP32 peak
    ("Tesla V100-SXM2-32GB", "bf16", None),  # no BF16 tensor cores
    ("NVIDIA A10G", "bf16", None),  # no datasheet found: absent, not guessed
    ("NVIDIA H100 NVL", "bf16", None), ("NVIDIA L40", "bf16", None), ("Tesla T4", "fp16", None),
    ("", "bf16", None), (None, "bf16", None),
])
def test_peaks_by_nvml_name(nvml_name, dtype, expected):
    assert peak_flops(nvml_name, dtype) == expected


def test_l4_is_not_l40s_and_every_figure_is_dense():
    assert find_peak("NVIDIA L4").name == "L4" and find_peak("NVIDIA L40S").name == "L40S"
    for _, peak in PEAKS:
        figures = [v for v in (peak.bf16, peak.fp16, peak.tf32, peak.fp32) if v is not None]
        assert all(1e12 < v < 2e15 for v in figures), peak  # no sparse 1,979 TFLOPS figures
        if peak.bf16 and peak.fp32:
            assert peak.bf16 > peak.fp32


@pytest.mark.parametrize(("precision", "matmul", "dtype"), [
    ("bf16-mixed", "highest", "bf16"), ("bf16-true", "highest", "bf16"), ("16-mixed", "highest", "fp16"),
    ("32-true", "highest", "fp32"), ("32-true", "high", "tf32"), ("32", "medium", "tf32"),
])
def test_matmul_dtype(precision, matmul, dtype):
    assert matmul_dtype(precision, matmul) == dtype


def test_unknown_dtype_raises():
    with pytest.raises(ValueError, match="dtype='int8'"):
        peak_flops("NVIDIA H100 PCIe", "int8")
