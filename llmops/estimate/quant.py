"""Quantised frozen base weights (QLoRA's NF4, LLM.int8()): the bytes they are stored in.

bitsandbytes replaces the transformer blocks' linear layers (not the embeddings or norms; the output
head only with ``quantize_head``: Hugging Face's ``BitsAndBytesConfig`` skips it, LitGPT's
``BitsandbytesPrecision`` replaces every ``nn.Linear``) and computes in the ``--precision`` dtype,
dequantising one layer's weight at a time:

- ``nf4``: 4 bits per weight, plus one fp32 absmax per block of 64 weights (32/64 = 0.5 bit per
  weight). Double quantisation stores those absmax in 8 bits, with one fp32 constant per 256 of
  them: 8/64 + 32/(64·256) ≈ 0.127 bit (Dettmers et al. 2023, QLoRA, section 3).
- ``int8``: 1 byte per weight, plus one fp32 scale per output row (``Linear8bitLt``'s ``SCB``).

An nf4 weight dequantises into the dtype it was quantised from (``QuantState.dtype``), and ``MatMul4Bit``
casts that to the compute dtype (``dequantize_4bit(B, state).to(A.dtype)``): where the two differ, both
copies live during the cast. Lightning's ``BitsandbytesPrecision`` quantises from fp16 whatever its
precision, so under bf16-true each layer holds an fp16 and a bf16 copy of its weight at once.
"""

from __future__ import annotations

from fractions import Fraction

from llmops.spec.blocks import block_linears
from llmops.spec.training import TrainingSpec
from llmops.units import compute_dtype, get_precision

NF4_BLOCK = 64  # weights per absmax
DQ_BLOCK = 256  # absmax per second-level fp32 constant under double quantisation
FP32 = 4


def bytes_per_weight(spec: TrainingSpec) -> Fraction:
    """Bytes one NF4 weight takes with its share of the block constants (``nf4`` only)."""
    if spec.double_quant:
        return Fraction(1, 2) + Fraction(1, NF4_BLOCK) + Fraction(FP32, NF4_BLOCK * DQ_BLOCK)
    return Fraction(1, 2) + Fraction(FP32, NF4_BLOCK)


def _head(spec: TrainingSpec) -> int:
    """Weights of the output head where it is quantised (V·h), else 0."""
    return (spec.vocab or 0) * (spec.hidden or 0) if spec.quantize_head else 0


def quantized_weights(spec: TrainingSpec) -> int:
    """Weights stored quantised: every block linear of every layer, and the head under ``quantize_head``
    (0 without ``quantize``)."""
    if spec.quantize is None or not (spec.layers and spec.hidden and spec.heads):
        return 0
    return spec.layers * sum(i * o * c for i, o, c in block_linears(spec, spec.experts).values()) + _head(spec)


def quantized_bytes(spec: TrainingSpec) -> Fraction:
    """Bytes of the quantised weights with their constants."""
    n = quantized_weights(spec)
    if spec.quantize == "nf4":
        return n * bytes_per_weight(spec)
    if spec.quantize == "int8":
        rows = spec.layers * sum(o * c for _, o, c in block_linears(spec, spec.experts).values())  # type: ignore[operator]
        rows += (spec.vocab or 0) * spec.quantize_head
        return Fraction(n + FP32 * rows)
    return Fraction(0)


def dequantized_bytes(spec: TrainingSpec, head: bool = True) -> Fraction:
    """The temporary of the layer being computed, the largest one's (a quantised head's V·h where it is
    larger, unless ``head`` is False): its weight dequantised to the compute dtype and, where nf4 was
    quantised from another dtype (``quantized_from``), the dequantised copy the cast reads. Both copies
    live in backward; bitsandbytes before 0.50 casts in forward too, 0.50's forward dequantises straight
    into the compute dtype (there the forward is one copy over)."""
    if spec.quantize is None or not (spec.layers and spec.hidden and spec.heads):
        return Fraction(0)
    per_weight = get_precision(spec.precision).compute_bytes
    source = spec.quantized_from
    if source is not None and source != compute_dtype(spec.precision):
        per_weight += get_precision(source).compute_bytes
    largest = max(i * o for i, o, _ in block_linears(spec, spec.experts).values())
    return per_weight * max(_head(spec) if head else 0, largest)
