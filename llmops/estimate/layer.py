"""What one transformer layer keeps for backward, term by term (attention, norms, MLP, adapters, quantised
inputs), and what the logits' head keeps.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

from llmops.estimate.experts import gathered_expert_bytes
from llmops.estimate.lora import QKV, Adapter, adapters
from llmops.estimate.numerics import (
    LOGSUMEXP_BYTES,
    NORM_STATS,
    TOKEN_ID_BYTES,
    autocast_on,
    expert_bytes,
    mask_bytes,
    residual_bytes,
)
from llmops.estimate.peak import (
    FP32,
    Held,
    loss_value_bytes,
)
from llmops.spec.blocks import adapters_on
from llmops.spec.choices import ACTIVATIONS, CHECKPOINTED
from llmops.spec.training import TrainingSpec
from llmops.units import get_precision


class LayerParts(NamedTuple):
    """What one transformer layer keeps for backward, by part (``layer_parts``), in bytes."""

    attention: Fraction
    mlp: Fraction
    norms: Fraction
    adapters: Fraction

    def total(self) -> Fraction:
        return self.attention + self.mlp + self.norms + self.adapters


def layer_activation_bytes(spec: TrainingSpec, b: int, with_scores: bool) -> Fraction:
    """Bytes one transformer layer keeps for backward (formulas.md §4 table, generalised; ``layer_parts``)."""
    return layer_parts(spec, b, with_scores).total() / spec.tensor_parallel


def first_layer_unkept(spec: TrainingSpec, b: int) -> Fraction:
    """What the first layer does not keep where the embeddings are frozen (LoRA): its input needs no gradient,
    so nothing before the first adapter's output is saved. Not the norm(s) before the attention; with no adapter
    on the attention, neither the attention nor (a sequential block's) the MLP's norm; under a parallel residual,
    whose MLP reads the block's input too, not the MLP unless an adapter is on it."""
    if spec.lora_rank is None or spec.recompute in CHECKPOINTED:
        return Fraction(0)
    parts = layer_parts(spec, b, with_scores=True)
    tokens = (spec.seq_len or 0) * b
    pre = norm_bytes(spec, residual_bytes(spec)) * tokens  # one norm before a sublayer
    attention = {*QKV, "qkv", "o"}
    modules = {a.module for a in adapters(spec)}
    on_attention, on_mlp = bool(modules & attention), bool(modules - attention)
    # the adapters that read the block's normed input drop it with no gradient to pass back: no mask kept
    reading = {*QKV, "qkv"} | ({"gate", "up", "gate_up"} if spec.parallel_residual else set())
    unkept = sum((a.per_token * mask * a.d_in * tokens for a, dropped, mask in _dropouts(spec)
                  if dropped and a.module in reading), Fraction(0))
    if spec.parallel_residual:  # both sublayers read the block's input: its norms are all unkept
        unkept += parts.norms - (spec.block_norms - min(spec.block_norms, 2)) * pre  # not Gemma 2's after-norms
        unkept += (0 if on_attention else parts.attention) + (0 if on_mlp else parts.mlp)
    else:
        unkept += pre + (0 if on_attention else parts.attention + pre)
    return unkept / spec.tensor_parallel


def layer_parts(spec: TrainingSpec, b: int, with_scores: bool) -> LayerParts:
    """What one transformer layer keeps for backward, by part, before tensor parallelism divides it.

    Under autocast the residual stream is fp32 (the embeddings are fp32 and ``x + proj(y)``
    promotes), so the layer norms' inputs are 4 bytes while matmul inputs are the 2-byte
    copies autocast makes. Everything else is the compute dtype p.
    """
    p = get_precision(spec.precision).compute_bytes
    s, h, a = spec.seq_len, spec.hidden, spec.heads
    assert s and h and a
    cuda = spec.device == "cuda"
    drop = 1 if spec.dropout else 0
    h_q, h_kv = spec.attention_widths()
    f = spec.ffn_hidden or 4 * h
    # SDPA with dropout has no fused CPU kernel: PyTorch runs its math path, which keeps the
    # s×s scores as plain attention does, and upcasts 2-byte inputs to fp32 to do so.
    math_sdpa = spec.attention == "sdpa" and spec.dropout and not cuda
    q = Fraction(FP32) if math_sdpa else p  # bytes of Q, K, V as attention keeps them
    # The Q/K/V projections' input, saved where one of them trains; the output projection's input,
    # which fused attention keeps as its output anyway.
    kept_by_attention = 1 if spec.attention == "sdpa" or math_sdpa else 0
    attn = p * s * b * h * _saves_input(spec, ("q", "k", "v"))
    # a copy of it where RoPE's concatenation leaves the output head-major (``rope_concat``: transposing it back
    # for the projection copies)
    saves_o = _saves_input(spec, ("o",))
    attn += p * s * b * h_q * (kept_by_attention + saves_o if spec.rope_concat else max(kept_by_attention, saves_o))
    attn += q * s * b * qkv_kept(spec, math_sdpa)  # Q, K, V
    attn += drop * mask_bytes(spec, p) * s * b * h  # attention output dropout mask
    if spec.attention == "plain" or math_sdpa:
        if with_scores:
            attn += _score_bytes(spec, p if spec.attention == "plain" else q) * a * s * s * b
    else:
        attn += LOGSUMEXP_BYTES * a * s * b
    experts = spec.experts > 1
    mlp = s * b * (expert_bytes(spec) * spec.experts_active * _mlp_width(spec, spec.expert_ffn() if experts else f,
                                                                          experts)
                   + p * (_mlp_width(spec, spec.shared_expert_ffn_hidden) if spec.shared_expert_ffn_hidden else 0))
    if experts:  # each expert's output, kept by the multiply with its routing weight (k·h per token); a shared
        # expert's, by the multiply with its sigmoid gate (h)
        mlp += s * b * h * (expert_bytes(spec) * spec.experts_active + (p if spec.shared_expert_ffn_hidden else 0))
        mlp += gathered_expert_bytes(spec, b)
    mlp += drop * mask_bytes(spec, p) * s * b * h
    if spec.block_norms == 1 and not autocast_on(spec):  # one norm's output is both sublayers' input (Phi-2): kept once
        mlp -= p * s * b * h * min(_saves_input(spec, ("q", "k", "v")), _saves_input(spec, ("gate", "up")))
    return LayerParts(attn, mlp, block_norm_bytes(spec) * s * b, adapter_activation_bytes(spec, b))


def qkv_kept(spec: TrainingSpec, math_sdpa: bool = False) -> int:
    """Values per token the attention keeps as its Q, K and V, by how the block makes them:

    - each its own tensor, or views of one fused output (GPT-2's ``c_attn``): h_q + 2·h_kv;
    - K and V repeated to the query heads first (``kv_repeat``, under grouped-query attention): a copy of
      each at the query width, 3·h_q;
    - one fused qkv output (``fused_linears``: Phi-3, GPT-NeoX, every LitGPT model) whose Q and K RoPE rotates
      into new tensors while V stays a view of it: the whole output (h_q + 2·h_kv) lives on through V,
      beside the rotated Q and K (h_q + h_kv). PyTorch's math SDPA keeps fp32 copies instead, and so does
      Hugging Face's KV cache, which its forward fills in training too (``use_cache``, off under checkpointing)
      and hands the attention its own copy of V.
    """
    h_q, h_kv = spec.attention_widths()
    if spec.kv_repeat and h_kv < h_q:
        return 3 * h_q
    copied = spec.kv_cache and spec.recompute not in CHECKPOINTED  # Hugging Face's cache copies K and V
    if "qkv" in spec.fused_linears and spec.rotary and not (math_sdpa or copied):
        return (h_q + h_kv) + (h_q + 2 * h_kv)
    return h_q + 2 * h_kv


def block_norm_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per token one block's norms keep (``norm_bytes``). The norms before the attention and the MLP
    read the residual stream; Gemma 2's after them, the sublayers' outputs (the compute dtype). Under a
    parallel residual the two before them read one tensor, kept once where neither copies it (a LayerNorm's,
    or an RMSNorm's already in its compute dtype); a block with one norm (Phi-2) shares its output."""
    r, p = residual_bytes(spec), get_precision(spec.precision).compute_bytes
    before = min(spec.block_norms, 2)
    kept = before * norm_bytes(spec, r) + (spec.block_norms - before) * norm_bytes(spec, p)
    copies = spec.norm == "rmsnorm" and spec.norm_upcast and r != FP32
    if spec.parallel_residual and before == 2 and not copies:
        kept -= r * (spec.hidden or 0)
    return kept


def _saves_input(spec: TrainingSpec, linears: tuple[str, ...]) -> int:
    """Copies of the shared input of these linears kept for backward. A linear keeps its input only for
    its weight's gradient, so a frozen base keeps none; each LoRA adapter on one of them keeps it as its
    ``A``'s input: one tensor, or under autocast one 2-byte cast per adapter (autocast caches casts of
    weights, not of activations). Under LoRA dropout each adapter keeps its own dropped copy instead
    (``adapter_activation_bytes``). Full fine-tuning: one copy (a fused projection's)."""
    if spec.lora_rank is None:
        return 1
    adapted = adapters_on(spec, linears)
    if spec.lora_dropout or not adapted:
        return 0
    return adapted if autocast_on(spec) else 1


def quant_inputs(spec: TrainingSpec, b: int) -> tuple[Fraction, Fraction]:
    """``(all, beyond)``: the inputs bitsandbytes before 0.43.2 keeps (``quant_keeps_input``), and those of
    them nothing else keeps. Its ``MatMul4Bit`` stores each 4-bit linear's input on ctx whenever the input
    needs a gradient (PR #1270 dropped it), until the graph is freed: through backward and the optimizer
    step, not released layer by layer. Per layer, in the compute dtype: the Q/K/V projections' shared input
    (h; not the first layer's, nothing before it trains), the output projection's (the attention's output),
    the gate/up projections' (h, per expert a token passes through) and the down projection's (the MLP
    width); a quantised head's (h). Kept anyway: an input an adapter keeps (LoRA without dropout), and
    fused attention's output. Under checkpointing it is not modelled (reentrant checkpointing keeps none of
    them, non-reentrant every layer's)."""
    if not spec.quant_keeps_input or spec.recompute != "none":
        return Fraction(0), Fraction(0)
    h = spec.hidden or 0
    f, k = spec.mlp_ffn(), spec.experts_active
    up = ("gate", "up") if spec.gated_mlp else ("up",)
    groups = [(("q", "k", "v"), h, _saves_input(spec, ("q", "k", "v"))),
              (("o",), spec.attention_widths()[0], spec.attention == "sdpa" or _saves_input(spec, ("o",))),
              (up, h * k, _saves_input(spec, up)), (("down",), f * k, _saves_input(spec, ("down",)))]
    first_qkv = groups[0][1]  # the first layer's Q/K/V input needs no gradient: not kept
    L, head = spec.layers or 0, (spec.hidden or 0) * spec.quantize_head
    every = L * sum(w for _, w, _ in groups) - first_qkv + head
    beyond = L * sum(w for _, w, kept in groups if not kept) - (0 if groups[0][2] else first_qkv) + head
    per_value = get_precision(spec.precision).compute_bytes * (spec.seq_len or 0) * b / spec.tensor_parallel
    return per_value * every, per_value * beyond


def held(spec: TrainingSpec, b: int) -> Held:
    """What outlives its use in a step of ``b`` samples (``peak.Held``): the logits the loop keeps
    (``keeps_outputs``, the compute dtype), the inputs old bitsandbytes keeps (``quant_inputs``), and, where
    the loop keeps its outputs, both from the last micro-batch (taken as large as this one) through this
    forward; none where the longest micro-batch comes first (``longest_first``: the first step peaks)."""
    p = get_precision(spec.precision).compute_bytes
    outputs = p * b * (spec.seq_len or 0) * (spec.vocab or 0) / spec.tensor_parallel if spec.keeps_outputs else 0
    graph = quant_inputs(spec, b)[0]
    previous = outputs + graph if spec.keeps_outputs and not spec.longest_first else Fraction(0)
    return Held(outputs=Fraction(outputs), graph=graph, previous=previous)


def adapter_activation_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """What LoRA adapters keep for backward, per layer: each adapter's ``A`` output (``r`` values per
    token, ``B``'s input), and under LoRA dropout its own dropped input and the mask. The MLP's adapters
    once per expert a token passes through (``lora.Adapter.per_token``); a fused stack's adapter is merged
    into the stack instead (``merged_stack_bytes``), with no ``A`` output per token."""
    p = get_precision(spec.precision).compute_bytes
    tokens = spec.seq_len * b if spec.seq_len else 0
    kept = sum((a.per_token * (p * a.rank + (p + mask) * a.d_in * dropped) * tokens
                for a, dropped, mask in _dropouts(spec)), Fraction(0))
    # LitGPT's LoRAQKVLinear is one layer over the fused qkv: unless all three are on, zero-padding its q/k/v
    # adapters' B outputs into the qkv width keeps them (index_copy_'s source, which its backward reads for the
    # shape): Σ d_out values a token
    qkv = [a for a in adapters(spec) if a.module in QKV] if spec.lora_layout == "litgpt" else []
    if 0 < len(qkv) < len(QKV):
        kept += p * tokens * sum(a.d_out for a in qkv)
    return kept


def _dropouts(spec: TrainingSpec) -> list[tuple[Adapter, bool, Fraction]]:
    """``(adapter, drops its own input, mask bytes per value)`` for one block's adapters. Under LoRA dropout
    each adapter drops its input, except that LitGPT's q/k/v adapters (one ``LoRAQKVLinear``) drop their shared
    input once. The mask (``mask_bytes``) is of the dtype dropout sees: PEFT casts an adapter's input to its weights'
    dtype first (``_cast_input_dtype``: fp32 under autocast); LitGPT drops the input as it arrives, in the
    residual dtype, except the output and down projections' (the compute dtype)."""
    prec = get_precision(spec.precision)
    p = prec.compute_bytes
    block = adapters(spec)
    qkv = [a for a in block if a.module in QKV] if spec.lora_layout == "litgpt" else []
    out = []
    for a in block:
        in_bytes = p if a.module in ("o", "down", "shared.down") else residual_bytes(spec)
        if spec.lora_layout == "peft":
            in_bytes = Fraction(prec.param_bytes)
        dropped = spec.lora_dropout and not (qkv and a.module in QKV and a is not qkv[0])
        out.append((a, dropped, mask_bytes(spec, in_bytes)))
    return out


def _mlp_width(spec: TrainingSpec, f: int, experts: bool = False) -> int:
    """Values per token one MLP saves: its input (h, where the up or gate projection trains), then per
    width f the up projection's output and what the activation saves, for a gated MLP the gate's
    output, and the down projection's input (where it trains): 4f in all for a trained SwiGLU.
    ``experts``: a mixture's experts, which LoRA's targets may not reach (``lora_experts``: beside an adapted
    shared expert), and which as fused stacks keep one input per stack (no per-adapter casts)."""
    act = ACTIVATIONS[spec.activation]
    reached = spec.lora_experts or not experts
    up, down = (_saves_input(spec, ("gate", "up")), _saves_input(spec, ("down",))) if reached else (0, 0)
    if experts and spec.stacked_experts:
        up = min(up, 1)
    kept = (f * (2 + act) if spec.gated_mlp else f * act) + f * down
    return spec.hidden * up + kept  # type: ignore[operator]


def norm_bytes(spec: TrainingSpec, r: Fraction) -> Fraction:
    """Bytes per token one norm saves, its input in the residual dtype ``r``. LayerNorm: the input and
    its mean and 1/std per token. RMSNorm: its input upcast to fp32 (Hugging Face's; ``norm_upcast``) or as
    it comes (LitGPT 2023's), the normalised output in the input dtype, and 1/rms per token."""
    h = spec.hidden or 0
    if spec.norm == "rmsnorm":  # the normalised output is kept for the weight's gradient: none when frozen
        c = Fraction(FP32) if spec.norm_upcast else r
        return c * h + (r * h if spec.lora_rank is None else Fraction(0)) + c
    return r * h + NORM_STATS * r


def _score_bytes(spec: TrainingSpec, p: Fraction) -> Fraction:
    """Bytes per s×s score value kept: softmax output, dropout output and mask.

    CUDA autocast runs softmax in fp32 (4 bytes kept) and hands ``scores @ V`` a 2-byte copy,
    which is kept too; CPU autocast keeps the softmax in the compute dtype.
    """
    drop = 1 if spec.dropout else 0
    if autocast_on(spec) and spec.device == "cuda" and spec.attention == "plain":
        return FP32 + p + drop * mask_bytes(spec, FP32)
    return (1 + drop) * p + drop * mask_bytes(spec, p)


def head_activation_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """The final norm, and with ``vocab`` the output head's input and the loss's log-probabilities
    kept for backward (fp32, as cross-entropy upcasts; the compute dtype under ``*-true`` when the
    loss does not upcast). The logits themselves are not kept: ``peak.py`` holds them at the forward's end."""
    prec = get_precision(spec.precision)
    p, s, h = prec.compute_bytes, spec.seq_len, spec.hidden
    assert s and h
    r = residual_bytes(spec)
    head = norm_bytes(spec, r) * s * b  # the final norm
    if spec.vocab:
        head += p * s * b * h * (spec.lora_rank is None)  # the head's input, for its weight's gradient
        head += 2 * TOKEN_ID_BYTES * s * b  # token ids and targets (int64)
        head += loss_value_bytes(spec) * s * b * spec.vocab  # log-probabilities
    return head
