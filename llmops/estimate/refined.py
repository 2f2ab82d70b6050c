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
from typing import NamedTuple

from llmops.estimate.document import _int, gpus_rule_of_thumb
from llmops.estimate.lora import MLP, QKV, Adapter, adapter_params, adapters, widened
from llmops.estimate.peak import (
    FP32,
    Computing,
    Gathered,
    Held,
    Rebuild,
    loss_value_bytes,
    max_batch_moments,
    peak_moment,
)
from llmops.estimate.quant import dequantized_bytes, quantized_bytes, quantized_weights
from llmops.estimate.solver import accumulate_for, min_world_size
from llmops.spec.training import (
    ACTIVATIONS,
    CHECKPOINTED,
    EIGHT_BIT_BLOCK,
    EIGHT_BIT_OPTIMIZERS,
    OPTIMIZER_STATES,
    SHARDED,
    Estimate,
    TrainingSpec,
    adapted,
    adapters_on,
    block_linears,
    validate,
)
from llmops.units import exact, fmt_bytes, get_precision

# CUDA context, cuBLAS/cuDNN workspaces and NCCL buffers per process: several hundred MB
# (formulas.md §4). Measured by the monitor where a GPU exists; override with overhead_bytes.
DEFAULT_OVERHEAD_BYTES = {"cuda": 500 * 10**6, "cpu": 0}
LOGSUMEXP_BYTES = 4  # fused attention keeps one fp32 log-sum-exp per head and token
TOKEN_ID_BYTES = 8  # int64 token ids, kept by the embedding's backward and the loss's
_NORM_STATS = 2  # a layer norm keeps its mean and 1/std per token


def _autocast(spec: TrainingSpec) -> bool:
    """Lightning's ``*-mixed``: fp32 weights, compute under ``torch.autocast``."""
    return get_precision(spec.precision).name.endswith("-mixed")


def _residual_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per value of the residual stream: fp32 under autocast (the embeddings are fp32 and
    ``x + proj(y)`` promotes), else the compute dtype."""
    return Fraction(FP32) if _autocast(spec) else get_precision(spec.precision).compute_bytes


def _uncast_experts(spec: TrainingSpec) -> bool:
    """Under autocast, fused expert stacks run by ``grouped_mm`` stay in fp32: autocast has no rule for
    ``aten._grouped_mm``, so the fp32 stacks and the fp32 residual stream go in as they are (no 2-byte copies)."""
    return _autocast(spec) and spec.stacked_experts and spec.experts_implementation == "grouped_mm"


def _expert_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per value the experts compute in: fp32 where autocast does not cast them, else the compute dtype."""
    return Fraction(FP32) if _uncast_experts(spec) else get_precision(spec.precision).compute_bytes


def _mask(spec: TrainingSpec, value_bytes: Fraction | int) -> Fraction:
    """Bytes per dropout-mask value: CUDA's fused dropout keeps a bool mask; the CPU's keeps a
    mask of the dropped tensor's dtype (``input * bernoulli(...)``)."""
    return Fraction(1) if spec.device == "cuda" else Fraction(value_bytes)


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
    pre = norm_bytes(spec, _residual_bytes(spec)) * tokens  # one norm before a sublayer
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
    attn += drop * _mask(spec, p) * s * b * h  # attention output dropout mask
    if spec.attention == "plain" or math_sdpa:
        if with_scores:
            attn += _score_bytes(spec, p if spec.attention == "plain" else q) * a * s * s * b
    else:
        attn += LOGSUMEXP_BYTES * a * s * b
    experts = spec.experts > 1
    mlp = s * b * (_expert_bytes(spec) * spec.experts_active * _mlp_width(spec, spec.expert_ffn() if experts else f,
                                                                          experts)
                   + p * (_mlp_width(spec, spec.shared_expert_ffn_hidden) if spec.shared_expert_ffn_hidden else 0))
    if experts:  # each expert's output, kept by the multiply with its routing weight (k·h per token); a shared
        # expert's, by the multiply with its sigmoid gate (h)
        mlp += s * b * h * (_expert_bytes(spec) * spec.experts_active + (p if spec.shared_expert_ffn_hidden else 0))
        mlp += gathered_expert_bytes(spec, b)
    mlp += drop * _mask(spec, p) * s * b * h
    if spec.block_norms == 1 and not _autocast(spec):  # one norm's output is both sublayers' input (Phi-2): kept once
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
    r, p = _residual_bytes(spec), get_precision(spec.precision).compute_bytes
    before = min(spec.block_norms, 2)
    kept = before * norm_bytes(spec, r) + (spec.block_norms - before) * norm_bytes(spec, p)
    copies = spec.norm == "rmsnorm" and spec.norm_upcast and r != FP32
    if spec.parallel_residual and before == 2 and not copies:
        kept -= r * (spec.hidden or 0)
    return kept


def _gathers_experts(spec: TrainingSpec) -> bool:
    """Fused expert stacks run by ``batched_mm``, which gathers their weights per (token, expert) pair."""
    return spec.experts > 1 and spec.stacked_experts and spec.experts_implementation == "batched_mm"


def _gathered_weights(spec: TrainingSpec, b: int) -> tuple[int, int]:
    """``(all, down)``: expert weights transformers 5's ``batched_mm`` gathers per layer, one copy per (token,
    expert) pair (``gate_up_proj[expert_ids]``, then ``down_proj[expert_ids]``), and the down projection's
    share of them; (0, 0) for the other implementations, which gather no weights."""
    if not _gathers_experts(spec):
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
    stored = prec.param_bytes * weights - prec.compute_bytes * down if _autocast(spec) else 0
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
    return _expert_bytes(spec) * pairs * width / spec.tensor_parallel


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
    return adapted if _autocast(spec) else 1


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
    input once. The mask (``_mask``) is of the dtype dropout sees: PEFT casts an adapter's input to its weights'
    dtype first (``_cast_input_dtype``: fp32 under autocast); LitGPT drops the input as it arrives, in the
    residual dtype, except the output and down projections' (the compute dtype)."""
    prec = get_precision(spec.precision)
    p = prec.compute_bytes
    block = adapters(spec)
    qkv = [a for a in block if a.module in QKV] if spec.lora_layout == "litgpt" else []
    out = []
    for a in block:
        in_bytes = p if a.module in ("o", "down", "shared.down") else _residual_bytes(spec)
        if spec.lora_layout == "peft":
            in_bytes = Fraction(prec.param_bytes)
        dropped = spec.lora_dropout and not (qkv and a.module in QKV and a is not qkv[0])
        out.append((a, dropped, _mask(spec, in_bytes)))
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
    return r * h + _NORM_STATS * r


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
    if not _autocast(spec) or spec.recompute not in CHECKPOINTED:
        return Fraction(0)
    n = (spec.layers or 0) if layers is None else layers
    return get_precision(spec.precision).compute_bytes * n * _layer_matmul_params(spec) / spec.tensor_parallel


def merged_stack_bytes(spec: TrainingSpec, layers: int | None = None) -> Fraction:
    """LoRA on fused experts (PEFT's ParamWrapper, ``lora.adapters``). Every forward, each adapted stack
    is merged over all its experts: W + scaling · B·A, in the experts' dtype (``_expert_bytes``). The grouped
    matmul that runs the experts keeps that merged stack for its input's gradient: E × in × out values per
    adapted stack, per layer, whatever the batch (all ``L``; under checkpointing the one layer backward
    rebuilds, ``layers=1``). Per-expert ``nn.Linear`` adapters merge nothing."""
    if spec.lora_rank is None or not spec.stacked_experts:
        return Fraction(0)
    n = (spec.layers or 0) if layers is None else layers
    values = sum(a.stored * a.d_in * a.d_out for a in adapters(spec) if a.stack)
    return _expert_bytes(spec) * n * values / spec.tensor_parallel


def _layer_matmul_params(spec: TrainingSpec) -> Fraction:
    """Weights of one layer's matmuls that autocast copies: every linear of the block (``layer_params`` less its
    norms), a mixture's router and shared expert too, and every expert: each expert's cast is its own, and a
    micro-batch of a few times E/k tokens reaches them all. Not fused stacks that autocast leaves in fp32
    (``_uncast_experts``), nor ``batched_mm``'s, which are cast as gathered (``gathered_expert_bytes``)."""
    experts = sum(i * o * c for m, (i, o, c) in block_linears(spec, spec.experts).items() if m in MLP)
    uncopied = _uncast_experts(spec) or _gathers_experts(spec)
    return Fraction(layer_params(spec) - 2 * (spec.hidden or 0) - (experts if uncopied else 0))


def head_activation_bytes(spec: TrainingSpec, b: int) -> Fraction:
    """The final norm, and with ``vocab`` the output head's input and the loss's log-probabilities
    kept for backward (fp32, as cross-entropy upcasts; the compute dtype under ``*-true`` when the
    loss does not upcast). The logits themselves are not kept: ``peak.py`` holds them at the forward's end."""
    prec = get_precision(spec.precision)
    p, s, h = prec.compute_bytes, spec.seq_len, spec.hidden
    assert s and h
    r = _residual_bytes(spec)
    head = norm_bytes(spec, r) * s * b  # the final norm
    if spec.vocab:
        head += p * s * b * h * (spec.lora_rank is None)  # the head's input, for its weight's gradient
        head += 2 * TOKEN_ID_BYTES * s * b  # token ids and targets (int64)
        head += loss_value_bytes(spec) * s * b * spec.vocab  # log-probabilities
    return head


def activation_parts(spec: TrainingSpec) -> tuple[Fraction, Fraction]:
    """``(fixed, per_sample)``: activations of ``b`` samples are ``fixed + b × per_sample``."""
    s, h, L = spec.seq_len, spec.hidden, spec.layers
    assert s and h and L
    r = _residual_bytes(spec)
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
    r = _residual_bytes(spec)
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
    kept = _residual_bytes(spec) * h + p * sum(matmul_outputs(spec)[::2])
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


# FSDP2 issues the next layer's all-gather while a layer computes (implicit prefetching, on its own CUDA
# stream), so two layers' unsharded parameters are alive at once; gloo on the CPU gathers in line, one.
GATHERED_LAYERS = {"cuda": 2, "cpu": 1}


def gathered(spec: TrainingSpec) -> Gathered:
    """FSDP2 with one ``fully_shard`` unit per block and one for the root (torchtitan's, and Lightning's
    ``ModelParallelStrategy``'s usual wrapping): the root's parameters (embeddings, final norm, head) stay
    unsharded from the forward's start to the backward's end, each block's only while it runs; a block's
    gradients are unsharded until their reduce-scatter, plus their copy in the reduce dtype where it
    differs (``*-fsdp``: bf16 gradients reduced in fp32). Gathered in the compute dtype under ``*-fsdp``,
    else in the parameters'."""
    if spec.strategy != "fsdp" or spec.world_size == 1 or not (spec.params and spec.layers and spec.hidden):
        return Gathered()
    prec = get_precision(spec.precision)
    gather = prec.compute_bytes if prec.name.endswith("-fsdp") else prec.param_bytes
    layer = layer_params(spec)
    root = max(spec.params - spec.layers * layer, 0)
    grads = layer * (gather + (prec.grad_bytes if prec.grad_bytes != gather else 0))
    if spec.lora_rank is not None or spec.trainable_params is not None and spec.trainable_params < spec.params:
        grads = Fraction(0)  # adapters: their gradients are small; the frozen base makes none
    t = spec.tensor_parallel
    return Gathered(params=gather * (root + GATHERED_LAYERS[spec.device] * layer) / t, grads=grads / t)


def layer_params(spec: TrainingSpec) -> int:
    """Parameters of one block: its linears (every expert), a mixture's router and shared expert, two norms."""
    h = spec.hidden or 0
    linears = sum(i * o * c for i, o, c in block_linears(spec, spec.experts).values())
    router = spec.experts * h if spec.experts > 1 else 0
    shared = (3 if spec.gated_mlp else 2) * h * spec.shared_expert_ffn_hidden if spec.shared_expert_ffn_hidden else 0
    return linears + router + shared + 2 * h


def _state_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes per optimizer-state value: the precision's, or bitsandbytes' 8 bits plus its block absmax."""
    if spec.optimizer in EIGHT_BIT_OPTIMIZERS:
        return 1 + Fraction(FP32, EIGHT_BIT_BLOCK)
    return get_precision(spec.precision).state_bytes


def _ceil_div(num: Fraction, den: Fraction) -> int | None:
    return math.ceil(num / den) if den > 0 else None
