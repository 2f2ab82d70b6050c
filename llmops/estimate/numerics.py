"""The dtype and bytes each tensor family is kept in (autocast, the residual stream, masks, experts) and
the fixed overhead per process; pure math.
"""

from __future__ import annotations

from fractions import Fraction

from llmops.estimate.peak import (
    FP32,
)
from llmops.spec.training import (
    TrainingSpec,
)
from llmops.units import get_precision

# CUDA context, cuBLAS/cuDNN workspaces and NCCL buffers per process: several hundred MB
# (formulas.md §4). Measured by the monitor where a GPU exists; override with overhead_bytes.
DEFAULT_OVERHEAD_BYTES = {"cuda": 500 * 10**6, "cpu": 0}


LOGSUMEXP_BYTES = 4  # fused attention keeps one fp32 log-sum-exp per head and token


TOKEN_ID_BYTES = 8  # int64 token ids, kept by the embedding's backward and the loss's


NORM_STATS = 2  # a layer norm keeps its mean and 1/std per token


def autocast_on(spec: TrainingSpec) -> bool:
    """Lightning's ``*-mixed``: fp32 weights, compute under ``torch.autocast``."""
    return get_precision(spec.precision).name.endswith("-mixed")


def residual_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per value of the residual stream: fp32 under autocast (the embeddings are fp32 and
    ``x + proj(y)`` promotes), else the compute dtype."""
    return Fraction(FP32) if autocast_on(spec) else get_precision(spec.precision).compute_bytes


def uncast_experts(spec: TrainingSpec) -> bool:
    """Under autocast, fused expert stacks run by ``grouped_mm`` stay in fp32: autocast has no rule for
    ``aten._grouped_mm``, so the fp32 stacks and the fp32 residual stream go in as they are (no 2-byte copies)."""
    return autocast_on(spec) and spec.stacked_experts and spec.experts_implementation == "grouped_mm"


def expert_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per value the experts compute in: fp32 where autocast does not cast them, else the compute dtype."""
    return Fraction(FP32) if uncast_experts(spec) else get_precision(spec.precision).compute_bytes


def mask_bytes(spec: TrainingSpec, value_bytes: Fraction | int) -> Fraction:
    """Bytes per dropout-mask value: CUDA's fused dropout keeps a bool mask; the CPU's keeps a
    mask of the dropped tensor's dtype (``input * bernoulli(...)``)."""
    return Fraction(1) if spec.device == "cuda" else Fraction(value_bytes)
