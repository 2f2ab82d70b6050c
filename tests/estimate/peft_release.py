"""Run under one PEFT release (``python -m tests.estimate.peft_release``): on tiny fused mixtures with all-linear
LoRA, PEFT's own trainable count beside what llmops reads off the live model and plans from that reading. One
JSON object on stdout."""

from __future__ import annotations

import json

import peft
import torch
import transformers

from llmops.estimate import TrainingSpec
from llmops.estimate.lora import parse_targets, with_lora
from llmops.spec.hf_config import spec_fields
from llmops.spec.live import lora_fields

RANK = 8
MIXTURES = {
    "qwen2_moe": {"model_type": "qwen2_moe", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "intermediate_size": 512, "moe_intermediate_size": 64,
                  "shared_expert_intermediate_size": 256, "num_experts": 4, "num_experts_per_tok": 2,
                  "vocab_size": 1000},
    "mixtral": {"model_type": "mixtral", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 256, "num_local_experts": 4, "num_experts_per_tok": 2,
                "vocab_size": 1000},
}


def measure(config: dict) -> dict:
    """PEFT's count of an all-linear LoRA model, the live reading, and the plan from that reading."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**config))
    model = peft.get_peft_model(model, peft.LoraConfig(r=RANK, target_modules="all-linear"))
    read = lora_fields(model)
    spec = TrainingSpec(**spec_fields(config)).with_(fused_experts=read["fused_experts"],
                                                     lora_experts=read["lora_experts"])
    _, planned = with_lora(spec, RANK, read["lora_targets"])
    # `--lora-targets all-linear [--no-lora-experts]`
    _, all_linear = with_lora(spec, RANK, parse_targets("all-linear"))
    return {"peft_trainable": model.get_nb_trainable_parameters()[0], "lora_experts": read["lora_experts"],
            "planned_from_reading": planned, "planned_all_linear": all_linear}


if __name__ == "__main__":
    print(json.dumps({"peft": peft.__version__, **{name: measure(cfg) for name, cfg in MIXTURES.items()}}))
