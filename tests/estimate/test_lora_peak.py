"""LoRA runs: the refined model's peak against the real peak of a PEFT model's step (bench/truth.py's
profiler allocation events), and what introspection reads from PEFT's layers."""

from __future__ import annotations

import json

import pytest

from bench.truth import real_peak
from bench.zoo import hf_loss
from llmops.dryrun.factory import spec_from_model
from llmops.estimate import TrainingSpec, refined
from llmops.spec.live import has_dropout, lora_fields
from tests.helpers.cli import llmops, one_line_exit_2
from tests.helpers.models import llama_batch, small_llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def lora_llama(targets, dropout: float):
    model = peft.get_peft_model(small_llama(), peft.LoraConfig(r=8, target_modules=targets, lora_dropout=dropout))
    return model, llama_batch()


CASES = [(["q_proj", "v_proj"], 0.0, "fp32"), ("all-linear", 0.0, "fp32"), ("all-linear", 0.1, "fp32"),
         (["q_proj", "v_proj"], 0.0, "bf16-mixed"), ("all-linear", 0.1, "bf16-mixed")]


@pytest.mark.parametrize("targets,dropout,precision", CASES, ids=[f"{t}-{d}-{p}" for t, d, p in CASES])
def test_refined_peak_of_a_peft_lora_step_within_5_percent(targets, dropout, precision):
    model, batch = lora_llama(targets, dropout)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    truth = real_peak(model, batch, hf_loss, optimizer, autocast_dtype=dtype).peak_bytes
    model, batch = lora_llama(targets, dropout)
    spec, _ = spec_from_model(model, batch, TrainingSpec(device="cpu", precision=precision), keep=set())
    before = refined(spec.with_(lora_rank=None)).peak_bytes  # LoRA not modelled: full fine-tuning's activations
    predicted = refined(spec).peak_bytes
    assert abs(predicted / truth - 1) < 0.05, (predicted, truth)
    assert abs(before / truth - 1) > 2 * abs(predicted / truth - 1)


def test_introspection_reads_peft_rank_targets_and_dropout():
    model, _ = lora_llama(["q_proj", "v_proj", "down_proj"], 0.1)
    assert lora_fields(model) == {"lora_rank": 8, "lora_targets": ("q", "v", "down"), "lora_dropout": True,
                                  "fused_experts": False, "lora_experts": True, "lora_layout": "peft"}
    assert not has_dropout(model)  # LoRA's dropout is not the model's
    model, _ = lora_llama("all-linear", 0.0)
    assert lora_fields(model)["lora_targets"] == ("q", "k", "v", "o", "gate", "up", "down")
    assert lora_fields(model)["lora_dropout"] is False
    assert lora_fields(transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2))) == {}


def test_the_cli_plans_lora_with_dropout():
    run = ["estimate", "--model", "llama-3.1-8b", "--seq-len", "2048", "--batch-size", "1", "--precision",
           "bf16-true", "--attention", "sdpa", "--json"]

    def peak(*extra: str) -> int:
        r = llmops(*run, *extra)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["refined"]["peak_bytes"]

    full, plain = peak(), peak("--lora-rank", "16")
    assert plain < peak("--lora-rank", "16", "--lora-dropout") and plain < full
    one_line_exit_2(llmops("estimate", "--lora-dropout"), "--lora-dropout", "needs --lora-rank")
