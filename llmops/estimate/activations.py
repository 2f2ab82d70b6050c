"""Activations over the whole model: what the forward keeps across layers, what recomputation rebuilds,
and the weight copies autocast and checkpointing hold.
"""

from __future__ import annotations

from fractions import Fraction

from llmops.estimate.experts import gathers_experts, merged_stack_bytes
from llmops.estimate.layer import first_layer_unkept, head_activation_bytes, layer_activation_bytes, quant_inputs
from llmops.estimate.lora import MLP
from llmops.estimate.numerics import LOGSUMEXP_BYTES, autocast_on, residual_bytes, uncast_experts
from llmops.estimate.peak import (
    Rebuild,
)
from llmops.estimate.quant import dequantized_bytes
from llmops.estimate.sharding import layer_params
from llmops.spec.blocks import adapted, block_linears
from llmops.spec.choices import CHECKPOINTED
from llmops.spec.training import TrainingSpec
from llmops.units import get_precision


def weight_copy_bytes(spec: TrainingSpec) -> Fraction:
    """Autocast's 2-byte copies of the matmul weights, saved for backward: fixed, not per sample.

    ``torch.autocast`` casts each fp32 weight once per forward and the matmul keeps the copy for
    the input gradient: 2 bytes per matmul parameter (the "+2" of the 18 bytes per parameter of
    formulas.md §6). Embedding lookups and norms run in fp32 and copy nothing.
    """
    if not autocast_on(spec):
        return Fraction(0)
    head = (spec.vocab or 0) * (spec.hidden or 0)  # the output projection (tied or not) is a matmul too
    # Under checkpointing the layers' forward saves no weight copy: only the head's copy is kept
    # for backward (the layers' copies live in autocast's cache until the forward ends: weight_cache_bytes).
    # Quantised layers keep their packed weight, not a copy (bitsandbytes dequantises again in backward).
    layers = 0 if spec.recompute in CHECKPOINTED or spec.quantize else spec.layers or 0
    return get_precision(spec.precision).compute_bytes * (layers * _layer_matmul_params(spec) + head) \
        / spec.tensor_parallel


def weight_cache_bytes(spec: TrainingSpec, layers: int | None = None) -> Fraction:
    """Under autocast with checkpointing, the layers' 2-byte weight copies that nothing saves but
    autocast's cache holds until the forward ends (all ``L``), or that backward makes again for the
    layer it rebuilds (``layers=1``)."""
    if not autocast_on(spec) or spec.recompute not in CHECKPOINTED:
        return Fraction(0)
    n = (spec.layers or 0) if layers is None else layers
    return get_precision(spec.precision).compute_bytes * n * _layer_matmul_params(spec) / spec.tensor_parallel


def _layer_matmul_params(spec: TrainingSpec) -> Fraction:
    """Weights of one layer's matmuls that autocast copies: every linear of the block (``layer_params`` less its
    norms), a mixture's router and shared expert too, and every expert: each expert's cast is its own, and a
    micro-batch of a few times E/k tokens reaches them all. Not fused stacks that autocast leaves in fp32
    (``uncast_experts``), nor ``batched_mm``'s, which are cast as gathered (``gathered_expert_bytes``)."""
    experts = sum(i * o * c for m, (i, o, c) in block_linears(spec, spec.experts).items() if m in MLP)
    uncopied = uncast_experts(spec) or gathers_experts(spec)
    return Fraction(layer_params(spec) - 2 * (spec.hidden or 0) - (experts if uncopied else 0))


def activation_parts(spec: TrainingSpec) -> tuple[Fraction, Fraction]:
    """``(fixed, per_sample)``: activations of ``b`` samples are ``fixed + b × per_sample``."""
    s, h, L = spec.seq_len, spec.hidden, spec.layers
    assert s and h and L
    r = residual_bytes(spec)
    if spec.recompute == "full":
        layers = L * r * s * h  # each layer's input; backward rebuilds one layer at a time (rebuild)
    elif spec.recompute == "selective":
        layers = L * checkpointed_layer_bytes(spec, 1)  # its input and the outputs the policy saves
    else:
        layers = L * layer_activation_bytes(spec, 1, with_scores=spec.recompute == "none")
        layers -= first_layer_unkept(spec, 1)
    fixed = weight_copy_bytes(spec)
    fixed += merged_stack_bytes(spec, layers=0 if spec.recompute in CHECKPOINTED else None)
    return fixed, layers + head_activation_bytes(spec, 1) + quant_inputs(spec, 1)[1]


def activation_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """All activations of one micro-batch of ``b`` samples, per device."""
    fixed, per_sample = activation_parts(spec)
    return fixed + b * per_sample


def rebuild(spec: TrainingSpec, b: int) -> Rebuild:
    """Under checkpointing, backward rebuilds one layer's activations at a time, beside the gradients
    flowing into and out of it (the residual stream's dtype, h values per token each); the rebuilt layer
    reuses what its forward kept (selective). By the first layer's turn, the other layers' checkpoints
    and the head's saved tensors are freed."""
    if spec.recompute not in CHECKPOINTED:
        return Rebuild()
    s, h, L = spec.seq_len or 0, spec.hidden or 0, spec.layers or 1
    r = residual_bytes(spec)
    kept = checkpointed_layer_bytes(spec, b) if spec.recompute == "selective" else r * s * b * h
    rebuilt = layer_activation_bytes(spec, b, with_scores=True) + weight_cache_bytes(spec, layers=1)
    rebuilt += merged_stack_bytes(spec, layers=1) + dequantized_bytes(spec, head=False)  # one weight at a time
    rebuilt -= kept - r * s * b * h  # the outputs a selective checkpoint kept are not made again
    return Rebuild(layer=rebuilt + 2 * r * s * b * h, freed=(L - 1) * kept + head_activation_bytes(spec, b))


def checkpointed_layer_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """What one block keeps under op-level selective checkpointing, torchtitan's policy: the block's input
    (the residual dtype), the outputs of fused attention (SDPA's output and its fp32 log-sum-exp) and of
    every other matmul in the order the block runs them (the 1st, 3rd, ...; ``matmul_outputs``). Every
    other op is recomputed in backward. Plain attention's batched matmuls are not ``mm``: recomputed."""
    p = get_precision(spec.precision).compute_bytes
    s, h, a = spec.seq_len, spec.hidden, spec.heads
    assert s and h and a
    math_sdpa = spec.attention == "sdpa" and spec.dropout and spec.device == "cpu"
    kept = residual_bytes(spec) * h + p * sum(matmul_outputs(spec)[::2])
    if spec.attention == "sdpa" and not math_sdpa:
        kept += p * spec.attention_widths()[0] + LOGSUMEXP_BYTES * a
    return kept * s * b / spec.tensor_parallel


def matmul_outputs(spec: TrainingSpec) -> list[int]:
    """Values per token of each ``mm`` one block runs, in order: Q, K, V (one where fused), O, then the MLP's
    gate, up (one where fused) and down. A mixture runs its shared expert's three, its router, each expert's
    three for each expert a token passes through (none for fused stacks under ``grouped_mm``, which is not
    ``mm``) and the shared expert's gate. A LoRA-adapted linear runs its base, then
    ``A`` (r values) and ``B``. torchtitan's policy counts them, saving the odd-numbered ones: with 7
    matmuls a block the count's parity flips each step, and the first step's set (the larger) is kept."""
    linears = block_linears(spec, 1)
    out: list[int] = []

    def call(name: str) -> None:
        d_out = linears[name][1]
        out.append(d_out)
        if adapted(spec, name):
            out.extend((spec.lora_rank or 0, d_out))

    mlp = [name for name in linears if name in MLP]
    for name in linears:
        if name not in mlp:
            call(name)
    if spec.experts == 1:
        for name in mlp:
            call(name)
        return out
    f_shared, h = spec.shared_expert_ffn_hidden, spec.hidden or 0
    if f_shared:  # Qwen2-MoE runs its shared expert first (its adapters not counted here)
        out += [f_shared] * (2 if spec.gated_mlp else 1) + [h]
    out.append(spec.experts)  # the router's logits
    if not (spec.stacked_experts and spec.experts_implementation == "grouped_mm"):  # grouped_mm is no mm
        for _ in range(spec.experts_active):
            for name in mlp:
                call(name)
    if f_shared:
        out.append(1)  # the shared expert's gate
    return out
