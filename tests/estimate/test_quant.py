"""Quantised bases by hand: NF4 (with and without double quantisation) and int8 on a block small enough
to count, and the QLoRA paper's 0.127 bit of constants per weight."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import partial

import pytest

from llmops.estimate import TrainingSpec, refined
from llmops.estimate.quant import bytes_per_weight, dequantized_bytes, quantized_bytes, quantized_weights
from tests.helpers.cli import llmops, one_line_exit_2

# one block: Q, K, V, O 64×64 each; gate and up 64→128, down 128→64: 4·4096 + 3·8192 = 40,960 weights
SPEC = TrainingSpec(params=200_000, trainable_params=1_000, layers=2, hidden=64, heads=4, ffn_hidden=128,
                    gated_mlp=True, vocab=100, seq_len=32, batch_size=2, precision="bf16-true", quantize="nf4")


def test_nf4_int8_and_double_quant_bytes_by_hand():
    assert quantized_weights(SPEC) == 2 * 40_960
    assert quantized_bytes(SPEC) == 81_920 * Fraction(1, 2) + 81_920 * 4 // 64  # 4 bits + fp32 absmax per 64
    assert quantized_bytes(SPEC.with_(double_quant=True)) == 40_960 + 81_920 // 64 + 81_920 * 4 // (64 * 256)
    rows = 2 * (4 * 64 + 2 * 128 + 64)  # one fp32 scale per output row
    assert quantized_bytes(SPEC.with_(quantize="int8")) == 81_920 + 4 * rows
    # QLoRA, section 3: double quantisation cuts the constants from 32/64 = 0.5 to 8/64 + 32/(64·256) ≈ 0.127 bit
    assert round(float((bytes_per_weight(SPEC.with_(double_quant=True)) - Fraction(1, 2)) * 8), 3) == 0.127
    assert (bytes_per_weight(SPEC) - Fraction(1, 2)) * 8 == Fraction(1, 2)


def test_refined_stores_the_rest_in_the_parameter_dtype_and_adds_one_dequantised_layer():
    full = refined(SPEC.with_(quantize=None))
    q = refined(SPEC)
    assert q.params_bytes == 2 * (200_000 - 81_920) + 46_080  # bf16 for the rest
    assert full.params_bytes == 2 * 200_000
    assert dequantized_bytes(SPEC) == 2 * 128 * 64  # the largest linear, in bf16, one at a time
    assert q.grads_bytes == full.grads_bytes  # only what trains has gradients


def test_a_base_quantised_from_another_dtype_holds_both_copies_by_hand():
    """Lightning quantises from fp16: under bf16-true the largest layer (down, 128×64) dequantises to fp16
    and is cast to bf16, both alive; quantised from bf16 (or from nothing named) there is one copy."""
    assert dequantized_bytes(SPEC.with_(quantized_from="fp16")) == (2 + 2) * 128 * 64
    assert dequantized_bytes(SPEC.with_(quantized_from="fp32")) == (4 + 2) * 128 * 64
    assert dequantized_bytes(SPEC.with_(quantized_from="bf16")) == dequantized_bytes(SPEC) == 2 * 128 * 64
    fp32 = SPEC.with_(precision="fp32", quantized_from="fp32")
    assert dequantized_bytes(fp32) == 4 * 128 * 64
    # a 1,000-token head in 4 bits (64,000 weights): its dequantised weight outweighs the loss's gradients
    # (bf16, 2 · 2 B · 32 tokens · 1,000), so the moment it computes is the peak, and the fp16 copy joins it
    head = SPEC.with_(vocab=1000, quantize_head=True, batch_size=1, lora_rank=4, loss_upcast=False)
    one, two = refined(head), refined(head.with_(quantized_from="fp16"))
    assert two.temporary_bytes == dequantized_bytes(head.with_(quantized_from="fp16")) == 4 * 1000 * 64
    assert two.peak_bytes - one.peak_bytes == 2 * 1000 * 64 and two.peak_phase == "forward"


def test_bitsandbytes_backward_holds_the_dequantised_copy_and_its_cast():
    """The mechanism above, on bitsandbytes itself: the peak of a 4-bit layer's backward above the
    gradients already alive, read off the profiler's allocation events, against the hand count
    (source + compute bytes per weight). The CPU's own work adds up to half a byte per weight at this shape
    (at smaller ones its bf16 matmul copies the weight once more, which would hide the cast's copy)."""
    bnb = pytest.importorskip("bitsandbytes")
    import torch

    from bench.truth import highest_during

    n, k = 4096, 1024
    for source, expected in ((torch.float16, 2 + 2), (torch.float32, 4 + 2), (torch.bfloat16, 2)):
        packed, state = bnb.functional.quantize_4bit(torch.randn(n, k, dtype=source), quant_type="nf4")
        x = torch.randn(8, k, dtype=torch.bfloat16, requires_grad=True)
        y = bnb.matmul_4bit(x, packed.t(), quant_state=state)
        grad = torch.ones_like(y)
        transient = highest_during(partial(y.backward, grad))  # the copies outlast the input's gradient's birth
        assert expected <= transient / (n * k) < expected + 0.6, (source, transient / (n * k))


@pytest.mark.parametrize("args,says", [(["--quantize", "nf4"], "a quantised base is frozen"),
                                       (["--quantize", "fp8", "--lora-rank", "8"], "allowed: nf4, int8"),
                                       (["--quantize", "int8", "--double-quant", "--lora-rank", "8"], "nf4"),
                                       (["--quantize-head", "--lora-rank", "8"], "needs quantize"),
                                       (["--quantized-from", "fp8", "--quantize", "nf4", "--lora-rank", "8"],
                                        "fp32, fp16, bf16"),
                                       (["--quantized-from", "fp16", "--lora-rank", "8"], "quantize='nf4'"),
                                       (["--params", "1B", "--quantize", "nf4", "--lora-rank", "8"], "alone hold")])
def test_bad_quantize_flags_are_one_line(args, says):
    one_line_exit_2(llmops("estimate", "--model", "llama-2-7b", *args), says)


def test_qlora_plan_fits_where_bf16_lora_did_not():
    run = ["estimate", "--model", "llama-2-7b", "--lora-rank", "16", "--precision", "bf16-true", "--attention",
           "sdpa", "--seq-len", "512", "--batch-size", "1", "--gpu-memory", "12GB", "--fail-on-oom"]
    assert llmops(*run).returncode == 3  # bf16 base: 13.5 GB of weights alone
    r = llmops(*run, "--quantize", "nf4", "--double-quant")
    assert r.returncode == 0, r.stdout + r.stderr


def test_8bit_optimizer_states_by_hand():
    adam = refined(SPEC.with_(quantize=None, optimizer="adamw"))
    eight = refined(SPEC.with_(quantize=None, optimizer="adamw8bit"))
    paged = refined(SPEC.with_(quantize=None, optimizer="paged_adamw"))
    # bf16-true: two bf16 moments per trainable value; 8-bit: two uint8 + an fp32 absmax per 256 values each
    assert adam.optimizer_state_bytes == 2 * 2 * 1_000
    assert eight.optimizer_state_bytes == math.ceil(2 * (1 + Fraction(4, 256)) * 1_000)  # whole bytes, up
    assert paged.optimizer_state_bytes == adam.optimizer_state_bytes  # paged: the same bytes, in unified memory


def test_introspection_names_bitsandbytes_optimizers_by_class():
    import types

    from llmops.spec.live import BNB_OPTIMIZERS, optimizer_name

    for cls, name in BNB_OPTIMIZERS.items():
        fake_cls = types.new_class(cls)
        fake_cls.__module__ = "bitsandbytes.optim.adamw"  # the class bitsandbytes defines (no GPU here to make one)
        opt = fake_cls()
        opt.param_groups = [{}]
        assert optimizer_name([opt]) == name


def test_a_quantised_head_by_hand():
    head = SPEC.with_(quantize_head=True)
    assert quantized_weights(head) == 2 * 40_960 + 100 * 64
    assert dequantized_bytes(head) == 2 * 128 * 64  # the head (6,400) is smaller than the MLP's
    wide = head.with_(vocab=1000)  # 64,000 weights: its dequantised copy is now the largest
    assert dequantized_bytes(wide) == 2 * 1000 * 64
    assert quantized_bytes(head.with_(quantize="int8")) == quantized_bytes(SPEC.with_(quantize="int8")) + 100 * (64 + 4)


def test_old_bitsandbytes_kept_inputs_by_hand():
    """Per layer (b·s = 64 tokens, bf16): Q/K/V's input 64 (not the first layer's), O's 64, gate/up's 64,
    down's 128; with LoRA on q, v without dropout the adapters keep Q/K/V's input anyway, SDPA keeps O's."""
    from llmops.estimate.layer import held, quant_inputs

    spec = SPEC.with_(lora_rank=4, lora_targets=("q", "v"), quant_keeps_input=True, attention="sdpa")
    every, beyond = quant_inputs(spec, 2)
    tokens = 2 * 32
    assert every == 2 * tokens * (2 * (64 + 64 + 64 + 128) - 64)
    assert beyond == 2 * tokens * 2 * (64 + 128)  # gate/up's and down's: nothing else keeps them
    assert quant_inputs(spec.with_(lora_dropout=True), 2)[1] == 2 * tokens * (2 * (64 + 64 + 128) - 64)
    assert quant_inputs(spec.with_(quant_keeps_input=False), 2) == (0, 0)
    assert quant_inputs(spec.with_(recompute="full"), 2) == (0, 0)  # not modelled under checkpointing
    assert held(spec, 2).previous == 0  # only a loop that keeps its outputs holds them into the next forward
    kept = held(spec.with_(keeps_outputs=True), 2)
    assert kept.outputs == 2 * tokens * 100 and kept.previous == kept.outputs + every
    assert refined(spec).activation_bytes - refined(spec.with_(quant_keeps_input=False)).activation_bytes == beyond


@pytest.mark.parametrize("field,says", [("quant_keeps_input", "quantize='nf4' only"),
                                        ("quantize_head", "needs quantize")])
def test_quantisation_fields_need_a_quantised_base(field, says):
    with pytest.raises(ValueError, match=says):
        refined(SPEC.with_(quantize=None, **{field: True}))


def test_quantize_head_flag_stores_the_head_in_nf4():
    import json

    run = ["estimate", "--model", "llama-2-7b", "--lora-rank", "8", "--quantize", "nf4", "--json"]
    kept, quantised = (json.loads(llmops(*run, *extra).stdout)["refined"]["components"]["params"]
                       for extra in ((), ("--quantize-head",)))
    assert kept - quantised == 32_000 * 4096 * (2 - 0.5 - 4 / 64)  # bf16 → 4 bits + an fp32 absmax per 64
