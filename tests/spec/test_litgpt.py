"""LitGPT's own models, built from its named configs with random weights (nothing downloaded): what
introspection reads off a LitGPT LoRA model, against LitGPT's own parameter counts, and the refined peak
of its step against the profiler's real peak (bench/truth.py)."""

from __future__ import annotations

import pytest

from bench.truth import real_peak
from llmops.dryrun.factory import spec_from_model
from llmops.estimate import TrainingSpec, refined
from llmops.estimate.lora import adapter_params

torch = pytest.importorskip("torch")
lora = pytest.importorskip("litgpt.lora")

VOCAB, B, T = 4096, 4, 256
# name → (kv heads, what its config says: gated MLP, norm, activation)
ARCHITECTURES = {"Llama-3.1-8B": (2, True, "rmsnorm", "silu"), "gemma-2b": (8, True, "rmsnorm", "gelu_tanh"),
                 "pythia-160m": (8, False, "layernorm", "gelu")}


def litgpt_lora(name: str, dtype=None, *, layers: int = 2, width: int = 256, kv: int | None = None,
                ffn: int = 688, vocab: int = VOCAB, **enabled):
    """A LitGPT model of ``name``'s architecture (``layers`` layers, ``width`` wide, 8 heads, ``kv`` query groups:
    the architecture's by default), LoRA r=8 with dropout on what ``enabled`` turns on (LitGPT's lora_query,
    lora_value, ...), only the adapters trainable, as LitGPT's finetune/lora.py marks them."""
    torch.manual_seed(0)
    cfg = lora.Config.from_name(name, n_layer=layers, n_embd=width, n_head=8,
                                n_query_groups=kv or ARCHITECTURES[name][0], intermediate_size=ffn,
                                padded_vocab_size=vocab, vocab_size=vocab, block_size=512, lora_r=8, lora_alpha=16,
                                lora_dropout=0.05, **enabled)
    model = lora.GPT(cfg).to(dtype or torch.float32)
    lora.mark_only_lora_as_trainable(model)
    model.max_seq_length = T
    return model


def loss(model, ids):
    """Next-token cross-entropy on the whole logits (LitGPT's finetune scripts chunk it; see the README)."""
    logits = model(ids)[..., :-1, :]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[..., 1:].reshape(-1))


def _spec(model, ids, precision="fp32"):
    spec, _ = spec_from_model(model, ids, TrainingSpec(device="cpu", precision=precision), keep=set())
    return spec


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_introspection_reads_a_litgpt_lora_model(name):
    """The config's MLP and norm classes, SDPA, and the fused QKV adapter's enabled projections (it was read
    as q, k, v, a LayerNorm, GELU and plain attention, and the LoRA linears' idle dropouts as model dropout)."""
    kv, gated, norm, activation = ARCHITECTURES[name]
    model = litgpt_lora(name, lora_query=True, lora_value=True)
    spec = _spec(model, torch.zeros(B, T, dtype=torch.long))
    assert (spec.kv_heads, spec.gated_mlp, spec.norm, spec.activation) == (kv, gated, norm, activation)
    assert (spec.attention, spec.dropout, spec.loss_upcast) == ("sdpa", False, False)
    assert (spec.lora_rank, spec.lora_targets, spec.lora_dropout) == (8, ("q", "v"), True)
    assert spec.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("enabled,targets", [
    ({"lora_query": True, "lora_value": True}, ("q", "v")),
    ({"lora_key": True, "lora_projection": True}, ("k", "o")),
    ({"lora_query": True, "lora_key": True, "lora_value": True, "lora_projection": True, "lora_mlp": True},
     ("q", "k", "v", "o", "gate", "up", "down"))])
def test_the_adapter_count_planned_from_the_targets_read_is_litgpts(enabled, targets):
    model = litgpt_lora("Llama-3.1-8B", **enabled)
    spec = _spec(model, torch.zeros(B, T, dtype=torch.long))
    assert spec.lora_targets == targets
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert adapter_params(spec, 8, spec.lora_targets) == trainable == spec.trainable_params


@pytest.mark.parametrize("name,precision", [("Llama-3.1-8B", "fp32"), ("Llama-3.1-8B", "bf16-true"),
                                            ("gemma-2b", "fp32"), ("pythia-160m", "fp32")])
def test_refined_peak_of_a_litgpt_lora_step_within_5_percent(name, precision):
    """Read off the live model, as the monitor does before step 1 (it was +69% on the Llama: plain attention's
    scores, and dropout's fp32 math path)."""
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    ids = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(1))
    model = litgpt_lora(name, dtype, lora_query=True, lora_value=True)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    truth = real_peak(model, ids, loss, optimizer).peak_bytes
    predicted = refined(_spec(litgpt_lora(name, dtype, lora_query=True, lora_value=True), ids, precision)).peak_bytes
    assert abs(predicted / truth - 1) < 0.05, (predicted, truth)


def test_litgpts_fused_qkv_adapter_by_what_adding_k_changes():
    """Adding k to q, v lowers the real peak of a LitGPT LoRA step (GQA: k is 64 wide of the 320): the three
    adapters share one dropped input, and with all three on nothing is zero-padded, so the B outputs
    index_copy_ kept go. The refined model with LitGPT's layout predicts that change (−2.49 MB against the
    profiler's −2.48 MB); counted as PEFT's separate adapters it was +4.3 MB."""
    ids = torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(1))
    truth, predicted = {}, {}
    for targets in ("qv", "qkv"):
        enabled = {"lora_query": True, "lora_key": targets == "qkv", "lora_value": True}
        model = litgpt_lora("Llama-3.1-8B", **enabled)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        truth[targets] = real_peak(model, ids, loss, optimizer).peak_bytes
        spec = _spec(litgpt_lora("Llama-3.1-8B", **enabled), ids)
        assert spec.lora_layout == "litgpt"
        predicted[targets] = refined(spec).peak_bytes
    real, model_says = truth["qkv"] - truth["qv"], predicted["qkv"] - predicted["qv"]
    assert real < 0 and abs(model_says / real - 1) < 0.1, (model_says, real)


def test_the_cli_plans_litgpts_layout_by_hand():
    """Llama 3.1 8B, LoRA r=8 on q, v with dropout, bf16-true on CUDA, 2,048 tokens: LitGPT's layout drops the
    shared input once (one bf16 copy and a 1-byte mask fewer, 3·4096 B a token) and keeps the zero-padded B
    outputs (2 B × (4096 + 1024)): −2,048 B a token a layer against PEFT's; but in the first layer, whose input
    needs no gradient, neither keeps a mask (PEFT's two 4096-byte ones fewer, LitGPT's one): +4,096 B there."""
    import json

    from tests.helpers.cli import llmops, one_line_exit_2

    run = ("estimate", "--model", "llama-3.1-8b", "--lora-rank", "8", "--lora-dropout", "--seq-len", "2048",
           "--batch-size", "1", "--precision", "bf16-true", "--attention", "sdpa", "--json")
    peft, litgpt = (json.loads(llmops(*run, "--lora-layout", layout).stdout)["refined"]
                    for layout in ("peft", "litgpt"))
    assert litgpt["activation_bytes"] - peft["activation_bytes"] == (-2048 * 32 + 4096) * 2048
    one_line_exit_2(llmops(*run, "--lora-layout", "unsloth"), "peft, litgpt")


def _wide(name: str, kv: int, dtype=None):
    """A 4-layer model whose layers outweigh its head (width 512, ``kv`` query groups, a 512-token vocabulary),
    LoRA on q, v."""
    return litgpt_lora(name, dtype, layers=4, width=512, kv=kv, ffn=1376, vocab=512, lora_query=True, lora_value=True)


def _saved_by(model, block, ids) -> int:
    """Bytes of the distinct storages autograd saves while ``block`` runs forward (parameters and buffers, the
    RoPE cache, left out)."""
    seen, active = {}, [False]

    def pack(t):
        if active[0]:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    block.register_forward_pre_hook(lambda *_: active.__setitem__(0, True))
    block.register_forward_hook(lambda *_: active.__setitem__(0, False))
    params = {p.untyped_storage().data_ptr() for p in (*model.parameters(), *model.buffers())}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss(model, ids)
    return sum(n for ptr, n in seen.items() if ptr not in params)


WIDE = [("Llama-3.1-8B", 8), ("Llama-3.1-8B", 2), ("pythia-160m", 8)]


@pytest.mark.parametrize("name,kv", WIDE)
def test_a_litgpt_layer_keeps_what_autograd_saves(name, kv):
    """Autograd's own saved tensors in one block against the refined layer term. MHA: V is a view of the fused
    qkv, so the whole qkv output stays alive beside the rotated Q and K (it was 2 of 21 MB under); GQA: K and V
    are repeated to the query heads first; Pythia: both norms read the block's input (parallel residual). The
    first block, whose input needs no gradient under LoRA, keeps no norm input and no dropout mask before the
    first adapter."""
    from llmops.estimate.layer import first_layer_unkept, layer_activation_bytes

    ids = torch.randint(0, 512, (2, T), generator=torch.Generator().manual_seed(1))
    model = _wide(name, kv)
    spec = _spec(_wide(name, kv), ids)
    layer = layer_activation_bytes(spec, 2, with_scores=True)
    for i, expected in ((1, layer), (0, layer - first_layer_unkept(spec, 2))):
        saved = _saved_by(model, model.transformer.h[i], ids)
        assert abs(float(expected) / saved - 1) < 0.005, (i, float(expected), saved)


@pytest.mark.parametrize("name,kv", WIDE)
def test_refined_peak_of_a_wide_litgpt_step_within_2_percent(name, kv):
    """Layers outweigh the head here, so what a layer keeps decides the peak (it was −3.7% to +1.1%)."""
    ids = torch.randint(0, 512, (2, T), generator=torch.Generator().manual_seed(1))
    model = _wide(name, kv)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    truth = real_peak(model, ids, loss, optimizer).peak_bytes
    predicted = refined(_spec(_wide(name, kv), ids)).peak_bytes
    assert abs(predicted / truth - 1) < 0.02, (predicted, truth)


def test_the_public_tables_litgpt_2023_configs_read_as_litgpts_own():
    """bench/public.py states phi-1.5, StableLM Alpha 3B and Falcon 40B as lit_gpt/config.py @8641822 built them;
    LitGPT's named configs of today build the same shapes: the reading is the same, and the parameter count is
    LitGPT's less the linears' biases (which the reading leaves out) within 0.05%."""
    from bench.public import _LITGPT_2023_MODELS
    from llmops.spec.hf_config import architecture, param_count

    for stated in (c for _, _, c in _LITGPT_2023_MODELS.values() if c):
        config = lora.Config.from_name(stated["name"])
        assert architecture(stated) == architecture(config)
        with torch.device("meta"):
            built = sum(p.numel() for p in lora.GPT(config).parameters())
        assert abs(param_count(stated)[0] / built - 1) < 5e-4, stated["name"]


def test_the_cli_plans_a_litgpt_finetune_as_the_public_bench_does():
    """``--framework litgpt`` on a preset gives LitGPT's code (fused qkv, K and V repeated, SDPA, no KV cache, no
    fp32 loss, its LoRA layout, the held logits): the plan equals bench/public.py's prediction of LitGPT's
    config-hub Llama 2 7B LoRA row, whose spec states the loop and the layout by hand and LitGPT's code by the same
    LITGPT_CODE. Without it, transformers' code is planned: a different figure."""
    import json

    from bench.public import ROWS, evaluate
    from tests.helpers.cli import llmops, one_line_exit_2

    run = ("estimate", "--model", "llama-2-7b", "--lora-rank", "32", "--lora-dropout", "--seq-len", "512",
           "--batch-size", "2", "--precision", "bf16-true", "--gpu-memory", "24GiB", "--safety", "1", "--json")
    litgpt, hf = (json.loads(llmops(*run, *extra).stdout) for extra in (("--framework", "litgpt"), ()))
    row = evaluate(next(r for r in ROWS if r.key == "hub-l2-7b-lora"))
    assert litgpt["refined"]["peak_bytes"] == row.estimate.peak_bytes
    assert litgpt["inputs"]["lora_layout"] == "litgpt" and litgpt["inputs"]["kv_repeat"] is True
    assert hf["refined"]["peak_bytes"] != litgpt["refined"]["peak_bytes"]
    one_line_exit_2(llmops(*run, "--framework", "unsloth"), "hf, litgpt")
