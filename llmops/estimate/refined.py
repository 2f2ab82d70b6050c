"""The refined model: what a real run holds, beside the document model (never instead).

Counts model states by optimizer, precision and sharding; activations with the variants
formulas.md §4 lists (fused attention, recomputation, dropout on/off, grouped-query
attention, MLP widths and gating, experts), the logits and loss, dropout masks by device,
and a fixed overhead.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .document import _int, gpus_rule_of_thumb
from .solver import accumulate_for, max_batch, min_world_size
from .spec import OPTIMIZER_STATES, SHARDED, Estimate, TrainingSpec, validate
from .units import exact, get_precision

# CUDA context, cuBLAS/cuDNN workspaces and NCCL buffers per process: several hundred MB
# (formulas.md §4). Measured by the monitor where a GPU exists; override with overhead_bytes.
DEFAULT_OVERHEAD_BYTES = {"cuda": 500 * 10**6, "cpu": 0}
LOGSUMEXP_BYTES = 4  # fused attention keeps one fp32 log-sum-exp per head and token
LOSS_BYTES = 4  # cross-entropy upcasts logits and keeps fp32 log-probabilities


def layer_activation_bytes(spec: TrainingSpec, b: int, with_scores: bool) -> Fraction:
    """Bytes one transformer layer keeps for backward (formulas.md §4 table, generalised)."""
    p = get_precision(spec.precision).compute_bytes
    s, h, a = spec.seq_len, spec.hidden, spec.heads
    assert s and h and a
    mask = Fraction(1) if spec.device == "cuda" else p  # CPU dropout keeps a compute-dtype mask
    drop = 1 if spec.dropout else 0
    h_kv = Fraction(h * (spec.kv_heads or a), a)
    f = spec.ffn_hidden or 4 * h
    attn = p * s * b * (3 * h + 2 * h_kv)  # QKV input, Q, K, V, output-projection input
    attn += drop * mask * s * b * h  # attention output dropout mask
    if with_scores and spec.attention == "plain":
        attn += (1 + drop) * p * a * s * s * b  # softmax output (and its dropout output)
        attn += drop * mask * a * s * s * b  # softmax dropout mask
    elif spec.attention == "sdpa":
        attn += LOGSUMEXP_BYTES * a * s * b
    mlp_width = h + (4 * f if spec.gated_mlp else 2 * f)  # input, act. input and output (+gate, up)
    mlp = p * s * b * mlp_width * spec.experts_active
    mlp += drop * mask * s * b * h
    norms = 2 * p * s * b * h
    return (attn + mlp + norms) / spec.tensor_parallel


def activation_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """All activations of one micro-batch of ``b`` samples, per device."""
    p = get_precision(spec.precision).compute_bytes
    s, h, L = spec.seq_len, spec.hidden, spec.layers
    assert s and h and L
    if spec.recompute == "full":  # keeps each layer's input; recomputes one layer at a time
        layers = L * p * s * b * h + layer_activation_bytes(spec, b, with_scores=True)
    else:
        layers = L * layer_activation_bytes(spec, b, with_scores=spec.recompute == "none")
    head = p * s * b * h  # final norm input
    if spec.vocab:
        head += (p + LOSS_BYTES) * s * b * spec.vocab  # logits and fp32 log-probabilities
    return layers + head


def refined(spec: TrainingSpec) -> Estimate:
    """The project's best prediction for ``spec``, per device."""
    validate(spec)
    prec = get_precision(spec.precision)
    missing: list[str] = []
    notes: list[str] = []
    N = spec.params
    n, t = spec.world_size, spec.tensor_parallel
    sharded = SHARDED[spec.strategy]
    overhead = Fraction(
        spec.overhead_bytes if spec.overhead_bytes is not None else DEFAULT_OVERHEAD_BYTES[spec.device]
    )
    budget = exact(spec.safety) * spec.gpu_memory if spec.gpu_memory else None

    full: dict[str, Fraction] = {}
    if N is None:
        missing.append("weights, model states and GPU counts: need params")
    else:
        Nt = spec.trainable_params if spec.trainable_params is not None else N
        moments = OPTIMIZER_STATES[spec.optimizer]
        full = {
            "params": prec.param_bytes * N / t,
            "grads": prec.grad_bytes * Nt / t,
            "optimizer_states": (4 * prec.master_copy + moments * prec.state_bytes) * Nt / t,
        }
        if N != Nt:
            notes.append(f"{N - Nt:,} frozen parameters hold no gradients or optimizer states")
    per_device = {k: v / n if k in sharded else v for k, v in full.items()}
    states = sum(per_device.values()) if per_device else None

    dims = {"layers": spec.layers, "seq_len": spec.seq_len, "hidden": spec.hidden, "heads": spec.heads}
    absent = [k for k, v in dims.items() if v is None]
    act1 = act = None
    if absent:
        missing.append(f"activations: needs {', '.join(absent)}")
    else:
        act1 = activation_bytes(spec, 1)
        if spec.batch_size is None:
            missing.append("activations and peak: need batch_size")
        else:
            act = activation_bytes(spec, spec.batch_size)
        if spec.vocab is None:
            notes.append("logits and loss left out: vocab unknown")
    if spec.gpu_memory is None:
        missing.append("OOM verdict, largest safe batch and GPU counts: need gpu_memory")

    peak = states + act + overhead if states is not None and act is not None else None
    b_max = max_batch(budget, states + overhead if states is not None else None, act1)
    extra: dict[str, object] = {}
    gpus_train = gpus_infer = None
    if N is not None and budget is not None:
        fixed = overhead + (act if act is not None else 0)
        replicated = sum(v for k, v in full.items() if k not in sharded)
        gpus_train = min_world_size(budget - fixed, replicated, sum(full.values()) - replicated)
        if gpus_train is None:
            notes.append(f"no world size fits under {spec.strategy}: "
                         + ("it replicates the model states on every GPU; shard them (zero3/fsdp)"
                            if not sharded else "the unsharded part alone exceeds the budget"))
        gpus_infer = _ceil_div(prec.compute_bytes * N, budget - overhead)
        extra["gpus_training_fsdp"] = min_world_size(budget - fixed, 0, sum(full.values()))
        extra["gpus_training_rule_of_thumb"] = gpus_rule_of_thumb(N, spec.gpu_memory)[0]  # type: ignore[arg-type]
    return Estimate(
        model="refined",
        inference_bytes=_int(prec.compute_bytes * N if N is not None else None),
        params_bytes=_int(per_device.get("params")),
        grads_bytes=_int(per_device.get("grads")),
        optimizer_state_bytes=_int(per_device.get("optimizer_states")),
        activation_bytes=_int(act),
        overhead_bytes=_int(overhead),
        peak_bytes=_int(peak),
        budget_bytes=_int(budget),
        gpus_training=gpus_train,
        gpus_inference=gpus_infer,
        max_batch_size=b_max,
        accumulate=accumulate_for(spec.global_batch, b_max, n),
        oom_risk=None if peak is None or budget is None else peak > budget,
        missing=tuple(missing),
        notes=tuple(notes),
        extra=extra,
    )


def _ceil_div(num: Fraction, den: Fraction) -> int | None:
    return math.ceil(num / den) if den > 0 else None
