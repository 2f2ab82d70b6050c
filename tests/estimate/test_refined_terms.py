"""The refined model's activation terms against a tensor-by-tensor list of what a CPU step saves.

The lists are the saved tensors of ``bench/gpt.py`` read off its autograd graph; the refined model
leaves out plain attention's causal mask (s² bytes per layer, where a model builds one), so the
lists do too. ``bench/gpt.py``'s loss does not upcast the logits (``loss_upcast=False``).
"""

from fractions import Fraction

import pytest

from llmops.estimate import TrainingSpec, refined
from llmops.estimate.activations import activation_bytes, activation_parts
from llmops.estimate.peak import optimizer_temporary_bytes

L, b, s, h, a, V = 2, 4, 64, 64, 4, 256
f = 4 * h


def spec(**kw):
    base = dict(params=10**6, layers=L, heads=a, hidden=h, vocab=V, seq_len=s, batch_size=b, device="cpu",
                overhead_bytes=0, strategy="single", loss_upcast=False)
    return TrainingSpec(**{**base, **kw})


def saved_on_cpu(p, residual, weight_copy, scores, masks, log_probs, qkv=None):
    """Bytes per tensor kept for backward, summed: one layer × L, then the head."""
    qkv = qkv or p
    layer = [
        (2, residual * s * b * h),  # the two layer norms' inputs (the residual stream)
        (3, p * s * b * h),  # inputs of the QKV, output-projection and first MLP matmuls
        (3, qkv * s * b * h),  # Q, K, V
        (2, p * s * b * f),  # GELU input, second MLP matmul input
        (2, masks * s * b * h),  # residual and MLP dropout masks
        (1, scores * a * s * s * b),  # softmax output, dropout mask, dropout output
        (4, residual * s * b),  # the two norms' mean and 1/std
    ]
    head = residual * s * b * (h + 2) + p * s * b * h + log_probs * s * b * V + 2 * 8 * s * b  # + token ids
    copies = weight_copy * (L * 12 * h * h + V * h)
    return L * sum(n * x for n, x in layer) + head + copies


@pytest.mark.parametrize("precision,expected", [
    ("fp32", saved_on_cpu(4, 4, 0, 3 * 4, 4, 4)),
    # autocast: fp32 residual stream, 2-byte matmul inputs and weight copies, fp32 log-probs
    ("bf16-mixed", saved_on_cpu(2, 4, 2, 3 * 2, 2, 4)),
    ("bf16-true", saved_on_cpu(2, 2, 0, 3 * 2, 2, 2)),
])
def test_plain_attention_with_dropout_on_cpu(precision, expected):
    assert activation_bytes(spec(precision=precision), b) == expected


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "bf16-true"])
def test_cpu_sdpa_with_dropout_runs_the_fp32_math_path(precision):
    p = 4 if precision == "fp32" else 2
    residual = 4 if precision != "bf16-true" else 2
    copies = 2 if precision == "bf16-mixed" else 0
    log_probs = 2 if precision == "bf16-true" else 4
    expected = saved_on_cpu(p, residual, copies, 3 * 4, p, log_probs, qkv=4)
    assert activation_bytes(spec(precision=precision, attention="sdpa"), b) == expected


def test_cpu_sdpa_without_dropout_keeps_no_scores():
    lse = 4 * a * s * b  # fused attention's log-sum-exp
    assert activation_bytes(spec(precision="fp32", attention="sdpa", dropout=False), b) == \
        saved_on_cpu(4, 4, 0, 0, 0, 4) + L * lse


def test_full_recompute_on_cpu_keeps_layer_inputs_and_the_head():
    fixed, per_sample = activation_parts(spec(precision="bf16-mixed", recompute="full"))
    assert fixed == 2 * V * h  # only the head's weight copy: the checkpointed layers save nothing
    assert per_sample == L * 4 * s * h + 4 * s * (h + 2) + 2 * s * h + 4 * s * V + 16 * s


def test_weight_copies_are_fixed_and_the_largest_batch_is_the_last_that_fits():
    fixed, per_sample = activation_parts(spec(precision="bf16-mixed", device="cuda"))
    assert fixed == 2 * (L * 12 * h * h + V * h)
    budget = 10**9
    est = refined(spec(precision="bf16-mixed", device="cuda", gpu_memory=budget, safety=1))
    b_max = est.max_batch_size
    assert b_max and b_max > 1
    at = [refined(spec(precision="bf16-mixed", device="cuda", batch_size=n)).peak_bytes for n in (b_max, b_max + 1)]
    assert at[0] <= budget < at[1]  # every moment of b_max fits; one more sample does not


def test_cuda_adam_step_temporaries_can_set_the_peak():
    tiny = spec(device="cuda", precision="fp32", batch_size=1, seq_len=8, vocab=None, params=10**8)
    est = refined(tiny)
    assert optimizer_temporary_bytes(tiny, 10**8) == 4 * 10**8 > activation_bytes(tiny, 1)
    assert est.peak_bytes == 16 * 10**8 + 4 * 10**8 and est.peak_phase == "optimizer"
    assert est.temporary_bytes == 4 * 10**8 and est.activation_bytes == 0
    sgd = refined(tiny.with_(optimizer="sgd-momentum"))
    # the forward: states, the saved activations, and plain attention's unsaved raw scores (2 · 4·a·s²·b)
    assert sgd.peak_bytes == 12 * 10**8 + activation_bytes(tiny, 1) + 2 * 4 * a * 8 * 8 and sgd.peak_phase == "forward"
    # the CPU's for-loop Adam: two copies of the largest tensor (here an MLP matrix, 4h × h), one at a time
    cpu = tiny.with_(device="cpu")
    assert optimizer_temporary_bytes(cpu, 10**8) == 2 * 4 * (4 * h * h)
    assert refined(cpu).peak_bytes == 16 * 10**8 + max(activation_bytes(cpu, 1) + 2 * 4 * a * 8 * 8, 2 * 4 * 4 * h * h)


def test_cuda_autocast_softmax_is_fp32_with_a_2_byte_copy():
    cuda, cpu = (activation_bytes(spec(precision="bf16-mixed", device=d, vocab=None), b) for d in ("cuda", "cpu"))
    scores_cuda = Fraction(4 + 2 + 1) * a * s * s * b  # fp32 softmax, bf16 copy for scores @ V, bool mask
    scores_cpu = Fraction(2 + 2 + 2) * a * s * s * b  # bf16 softmax, dropout output, bf16 mask
    masks = (2 - 1) * 2 * s * b * h  # the residual and MLP masks are 2 bytes on the CPU, 1 on CUDA
    assert cpu - cuda == L * (scores_cpu - scores_cuda + masks)
