"""The run → the estimator's inputs: model config, batch shape, precision, strategy, optimizer.

Reads only public attributes of the module, the batch, the optimizers and the trainer;
what it cannot find it reports by name and leaves ``None`` (never guessed).
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from llmops.estimate import TrainingSpec
from llmops.estimate.lora import HF_NAMES, QKV, ROUTER
from llmops.spec.builder import SpecBuilder
from llmops.spec.choices import LORA_TARGETS
from llmops.spec.hf_config import architecture, get
from llmops.units import PRECISION_ALIASES

LIGHTNING_PRECISION = {"32-true": "fp32", "32": "fp32", "16-mixed": "16-mixed", "16": "16-mixed",
                       "bf16-mixed": "bf16-mixed", "bf16": "bf16-mixed", "16-true": "16-true",
                       "bf16-true": "bf16-true"}
REQUIRED = ("layers", "heads", "hidden", "seq_len", "batch_size")


@dataclass
class Introspection:
    """What was read from the run, and what could not be."""

    spec: TrainingSpec
    sources: dict[str, str] = field(default_factory=dict)  # field → where it was read
    missing: list[str] = field(default_factory=list)  # fields needed and not found


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameters, each shared tensor counted once; a bitsandbytes 4-bit weight by
    the shape it was quantised from (its packed storage holds two values per byte)."""
    total = trainable = 0
    for p in module.parameters():  # parameters() already yields a shared tensor once
        n = param_numel(p)
        total += n
        trainable += n if p.requires_grad else 0
    return total, trainable


def param_numel(p: torch.Tensor) -> int:
    """Values a parameter stands for: ``Params4bit`` keeps the original shape in its ``quant_state``."""
    shape = getattr(getattr(p, "quant_state", None), "shape", None)
    return math.prod(shape) if shape is not None else p.numel()


# bitsandbytes before this version keeps each 4-bit layer's input on ctx (PR #1270 stopped it)
BNB_KEEPS_INPUT_BEFORE = (0, 43, 2)


def quant_fields(module: nn.Module) -> dict[str, Any]:
    """``quantize`` (and ``double_quant``) of a model with bitsandbytes layers: ``Linear4bit`` stores nf4 or
    fp4 in the same layout (4 bits + an absmax per 64, ``compress_statistics`` quantising the absmax too),
    counted as nf4; ``Linear8bitLt`` int8 with row scales. ``quantize_head`` where the output head is one
    of them; ``quant_keeps_input`` under a bitsandbytes older than ``BNB_KEEPS_INPUT_BEFORE``;
    ``quantized_from``, the dtype its ``QuantState`` dequantises into, once the weight is quantised. Else {}."""
    head = _quantized(_output_head(module))
    for m in module.modules():
        kind = _quantized(m)
        if kind == "nf4":
            weight = m.weight  # type: ignore[union-attr]
            dtype = getattr(getattr(weight, "quant_state", None), "dtype", None)
            source = PRECISION_ALIASES.get(str(dtype).removeprefix("torch."))  # float16 → fp16
            return {"quantize": "nf4", "double_quant": bool(getattr(weight, "compress_statistics", False)),
                    "quantize_head": head == "nf4", "quant_keeps_input": () < bnb_version() < BNB_KEEPS_INPUT_BEFORE,
                    **({"quantized_from": source} if source else {})}
        if kind == "int8":
            return {"quantize": "int8", "quantize_head": head == "int8"}
    return {}


def _quantized(m: nn.Module | None) -> str | None:
    """``nf4`` or ``int8`` for a bitsandbytes layer (by its weight's type), else ``None``."""
    kind = type(getattr(m, "weight", None)).__name__
    return {"Params4bit": "nf4", "Int8Params": "int8"}.get(kind)


def _output_head(module: nn.Module) -> nn.Module | None:
    """The output projection: Hugging Face's ``get_output_embeddings()``, else a submodule named ``lm_head``."""
    try:
        head = module.get_output_embeddings()  # type: ignore[operator]
    except (AttributeError, NotImplementedError, TypeError):
        head = None
    if isinstance(head, nn.Module):
        return head
    return next((m for name, m in module.named_modules() if name.rsplit(".", 1)[-1] == "lm_head"), None)


def bnb_version() -> tuple[int, ...]:
    """The loaded bitsandbytes' version as numbers, ``()`` where it is not loaded or says none."""
    bnb = sys.modules.get("bitsandbytes")
    return tuple(int(x) for x in re.findall(r"\d+", str(getattr(bnb, "__version__", "")))[:3])


def find_config(module: nn.Module) -> tuple[dict[str, int], str | None]:
    """Architecture figures from the first ``config`` found on the module or a submodule."""
    for name, sub in module.named_modules():
        cfg = getattr(sub, "config", None)
        if cfg is None or isinstance(cfg, (str, int, float)):
            continue
        found = architecture(cfg)
        if found:
            if get(cfg, "model_type") is not None:  # Hugging Face: its causal-LM loss upcasts the logits
                # the causal LM may sit inside a wrapper that carries its config (PEFT's PeftModel, no task_type)
                found["loss_upcast"] = any(type(m).__name__.endswith(("ForCausalLM", "LMHeadModel"))
                                           for m in sub.modules())
            return found, f"{name or type(module).__name__}.config"
    return _from_torch_modules(module)


def recompute_mode(module: nn.Module) -> str | None:
    """``"full"`` or ``"selective"`` where activation checkpointing is on, else ``None``. Hugging Face's
    ``gradient_checkpointing_enable()`` sets ``gradient_checkpointing = True`` on the modules it wraps
    (read as an attribute: the property ``is_gradient_checkpointing`` warns of its deprecation) and its
    ``_gradient_checkpointing_func``; PyTorch's ``checkpoint_wrapper`` (torchtitan, Lightning's FSDP
    ``activation_checkpointing_policy``) keeps a ``checkpoint_fn``. A ``context_fn`` among their
    arguments is a selective-checkpointing policy, counted as torchtitan's (activations.checkpointed_layer_bytes)."""
    found = None
    for m in module.modules():
        fn = getattr(m, "checkpoint_fn", None) if type(m).__name__ == "CheckpointWrapper" else \
            getattr(m, "_gradient_checkpointing_func", None) if getattr(m, "gradient_checkpointing", False) is True \
            else False
        if fn is False:
            continue
        if "context_fn" in (getattr(fn, "keywords", None) or {}):
            return "selective"
        found = "full"
    return found


def largest_trainable_param(module: nn.Module) -> int | None:
    """Elements of the largest trainable parameter tensor (Adam's CPU step works one at a time)."""
    return max((p.numel() for p in module.parameters() if p.requires_grad), default=None)


def _from_torch_modules(module: nn.Module) -> tuple[dict[str, int], str | None]:
    """``nn.TransformerEncoderLayer`` / ``nn.MultiheadAttention`` stacks."""
    layers = [m for m in module.modules() if isinstance(m, (nn.TransformerEncoderLayer,
                                                             nn.TransformerDecoderLayer))]
    attn = [m for m in module.modules() if isinstance(m, nn.MultiheadAttention)]
    if not attn:
        return {}, None
    found = {"layers": len(layers) or len(attn), "heads": attn[0].num_heads, "hidden": attn[0].embed_dim}
    if layers:
        found["ffn_hidden"] = layers[0].linear1.out_features
    emb = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    if emb:
        found["vocab"] = emb[0].num_embeddings
    return found, "nn.MultiheadAttention modules"


def batch_shape(batch: Any) -> tuple[int | None, int | None]:
    """``(b, s)`` from the first token tensor of a batch (``input_ids`` first), without reading data. Every
    batch, on the training thread: the first tensor is found without walking the rest."""
    t = _first_tensor(batch)
    if t is None:
        return None, None
    shape = t.shape
    if len(shape) == 3 or (len(shape) >= 2 and not t.is_floating_point()):  # tokens, or (b, s, h) embeddings
        return int(shape[0]), int(shape[1])
    return (int(shape[0]) if shape else None), None


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if (t := _first_tensor(item)) is not None:
                return t
    elif isinstance(batch, Mapping):
        for key in ("input_ids", *batch.keys()):
            if key in batch and (t := _first_tensor(batch[key])) is not None:
                return t
    return None


def optimizer_name(optimizers: list[torch.optim.Optimizer]) -> str | None:
    """The estimator's optimizer name for the first optimizer; ``None`` when unknown."""
    if not optimizers:
        return None
    opt = optimizers[0]
    group = opt.param_groups[0] if opt.param_groups else {}
    if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW)):
        base = "adamw" if isinstance(opt, torch.optim.AdamW) else "adam"
        return base + ("-amsgrad" if group.get("amsgrad") else "")
    if isinstance(opt, torch.optim.SGD):
        return "sgd-momentum" if group.get("momentum", 0) else "sgd"
    if type(opt).__module__.startswith("bitsandbytes"):
        return BNB_OPTIMIZERS.get(type(opt).__name__)
    return {torch.optim.RMSprop: "rmsprop", torch.optim.Adagrad: "adagrad"}.get(type(opt))


# bitsandbytes' optimizer classes (bnb.optim) → the estimator's names
BNB_OPTIMIZERS = {"AdamW8bit": "adamw8bit", "Adam8bit": "adam8bit", "PagedAdamW8bit": "paged_adamw8bit",
                  "PagedAdamW": "paged_adamw", "PagedAdamW32bit": "paged_adamw", "Lion8bit": "lion8bit",
                  "PagedLion8bit": "paged_lion8bit"}


def _dropouts(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def _lora_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """PEFT's and LitGPT's LoRA layers: a module with ``lora_A`` and a rank ``r`` (an int, or PEFT's dict)."""
    return [(n, m) for n, m in module.named_modules() if hasattr(m, "lora_A") and isinstance(getattr(m, "r", None),
                                                                                              (int, dict))]


def has_dropout(module: nn.Module) -> bool:
    """Whether any of the model's own dropout modules would drop values in training. LoRA's are not counted:
    those of its layers, and any named ``lora_dropout`` (LitGPT gives its LoRA linears one even where r = 0)."""
    lora = {id(d) for _, m in _lora_layers(module) for d in _dropouts(m)}
    lora |= {id(d) for n, d in module.named_modules() if "lora_dropout" in n.split(".")}
    return any(id(d) not in lora for d in _dropouts(module))


# PEFT's ParamWrapper adapts a parameter, not a module: the fused expert stacks of transformers 5, by name
_STACKS = {"gate_up_proj": ("gate", "up"), "down_proj": ("down",), "up_proj": ("up",)}


# LitGPT's module names (litgpt/model.py): fc_1 and fc_2 are a gated MLP's gate and up (fc a plain MLP's up), and proj
# is the attention's output projection under attn, the MLP's down projection elsewhere
_LITGPT_NAMES = {"fc_1": ("gate",), "fc_2": ("up",), "fc": ("up",)}


def _qkv_enabled(layer: nn.Module) -> tuple[bool, ...] | None:
    """LitGPT's ``LoRAQKVLinear``: which of q, k, v its one layer adapts (``enable_lora``); else ``None``."""
    enabled = getattr(layer, "enable_lora", None)
    return tuple(enabled) if isinstance(enabled, (list, tuple)) and len(enabled) == len(QKV) else None


def _adapted(name: str, layer: nn.Module) -> tuple[str, ...]:
    """The projections one LoRA layer adapts, from its module name (``HF_NAMES``, LitGPT's). A module named
    ``gate`` is a mixture's router, ``shared_expert_gate`` a shared expert's. LitGPT's fused ``LoRAQKVLinear``
    adapts the projections ``enable_lora`` says."""
    enabled = _qkv_enabled(layer)
    if enabled is not None:
        return tuple(p for p, on in zip(QKV, enabled, strict=True) if on)
    parent, _, last = name.rpartition(".")
    if last in ("gate", "shared_expert_gate"):
        return (ROUTER,)
    if last == "proj":
        return ("o",) if parent.rsplit(".", 1)[-1] == "attn" else ("down",)
    return _LITGPT_NAMES.get(last) or HF_NAMES.get(last, (last,))


def lora_fields(module: nn.Module) -> dict[str, Any]:
    """``lora_rank``, ``lora_targets``, ``lora_dropout`` and ``fused_experts`` of a model with LoRA layers
    (PEFT, LitGPT); else {}. A module named ``gate`` is a mixture's router (the MLP's is ``gate_proj`` or
    ``w1``). A fused ``gate_up_proj`` stack at 2r is its two projections at r (PEFT's all-linear), else
    ``gate_up`` at its own rank. Fused stacks without adapters leave the experts out (``lora_experts``): the
    MLP names read are a shared expert's."""
    layers = _lora_layers(module)
    if not layers:
        return {}
    names: set[str] = set()
    ranks, stacks = [], {}
    for n, m in layers:
        r = max(m.r.values()) if isinstance(m.r, dict) else m.r
        param = getattr(m, "parameter_name", None) or ""
        if param in _STACKS:  # a ParamWrapper over a fused stack
            stacks[param] = r
            continue
        names.update(_adapted(n, m))
        ranks.append(r)
    rank = max(ranks) if ranks else min(stacks.values())
    for param, r in stacks.items():  # gate_up at its own rank where it is not r for each of its projections
        names.update(("gate_up",) if param == "gate_up_proj" and r != 2 * rank else _STACKS[param])
    fused = any(p.dim() == 3 for name, p in module.named_parameters() if ".experts." in f".{name}")
    litgpt = any(_qkv_enabled(m) is not None for _, m in layers)
    return {"lora_rank": rank, "fused_experts": fused, "lora_experts": not fused or bool(stacks),
            "lora_layout": "litgpt" if litgpt else "peft",
            "lora_targets": tuple(t for t in LORA_TARGETS if t in names) or ("q", "v"),
            "lora_dropout": any(_dropouts(m) for _, m in layers)}


def strategy_name(strategy: Any) -> str | None:
    """The estimator's strategy for a Lightning strategy object, from its class and public settings."""
    cls = type(strategy).__name__
    if cls.startswith("SingleDevice"):
        return "single"
    if cls.startswith("DDP"):
        return "ddp"
    if cls.startswith("FSDP") or cls.startswith("ModelParallel"):
        shard = str(getattr(strategy, "sharding_strategy", "FULL_SHARD"))
        return "zero2" if "SHARD_GRAD_OP" in shard else "ddp" if "NO_SHARD" in shard else "fsdp"
    if cls.startswith("DeepSpeed"):
        stage = (getattr(strategy, "config", None) or {}).get("zero_optimization", {}).get("stage", 0)
        return {1: "zero1", 2: "zero2", 3: "zero3"}.get(stage, "ddp")
    return None


def fsdp2_precision(module: nn.Module, precision: str | None) -> str | None:
    """``bf16-fsdp`` or ``16-fsdp`` where ``fully_shard`` was given a ``MixedPrecisionPolicy`` that gathers
    the fp32 parameters in a 2-byte type and the trainer adds no autocast (32-true), else ``None``."""
    if precision != "fp32":
        return None
    for m in module.modules():
        state = getattr(m, "_get_fsdp_state", None)
        dtype = getattr(getattr(state(), "_mp_policy", None), "param_dtype", None) if callable(state) else None
        if dtype in (torch.bfloat16, torch.float16):
            return "bf16-fsdp" if dtype == torch.bfloat16 else "16-fsdp"
    return None


def parallel_sizes(strategy: Any, world_size: int) -> tuple[int, int]:
    """``(data-parallel, tensor-parallel)`` sizes: Lightning's ``ModelParallelStrategy`` sets both (its
    ``"auto"`` resolved at setup: nodes × devices per node); every other strategy is data-parallel only."""
    tp = getattr(strategy, "_tensor_parallel_size", None)
    dp = getattr(strategy, "_data_parallel_size", None)
    if type(strategy).__name__.startswith("ModelParallel") and isinstance(tp, int) and isinstance(dp, int) and tp > 1:
        return dp, tp
    return max(1, world_size), 1


def introspect(module: nn.Module, batch: Any, *, precision: str, strategy: Any, world_size: int,
               accumulate: int, optimizers: list[torch.optim.Optimizer], device: str,
               gpu_memory: int | None, safety: float, override: Mapping[str, Any] | None = None) -> Introspection:
    """Build the estimator's spec from a Lightning run's public state and its first batch, one source at a time
    (``SpecBuilder``); ``override`` (the fields ``spec=`` sets) wins over anything read."""
    spec = SpecBuilder()
    total, trainable = count_parameters(module)
    cfg, cfg_source = find_config(module)
    spec.layer(cfg_source or "", cfg)
    spec.layer("module", {"dropout": has_dropout(module), **lora_fields(module), **quant_fields(module),
                          "largest_param": largest_trainable_param(module)})
    spec.layer("module parameters", {"params": total, "trainable_params": trainable})
    spec.layer("trainer", {"world_size": max(1, world_size), "device": device})
    spec.layer("monitor settings", {"safety": safety, "gpu_memory": gpu_memory})
    if (mode := recompute_mode(module)) is not None:
        spec.layer(f"module ({mode} activation checkpointing)", {"recompute": mode})
    b, s = batch_shape(batch)
    spec.layer("first batch", {"batch_size": b, "seq_len": s})
    if b:
        spec.layer("first batch × ranks × accumulation", {"global_batch": b * max(1, world_size) * max(1, accumulate)})
    dp, tp = parallel_sizes(strategy, world_size)
    if tp > 1:  # ModelParallelStrategy: the world is data-parallel × tensor-parallel ranks
        spec.layer(f"trainer ({type(strategy).__name__})", {"world_size": dp, "tensor_parallel": tp})
        spec.fields["global_batch"] = b * dp * max(1, accumulate) if b else None
    name = strategy_name(strategy)
    lightning_precision = LIGHTNING_PRECISION.get(str(precision))
    if name == "fsdp" and (mixed := fsdp2_precision(module, lightning_precision)):
        lightning_precision = mixed  # FSDP2's MixedPrecisionPolicy, read off the sharded modules
    for key, value, what in (("precision", lightning_precision, precision),
                             ("strategy", name, type(strategy).__name__),
                             ("optimizer", optimizer_name(optimizers),
                              type(optimizers[0]).__name__ if optimizers else "none")):
        spec.fields[key] = value  # None where it is not known: missing
        spec.note(key, f"trainer ({what})")
    for key, value in (override or {}).items():  # spec=: a None there means "not known", as a default would
        spec.fields[key] = value
        spec.note(key, "spec=")
    missing = [k for k in (*REQUIRED, "precision", "strategy", "optimizer") if spec.fields.get(k) is None]
    defaults = TrainingSpec()
    for k in ("precision", "strategy", "optimizer"):
        if spec.fields.get(k) is None:
            spec.fields[k] = getattr(defaults, k)  # placeholder; predictions that need it are dropped
    spec.fields = {k: v for k, v in spec.fields.items() if v is not None}
    return Introspection(spec.build(), dict(spec.sources), missing)
