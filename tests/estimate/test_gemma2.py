"""Gemma 2: heads × head_dim is not hidden, and each block has four norms. The refined peak against the
profiler's real peak of a step (bench/truth.py), and the LoRA count against PEFT's."""

from __future__ import annotations

import pytest

from bench.truth import real_peak
from bench.zoo import hf_loss
from llmops.dryrun.factory import spec_from_model
from llmops.estimate import TrainingSpec, refined
from llmops.estimate.lora import adapter_params

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def gemma2():
    torch.manual_seed(0)
    cfg = transformers.Gemma2Config(vocab_size=1000, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                    num_attention_heads=4, num_key_value_heads=2, head_dim=128, use_cache=False,
                                    attn_implementation="eager", final_logit_softcapping=None,
                                    attn_logit_softcapping=None, sliding_window=4096)
    ids = torch.randint(0, 1000, (4, 256), generator=torch.Generator().manual_seed(1))
    return transformers.Gemma2ForCausalLM(cfg).train(), {"input_ids": ids, "labels": ids.clone()}


def test_gemma2_peak_within_5_percent_with_its_head_dim_and_four_norms():
    model, batch = gemma2()
    truth = real_peak(model, batch, hf_loss, torch.optim.AdamW(model.parameters())).peak_bytes
    spec, _ = spec_from_model(*gemma2(), TrainingSpec(device="cpu", precision="fp32"), keep=set())
    assert (spec.head_dim, spec.block_norms) == (128, 4)
    assert abs(refined(spec).peak_bytes / truth - 1) < 0.05
    assert refined(spec.with_(head_dim=None, block_norms=2)).peak_bytes < 0.9 * truth  # as it was counted before


def test_lora_on_gemma2_attention_counts_as_peft():
    model, _ = gemma2()
    spec, _ = spec_from_model(*gemma2(), TrainingSpec(device="cpu"), keep=set())
    lora = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    assert adapter_params(spec, 8, ("q", "k", "v", "o")) == lora.get_nb_trainable_parameters()[0]
