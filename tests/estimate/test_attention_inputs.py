"""What a Hugging Face block keeps as the attention's inputs and its norms' inputs, by how the block makes them,
against autograd's own saved tensors (``saved_tensors_hooks``) in one block of a real forward: K and V repeated to
the query heads (eager attention; SDPA given a padding mask), V as a view of a fused qkv output (Phi-3 without
its KV cache), one norm for both sublayers of a parallel block (Phi-2), and the output projection's copy of the
attention's output where RoPE concatenates (GPT-NeoX, Phi-2, Phi-3)."""

from __future__ import annotations

import pytest

from llmops.dryrun.factory import spec_from_model
from llmops.estimate import TrainingSpec
from llmops.estimate.layer import layer_activation_bytes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

V, B, T = 512, 2, 256
COMMON = {"vocab_size": V, "hidden_size": 512, "num_hidden_layers": 2, "num_attention_heads": 8,
          "intermediate_size": 1376, "max_position_embeddings": 512}


def _model(kind: str, attention: str, use_cache: bool):
    torch.manual_seed(0)
    if kind == "llama-gqa":
        cfg, cls = transformers.LlamaConfig(**COMMON, num_key_value_heads=2), transformers.LlamaForCausalLM
    elif kind == "phi3":
        cfg = transformers.Phi3Config(**COMMON, num_key_value_heads=8, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        cls = transformers.Phi3ForCausalLM
    elif kind == "neox":
        cfg = transformers.GPTNeoXConfig(**COMMON, rotary_pct=0.25, hidden_dropout=0.0, attention_dropout=0.0)
        cls = transformers.GPTNeoXForCausalLM
    else:
        cfg, cls = transformers.PhiConfig(**COMMON, resid_pdrop=0.0, embd_pdrop=0.0), transformers.PhiForCausalLM
    cfg._attn_implementation, cfg.use_cache = attention, use_cache
    return cls(cfg).train()


def _saved_by_block(model, batch) -> int:
    """Bytes of the distinct storages autograd saves while the second block runs, less what the first block saved
    too (the mask and the RoPE tables, made once a forward) and the parameters."""
    seen: list[dict[int, int]] = [{}, {}]
    active: list[int | None] = [None]

    def pack(t):
        if active[0] is not None:
            seen[active[0]][t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    layers = model.gpt_neox.layers if hasattr(model, "gpt_neox") else model.model.layers
    for i in (0, 1):
        layers[i].register_forward_pre_hook(lambda *_, i=i: active.__setitem__(0, i))
        layers[i].register_forward_hook(lambda *_: active.__setitem__(0, None))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**batch)
    return sum(n for ptr, n in seen[1].items() if ptr not in params and ptr not in seen[0])


def _batch(padded: bool) -> dict:
    ids = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, T, dtype=torch.long)
    if padded:
        mask[1, -32:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}


def _kept(kind: str, attention: str, padded: bool, use_cache: bool) -> tuple[object, int, float]:
    """``(spec read off the model, bytes autograd saves in one block, the refined layer term)``."""
    batch = _batch(padded)
    spec, _ = spec_from_model(_model(kind, attention, use_cache), batch, TrainingSpec(device="cpu", precision="fp32"),
                              keep=set())
    return spec, _saved_by_block(_model(kind, attention, use_cache), batch), float(
        layer_activation_bytes(spec, B, with_scores=True))


@pytest.mark.parametrize("kind,attention,expected", [
    ("llama-gqa", "sdpa", {"kv_repeat": False}),
    ("llama-gqa", "eager", {"kv_repeat": True}),  # repeat_kv before the matmuls
    # one norm for both sublayers: its input, and its output (both sublayers' input), kept once; RoPE on part of
    # each head, concatenated back: the output projection reads a transposed copy of the attention's output
    ("phi", "sdpa", {"parallel_residual": True, "block_norms": 1, "rope_concat": True}),
    ("neox", "sdpa", {"parallel_residual": True, "fused_linears": ("qkv",), "rope_concat": True}),
    ("phi3", "sdpa", {"kv_cache": True, "rope_concat": True})])
def test_a_hugging_face_block_keeps_what_autograd_saves(kind, attention, expected):
    spec, saved, predicted = _kept(kind, attention, False, True)
    assert {k: getattr(spec, k) for k in expected} == expected
    assert abs(predicted / saved - 1) < 0.01, (predicted, saved)


def test_a_padding_mask_repeats_k_and_v():
    """Given a mask, transformers' SDPA repeats K and V to the query heads (use_gqa_in_sdpa): what padding adds
    to a GQA block (8 heads, 2 of K and V) is their repeated copies, 2 × (512 − 128) values a token, which the
    model counts (it counted nothing before). Autograd saves 2 × 128 more, the unrepeated K and V beside their
    copies on this path (not on eager's): not traced, not counted, so the model says 3/4 of the real change."""
    plain, padded = _kept("llama-gqa", "sdpa", False, True), _kept("llama-gqa", "sdpa", True, True)
    assert (plain[0].kv_repeat, padded[0].kv_repeat) == (False, True)
    real, model_says = padded[1] - plain[1], padded[2] - plain[2]
    assert real > 0 and 0.74 < model_says / real <= 1, (model_says, real)


def test_without_its_cache_a_fused_qkv_keeps_its_whole_output():
    """Phi-3's Q, K, V are slices of one qkv_proj output. RoPE makes new Q and K, but V stays a view, so without a
    KV cache (use_cache=False) the attention keeps the whole output alive; with one (transformers' default, in
    training too) the cache hands it a copy of V. The difference is the Q and K slices: 2 × 512 values a token."""
    cached, uncached = _kept("phi3", "sdpa", False, True), _kept("phi3", "sdpa", False, False)
    assert (cached[0].kv_cache, uncached[0].kv_cache) == (True, False)
    real, model_says = uncached[1] - cached[1], uncached[2] - cached[2]
    assert real > 0 and abs(model_says / real - 1) < 0.01, (model_says, real)
