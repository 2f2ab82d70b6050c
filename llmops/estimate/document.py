"""The document model: formulas.md sections 2–6 computed exactly as written, per device."""

from __future__ import annotations

import math
from fractions import Fraction

from llmops.estimate.result import Estimate
from llmops.estimate.solver import accumulate_for, max_batch
from llmops.spec.choices import SHARDED
from llmops.spec.training import TrainingSpec, validate
from llmops.units import bytes_per_value, exact

ADAM_FP32_STATE_BYTES = 12  # fp32 master copy + first moment + second moment: 4 + 4 + 4 (§3)
RULE_BYTES_PER_PARAM = 18  # everything kept in training, per parameter (§6)
RULE_ACTIVATION_FACTOR = Fraction(5, 4)  # 1.25: adds the activations (§6)
INFERENCE_DIVISOR = 8  # inference needs 1/8–1/9 of training; 8 is the cautious end (§6)


def inference_bytes(n_params: int, precision: str) -> Fraction:
    """§2: ``N × bytes(precision)``."""
    return n_params * bytes_per_value(precision)


def model_state_bytes(n_params: int, x: Fraction, y: Fraction) -> Fraction:
    """§3: ``(x + y + 12) × N``."""
    return (x + y + ADAM_FP32_STATE_BYTES) * n_params


def activation_bytes(L: int, b: int, s: int, h: int, a: int, p: Fraction) -> Fraction:
    """§4, Korthikanti et al. (2022): ``L·b·s·h·p·[16 + 2/p + (a·s/h)·(2 + 1/p)]``."""
    p = exact(p)
    return L * b * s * h * p * (16 + 2 / p + Fraction(a * s, h) * (2 + 1 / p))


def model_state_parts(n_params: int, x: Fraction, y: Fraction, strategy: str, n: int) -> dict[str, int]:
    """§3 per device: ``x·N``, ``y·N`` and ``12·N``, each divided by ``n`` where ``strategy`` shards it
    (ZeRO-1 the optimizer states, ZeRO-2 also the gradients, ZeRO-3 / FSDP all three), in whole bytes."""
    full = {"params": x * n_params, "grads": y * n_params,
            "optimizer_states": Fraction(ADAM_FP32_STATE_BYTES * n_params)}
    # rounded up per component: a shard, like a tensor, occupies whole bytes; their sum is then the
    # model-state figure itself, so peak = model states + activations holds to the byte
    return {k: math.ceil(v / n if k in SHARDED[strategy] else v) for k, v in full.items()}


def gpus_rule_of_thumb(n_params: int, gpu_memory_bytes: int) -> tuple[int, int, Fraction]:
    """§6: ``N[B] × 18 × 1.25 / GPU[GB]``, rounded up; inference is ``ceil(raw / 8)``."""
    raw = Fraction(n_params, 10**9) * RULE_BYTES_PER_PARAM * RULE_ACTIVATION_FACTOR
    raw /= Fraction(gpu_memory_bytes) / 10**9  # exact for an int or a float such as 8e9
    return math.ceil(raw), math.ceil(raw / INFERENCE_DIVISOR), raw


def document(spec: TrainingSpec) -> Estimate:
    """Every formula of formulas.md §2–6 with x = y = p = bytes of ``spec.precision``; bytes per device,
    model states divided by ``spec.world_size`` as ``spec.strategy`` shards them (§3, §5)."""
    validate(spec)
    p = bytes_per_value(spec.precision)
    N, missing = spec.params, []
    dims = {"layers": spec.layers, "batch_size": spec.batch_size, "seq_len": spec.seq_len,
            "hidden": spec.hidden, "heads": spec.heads}
    absent = [k for k, v in dims.items() if v is None]
    act1 = None
    if absent:
        missing.append(f"activations: needs {', '.join(absent)}")
    else:
        act1 = activation_bytes(spec.layers, 1, spec.seq_len, spec.hidden, spec.heads, p)  # type: ignore[arg-type]
    if N is None:
        missing.append("weights, model states and GPU counts: need params")
    if spec.gpu_memory is None:
        missing.append("OOM verdict, largest safe batch and GPU counts: need gpu_memory")

    parts = model_state_parts(N, p, p, spec.strategy, spec.world_size) if N is not None else None
    states = sum(parts.values()) if parts is not None else None
    act = act1 * spec.batch_size if act1 is not None and spec.batch_size else None
    peak = states + act if states is not None and act is not None else None
    budget = exact(spec.safety) * spec.gpu_memory if spec.gpu_memory else None
    b_max = max_batch(budget, states, act1)
    gpus_train = gpus_infer = None
    if N is not None and spec.gpu_memory:
        gpus_train, gpus_infer, _ = gpus_rule_of_thumb(N, spec.gpu_memory)
    return Estimate(
        model="document",
        inference_bytes=_int(inference_bytes(N, spec.precision) if N is not None else None),
        params_bytes=parts["params"] if parts is not None else None,
        grads_bytes=parts["grads"] if parts is not None else None,
        optimizer_state_bytes=parts["optimizer_states"] if parts is not None else None,
        activation_bytes=_int(act),
        overhead_bytes=0,
        peak_bytes=_int(peak),
        budget_bytes=_int(budget),
        gpus_training=gpus_train,
        gpus_inference=gpus_infer,
        max_batch_size=b_max,
        accumulate=accumulate_for(spec.global_batch, b_max, spec.world_size),
        oom_risk=None if peak is None or budget is None else peak > budget,
        missing=tuple(missing),
    )


def _int(value: Fraction | int | None) -> int | None:
    """Bytes as a whole number, rounded up (a fraction of a byte still occupies one)."""
    return None if value is None else math.ceil(value)
