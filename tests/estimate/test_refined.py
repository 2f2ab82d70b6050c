"""The refined model: states by optimizer, precision and sharding; activation variants."""

import pytest

from llmops.estimate import TrainingSpec, get_preset, refined
from llmops.estimate.activations import activation_bytes
from llmops.spec.training import validate

N = 1_000_000


def states(**kw):
    est = refined(TrainingSpec(params=N, **kw))
    return est.params_bytes, est.grads_bytes, est.optimizer_state_bytes


@pytest.mark.parametrize("precision,optimizer,expected", [
    ("fp32", "adamw", (4, 4, 8)),  # plain fp32 AdamW: 16 B/param, no master copy
    ("fp32", "adamw-amsgrad", (4, 4, 12)),
    ("fp32", "sgd-momentum", (4, 4, 4)),
    ("fp32", "sgd", (4, 4, 0)),
    ("bf16-mixed", "adamw", (4, 4, 8)),  # Lightning keeps fp32 weights and grads
    ("bf16-true", "adamw", (2, 2, 4)),  # everything in bf16, optimizer states included
    ("bf16", "adamw", (2, 2, 12)),  # the document's convention: fp32 master + two moments
])
def test_states_by_precision_and_optimizer(precision, optimizer, expected):
    assert states(precision=precision, optimizer=optimizer) == tuple(x * N for x in expected)


@pytest.mark.parametrize("strategy,divided", [
    ("ddp", ()), ("zero1", ("opt",)), ("zero2", ("opt", "grads")),
    ("zero3", ("opt", "grads", "params")), ("fsdp", ("opt", "grads", "params"))])
def test_sharding(strategy, divided):
    p, g, o = states(precision="fp32", strategy=strategy, world_size=4)
    assert p == (N if "params" in divided else 4 * N)
    assert g == (N if "grads" in divided else 4 * N)
    assert o == (2 * N if "opt" in divided else 8 * N)


def test_frozen_parameters_hold_no_grads_or_states():
    p, g, o = states(precision="fp32", trainable_params=N // 4)
    assert (p, g, o) == (4 * N, N, 2 * N)


def act(**kw):
    """Activations saved for backward (the forward moment adds the logits to them)."""
    base = dict(layers=4, hidden=256, heads=8, seq_len=512, batch_size=2, params=N)
    return activation_bytes(TrainingSpec(**{**base, **kw}), 2)


def test_activation_variants_are_ordered():
    plain = act()
    assert act(attention="sdpa") < plain  # no s×s scores
    assert act(recompute="selective") < plain
    assert act(recompute="full") < act(recompute="selective")
    assert act(dropout=False) < plain
    assert act(kv_heads=2) < plain  # grouped-query attention keeps smaller K and V
    assert act(gated_mlp=True, ffn_hidden=683) > act(ffn_hidden=683)
    # the head's input, the token ids and targets (int64), the fp32 log-probabilities
    assert act(vocab=50000) - plain == 2 * 512 * 2 * 256 + 2 * 8 * 512 * 2 + 4 * 512 * 2 * 50000
    assert act(device="cpu") > plain  # CPU dropout masks use the compute dtype, not 1 byte
    assert act(tensor_parallel=2) < plain


def test_full_recompute_keeps_layer_inputs_and_backward_rebuilds_one_layer():
    L, s, b, h = 4, 512, 2, 256
    final_norm = (2 * h + 2 * 2) * s * b  # its input and its mean and 1/std (bf16)
    assert act(recompute="full") == L * 2 * s * b * h + final_norm
    # one layer rebuilt, and the gradients flowing into and out of it (2 bytes, h per token, each)
    rebuilt = act(layers=1) - final_norm + 2 * 2 * s * b * h
    # small states: the last layer, rebuilt first, beside every layer's checkpoint and no gradients yet
    est = refined(TrainingSpec(layers=L, hidden=h, heads=8, seq_len=s, batch_size=b, params=N, recompute="full"))
    assert est.peak_phase == "backward" and est.temporary_bytes == rebuilt and est.grads_bytes == 0
    assert est.peak_bytes == 2 * N + 12 * N + act(recompute="full") + rebuilt + est.overhead_bytes
    # larger gradients: the first layer, rebuilt last, when every later layer's gradients exist and their
    # checkpoints and the head's saved tensors are freed: only the first layer's input is left
    big = 10 * N  # gradients between the activations and the rebuilt layer
    est = refined(TrainingSpec(layers=L, hidden=h, heads=8, seq_len=s, batch_size=b, params=big, recompute="full",
                               optimizer="sgd"))
    assert est.peak_phase == "backward" and est.grads_bytes == 2 * big * (L - 1) // L
    assert est.activation_bytes == 2 * s * b * h and est.temporary_bytes == rebuilt


def test_forward_moment_holds_the_logits_and_their_fp32_copy():
    spec = TrainingSpec(layers=4, hidden=256, heads=8, seq_len=512, batch_size=2, params=10**9, vocab=50000,
                        device="cpu")
    est = refined(spec)  # the previous step's gradients (2 GB) make the forward the peak; the CPU's Adam
    # step holds two copies of the largest tensor (the embedding), much less
    assert est.peak_phase == "forward" and est.grads_bytes == 2 * 10**9
    saved = act(vocab=50000, device="cpu")
    assert est.activation_bytes - saved == (2 + 4) * 512 * 2 * 50000  # bf16 logits, their fp32 copy


def test_world_size_ddp_never_helps_fsdp_does():
    spec = get_preset("llama-2-7b").spec.with_(batch_size=1, seq_len=2048, gpu_memory=80 * 10**9)
    est = refined(spec)
    assert est.gpus_training is None and "replicates" in " ".join(est.notes)
    n = est.extra["gpus_training_fsdp"]
    assert n and refined(spec.with_(strategy="fsdp", world_size=n)).oom_risk is False
    assert refined(spec.with_(strategy="fsdp", world_size=n - 1)).oom_risk is True


def test_grok_is_mixture_of_experts():
    spec = get_preset("grok-1").spec
    assert spec.params == 314 * 10**9 and spec.active_params < spec.params and spec.experts_active == 2


@pytest.mark.parametrize("field,value", [
    ("params", -1), ("layers", 0), ("safety", 0), ("safety", 1.5), ("precision", "fp8"),
    ("strategy", "zero4"), ("world_size", 0), ("heads", 7)])
def test_validate_names_field_and_value(field, value):
    spec = TrainingSpec(hidden=64, **{field: value})
    with pytest.raises(ValueError, match=field if field != "precision" else "precision"):
        validate(spec)
