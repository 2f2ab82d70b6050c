"""Dense peak FLOP/s of GPUs by the name NVML reports, per matmul dtype; imports no torch.

Figures are the vendor's dense (no 2:4 sparsity) tensor-core peaks at boost clock: where a
datasheet prints "with sparsity" figures, half of them. ``None`` where the device has no such
mode or no source was found; the MFU is then absent unless ``peak_flops=`` gives one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DTYPES = ("bf16", "fp16", "tf32", "fp32")
T = 1e12


@dataclass(frozen=True)
class Peak:
    """One device's dense peaks in FLOP/s; ``None``: no such mode, or not known."""

    name: str
    bf16: float | None
    fp16: float | None
    tf32: float | None
    fp32: float | None

    def for_dtype(self, dtype: str) -> float | None:
        """The peak for a matmul dtype; TF32 falls back to FP32 where the device has no TF32 (it runs FP32)."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
        value: float | None = getattr(self, dtype)
        return self.fp32 if value is None and dtype == "tf32" else value


# (pattern searched in the NVML name, case-insensitive; first match wins) -> peaks.
PEAKS: tuple[tuple[str, Peak], ...] = (
    # NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4), as tabulated at
    # glennklockwood.com/garden/processors/A100: FP32 19.5, TF32 156, BF16/FP16 312 TFLOPS dense;
    # the same for SXM4 and PCIe, 40 and 80 GB.
    (r"\bA100\b", Peak("A100", bf16=312 * T, fp16=312 * T, tf32=156 * T, fp32=19.5 * T)),
    # NVIDIA H100 datasheet (SXM and PCIe columns, as reproduced at archive-lib.hpctech.co.jp/gpuproduct/
    # nvidia-h100.html): TF32 989* / 756*, BF16 and FP16 1,979* / 1,513* TFLOPS "with sparsity,
    # specifications 1/2 lower without"; FP32 67 / 51. NVL boards have other clocks: not listed.
    (r"\bH100\b.*\bNVL\b", Peak("H100 NVL", None, None, None, None)),
    (r"\bH100\b.*\bPCIe\b", Peak("H100 PCIe", bf16=756.5 * T, fp16=756.5 * T, tf32=378 * T, fp32=51 * T)),
    (r"\bH100\b", Peak("H100 SXM", bf16=989.5 * T, fp16=989.5 * T, tf32=494.5 * T, fp32=67 * T)),
    # H200 SXM: the H100 SXM's GH100 compute with more memory; NVIDIA's H200 figures as summarised at
    # itkb.uw.cz (2026-06, "dense mode": FP16/BF16 ~989 TFLOPS) and glennklockwood.com (same as H100 SXM).
    (r"\bH200\b.*\bNVL\b", Peak("H200 NVL", None, None, None, None)),
    (r"\bH200\b", Peak("H200", bf16=989.5 * T, fp16=989.5 * T, tf32=494.5 * T, fp32=67 * T)),
    # NVIDIA L40S datasheet table (as reproduced at mullet.se, product 355414): FP32 91.6; TF32 183 | 366*;
    # BF16 and FP16 362.05 | 733* TFLOPS (* with sparsity).
    (r"\bL40S\b", Peak("L40S", bf16=362.05 * T, fp16=362.05 * T, tf32=183 * T, fp32=91.6 * T)),
    # NVIDIA L4 datasheet: FP32 30.3 TFLOPS, TF32 120* and BF16/FP16 242* TFLOPS with sparsity
    # (store.sourcecode.com compare table; grokipedia "NVIDIA L4 vs L40S": 242 FP16 with sparsity).
    (r"\bL4\b", Peak("L4", bf16=121 * T, fp16=121 * T, tf32=60 * T, fp32=30.3 * T)),
    # A10G: AWS's variant of the A10 with different tensor throughput (baseten.co, "NVIDIA A10 vs A10G");
    # NVIDIA publishes no A10G datasheet and the third-party figures found disagree: not listed.
    (r"\bA10G\b", Peak("A10G", None, None, None, None)),
    # GeForce RTX 4090 (NVIDIA Ada whitepaper figures, as tabulated at waredb.com): FP16 and BF16 tensor
    # 165.15 dense with FP32 accumulate (what PyTorch uses), TF32 82.58, FP32 82.58 TFLOPS.
    (r"\bRTX 4090\b", Peak("GeForce RTX 4090", bf16=165.15 * T, fp16=165.15 * T, tf32=82.58 * T,
                           fp32=82.58 * T)),
    # Tesla V100 datasheet: SXM2 FP32 15.7 and Tensor (FP16) 125 TFLOPS; PCIe FP32 14 and Tensor 112
    # (developer.nvidia.com "Programming Tensor Cores in CUDA 9": 125 Tensor TFLOPS; io-tech.fi on the PCIe
    # card: 14 FP32, 112 Tensor). Volta has no BF16 or TF32 tensor cores.
    (r"\bV100-SXM2\b", Peak("V100 SXM2", bf16=None, fp16=125 * T, tf32=None, fp32=15.7 * T)),
    (r"\bV100-PCIE\b", Peak("V100 PCIe", bf16=None, fp16=112 * T, tf32=None, fp32=14 * T)),
)


def find_peak(gpu_name: str | None) -> Peak | None:
    """The table's entry for a GPU name as NVML reports it (``NVIDIA H100 80GB HBM3``), or ``None``."""
    if not gpu_name:
        return None
    for pattern, peak in PEAKS:
        if re.search(pattern, gpu_name, re.IGNORECASE):
            return peak
    return None


def peak_flops(gpu_name: str | None, dtype: str) -> float | None:
    """Dense peak FLOP/s of ``gpu_name`` for matmuls in ``dtype``; ``None`` when unknown."""
    peak = find_peak(gpu_name)
    return peak.for_dtype(dtype) if peak is not None else None


def matmul_dtype(precision: str, float32_matmul_precision: str = "highest") -> str:
    """The dtype a run's matmuls use, from Lightning's precision (``bf16-mixed``, ``32-true``, ...) and
    ``torch.get_float32_matmul_precision()`` (``high``/``medium`` let fp32 matmuls run as TF32)."""
    p = str(precision)
    if p.startswith("bf16"):
        return "bf16"
    if p.startswith("16"):
        return "fp16"
    return "fp32" if float32_matmul_precision == "highest" else "tf32"
