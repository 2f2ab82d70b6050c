"""Activation checkpointing: op-level selective checkpointing (torchtitan's policy) and full, against the
profiler's real peak of a Hugging Face Llama's step (bench/truth.py), a hand count, and the CLI."""

from __future__ import annotations

import json

import pytest

from bench.truth import real_peak
from bench.zoo import hf_loss, op_sac_context
from llmops.dryrun.factory import spec_from_model
from llmops.estimate import TrainingSpec, refined
from llmops.estimate.activations import checkpointed_layer_bytes, matmul_outputs
from tests.helpers.cli import llmops
from tests.helpers.models import llama_batch, small_llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def llama(recompute: str):
    """4 layers, a small vocabulary: the layers' activations, not the logits, decide the peak."""
    model = small_llama()
    if recompute != "none":
        kwargs = {"use_reentrant": False, **({"context_fn": op_sac_context} if recompute == "selective" else {})}
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return model, llama_batch()


def measured(recompute: str, precision: str) -> tuple[int, int]:
    """(the real peak, the refined prediction from what introspection reads off the model)."""
    model, batch = llama(recompute)
    dtype = torch.bfloat16 if precision == "bf16-mixed" else None
    truth = real_peak(model, batch, hf_loss, torch.optim.AdamW(model.parameters()), autocast_dtype=dtype)
    model, batch = llama(recompute)
    spec, _ = spec_from_model(model, batch, TrainingSpec(device="cpu", precision=precision), keep=set())
    assert spec.recompute == recompute  # read off the model: a context_fn is a selective policy
    return truth.peak_bytes, refined(spec).peak_bytes  # type: ignore[return-value]


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_checkpointed_peaks_within_5_percent_and_selective_between_none_and_full(precision):
    truth, predicted = {}, {}
    for mode in ("none", "selective", "full"):
        truth[mode], predicted[mode] = measured(mode, precision)
    for mode in ("selective", "full"):
        assert abs(predicted[mode] / truth[mode] - 1) < 0.05, (mode, predicted[mode], truth[mode])
    assert truth["full"] < truth["selective"] < truth["none"]
    assert predicted["full"] < predicted["selective"] < predicted["none"]


def test_a_selective_checkpoint_keeps_the_input_sdpa_and_every_other_matmul_by_hand():
    spec = TrainingSpec(layers=1, hidden=8, heads=2, kv_heads=1, ffn_hidden=16, gated_mlp=True, activation="silu",
                        norm="rmsnorm", attention="sdpa", precision="fp32", seq_len=4, recompute="selective")
    assert matmul_outputs(spec) == [8, 4, 4, 8, 16, 16, 8]  # q, k, v, o, gate, up, down
    # per token: the input (8 fp32) + q, v, gate, down (8 + 4 + 16 + 8, fp32) + SDPA's output (8) and
    # log-sum-exp (one fp32 per head); 4 tokens
    assert checkpointed_layer_bytes(spec, 1) == 4 * (4 * 8 + 4 * 36 + 4 * 8 + 4 * 2)
    lora = spec.with_(lora_rank=2, lora_targets=("q", "v"))
    assert matmul_outputs(lora) == [8, 2, 8, 4, 4, 2, 4, 8, 16, 16, 8]  # an adapter runs its base, A, B


def test_the_cli_plans_selective_between_none_and_full_under_sdpa():
    def peak(recompute: str) -> int:
        # LoRA: the model states are small, so the activations decide the peak
        r = llmops("estimate", "--model", "llama-2-7b", "--seq-len", "4096", "--batch-size", "1", "--attention",
                   "sdpa", "--precision", "bf16-mixed", "--lora-rank", "16", "--recompute", recompute, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["refined"]["peak_bytes"]

    none, attention, selective, full = (peak(m) for m in ("none", "attention", "selective", "full"))
    assert full < selective < none
    assert attention == none  # Megatron's selective recomputation rebuilds only scores SDPA never keeps
