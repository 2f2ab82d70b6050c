"""A mixture of experts' terms: the expert weights a batch gathers, the merged stacks LoRA keeps, and the
MLP gradients grouped_mm makes at once.
"""

from __future__ import annotations

from fractions import Fraction

from llmops.estimate.lora import MLP, adapters
from llmops.estimate.numerics import autocast_on, expert_bytes
from llmops.estimate.peak import (
    Computing,
)
from llmops.estimate.quant import dequantized_bytes
from llmops.spec.blocks import block_linears
from llmops.spec.training import TrainingSpec
from llmops.units import get_precision


def gathers_experts(spec: TrainingSpec) -> bool:
    """Fused expert stacks run by ``batched_mm``, which gathers their weights per (token, expert) pair."""
    return spec.experts > 1 and spec.stacked_experts and spec.experts_implementation == "batched_mm"


def _gathered_weights(spec: TrainingSpec, b: int) -> tuple[int, int]:
    """``(all, down)``: expert weights transformers 5's ``batched_mm`` gathers per layer, one copy per (token,
    expert) pair (``gate_up_proj[expert_ids]``, then ``down_proj[expert_ids]``), and the down projection's
    share of them; (0, 0) for the other implementations, which gather no weights."""
    if not gathers_experts(spec):
        return 0, 0
    pairs = (spec.seq_len or 0) * b * spec.experts_active
    mlp = {m: i * o for m, (i, o, _) in block_linears(spec, 1).items() if m in MLP}
    return pairs * sum(mlp.values()), pairs * mlp["down"]


def gathered_expert_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """What ``batched_mm`` experts keep: each batched matmul its gathered weights, for the input's gradient,
    in the dtype it runs (autocast's 2-byte copy): k experts' weights per token, per layer."""
    return get_precision(spec.precision).compute_bytes * _gathered_weights(spec, b)[0]


def computing(spec: TrainingSpec, b: int) -> Computing:
    """What one layer holds only while it computes, beside the activations (``peak.moments``). In forward:
    the largest quantised layer's dequantised weight (``quant.dequantized_bytes``); and under autocast,
    ``batched_mm`` experts' weights gathered in their stored dtype, which the cast frees only after the next
    gather: at the last layer's down projection, its gate/up and down weights gathered, the down ones not yet
    cast (the casts are in ``gathered_expert_bytes``). In backward, ``mlp_grad_bytes``."""
    prec = get_precision(spec.precision)
    weights, down = _gathered_weights(spec, b)
    stored = prec.param_bytes * weights - prec.compute_bytes * down if autocast_on(spec) else 0
    return Computing(forward=(dequantized_bytes(spec), Fraction(stored)), backward=mlp_grad_bytes(spec, b))


def mlp_grad_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """The last layer's MLP in backward: the gradients of its down projection's input and of its gate and up
    outputs at once (3f values a token; 2f without a gate), in the MLP's dtype. Experts that run together
    (``grouped_mm``, ``batched_mm``) make them for every (token, expert) pair at once, k a token; experts run
    one by one (eager, per-expert linears) for one expert's share at a time, k/E a token."""
    width = (3 if spec.gated_mlp else 2) * spec.mlp_ffn()
    pairs = Fraction((spec.seq_len or 0) * b)
    if spec.experts > 1:
        together = spec.stacked_experts and spec.experts_implementation != "eager"
        pairs *= spec.experts_active if together else Fraction(spec.experts_active, spec.experts)
    return expert_bytes(spec) * pairs * width / spec.tensor_parallel


def merged_stack_bytes(spec: TrainingSpec, layers: int | None = None) -> Fraction:
    """LoRA on fused experts (PEFT's ParamWrapper, ``lora.adapters``). Every forward, each adapted stack
    is merged over all its experts: W + scaling · B·A, in the experts' dtype (``expert_bytes``). The grouped
    matmul that runs the experts keeps that merged stack for its input's gradient: E × in × out values per
    adapted stack, per layer, whatever the batch (all ``L``; under checkpointing the one layer backward
    rebuilds, ``layers=1``). Per-expert ``nn.Linear`` adapters merge nothing."""
    if spec.lora_rank is None or not spec.stacked_experts:
        return Fraction(0)
    n = (spec.layers or 0) if layers is None else layers
    values = sum(a.stored * a.d_in * a.d_out for a in adapters(spec) if a.stack)
    return expert_bytes(spec) * n * values / spec.tensor_parallel
