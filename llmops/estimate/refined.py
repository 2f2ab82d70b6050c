"""The refined model: what a real run holds, beside the document model (never instead).

Counts model states by optimizer, precision and sharding; activations with the variants
formulas.md §4 lists (fused attention, recomputation, dropout on/off, grouped-query
attention, MLP widths and gating, experts), the logits and loss, dropout masks by device,
and a fixed overhead.

Each activation term names the tensor autograd keeps, with the dtype PyTorch gives it; they
were read off the saved tensors of real CPU steps. The peak is the largest of the step's
moments (``peak.py``: the forward with the last step's gradients and the logits alive, the
loss's backward, the optimizer step), the same on both devices: what ``max_memory_allocated``
reads. ``bench/accuracy.py`` measures it against ``torch.profiler``'s allocation events.
"""

from __future__ import annotations

import math
from fractions import Fraction

from llmops.estimate.activations import activation_parts, rebuild, weight_cache_bytes
from llmops.estimate.document import _int, gpus_rule_of_thumb
from llmops.estimate.experts import computing, gathered_expert_bytes
from llmops.estimate.layer import held
from llmops.estimate.lora import adapter_params, widened
from llmops.estimate.numerics import DEFAULT_OVERHEAD_BYTES
from llmops.estimate.peak import (
    FP32,
    max_batch_moments,
    peak_moment,
)
from llmops.estimate.quant import quantized_bytes, quantized_weights
from llmops.estimate.result import Estimate
from llmops.estimate.sharding import gathered
from llmops.estimate.solver import accumulate_for, min_world_size
from llmops.spec.choices import EIGHT_BIT_BLOCK, EIGHT_BIT_OPTIMIZERS, OPTIMIZER_STATES, SHARDED
from llmops.spec.training import TrainingSpec, validate
from llmops.units import exact, fmt_bytes, get_precision


def refined(spec: TrainingSpec) -> Estimate:
    """The project's best prediction for ``spec``, per device."""
    validate(spec)
    prec = get_precision(spec.precision)
    missing: list[str] = []
    notes: list[str] = []
    if spec.unmodelled:  # never a silently low figure: the dry run decides where it ran
        notes.append(f"the refined model does not model {'; '.join(spec.unmodelled)}: its figure may be low")
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
        if spec.trainable_params is None and spec.lora_rank is not None and spec.layers and spec.hidden:
            Nt = adapter_params(spec, spec.lora_rank, spec.lora_targets)  # the adapters; the base is frozen
        moments = OPTIMIZER_STATES[spec.optimizer]
        full = {
            # quantised block linears in their storage bytes, everything else in the parameter dtype
            "params": (prec.param_bytes * (N - quantized_weights(spec)) + quantized_bytes(spec)) / t,
            "grads": prec.grad_bytes * Nt / t,
            "optimizer_states": (4 * prec.master_copy + moments * _state_bytes(spec)) * Nt / t,
        }
        if N != Nt:
            notes.append(f"{N - Nt:,} frozen parameters hold no gradients or optimizer states")
    notes += widened(spec)
    gathered_bytes = gathered_expert_bytes(spec, spec.batch_size or 0)
    if gathered_bytes:
        notes.append(f"batched_mm experts keep k experts' weights per token: {fmt_bytes(gathered_bytes)} a layer "
                     "(grouped_mm keeps none)")
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

    moment = None
    if states is not None and act is not None and spec.batch_size is not None:
        moment = peak_moment(spec, per_device, act, spec.batch_size, Nt, rebuild(spec, spec.batch_size),
                             weight_cache_bytes(spec), gathered(spec), held(spec, spec.batch_size),
                             computing(spec, spec.batch_size))
    peak = moment.total + overhead if moment is not None else None
    b_max = None
    if budget is not None and states is not None and act1 is not None:
        b_max = max_batch_moments(spec, per_device, (fixed_act, act1), Nt,
                                  (rebuild(spec, 0), rebuild(spec, 1)),
                                  budget - overhead, weight_cache_bytes(spec), gathered(spec),
                                  (held(spec, 0), held(spec, 1)), (computing(spec, 0), computing(spec, 1)))
    if moment is not None and moment.phase != "forward":
        notes.append(f"the peak falls in the {'optimizer step' if moment.phase == 'optimizer' else 'backward'}")
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
        params_bytes=_int(moment.params if moment else per_device.get("params")),
        grads_bytes=_int(moment.grads if moment else per_device.get("grads")),
        optimizer_state_bytes=_int(moment.optimizer_states if moment else per_device.get("optimizer_states")),
        activation_bytes=_int(moment.activations if moment else act),
        temporary_bytes=_int(moment.temporaries if moment else None),
        overhead_bytes=_int(overhead),
        peak_phase=moment.phase if moment else None,
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


def _state_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per optimizer-state value: the precision's, or bitsandbytes' 8 bits plus its block absmax."""
    if spec.optimizer in EIGHT_BIT_OPTIMIZERS:
        return 1 + Fraction(FP32, EIGHT_BIT_BLOCK)
    return get_precision(spec.precision).state_bytes


def _ceil_div(num: Fraction, den: Fraction) -> int | None:
    return math.ceil(num / den) if den > 0 else None
