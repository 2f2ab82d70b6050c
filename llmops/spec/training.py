"""The estimator's inputs (``TrainingSpec``) and outputs (``Estimate``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from llmops import vocabulary
from llmops.units import MAX_BYTES, MAX_COUNT, get_precision

STRATEGIES = ("single", "ddp", "zero1", "zero2", "zero3", "fsdp")
# What each strategy divides by the data-parallel world size n (formulas.md §3).
SHARDED: dict[str, frozenset[str]] = {
    "single": frozenset(),
    "ddp": frozenset(),
    "zero1": frozenset({"optimizer_states"}),
    "zero2": frozenset({"optimizer_states", "grads"}),
    "zero3": frozenset({"optimizer_states", "grads", "params"}),
    "fsdp": frozenset({"optimizer_states", "grads", "params"}),
}
# Optimizer moments per trainable parameter.
OPTIMIZER_STATES = {
    "adamw": 2, "adam": 2, "adamw-amsgrad": 3, "adam-amsgrad": 3,
    "sgd": 0, "sgd-momentum": 1, "lion": 1, "rmsprop": 1, "adagrad": 1,
    # bitsandbytes: 8-bit states, and paged ones (unified memory the driver may evict to the host
    # under pressure; counted on the device, where they live while the run has room)
    "adamw8bit": 2, "adam8bit": 2, "paged_adamw8bit": 2, "paged_adamw": 2, "lion8bit": 1, "paged_lion8bit": 1,
}
# bitsandbytes' 8-bit optimizers: each state a uint8 per value plus one fp32 absmax per block of 256
# (bitsandbytes/optim/optimizer.py, block_wise); tensors under 4,096 values keep 32-bit states.
EIGHT_BIT_OPTIMIZERS = ("adamw8bit", "adam8bit", "paged_adamw8bit", "lion8bit", "paged_lion8bit")
EIGHT_BIT_BLOCK = 256
# MLP activation → tensors of the MLP's width it saves: one for GELU, SiLU and ReLU (input or output);
# four for the tanh GELU written out of elementwise ops (GPT-2's and Phi's "gelu_new").
ACTIVATIONS = {"gelu": 1, "gelu_tanh": 1, "silu": 1, "relu": 1, "gelu_new": 4}
NORMS = ("layernorm", "rmsnorm")
ATTENTION = ("plain", "sdpa")  # sdpa: fused / flash kernels that keep no s×s scores
# attention: Megatron's selective recomputation (the s×s scores are rebuilt; nothing else changes, so
# under fused attention it equals none). selective: op-level selective checkpointing (torchtitan's policy,
# activations.checkpointed_layer_bytes): each block keeps its input, SDPA's outputs and every other matmul's.
RECOMPUTE = vocabulary.RECOMPUTE
CHECKPOINTED = ("selective", "full")  # each block runs under torch.utils.checkpoint: backward rebuilds it
DEVICES = ("cuda", "cpu")
# The projections of a Llama-style block, in the order a block runs them.
LINEARS = ("q", "k", "v", "o", "gate", "up", "down")
# Modules that compute several projections in one matmul, as some architectures store them (Phi-3's qkv_proj
# and gate_up_proj, GPT-2's c_attn, GPT-NeoX's query_key_value): one nn.Linear from the input to all their
# outputs. LoRA adapts such a module whole (one adapter), so a layout changes the adapters, not the base.
FUSED = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}
# What LoRA can target: the projections; gate_up, the fused module or expert stack by its own name (an expert
# stack then takes rank r, where naming gate and up, as all-linear does, gives it r for each); the router.
LORA_TARGETS = (*LINEARS, "gate_up", "router")
MAX_LORA_RANK = 2**16
# How transformers 5 runs fused expert stacks (config._experts_implementation): grouped_mm, its default, calls
# aten._grouped_mm, which autocast has no rule for (it casts mm, bmm, baddbmm); the others cast as linears do.
EXPERTS_IMPLEMENTATIONS = ("grouped_mm", "batched_mm", "eager")
LORA_LAYOUTS = ("peft", "litgpt")
QUANTIZE = ("nf4", "int8")  # frozen base weights stored by bitsandbytes (quant.py)
QUANTIZED_FROM = ("fp32", "fp16", "bf16")  # what nf4 weights dequantise into (quant.dequantized_bytes)
# Bound for layers, heads, widths, lengths, batches and ranks: far past any real run, and it keeps
# every derived figure (activations grow as L·b·s²·a) within float range for tables and messages.
MAX_DIMENSION = 10**9


@dataclass(frozen=True)
class TrainingSpec:
    """What the estimator needs to know about a run; ``None`` means unknown, never guessed."""

    params: int | None = None  # N: every parameter, trainable or frozen
    trainable_params: int | None = None  # parameters with gradients; None = all of them
    active_params: int | None = None  # mixture of experts: parameters used per token
    layers: int | None = None  # L
    heads: int | None = None  # a
    hidden: int | None = None  # h
    kv_heads: int | None = None  # grouped-query attention; None = heads
    head_dim: int | None = None  # values per head; None = hidden / heads (Gemma 2's is not)
    ffn_hidden: int | None = None  # MLP width; None = 4h, as formulas.md assumes
    gated_mlp: bool = False  # SwiGLU-style MLP (gate and up projections)
    experts_active: int = 1  # experts each token passes through (Mixtral's num_experts_per_tok)
    experts: int = 1  # experts per MoE layer (num_local_experts); 1 = a dense MLP
    expert_ffn_hidden: int | None = None  # an expert's width (moe_intermediate_size); None = ffn_hidden
    shared_expert_ffn_hidden: int | None = None  # an always-on shared expert's width (Qwen2-MoE)
    activation: str = "gelu"  # the MLP's activation function, by how much it saves (ACTIVATIONS)
    norm: str = "layernorm"  # "rmsnorm" upcasts to fp32 inside and keeps its normalised output
    block_norms: int = 2  # norms per block: before the attention and the MLP (Gemma 2 adds two after them)
    norm_upcast: bool = True  # RMSNorm computes in fp32 (Hugging Face's; LitGPT's from 2024; not LitGPT 2023's)
    # the attention and the MLP both read the block's input (GPT-NeoX, Pythia, Falcon, Phi-2, GPT-J): one
    # residual tensor for both norms (refined.norms_bytes)
    parallel_residual: bool = False
    # how the attention gets its K and V (layer.qkv_kept): RoPE rotates Q and K into new tensors (GPT-2's
    # learned positions do not); K and V repeated to the query heads first (LitGPT in training, Hugging Face's
    # eager attention, and its SDPA when it is given a mask)
    rotary: bool = True
    # RoPE rotates part of each head and concatenates the rest back (GPT-NeoX, Phi-2, Phi-3, GPT-J, LitGPT): Q, and
    # so the attention's output, come out head-major, and the output projection reads a transposed copy
    rope_concat: bool = False
    kv_repeat: bool = False
    kv_cache: bool = False  # the forward writes K and V into a cache in training (Hugging Face's use_cache=True)
    loss_upcast: bool = True  # the loss upcasts the logits to fp32 (Hugging Face's logits.float())
    largest_param: int | None = None  # elements of the largest trainable tensor (Adam's CPU temporaries)
    vocab: int | None = None  # V
    seq_len: int | None = None  # s
    batch_size: int | None = None  # b, micro-batch per device
    global_batch: int | None = None  # samples per optimizer step over all ranks
    precision: str = "bf16"
    optimizer: str = "adamw"
    strategy: str = "ddp"
    world_size: int = 1  # n, data-parallel ranks
    tensor_parallel: int = 1
    attention: str = "plain"
    recompute: str = "none"
    dropout: bool = True
    device: str = "cuda"  # cuda keeps 1-byte dropout masks; the CPU keeps compute-dtype masks
    gpu_memory: int | None = None  # bytes per device the OOM check uses
    safety: float = 0.9  # fraction of gpu_memory a run may use
    overhead_bytes: int | None = None  # None: the refined model's default for the device
    # LoRA: the base is frozen and adapters of this rank train on lora_targets (lora.py counts them)
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] = ("q", "v")
    lora_dropout: bool = False  # dropout on the adapters' input (PEFT's lora_dropout > 0)
    # whose LoRA layers (LORA_LAYOUTS): PEFT's, one adapter a module; or LitGPT's, whose q/k/v adapters are one
    # LoRAQKVLinear over its fused qkv (layer.adapter_activation_bytes)
    lora_layout: str = "peft"
    # A mixture's experts stored as fused 3-D stacks (transformers >= 5: gate_up_proj, down_proj per layer), as
    # opposed to one nn.Linear per expert (transformers 4). It matters only for LoRA on the experts: PEFT then
    # adapts each stack whole (experts.merged_stack_bytes), not each expert's linears.
    fused_experts: bool = True
    experts_implementation: str = "grouped_mm"  # how fused stacks run (EXPERTS_IMPLEMENTATIONS)
    fused_linears: tuple[str, ...] = ()  # modules of FUSED the block stores as one linear (Phi-3: qkv, gate_up)
    # the MLP's LoRA targets reach the experts (and, beside fused stacks, the router); False where only a shared
    # expert's linears are: PEFT adapts fused stacks only on the architectures its v4 → v5 conversion knows
    # (0.21 leaves Qwen2-MoE's alone; 0.22 adapts them). A live run reads it; planning assumes the newest PEFT
    lora_experts: bool = True
    quantize: str | None = None  # the frozen base's block linears in nf4 or int8; compute stays in precision
    double_quant: bool = False  # nf4's block constants quantised too (QLoRA's double quantisation)
    quantize_head: bool = False  # the output head quantised too (LitGPT's BitsandbytesPrecision: every nn.Linear)
    # bitsandbytes before 0.43.2 (PR #1270): 4-bit layers keep their input on ctx until the graph is freed
    quant_keeps_input: bool = False
    # the dtype the nf4 base was quantised from, which bitsandbytes dequantises it into (QuantState.dtype;
    # Lightning's BitsandbytesPrecision: fp16 whatever the precision); None: the compute dtype
    quantized_from: str | None = None
    # the training loop holds the last micro-batch's outputs, and so its graph, into the next forward
    # (LitGPT's finetune scripts: ``logits`` is rebound only when the next forward returns)
    keeps_outputs: bool = False
    # the loop's first micro-batch is its longest, and the later ones are short enough that the step that peaks is
    # the first, with no earlier micro-batch alive (LitGPT's 2023 finetune scripts force the longest sample first)
    longest_first: bool = False

    def attention_widths(self) -> tuple[int, int]:
        """``(a·d, kv·d)``: the widths of Q (and the attention's output) and of K and V, d the head size."""
        a = self.heads or 1
        d = self.head_dim or (self.hidden or 0) // a
        return a * d, (self.kv_heads or a) * d

    @property
    def stacked_experts(self) -> bool:
        """The experts are fused stacks (``fused_experts``) and there is a mixture to fuse."""
        return self.fused_experts and self.experts > 1

    def expert_ffn(self) -> int:
        """An expert's MLP width (the dense width when not set)."""
        return self.expert_ffn_hidden or self.ffn_hidden or 4 * (self.hidden or 0)

    def mlp_ffn(self) -> int:
        """The width of the MLP a token runs: an expert's under a mixture, else the dense one (4h when not set)."""
        return self.expert_ffn() if self.experts > 1 else self.ffn_hidden or 4 * (self.hidden or 0)

    def with_(self, **changes: Any) -> TrainingSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def merged(self, override: TrainingSpec | None) -> TrainingSpec:
        """Fields that ``override`` sets (differ from the default) win over this spec's."""
        if override is None:
            return self
        defaults = TrainingSpec()
        changes = {
            f.name: getattr(override, f.name)
            for f in fields(self)
            if getattr(override, f.name) != getattr(defaults, f.name)
        }
        return replace(self, **changes)


def block_linears(spec: TrainingSpec, experts: int) -> dict[str, tuple[int, int, int]]:
    """``name → (in, out, copies)`` of one transformer block's linear modules in the order it runs them:
    Q, K, V, O, and the MLP's gate (gated MLPs only), up and down, ``experts`` copies of each (an expert's
    width under experts). A module of ``spec.fused_linears`` stands for its projections (``qkv``: in → Q+K+V;
    ``gate_up``: in → 2f)."""
    h = spec.hidden or 0
    q, kv = spec.attention_widths()  # exact: heads divide hidden unless head_dim is set (validate)
    f = spec.mlp_ffn()
    attn = {"qkv": (h, q + 2 * kv, 1)} if "qkv" in spec.fused_linears else {"q": (h, q, 1), "k": (h, kv, 1),
                                                                             "v": (h, kv, 1)}
    mlp = {"gate": (h, f, experts), "up": (h, f, experts)} if spec.gated_mlp else {"up": (h, f, experts)}
    if spec.gated_mlp and "gate_up" in spec.fused_linears:
        mlp = {"gate_up": (h, 2 * f, experts)}
    return {**attn, "o": (q, h, 1), **mlp, "down": (f, h, experts)}


def projections(module: str) -> tuple[str, ...]:
    """The projections a block module computes: its own name, or a fused module's (``FUSED``)."""
    return FUSED.get(module, (module,))


def adapted(spec: TrainingSpec, module: str) -> bool:
    """LoRA adapts this module of ``block_linears``: one of its projections is a target, or a fused name
    covering one is (``gate_up`` covers gate and up on any layout)."""
    return spec.lora_rank is not None and any(p in covered(spec) for p in projections(module))


def covered(spec: TrainingSpec) -> set[str]:
    """The projections LoRA's targets cover: each target, and a fused name's projections."""
    return {p for t in spec.lora_targets for p in (t, *FUSED.get(t, ()))}


def adapters_on(spec: TrainingSpec, among: tuple[str, ...]) -> int:
    """LoRA adapters on the modules that compute only projections ``among`` (a fused module counts once)."""
    return sum(adapted(spec, m) for m in block_linears(spec, 1) if set(projections(m)) <= set(among))


def _allowed(name: str, value: object, allowed: str) -> ValueError:
    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:24]}… ({len(repr(value))} characters)"
    return ValueError(f"{name}={shown} is not allowed; {allowed}")


def _bound(top: int) -> str:
    return f"{top:.0e}".replace("e+0", "e").replace("e+", "e")  # 1e18, 1e9


def validate(spec: TrainingSpec) -> TrainingSpec:
    """Raise ``ValueError`` naming the field, its value and what is allowed."""
    for name in ("params", "trainable_params", "active_params", "layers", "heads", "hidden",
                 "kv_heads", "head_dim", "ffn_hidden", "vocab", "seq_len", "batch_size", "global_batch",
                 "gpu_memory", "expert_ffn_hidden", "shared_expert_ffn_hidden", "largest_param"):
        value = getattr(spec, name)
        top = (MAX_BYTES if name == "gpu_memory" else MAX_COUNT if name.endswith(("params", "param"))
               else MAX_DIMENSION)
        if value is None:
            continue
        whole = isinstance(value, int) and not isinstance(value, bool)
        if name == "gpu_memory":  # bytes: a float such as 8e9 is fine
            whole = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not whole or not 0 < value <= top:
            raise _allowed(name, value, f"it must be a positive whole number, at most {_bound(top)}")
    for name in ("world_size", "tensor_parallel", "experts_active", "experts", "block_norms"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIMENSION:
            raise _allowed(name, value, f"it must be a whole number from 1 to {_bound(MAX_DIMENSION)}")
    if spec.overhead_bytes is not None and not 0 <= spec.overhead_bytes <= MAX_BYTES:
        raise _allowed("overhead_bytes", spec.overhead_bytes, f"it must be from 0 to {_bound(MAX_BYTES)}")
    if spec.lora_rank is not None and (not isinstance(spec.lora_rank, int) or isinstance(spec.lora_rank, bool)
                                       or not 1 <= spec.lora_rank <= MAX_LORA_RANK):
        raise _allowed("lora_rank", spec.lora_rank, f"it must be a whole number from 1 to {MAX_LORA_RANK}")
    bad = [t for t in spec.lora_targets if t not in LORA_TARGETS] if isinstance(spec.lora_targets, tuple) else [0]
    if bad or not spec.lora_targets:
        raise _allowed("lora_targets", spec.lora_targets, f"a non-empty tuple of {', '.join(LORA_TARGETS)}")
    if not isinstance(spec.fused_linears, tuple) or any(m not in FUSED for m in spec.fused_linears):
        raise _allowed("fused_linears", spec.fused_linears, f"a tuple of {', '.join(FUSED)}")
    if spec.quantize is not None and spec.quantize not in QUANTIZE:
        raise _allowed("quantize", spec.quantize, f"allowed: {', '.join(QUANTIZE)}")
    if spec.quantize is not None and spec.trainable_params is None and spec.lora_rank is None:
        raise _allowed("quantize", spec.quantize, "a quantised base is frozen: train adapters (lora_rank) "
                       "or give trainable_params")
    if spec.quantize is not None and spec.params is not None:
        from llmops.estimate.quant import quantized_weights  # quant builds on this module

        quantized = quantized_weights(spec)
        if quantized > spec.params:
            raise _allowed("params", spec.params, f"the {spec.quantize} layers of this architecture alone hold "
                           f"{quantized:,} weights: give the parameter count of the same model")
    if spec.double_quant and spec.quantize != "nf4":
        raise _allowed("double_quant", spec.double_quant, "it applies to quantize='nf4' only")
    if spec.quant_keeps_input and spec.quantize != "nf4":
        raise _allowed("quant_keeps_input", spec.quant_keeps_input, "it applies to quantize='nf4' only")
    if spec.quantized_from is not None and (spec.quantize != "nf4" or spec.quantized_from not in QUANTIZED_FROM):
        raise _allowed("quantized_from", spec.quantized_from,
                       f"one of {', '.join(QUANTIZED_FROM)}, with quantize='nf4' only")
    if spec.quantize_head and (spec.quantize is None or not spec.vocab):
        raise _allowed("quantize_head", spec.quantize_head, "it needs quantize and vocab")
    if get_precision(spec.precision).name.endswith("-fsdp") and spec.strategy != "fsdp":
        raise _allowed("precision", spec.precision, "it is FSDP2's mixed-precision policy: needs strategy='fsdp'")
    if not 0 < spec.safety <= 1:
        raise _allowed("safety", spec.safety, "it must be in (0, 1]")
    get_precision(spec.precision)
    for name, choices in (("strategy", STRATEGIES), ("optimizer", tuple(OPTIMIZER_STATES)),
                          ("attention", ATTENTION), ("recompute", RECOMPUTE), ("device", DEVICES),
                          ("activation", tuple(ACTIVATIONS)), ("norm", NORMS),
                          ("experts_implementation", EXPERTS_IMPLEMENTATIONS), ("lora_layout", LORA_LAYOUTS)):
        if getattr(spec, name) not in choices:
            raise _allowed(name, getattr(spec, name), f"allowed: {', '.join(choices)}")
    if spec.heads and spec.hidden and spec.hidden % spec.heads and spec.head_dim is None:
        raise _allowed("heads", spec.heads, f"it must divide hidden={spec.hidden}")
    if spec.heads and spec.kv_heads and spec.heads % spec.kv_heads:
        raise _allowed("kv_heads", spec.kv_heads, f"it must divide heads={spec.heads}")
    t = spec.tensor_parallel
    if t > 1 and spec.heads and spec.heads % t:
        raise _allowed("tensor_parallel", t, f"it must divide heads={spec.heads} (each rank holds whole heads)")
    if t > 1 and spec.hidden and spec.hidden % t:
        raise _allowed("tensor_parallel", t, f"it must divide hidden={spec.hidden}")
    if spec.experts_active > spec.experts > 1:
        raise _allowed("experts_active", spec.experts_active, f"it must be ≤ experts={spec.experts}")
    if spec.trainable_params and spec.params and spec.trainable_params > spec.params:
        raise _allowed("trainable_params", spec.trainable_params, f"it must be ≤ params={spec.params}")
    return spec


# Bytes by what holds them at the peak moment of a step; they sum to the peak. ``temporaries``: what the
# backward and the optimizer step allocate besides gradients and states (the loss's gradients included).
def validate_input(spec: TrainingSpec) -> TrainingSpec:
    """``validate``, and what only a person's input can get wrong (a plan the what-if derives may
    round the global batch up): a global batch that is no whole number of micro-batches per rank,
    or more than one rank with ``strategy="single"``."""
    validate(spec)
    if spec.strategy == "single" and spec.world_size > 1:
        raise _allowed("world_size", spec.world_size,
                       "1 with strategy='single'; use ddp, zero1-3 or fsdp for more ranks")
    if spec.global_batch and spec.batch_size and spec.global_batch % (spec.batch_size * spec.world_size):
        raise _allowed("global_batch", spec.global_batch,
                       f"a multiple of batch_size × world_size = {spec.batch_size * spec.world_size} "
                       "(micro-batches per rank per step are whole)")
    return spec


COMPONENTS = (*vocabulary.COMPONENTS, vocabulary.PEAK)  # the component label of llmops_memory_predicted_bytes


@dataclass(frozen=True)
class Estimate:
    """One model's prediction for a spec; bytes per device, ``None`` where an input is missing.

    The components are what is alive at the peak moment (``peak_phase``: forward, backward or the
    optimizer step) and sum to ``peak_bytes``; ``grads_bytes`` is 0 when the peak falls where
    ``zero_grad`` has freed them and backward has not made them yet.
    """

    model: str  # "document" or "refined"
    inference_bytes: int | None = None
    params_bytes: int | None = None
    grads_bytes: int | None = None
    optimizer_state_bytes: int | None = None
    activation_bytes: int | None = None
    temporary_bytes: int | None = None
    overhead_bytes: int | None = None
    peak_bytes: int | None = None
    budget_bytes: int | None = None  # safety × gpu_memory
    peak_phase: str | None = None  # forward, backward or optimizer; None where one moment is all the model has
    gpus_training: int | None = None
    gpus_inference: int | None = None
    max_batch_size: int | None = None
    accumulate: int | None = None  # micro-batches per optimizer step that keep global_batch at b_max
    oom_risk: bool | None = None
    missing: tuple[str, ...] = ()  # what could not be computed, and why
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_state_bytes(self) -> int | None:
        parts = (self.params_bytes, self.grads_bytes, self.optimizer_state_bytes)
        return None if None in parts else sum(parts)  # type: ignore[arg-type]

    def components(self) -> dict[str, int | None]:
        """Bytes by the ``component`` label of ``llmops_memory_predicted_bytes``."""
        return {
            "params": self.params_bytes, "grads": self.grads_bytes,
            "optimizer_states": self.optimizer_state_bytes, "activations": self.activation_bytes,
            "temporaries": self.temporary_bytes, "overhead": self.overhead_bytes, "peak": self.peak_bytes,
        }

    def to_json(self) -> dict[str, Any]:
        """The keys of ``llmops estimate --json`` (bytes as integers)."""
        out: dict[str, Any] = {
            "inference_bytes": self.inference_bytes,
            "model_state_bytes": self.model_state_bytes,
            "activation_bytes": self.activation_bytes,
            "peak_bytes": self.peak_bytes,
            "gpus_training": self.gpus_training,
            "gpus_inference": self.gpus_inference,
            "max_batch_size": self.max_batch_size,
            "oom_risk": self.oom_risk,
        }
        if self.model != "document":
            out.update(components=self.components(), accumulate=self.accumulate,
                       budget_bytes=self.budget_bytes, peak_phase=self.peak_phase, missing=list(self.missing),
                       notes=list(self.notes), **self.extra)
        return out
