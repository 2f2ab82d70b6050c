"""QLoRA on the CPU: PEFT adapters over bitsandbytes' 4-bit layers (bitsandbytes >= 0.50 runs them on the
CPU). What introspection reads off the packed layers, and the refined peak against the profiler's real
peak of the step (bench/truth.py)."""

from __future__ import annotations

import pytest

from bench.truth import real_peak
from bench.zoo import hf_loss
from llmops.dryrun.factory import spec_from_model
from llmops.estimate import TrainingSpec, refined
from llmops.spec.live import count_parameters
from tests.helpers.models import llama_batch, small_llama

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
bnb = pytest.importorskip("bitsandbytes")


def qlora_llama(double_quant: bool, dtype=None, source=None, head: bool = False, vocab: int = 1000,
                batch: tuple[int, int] = (4, 256)):
    """A 4-layer Llama whose block linears (and, with ``head``, its output head) are ``Linear4bit`` (nf4), with
    LoRA r=8 on q, v; computing in ``dtype`` (fp32), quantised from ``source`` (the compute dtype)."""
    dtype = dtype or torch.float32
    model = small_llama(intermediate_size=768, vocab_size=vocab).to(dtype)
    full = sum(p.numel() for p in model.parameters())

    def four_bit(linear):
        q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=False,
                              compute_dtype=dtype, quant_type="nf4", compress_statistics=double_quant)
        q.weight = bnb.nn.Params4bit(linear.weight.data.to(source or dtype).clone(), requires_grad=False,
                                     quant_type="nf4", compress_statistics=double_quant)
        return q.to("cpu")  # quantised here

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, linear in [(n, c) for n, c in parent.named_children() if isinstance(c, torch.nn.Linear)]:
                setattr(parent, name, four_bit(linear))
    if head:
        model.lm_head = four_bit(model.lm_head)
    model.requires_grad_(False)
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    return model, llama_batch(*batch, vocab_size=vocab), full


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
    unquantised = refined(spec.with_(quantize=None, double_quant=False, quantized_from=None)).peak_bytes
    assert unquantised > predicted  # the 4-bit base is what makes the difference


# --- bitsandbytes before 0.43.2, and a loop that holds its outputs ----------------------------------

@pytest.fixture
def old_bnb(monkeypatch):
    """bitsandbytes 0.50's 4-bit matmul with PR #1270 reverted, as 0.43.1 and older ran it: ``MatMul4Bit``
    keeps its input ``A`` on ctx (``ctx.tensors = (A, B)``) wherever it kept ``(None, B)``; the version
    reads 0.42.0 (LitGPT's pin)."""
    from bitsandbytes.autograd._functions import MatMul4Bit

    current = MatMul4Bit.forward

    def forward(ctx, A, B, out=None, bias=None, quant_state=None):
        output = current(ctx, A, B, out, bias, quant_state)
        if ctx.tensors[1] is not None:
            ctx.tensors = (A, B)
        return output

    monkeypatch.setattr(MatMul4Bit, "forward", staticmethod(forward))
    monkeypatch.setattr(bnb, "__version__", "0.42.0")


def _holding_peak(keep_outputs: bool, then: int | None = None) -> tuple[int, TrainingSpec]:
    """The real peak of two steps of the QLoRA Llama whose loop keeps (or not) each step's logits until the
    next forward returns, as LitGPT's finetune scripts do; and the spec introspection reads off the model.
    ``then``: the second step's tokens a sample, where it is shorter than the first's."""
    from bench.truth import real_peak_holding

    model, batch, _ = qlora_llama(False)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    held: list = [None]

    def loss(m, b):
        out = m(**b)
        held[0] = out.logits if keep_outputs else None
        return out.loss

    short = None if then is None else llama_batch(4, then)
    truth = real_peak_holding(model, batch, loss, optimizer, clear=lambda: held.__setitem__(0, None), then=short)
    spec, _ = spec_from_model(model, batch, TrainingSpec(device="cpu", precision="fp32"), keep=set())
    return truth.peak_bytes, spec.with_(keeps_outputs=keep_outputs)


@pytest.mark.parametrize("keep_outputs", [False, True])
def test_old_bitsandbytes_keeps_inputs_and_the_refined_peak_counts_them(old_bnb, keep_outputs):
    truth, spec = _holding_peak(keep_outputs)
    assert spec.quant_keeps_input and not spec.quantize_head  # read off the version; the head is not 4-bit
    predicted = refined(spec).peak_bytes
    assert abs(predicted / truth - 1) < 0.05, (predicted, truth)
    # what the kept inputs add, against the same run without them (the current bitsandbytes' behaviour)
    assert refined(spec.with_(quant_keeps_input=False)).peak_bytes < predicted


def test_a_longest_first_loop_peaks_in_its_first_step_with_nothing_held_from_before(old_bnb):
    """LitGPT's 2023 scripts force the longest sample into the first micro-batch: the step after it holds the
    long step's logits and kept inputs, but beside a short batch's activations, so the first step is the peak.
    ``longest_first`` predicts that step; assuming the last micro-batch as long as this one over-counts it."""
    truth, spec = _holding_peak(True, then=32)
    assert spec.quant_keeps_input
    predicted = refined(spec.with_(longest_first=True)).peak_bytes
    assert abs(predicted / truth - 1) < 0.05, (predicted, truth)
    assert refined(spec).peak_bytes / truth - 1 > 0.10  # the same-length assumption, for this run


def test_a_loop_that_keeps_its_outputs_holds_the_logits():
    truth, spec = _holding_peak(True)
    assert not spec.quant_keeps_input
    predicted = refined(spec).peak_bytes
    assert abs(predicted / truth - 1) < 0.05, (predicted, truth)
    assert refined(spec.with_(keeps_outputs=False)).peak_bytes < predicted


def test_a_quantised_heads_dequantised_weight_is_not_alive_beside_the_loss():
    """A 32,000-token head in 4 bits under bf16-true, quantised from fp16 as Lightning does: introspection
    reads the source dtype, and the refined peak (the loss's backward; the head's dequantised copies come
    and go before the loss makes its tensors) is within 3% of the profiler's. Counting the dequantised head
    at every moment, as before, was +11.5%."""
    def run():
        return qlora_llama(False, torch.bfloat16, torch.float16, head=True, vocab=32_000, batch=(2, 128))

    model, batch, _ = run()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    truth = real_peak(model, batch, hf_loss, optimizer).peak_bytes
    model, batch, _ = run()
    spec, _ = spec_from_model(model, batch, TrainingSpec(device="cpu", precision="bf16-true"), keep=set())
    assert (spec.quantize_head, spec.quantized_from) == (True, "fp16")
    estimate = refined(spec)
    assert abs(estimate.peak_bytes / truth - 1) < 0.03, (estimate.peak_bytes, truth)
    assert estimate.peak_phase == "backward"


def test_a_quantised_head_is_read_and_stored_in_four_bits():
    model, batch, _ = qlora_llama(False)
    head = model.base_model.model.lm_head
    q = bnb.nn.Linear4bit(head.in_features, head.out_features, bias=False, compute_dtype=torch.float32,
                          quant_type="nf4")
    q.weight = bnb.nn.Params4bit(head.weight.data.clone(), requires_grad=False, quant_type="nf4")
    model.base_model.model.lm_head = q.to("cpu")
    spec, _ = spec_from_model(model, batch, TrainingSpec(device="cpu", precision="fp32"), keep=set())
    assert spec.quantize_head and not spec.quant_keeps_input  # bitsandbytes 0.50 keeps (None, B)
    saved = refined(spec.with_(quantize_head=False)).params_bytes - refined(spec).params_bytes
    v_h = spec.vocab * spec.hidden
    assert saved == pytest.approx(v_h * (4 - 0.5 - 4 / 64), rel=1e-6)  # fp32 → 4 bits + an fp32 absmax per 64
