"""formulas.md worked examples, and the activation formula against its per-part table."""

import math
import subprocess
import sys
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from llmops.estimate import TrainingSpec, document, refined
from llmops.estimate.activations import activation_bytes as refined_activation_bytes
from llmops.estimate.document import activation_bytes, gpus_rule_of_thumb, inference_bytes, model_state_bytes


def test_inference_worked_examples():
    assert inference_bytes(7 * 10**9, "fp32") == 28 * 10**9
    assert inference_bytes(7 * 10**9, "bf16") == 14 * 10**9
    assert inference_bytes(7 * 10**9, "int8") == 7 * 10**9
    assert inference_bytes(7 * 10**9, "int4") == Fraction(35, 10) * 10**9
    # more parameters at lower precision: 13e9 in int8 is about 7e9 in bf16
    assert inference_bytes(13 * 10**9, "int8") == 13 * 10**9


def test_model_states_worked_example():
    assert model_state_bytes(7 * 10**9, 2, 2) == 112 * 10**9
    est = document(TrainingSpec(params=7 * 10**9, precision="bf16"))
    assert est.model_state_bytes == 112 * 10**9
    assert est.inference_bytes == 14 * 10**9


def test_gpu_rule_of_thumb_worked_example():
    train, infer, raw = gpus_rule_of_thumb(7 * 10**9, 24 * 10**9)
    assert raw == Fraction(7 * 18 * 125, 100 * 24)  # 6.5625
    assert (train, infer) == (7, 1)
    est = document(TrainingSpec(params=7 * 10**9, gpu_memory=24 * 10**9))
    assert (est.gpus_training, est.gpus_inference) == (7, math.ceil(raw / 8))


def per_part_sum(L, b, s, h, a, p):
    """formulas.md §4's table, part by part (an independent computation of the closed form)."""
    per_layer = (5 * p * s * b * h + s * b * h + 2 * p * a * s * s * b + a * s * s * b
                 + 9 * p * s * b * h + s * b * h + 2 * p * s * b * h)
    return L * per_layer


dims = dict(L=st.integers(1, 96), b=st.integers(1, 64), s=st.integers(1, 8192),
            a=st.sampled_from([1, 2, 4, 8, 12, 16, 32, 64, 96]), k=st.integers(1, 256),
            p=st.sampled_from([Fraction(4), Fraction(2), Fraction(1), Fraction(1, 2)]))


@given(**dims)
def test_closed_form_equals_per_part_sum(L, b, s, a, k, p):
    h = a * k
    assert activation_bytes(L, b, s, h, a, p) == per_part_sum(L, b, s, h, a, p)


@given(**dims)
def test_korthikanti_form_at_p2(L, b, s, a, k, p):
    h = a * k
    assert activation_bytes(L, b, s, h, a, 2) == L * s * b * h * (34 + Fraction(5 * a * s, h))


@given(**dims)
def test_refined_plain_variant_equals_document(L, b, s, a, k, p):
    """Refined with plain attention, dropout, 1-byte masks, MLP 4h, no logits, no overhead, p = 2."""
    h = a * k
    spec = TrainingSpec(layers=L, batch_size=b, seq_len=s, hidden=h, heads=a, precision="bf16",
                        device="cuda", dropout=True, attention="plain", params=10**6, overhead_bytes=0)
    saved, doc = refined_activation_bytes(spec, b), document(spec)
    norm_stats = 2 * 2 * 2 * s * b  # two layer norms' mean and 1/std per token (2 bytes each at p = 2)
    head = 2 * s * b * h + norm_stats // 2  # the refined model adds the final norm
    assert saved - head - L * norm_stats == doc.activation_bytes


@given(**dims)
def test_activations_linear_in_batch(L, b, s, a, k, p):
    h = a * k
    assert activation_bytes(L, b, s, h, a, p) == b * activation_bytes(L, 1, s, h, a, p)
    assert activation_bytes(L, b, s + 1, h, a, p) > activation_bytes(L, b, s, h, a, p)
    assert activation_bytes(L + 1, b, s, h, a, p) > activation_bytes(L, b, s, h, a, p)


def base_spec(**kw):
    return TrainingSpec(params=1_300_000_000, layers=24, hidden=2048, heads=16, seq_len=2048,
                        vocab=50257, batch_size=1, gpu_memory=80 * 10**9, **kw)


@given(precision=st.sampled_from(["fp32", "bf16", "int8", "bf16-mixed", "bf16-true"]),
       safety=st.sampled_from([0.5, 0.8, 0.9, 1.0]), mem=st.integers(8, 200),
       strategy=st.sampled_from(["ddp", "zero1", "zero3"]), n=st.integers(1, 16),
       recompute=st.sampled_from(["none", "selective", "full"]))
def test_max_batch_fits_and_one_more_does_not(precision, safety, mem, strategy, n, recompute):
    spec = base_spec(precision=precision, safety=safety, strategy=strategy, world_size=n,
                     recompute=recompute).with_(gpu_memory=mem * 10**9)
    for model in (document, refined):
        b_max = model(spec).max_batch_size
        if b_max:
            assert model(spec.with_(batch_size=b_max)).oom_risk is False
        assert model(spec.with_(batch_size=b_max + 1)).oom_risk is True


def test_max_batch_zero_when_states_do_not_fit():
    spec = TrainingSpec(params=70 * 10**9, layers=80, hidden=8192, heads=64, seq_len=4096,
                        batch_size=1, gpu_memory=80 * 10**9)
    assert document(spec).max_batch_size == 0
    assert refined(spec).max_batch_size == 0
    assert document(spec).oom_risk is True


def test_missing_inputs_give_none_and_a_reason():
    est = document(TrainingSpec(params=7 * 10**9))
    assert est.activation_bytes is None and est.peak_bytes is None and est.oom_risk is None
    assert any("layers" in m for m in est.missing)
    assert est.model_state_bytes == 112 * 10**9


def test_accumulation_keeps_global_batch():
    spec = base_spec(global_batch=512, world_size=4, strategy="fsdp")
    est = refined(spec)
    assert est.max_batch_size and est.accumulate == math.ceil(512 / (est.max_batch_size * 4))


def test_estimator_imports_no_torch():
    code = "import sys, llmops.estimate, llmops.cli; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


N7 = 7 * 10**9


def test_fsdp_divides_params_grads_and_optimizer_states_by_n():
    ddp = document(TrainingSpec(params=N7, precision="bf16"))
    fsdp = document(TrainingSpec(params=N7, precision="bf16", strategy="fsdp", world_size=8))
    assert (fsdp.params_bytes, fsdp.grads_bytes, fsdp.optimizer_state_bytes) == (
        ddp.params_bytes // 8, ddp.grads_bytes // 8, ddp.optimizer_state_bytes // 8)
    assert fsdp.model_state_bytes == 112 * 10**9 // 8 == 14 * 10**9
    assert document(TrainingSpec(params=N7, strategy="zero3", world_size=8)).model_state_bytes == 14 * 10**9


def test_zero1_shards_only_the_optimizer_states_and_zero2_also_the_gradients():
    zero1 = document(TrainingSpec(params=N7, precision="bf16", strategy="zero1", world_size=8))
    assert (zero1.params_bytes, zero1.grads_bytes, zero1.optimizer_state_bytes) == (2 * N7, 2 * N7, 12 * N7 // 8)
    zero2 = document(TrainingSpec(params=N7, precision="bf16", strategy="zero2", world_size=8))
    assert (zero2.params_bytes, zero2.grads_bytes, zero2.optimizer_state_bytes) == (2 * N7, 2 * N7 // 8, 12 * N7 // 8)


def test_ddp_and_single_shard_nothing():
    for strategy in ("ddp", "single"):
        est = document(TrainingSpec(params=N7, precision="bf16", strategy=strategy, world_size=8))
        assert (est.params_bytes, est.grads_bytes, est.optimizer_state_bytes) == (2 * N7, 2 * N7, 12 * N7)
        assert est.model_state_bytes == model_state_bytes(N7, 2, 2) == 112 * 10**9


def test_sharding_lowers_the_peak_and_raises_the_largest_batch():
    spec = base_spec(precision="bf16", world_size=8)
    ddp, fsdp = document(spec), document(spec.with_(strategy="fsdp"))
    assert fsdp.peak_bytes < ddp.peak_bytes and fsdp.max_batch_size > ddp.max_batch_size
    assert fsdp.inference_bytes == ddp.inference_bytes and fsdp.gpus_training == ddp.gpus_training  # §2, §6: no n


@given(N=st.integers(1, 10**13), n=st.integers(1, 1024),
       strategy=st.sampled_from(["single", "ddp", "zero1", "zero2", "zero3", "fsdp"]),
       precision=st.sampled_from(["fp32", "bf16", "int8", "int4"]))
def test_per_device_states_are_the_formula_over_n_and_peak_is_states_plus_activations(N, n, strategy, precision):
    spec = TrainingSpec(params=N, precision=precision, strategy=strategy, world_size=n, layers=2, heads=4,
                        hidden=64, seq_len=33, batch_size=3, gpu_memory=80 * 10**9)
    est = document(spec)
    p = Fraction({"fp32": 4, "bf16": 2, "int8": 1, "int4": Fraction(1, 2)}[precision])
    shards = {"ddp": 1, "single": 1}.get(strategy, n)
    # independently: the whole §3 figure split as the strategy splits it, each part a whole number of bytes
    opt = Fraction(12 * N, shards)
    grads = p * N / (n if strategy in ("zero2", "zero3", "fsdp") else 1)
    params = p * N / (n if strategy in ("zero3", "fsdp") else 1)
    assert (est.params_bytes, est.grads_bytes, est.optimizer_state_bytes) == tuple(
        math.ceil(x) for x in (params, grads, opt))
    assert 0 <= est.model_state_bytes - (params + grads + opt) < 3  # rounded up, under a byte a part
    if shards == 1 and (p * N).denominator == 1:  # unsharded whole bytes: §3's formula to the byte
        assert est.model_state_bytes == model_state_bytes(N, p, p)
    assert est.peak_bytes == est.model_state_bytes + est.activation_bytes  # the JSON invariant, to the byte
