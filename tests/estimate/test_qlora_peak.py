"""QLoRA on the CPU: PEFT adapters over bitsandbytes' 4-bit layers (bitsandbytes >= 0.50 runs them on the
CPU). What introspection reads off the packed layers, and the refined peak against the profiler's real
peak of the step (bench/truth.py)."""

from __future__ import annotations

import pytest

from bench.truth import real_peak
from bench.zoo import hf_loss
from llmops.dryrun import spec_from_model
from llmops.estimate import TrainingSpec, refined
from llmops.introspect import count_parameters
from tests.helpers.models import llama_batch, small_llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")


def qlora_llama(double_quant: bool):
    """A 4-layer Llama whose block linears are ``Linear4bit`` (nf4), with LoRA r=8 on q, v."""
    model = small_llama(intermediate_size=768)
    full = sum(p.numel() for p in model.parameters())
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in [(n, c) for n, c in parent.named_children() if isinstance(c, torch.nn.Linear)]:
                q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                                      compute_dtype=torch.float32, quant_type="nf4", compress_statistics=double_quant)
                q.weight = bnb.nn.Params4bit(linear.weight.data.clone(), requires_grad=False, quant_type="nf4",
                                             compress_statistics=double_quant)
                setattr(parent, name, q.to("cpu"))  # quantised here
    model.requires_grad_(False)
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    return model, llama_batch(), full


@pytest.mark.parametrize("double_quant", [False, True])
def test_refined_peak_of_a_qlora_step_within_5_percent(double_quant):
    model, batch, full = qlora_llama(double_quant)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    truth = real_peak(model, batch, hf_loss, optimizer).peak_bytes
    model, batch, full = qlora_llama(double_quant)
    total, trainable = count_parameters(model)
    assert total == full + trainable  # the packed weights count as the values they hold
    spec, _ = spec_from_model(model, batch, TrainingSpec(device="cpu", precision="fp32"), keep=set())
    assert (spec.quantize, spec.double_quant, spec.lora_rank) == ("nf4", double_quant, 8)
    predicted = refined(spec).peak_bytes
    assert abs(predicted / truth - 1) < 0.05, (predicted, truth)
    unquantised = refined(spec.with_(quantize=None, double_quant=False)).peak_bytes
    assert unquantised > predicted  # the 4-bit base is what makes the difference
