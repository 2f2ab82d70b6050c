"""The sections of a ``TrainingSpec``: its fields grouped by what they describe, each section with the one check
of its fields (``ValueError`` naming the field, its value and what is allowed). ``TrainingSpec`` joins them, so
the estimator reads ``spec.hidden`` as formulas.md writes ``h``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llmops.spec.choices import (
    ACTIVATIONS,
    ATTENTION,
    DEVICES,
    EXPERTS_IMPLEMENTATIONS,
    FUSED,
    LORA_LAYOUTS,
    LORA_TARGETS,
    MAX_DIMENSION,
    MAX_LORA_RANK,
    NORMS,
    OPTIMIZER_STATES,
    QUANTIZE,
    QUANTIZED_FROM,
    RECOMPUTE,
    STRATEGIES,
)
from llmops.units import MAX_BYTES, MAX_COUNT, get_precision


@dataclass(frozen=True)
class Model:
    """The architecture: what a config.json says (formulas.md's N, L, a, h, V)."""

    params: int | None = None  # N: every parameter, trainable or frozen
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
    # the attention and the MLP both read the block's input (GPT-NeoX, Pythia, Falcon, Phi-2, GPT-J): one
    # residual tensor for both norms (layer.block_norm_bytes)
    parallel_residual: bool = False
    # how the attention gets its K and V (layer.qkv_kept): RoPE rotates Q and K into new tensors (GPT-2's
    # learned positions do not); K and V repeated to the query heads first (LitGPT in training, Hugging Face's
    # eager attention, and its SDPA when it is given a mask)
    rotary: bool = True
    largest_param: int | None = None  # elements of the largest trainable tensor (Adam's CPU temporaries)
    vocab: int | None = None  # V
    dropout: bool = True
    # what the architecture holds that the refined model does not model (hf_config.unmodelled): its figure may
    # then be low, and it says so; the dry run decides
    unmodelled: tuple[str, ...] = ()

    def _check_model(self: Any) -> None:
        _positive_whole(self, ("params", "active_params", "layers", "heads", "hidden", "kv_heads", "head_dim",
                               "ffn_hidden", "vocab", "expert_ffn_hidden", "shared_expert_ffn_hidden",
                               "largest_param"))
        for name in ("experts_active", "experts", "block_norms"):
            _from_one(self, name)
        _one_of(self, "activation", tuple(ACTIVATIONS))
        _one_of(self, "norm", NORMS)
        if not isinstance(self.unmodelled, tuple) or not all(isinstance(u, str) for u in self.unmodelled):
            raise allowed("unmodelled", self.unmodelled, "a tuple of descriptions")
        if self.heads and self.hidden and self.hidden % self.heads and self.head_dim is None:
            raise allowed("heads", self.heads, f"it must divide hidden={self.hidden}")
        if self.heads and self.kv_heads and self.heads % self.kv_heads:
            raise allowed("kv_heads", self.kv_heads, f"it must divide heads={self.heads}")
        if self.experts_active > self.experts > 1:
            raise allowed("experts_active", self.experts_active, f"it must be ≤ experts={self.experts}")


@dataclass(frozen=True)
class Kernels:
    """How the code runs the model: the attention kernel, which tensors it makes and keeps, how it stores
    fused projections and experts. These differ between libraries for one architecture."""

    attention: str = "plain"
    norm_upcast: bool = True  # RMSNorm computes in fp32 (Hugging Face's; LitGPT's from 2024; not LitGPT 2023's)
    # RoPE rotates part of each head and concatenates the rest back (GPT-NeoX, Phi-2, Phi-3, GPT-J, LitGPT): Q, and
    # so the attention's output, come out head-major, and the output projection reads a transposed copy
    rope_concat: bool = False
    kv_repeat: bool = False
    kv_cache: bool = False  # the forward writes K and V into a cache in training (Hugging Face's use_cache=True)
    loss_upcast: bool = True  # the loss upcasts the logits to fp32 (Hugging Face's logits.float())
    fused_linears: tuple[str, ...] = ()  # modules of FUSED the block stores as one linear (Phi-3: qkv, gate_up)
    # A mixture's experts stored as fused 3-D stacks (transformers >= 5: gate_up_proj, down_proj per layer), as
    # opposed to one nn.Linear per expert (transformers 4). It matters only for LoRA on the experts: PEFT then
    # adapts each stack whole (experts.merged_stack_bytes), not each expert's linears.
    fused_experts: bool = True
    experts_implementation: str = "grouped_mm"  # how fused stacks run (EXPERTS_IMPLEMENTATIONS)

    def _check_kernels(self: Any) -> None:
        if not isinstance(self.fused_linears, tuple) or any(m not in FUSED for m in self.fused_linears):
            raise allowed("fused_linears", self.fused_linears, f"a tuple of {', '.join(FUSED)}")
        _one_of(self, "attention", ATTENTION)
        _one_of(self, "experts_implementation", EXPERTS_IMPLEMENTATIONS)


@dataclass(frozen=True)
class Batch:
    """What one step sees: the sequence length, the micro-batch per device and the global batch."""

    seq_len: int | None = None  # s
    batch_size: int | None = None  # b, micro-batch per device
    global_batch: int | None = None  # samples per optimizer step over all ranks

    def _check_batch(self: Any) -> None:
        _positive_whole(self, ("seq_len", "batch_size", "global_batch"))


@dataclass(frozen=True)
class Parallelism:
    """How the run is spread: the strategy that shards states, the data-parallel and tensor-parallel degrees."""

    strategy: str = "ddp"
    world_size: int = 1  # n, data-parallel ranks
    tensor_parallel: int = 1

    def _check_parallelism(self: Any) -> None:
        for name in ("world_size", "tensor_parallel"):
            _from_one(self, name)
        _one_of(self, "strategy", STRATEGIES)
        t = self.tensor_parallel
        if t > 1 and self.heads and self.heads % t:
            raise allowed("tensor_parallel", t, f"it must divide heads={self.heads} (each rank holds whole heads)")
        if t > 1 and self.hidden and self.hidden % t:
            raise allowed("tensor_parallel", t, f"it must divide hidden={self.hidden}")


@dataclass(frozen=True)
class Numerics:
    """The precision of parameters, gradients, compute and states, and the optimizer whose states they are."""

    precision: str = "bf16"
    optimizer: str = "adamw"

    def _check_numerics(self: Any) -> None:
        if get_precision(self.precision).name.endswith("-fsdp") and self.strategy != "fsdp":
            raise allowed("precision", self.precision, "it is FSDP2's mixed-precision policy: needs strategy='fsdp'")
        _one_of(self, "optimizer", tuple(OPTIMIZER_STATES))


@dataclass(frozen=True)
class Adapters:
    """What trains: every parameter, or LoRA adapters over a frozen base (lora.py counts them)."""

    trainable_params: int | None = None  # parameters with gradients; None = all of them
    # LoRA: the base is frozen and adapters of this rank train on lora_targets (lora.py counts them)
    lora_rank: int | None = None
    lora_targets: tuple[str, ...] = ("q", "v")
    lora_dropout: bool = False  # dropout on the adapters' input (PEFT's lora_dropout > 0)
    # whose LoRA layers (LORA_LAYOUTS): PEFT's, one adapter a module; or LitGPT's, whose q/k/v adapters are one
    # LoRAQKVLinear over its fused qkv (layer.adapter_activation_bytes)
    lora_layout: str = "peft"
    # the MLP's LoRA targets reach the experts (and, beside fused stacks, the router); False where only a shared
    # expert's linears are: PEFT adapts fused stacks only on the architectures its v4 → v5 conversion knows
    # (0.21 leaves Qwen2-MoE's alone; 0.22 adapts them). A live run reads it; planning assumes the newest PEFT
    lora_experts: bool = True

    def _check_adapters(self: Any) -> None:
        _positive_whole(self, ("trainable_params",))
        if self.lora_rank is not None and (not isinstance(self.lora_rank, int) or isinstance(self.lora_rank, bool)
                                           or not 1 <= self.lora_rank <= MAX_LORA_RANK):
            raise allowed("lora_rank", self.lora_rank, f"it must be a whole number from 1 to {MAX_LORA_RANK}")
        targets = self.lora_targets
        bad = [t for t in targets if t not in LORA_TARGETS] if isinstance(targets, tuple) else [0]
        if bad or not targets:
            raise allowed("lora_targets", targets, f"a non-empty tuple of {', '.join(LORA_TARGETS)}")
        _one_of(self, "lora_layout", LORA_LAYOUTS)
        if self.trainable_params and self.params and self.trainable_params > self.params:
            raise allowed("trainable_params", self.trainable_params, f"it must be ≤ params={self.params}")


@dataclass(frozen=True)
class Quantisation:
    """A frozen base stored quantised by bitsandbytes (QLoRA), and how its layers dequantise."""

    quantize: str | None = None  # the frozen base's block linears in nf4 or int8; compute stays in precision
    double_quant: bool = False  # nf4's block constants quantised too (QLoRA's double quantisation)
    quantize_head: bool = False  # the output head quantised too (LitGPT's BitsandbytesPrecision: every nn.Linear)
    # bitsandbytes before 0.43.2 (PR #1270): 4-bit layers keep their input on ctx until the graph is freed
    quant_keeps_input: bool = False
    # the dtype the nf4 base was quantised from, which bitsandbytes dequantises it into (QuantState.dtype;
    # Lightning's BitsandbytesPrecision: fp16 whatever the precision); None: the compute dtype
    quantized_from: str | None = None

    def _check_quantisation(self: Any) -> None:
        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise allowed("quantize", self.quantize, f"allowed: {', '.join(QUANTIZE)}")
        if self.quantize is not None and self.trainable_params is None and self.lora_rank is None:
            raise allowed("quantize", self.quantize, "a quantised base is frozen: train adapters (lora_rank) "
                          "or give trainable_params")
        if self.quantize is not None and self.params is not None:
            from llmops.estimate.quant import quantized_weights  # the estimator's count, on a checked architecture

            quantized = quantized_weights(self)
            if quantized > self.params:
                raise allowed("params", self.params, f"the {self.quantize} layers of this architecture alone hold "
                              f"{quantized:,} weights: give the parameter count of the same model")
        if self.double_quant and self.quantize != "nf4":
            raise allowed("double_quant", self.double_quant, "it applies to quantize='nf4' only")
        if self.quant_keeps_input and self.quantize != "nf4":
            raise allowed("quant_keeps_input", self.quant_keeps_input, "it applies to quantize='nf4' only")
        if self.quantized_from is not None and (self.quantize != "nf4" or self.quantized_from not in QUANTIZED_FROM):
            raise allowed("quantized_from", self.quantized_from,
                          f"one of {', '.join(QUANTIZED_FROM)}, with quantize='nf4' only")
        if self.quantize_head and (self.quantize is None or not self.vocab):
            raise allowed("quantize_head", self.quantize_head, "it needs quantize and vocab")


@dataclass(frozen=True)
class Loop:
    """How the training loop runs the step: activation recomputation and what it holds between micro-batches."""

    recompute: str = "none"
    # the training loop holds the last micro-batch's outputs, and so its graph, into the next forward
    # (LitGPT's finetune scripts: ``logits`` is rebound only when the next forward returns)
    keeps_outputs: bool = False
    # the loop's first micro-batch is its longest, and the later ones are short enough that the step that peaks is
    # the first, with no earlier micro-batch alive (LitGPT's 2023 finetune scripts force the longest sample first)
    longest_first: bool = False

    def _check_loop(self: Any) -> None:
        _one_of(self, "recompute", RECOMPUTE)


@dataclass(frozen=True)
class Device:
    """The device the run is planned for, the memory the OOM check uses, and the fixed overhead per process."""

    device: str = "cuda"  # cuda keeps 1-byte dropout masks; the CPU keeps compute-dtype masks
    gpu_memory: int | None = None  # bytes per device the OOM check uses
    safety: float = 0.9  # fraction of gpu_memory a run may use
    overhead_bytes: int | None = None  # None: the refined model's default for the device

    def _check_device(self: Any) -> None:
        _positive_whole(self, ("gpu_memory",))
        if self.overhead_bytes is not None and not 0 <= self.overhead_bytes <= MAX_BYTES:
            raise allowed("overhead_bytes", self.overhead_bytes, f"it must be from 0 to {_bound(MAX_BYTES)}")
        if not 0 < self.safety <= 1:
            raise allowed("safety", self.safety, "it must be in (0, 1]")
        _one_of(self, "device", DEVICES)


def allowed(name: str, value: object, what: str) -> ValueError:
    """The one shape of a bad-value error: the field, its value (cut when long) and what is allowed."""
    shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:24]}… ({len(repr(value))} characters)"
    return ValueError(f"{name}={shown} is not allowed; {what}")


def _bound(top: int) -> str:
    return f"{top:.0e}".replace("e+0", "e").replace("e+", "e")  # 1e18, 1e9


def _positive_whole(spec: Any, names: tuple[str, ...]) -> None:
    """Each field a positive whole number up to its bound, or None (unknown); bytes may be a finite float."""
    for name in names:
        value = getattr(spec, name)
        if value is None:
            continue
        top = MAX_BYTES if name == "gpu_memory" else MAX_COUNT if name.endswith(("params", "param")) else MAX_DIMENSION
        whole = isinstance(value, int) and not isinstance(value, bool)
        if name == "gpu_memory":  # bytes: a float such as 8e9 is fine
            whole = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not whole or not 0 < value <= top:
            raise allowed(name, value, f"it must be a positive whole number, at most {_bound(top)}")


def _from_one(spec: Any, name: str) -> None:
    value = getattr(spec, name)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIMENSION:
        raise allowed(name, value, f"it must be a whole number from 1 to {_bound(MAX_DIMENSION)}")


def _one_of(spec: Any, name: str, choices: tuple[str, ...]) -> None:
    if getattr(spec, name) not in choices:
        raise allowed(name, getattr(spec, name), f"allowed: {', '.join(choices)}")
