"""What each spec field allows, and the tables the estimator reads by those names (formulas.md's symbols where
there are some); pure constants."""

from __future__ import annotations

from llmops import vocabulary

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
