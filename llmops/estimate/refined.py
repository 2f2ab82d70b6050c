"""The refined model: what a real run holds, beside the document model (never instead).

Counts model states by optimizer, precision and sharding; activations with the variants
formulas.md §4 lists (fused attention, recomputation, dropout on/off, grouped-query
attention, MLP widths and gating, experts), the logits and loss, dropout masks by device,
and a fixed overhead.

Each activation term names the tensor autograd keeps, with the dtype PyTorch gives it; they
were read off the saved tensors of real CPU steps (``bench/accuracy.py`` measures them). The
two devices differ in what their measurement sees: on the CPU the monitor counts the states
and the tensors the forward pass saves for backward; on CUDA the allocator's peak also holds
what lives only around that moment (the logits, the recomputed layer, the optimizer's
temporaries), so ``device="cuda"`` adds those.
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
FP32 = 4
TOKEN_ID_BYTES = 8  # int64 token ids, kept by the embedding's backward and the loss's
_NORM_STATS = 2  # a layer norm keeps its mean and 1/std per token
ADAM_FAMILY = ("adamw", "adam", "adamw-amsgrad", "adam-amsgrad")


def _autocast(spec: TrainingSpec) -> bool:
    """Lightning's ``*-mixed``: fp32 weights, compute under ``torch.autocast``."""
    return get_precision(spec.precision).name.endswith("-mixed")


def _mask(spec: TrainingSpec, value_bytes: Fraction | int) -> Fraction:
    """Bytes per dropout-mask value: CUDA's fused dropout keeps a bool mask; the CPU's keeps a
    mask of the dropped tensor's dtype (``input * bernoulli(...)``)."""
    return Fraction(1) if spec.device == "cuda" else Fraction(value_bytes)


def layer_activation_bytes(spec: TrainingSpec, b: int, with_scores: bool) -> Fraction:
    """Bytes one transformer layer keeps for backward (formulas.md §4 table, generalised).

    Under autocast the residual stream is fp32 (the embeddings are fp32 and ``x + proj(y)``
    promotes), so the layer norms' inputs are 4 bytes while matmul inputs are the 2-byte
    copies autocast makes. Everything else is the compute dtype p.
    """
    p = get_precision(spec.precision).compute_bytes
    s, h, a = spec.seq_len, spec.hidden, spec.heads
    assert s and h and a
    autocast, cuda = _autocast(spec), spec.device == "cuda"
    r = Fraction(FP32) if autocast else p  # residual stream: layer-norm inputs
    drop = 1 if spec.dropout else 0
    h_kv = Fraction(h * (spec.kv_heads or a), a)
    f = spec.ffn_hidden or 4 * h
    # SDPA with dropout has no fused CPU kernel: PyTorch runs its math path, which keeps the
    # s×s scores as plain attention does, and upcasts 2-byte inputs to fp32 to do so.
    math_sdpa = spec.attention == "sdpa" and spec.dropout and not cuda
    q = Fraction(FP32) if math_sdpa else p  # bytes of Q, K, V as attention keeps them
    attn = p * s * b * 2 * h  # QKV input and output-projection input
    attn += q * s * b * (h + 2 * h_kv)  # Q, K, V
    attn += drop * _mask(spec, p) * s * b * h  # attention output dropout mask
    if spec.attention == "plain" or math_sdpa:
        if with_scores:
            attn += _score_bytes(spec, p if spec.attention == "plain" else q) * a * s * s * b
    else:
        attn += LOGSUMEXP_BYTES * a * s * b
    mlp_width = h + (4 * f if spec.gated_mlp else 2 * f)  # input, act. input and output (+gate, up)
    mlp = p * s * b * mlp_width * spec.experts_active
    mlp += drop * _mask(spec, p) * s * b * h
    norms = 2 * r * s * b * h
    if not cuda:  # the CPU count is exact to the tensor; on CUDA these are under the safety margin
        norms += 2 * _NORM_STATS * r * s * b  # each norm's mean and 1/std per token, residual dtype
    return (attn + mlp + norms) / spec.tensor_parallel


def _score_bytes(spec: TrainingSpec, p: Fraction) -> Fraction:
    """Bytes per s×s score value kept: softmax output, dropout output and mask.

    CUDA autocast runs softmax in fp32 (4 bytes kept) and hands ``scores @ V`` a 2-byte copy,
    which is kept too; CPU autocast keeps the softmax in the compute dtype.
    """
    drop = 1 if spec.dropout else 0
    if _autocast(spec) and spec.device == "cuda" and spec.attention == "plain":
        return FP32 + p + drop * _mask(spec, FP32)
    return (1 + drop) * p + drop * _mask(spec, p)


def weight_copy_bytes(spec: TrainingSpec) -> Fraction:
    """Autocast's 2-byte copies of the matmul weights, saved for backward: fixed, not per sample.

    ``torch.autocast`` casts each fp32 weight once per forward and the matmul keeps the copy for
    the input gradient: 2 bytes per matmul parameter (the "+2" of the 18 bytes per parameter of
    formulas.md §6). Embedding lookups and norms run in fp32 and copy nothing.
    """
    if not _autocast(spec):
        return Fraction(0)
    p = get_precision(spec.precision).compute_bytes
    h, a, L = spec.hidden, spec.heads, spec.layers
    assert h and a and L
    h_kv = Fraction(h * (spec.kv_heads or a), a)
    f = spec.ffn_hidden or 4 * h
    per_layer = h * (h + 2 * h_kv) + h * h + (3 if spec.gated_mlp else 2) * f * h * spec.experts_active
    head = (spec.vocab or 0) * h  # the output projection (tied or not) is a matmul too
    # Under full checkpointing the layers' forward saves nothing, so the CPU count keeps only the
    # head's copy; on CUDA autocast's weight cache still holds every copy until the forward ends.
    layers = 0 if spec.recompute == "full" and spec.device == "cpu" else L
    return p * (layers * per_layer + head) / spec.tensor_parallel


def head_activation_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """The final norm's input, and with ``vocab`` the output head's input and the loss:
    log-probabilities kept for backward (fp32, as cross-entropy upcasts; the compute dtype under
    ``*-true``). CUDA's peak also holds the logits and, under autocast, their fp32 copy made for
    the loss; there the head's input (h values per token, next to the logits' V) is left out."""
    prec = get_precision(spec.precision)
    p, s, h = prec.compute_bytes, spec.seq_len, spec.hidden
    assert s and h
    r = Fraction(FP32) if _autocast(spec) else p
    head = r * s * b * h
    if spec.device == "cpu":
        head += _NORM_STATS * r * s * b  # the final norm's mean and 1/std
    if spec.vocab:
        log_probs = p if prec.name.endswith("-true") else Fraction(LOSS_BYTES)
        kept = log_probs
        if spec.device == "cuda":
            kept += p + (FP32 if _autocast(spec) else 0)
        else:
            head += p * s * b * h + 2 * TOKEN_ID_BYTES * s * b  # head input; token ids and targets (int64)
        head += kept * s * b * spec.vocab
    return head


def activation_parts(spec: TrainingSpec) -> tuple[Fraction, Fraction]:
    """``(fixed, per_sample)``: activations of ``b`` samples are ``fixed + b × per_sample``."""
    p = get_precision(spec.precision).compute_bytes
    s, h, L = spec.seq_len, spec.hidden, spec.layers
    assert s and h and L
    r = Fraction(FP32) if _autocast(spec) else p
    if spec.recompute == "full":
        # keeps each layer's input; on CUDA the allocator also sees the one layer recomputed
        # at a time during backward, which the CPU's count of the forward's saved tensors does not
        layers = L * r * s * h
        if spec.device == "cuda":
            layers += layer_activation_bytes(spec, 1, with_scores=True)
    else:
        layers = L * layer_activation_bytes(spec, 1, with_scores=spec.recompute == "none")
    return weight_copy_bytes(spec), layers + head_activation_bytes(spec, 1)


def activation_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """All activations of one micro-batch of ``b`` samples, per device."""
    fixed, per_sample = activation_parts(spec)
    return fixed + b * per_sample


def optimizer_step_bytes(spec: TrainingSpec, trainable: int) -> Fraction:
    """Temporaries of the optimizer step on CUDA: PyTorch's foreach Adam(W), its default there,
    builds ``sqrt(exp_avg_sq)`` for every parameter at once (one state-sized copy). Activations
    are freed by then, so this competes with them for the peak rather than adding to it."""
    if spec.device != "cuda" or spec.optimizer not in ADAM_FAMILY:
        return Fraction(0)
    size = get_precision(spec.precision).state_bytes * trainable / spec.tensor_parallel
    return size / spec.world_size if "optimizer_states" in SHARDED[spec.strategy] else size


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
    Nt = 0
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
    fixed_act = Fraction(0)
    if absent:
        missing.append(f"activations: needs {', '.join(absent)}")
    else:
        fixed_act, act1 = activation_parts(spec)
        if spec.batch_size is None:
            missing.append("activations and peak: need batch_size")
        else:
            act = fixed_act + spec.batch_size * act1
        if spec.vocab is None:
            notes.append("logits and loss left out: vocab unknown")
    if spec.gpu_memory is None:
        missing.append("OOM verdict, largest safe batch and GPU counts: need gpu_memory")

    opt_step = optimizer_step_bytes(spec, Nt) if N is not None else Fraction(0)
    peak = states + max(act, opt_step) + overhead if states is not None and act is not None else None
    if act is not None and opt_step > act:
        notes.append("the optimizer step's temporaries, not the activations, set the peak")
    b_max = max_batch(budget, states + overhead + fixed_act if states is not None else None, act1)
    if b_max and states is not None and budget is not None and states + overhead + opt_step > budget:
        b_max = 0
    extra: dict[str, object] = {}
    if opt_step:
        extra["optimizer_step_bytes"] = _int(opt_step)
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
