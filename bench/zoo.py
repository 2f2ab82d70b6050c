"""Real architectures from Hugging Face configs with random weights (nothing is downloaded).

Small enough that a training step takes about a second on two CPU cores, with realistic proportions.
Every entry:

- sets ``attn_implementation`` explicitly (``Case.attn_implementation``): "eager" for the classic GPT-2
  and BERT (the score matrix materialized, dropout on it), "sdpa" for the others;
- sets ``experts_implementation`` explicitly for the MoE entries (``Case.experts_implementation``):
  "grouped_mm", transformers 5's default; it runs on the CPU in fp32, under bf16 autocast and in bf16,
  and so does "eager" (the loop over the experts);
- keeps the config's dropout defaults (GPT-2 and BERT: 0.1; the others: 0.0) and turns the model to
  training mode;
- sets ``use_cache=False`` (training does not want the KV cache);
- leaves the dtype to the caller (``dtype`` casts after building; bf16-true is ``model.to(torch.bfloat16)``).

    case = build("llama")
    truth = real_peak(case.model, case.batch, case.loss_fn, torch.optim.AdamW(case.model.parameters()))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PretrainedConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
)

NAMES: tuple[str, ...] = (
    "gpt2",
    "llama",
    "qwen2-tied",
    "mistral",
    "phi",
    "phi3",
    "bert-mlm",
    "llama-gc",
    "llama-sac",
    "llama-lora",
    "mixtral",
    "qwen2-moe",
)


# torchtitan's op-level selective checkpointing saves these ops' outputs (every other mm):
# torchtitan/models/llama3/infra/parallelize.py, _save_list. Its SDPA entries are CUDA's kernels; the
# CPU's flash kernel is this machine's equivalent.
SAC_SAVE = {
    torch.ops.aten.mm.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
}


def op_sac_context() -> tuple[Any, Any]:
    """``context_fn`` for ``torch.utils.checkpoint``: torchtitan's policy, one matmul count per call (a
    layer's forward and its recomputation count apart)."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    count = {False: 0, True: 0}

    def policy(ctx: Any, func: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
        if func == torch.ops.aten.mm.default:
            count[ctx.is_recompute] += 1
        save = func in SAC_SAVE and not (func == torch.ops.aten.mm.default and count[ctx.is_recompute] % 2 == 0)
        return CheckpointPolicy.MUST_SAVE if save else CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def hf_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss for the batch (the labels are in it)."""
    return model(**batch).loss


@dataclass
class Case:
    """One zoo entry, built: the model in training mode, its batch and loss."""

    name: str
    model: torch.nn.Module
    batch: dict[str, torch.Tensor]
    config: PretrainedConfig
    attn_implementation: str
    experts_implementation: str | None = None
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor] = hf_loss
    notes: list[str] = field(default_factory=list)

    @property
    def batch_size(self) -> int:
        return int(self.batch["input_ids"].shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.batch["input_ids"].shape[1])


_EAGER_ATTN = ("gpt2", "bert-mlm")
_MOE = ("mixtral", "qwen2-moe")
_EXPERTS = "grouped_mm"
_LLAMA: dict[str, Any] = dict(
    vocab_size=32000, hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=8,
    num_key_value_heads=2, max_position_embeddings=512,
)  # fmt: skip


def _config(name: str) -> tuple[type[torch.nn.Module], PretrainedConfig, int, int]:
    """The model class, its config, and the default (batch, seq) of an entry."""
    common: dict[str, Any] = dict(use_cache=False)
    cfg: PretrainedConfig
    if name == "gpt2":
        cfg = GPT2Config(vocab_size=50257, n_positions=512, n_embd=256, n_layer=2, n_head=4, **common)
        return GPT2LMHeadModel, cfg, 2, 128
    if name in ("llama", "llama-gc", "llama-sac", "llama-lora"):
        return LlamaForCausalLM, LlamaConfig(**_LLAMA, **common), 2, 128
    if name == "qwen2-tied":  # Qwen2-0.5B's vocabulary on a small trunk: the logits dominate
        cfg = Qwen2Config(
            vocab_size=151936, hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True, **common,
        )  # fmt: skip
        return Qwen2ForCausalLM, cfg, 2, 128
    if name == "mistral":  # the window is shorter than the sequence, so it masks
        cfg = MistralConfig(**_LLAMA, sliding_window=64, **common)
        return MistralForCausalLM, cfg, 2, 128
    if name == "phi":
        cfg = PhiConfig(
            vocab_size=51200, hidden_size=256, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=512, **common,
        )  # fmt: skip
        return PhiForCausalLM, cfg, 2, 128
    if name == "phi3":  # Q, K, V in one qkv_proj and the MLP's gate and up in one gate_up_proj, as Phi-3 stores them
        cfg = Phi3Config(**_LLAMA, pad_token_id=0, bos_token_id=1, eos_token_id=2, **common)
        return Phi3ForCausalLM, cfg, 2, 128
    if name == "bert-mlm":
        cfg = BertConfig(
            vocab_size=30522, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
            max_position_embeddings=512, **common,
        )  # fmt: skip
        return BertForMaskedLM, cfg, 2, 128
    if name == "mixtral":
        cfg = MixtralConfig(
            **{**_LLAMA, "intermediate_size": 512}, num_local_experts=4, num_experts_per_tok=2, **common,
        )  # fmt: skip
        return MixtralForCausalLM, cfg, 2, 128
    if name == "qwen2-moe":
        cfg = Qwen2MoeConfig(
            vocab_size=32000, hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=512, intermediate_size=1024, moe_intermediate_size=256,
            shared_expert_intermediate_size=512, num_experts=4, num_experts_per_tok=2, **common,
        )  # fmt: skip
        return Qwen2MoeForCausalLM, cfg, 2, 128
    raise KeyError(f"unknown zoo entry {name!r}; one of {', '.join(NAMES)}")


def _batch(name: str, vocab: int, b: int, s: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    if name == "bert-mlm":  # 15% of the positions masked, the others ignored by the loss
        picked = torch.rand(b, s, generator=g) < 0.15
        picked[:, 0] = True
        labels = torch.where(picked, ids, torch.full_like(ids, -100))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}


def build(
    name: str, batch_size: int | None = None, seq_len: int | None = None, dtype: torch.dtype = torch.float32
) -> Case:
    """Build zoo entry ``name`` (one of ``NAMES``) with seeded random weights, in training mode."""
    cls, cfg, b, s = _config(name)
    attn = "eager" if name in _EAGER_ATTN else "sdpa"
    notes: list[str] = []
    cfg._attn_implementation = attn
    experts = _EXPERTS if name in _MOE else None
    if experts is not None:
        cfg._experts_implementation = experts
    torch.manual_seed(0)
    model: torch.nn.Module = cls(cfg)
    cfg = cast(PretrainedConfig, model.config)  # what the model runs with
    if name == "llama-gc":
        # transformers 5 renamed it (the old name warns); 4.x has only the old one
        enable: Any = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False})
        notes.append("activation checkpointing on every decoder layer, use_reentrant=False")
    if name == "llama-sac":
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable({"use_reentrant": False, "context_fn": op_sac_context})
        notes.append("op-level selective checkpointing on every decoder layer (torchtitan's policy)")
    if name == "llama-lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, lora)  # type: ignore[arg-type]
        notes.append("LoRA r=8 on q_proj, v_proj; the base weights frozen")
    model.to(dtype)
    model.train()
    batch = _batch(name, cfg.vocab_size, batch_size or b, seq_len or s)
    if experts is not None:
        experts = cfg._experts_implementation
    return Case(
        name=name, model=model, batch=batch, config=cfg, attn_implementation=cfg._attn_implementation,
        experts_implementation=experts, notes=notes,
    )  # fmt: skip
