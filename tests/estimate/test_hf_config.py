"""Architectures from configs: presets and --config counted as Hugging Face builds them, LoRA as PEFT does.

Ground truth: the Hugging Face model built from the same config on the meta device (no weights,
nothing downloaded) and PEFT's own count of trainable parameters, never the code under test.
"""

from __future__ import annotations

import json

import pytest

from llmops.estimate import PRESETS, TrainingSpec
from llmops.estimate.lora import adapter_params, parse_targets
from llmops.spec.hf_config import param_count, spec_fields
from tests.helpers.cli import llmops, one_line_exit_2

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Published parameter counts (model cards and the models' safetensors index totals).
PUBLISHED = {"llama-3.1-8b": 8_030_261_248, "llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824,
             "llama-2-7b": 6_738_415_616, "mistral-7b": 7_241_732_096, "mixtral-8x7b": 46_702_792_704,
             "qwen2.5-0.5b": 494_032_768, "qwen2.5-7b": 7_615_616_512, "gemma-2-2b": 2_614_341_888,
             "phi-3-mini": 3_821_079_552, "tinyllama-1.1b": 1_100_048_384, "gpt2-small": 124_439_808}
TINY = {
    "llama": {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 8,
              "num_key_value_heads": 2, "intermediate_size": 688, "vocab_size": 1000, "rms_norm_eps": 1e-5,
              "attention_dropout": 0.0},
    "qwen2": {"model_type": "qwen2", "hidden_size": 192, "num_hidden_layers": 2, "num_attention_heads": 6,
              "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 700, "tie_word_embeddings": True},
    "mixtral": {"model_type": "mixtral", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                "num_key_value_heads": 2, "intermediate_size": 320, "vocab_size": 500, "num_local_experts": 4,
                "num_experts_per_tok": 2},
}


def hf_model(config: dict, device: str = "meta"):
    cfg = transformers.AutoConfig.for_model(**config)
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(cfg)


@pytest.mark.parametrize("name", [n for n, p in PRESETS.items() if p.config], ids=str)
def test_preset_counts_what_hugging_face_builds_from_its_config(name):
    preset = PRESETS[name]
    built = sum(p.numel() for p in hf_model(preset.config).parameters())
    assert preset.spec.params == built == param_count(preset.config)[0]
    if name in PUBLISHED:
        assert built == PUBLISHED[name]


def test_the_listed_families_have_presets():
    for name in ("llama-3.2-1b", "llama-3.2-3b", "llama-3.1-8b", "llama-3.1-70b", "mistral-7b", "mixtral-8x7b",
                 "qwen2.5-0.5b", "qwen2.5-72b", "gemma-2-9b", "phi-3-mini", "tinyllama-1.1b", "gpt2-xl"):
        assert name in PRESETS
    mixtral = PRESETS["mixtral-8x7b"].spec
    assert (mixtral.experts, mixtral.experts_active, mixtral.active_params) == (8, 2, 12_879_925_248)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("targets,peft_targets", [("q,v", ["q_proj", "v_proj"]),
                                                  ("q,k,v,o", ["q_proj", "k_proj", "v_proj", "o_proj"]),
                                                  ("all-linear", "all-linear"),
                                                  ("gate_proj,down_proj", ["gate_proj", "down_proj"])])
def test_lora_adapters_count_what_peft_trains(family, targets, peft_targets):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(hf_model(TINY[family], "cpu"), peft.LoraConfig(r=8, target_modules=peft_targets))
    trainable, _ = model.get_nb_trainable_parameters()
    spec = TrainingSpec(**spec_fields(TINY[family]))
    assert adapter_params(spec, 8, parse_targets(targets)) == trainable


def test_lora_on_a_mixture_of_experts_attention_and_router():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(hf_model(TINY["mixtral"], "cpu"),
                                peft.LoraConfig(r=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate"]))
    trainable, _ = model.get_nb_trainable_parameters()
    spec = TrainingSpec(**spec_fields(TINY["mixtral"]))
    assert adapter_params(spec, 8, ("q", "k", "v", "o", "router")) == trainable


def test_estimate_reads_a_local_config_json(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY["llama"]))
    r = llmops("estimate", "--config", str(path), "--seq-len", "128", "--batch-size", "2", "--json",
               "--lora-rank", "8", "--lora-targets", "q,k,v,o")
    assert r.returncode == 0, r.stderr
    inputs = json.loads(r.stdout)["inputs"]
    base = sum(p.numel() for p in hf_model(TINY["llama"]).parameters())
    assert (inputs["layers"], inputs["hidden"], inputs["kv_heads"], inputs["ffn_hidden"]) == (3, 256, 2, 688)
    assert inputs["gated_mlp"] and inputs["norm"] == "rmsnorm" and inputs["dropout"] is False
    assert inputs["trainable_params"] == 39_936 and inputs["params"] == base + 39_936


@pytest.mark.parametrize("content,says", [(None, "cannot read"), ("{not json", "not a JSON config"),
                                          ('{"hidden_size": 64}', "no layers")])
def test_a_config_that_cannot_serve_is_one_line(tmp_path, content, says):
    path = tmp_path / "config.json"
    if content is not None:
        path.write_text(content)
    one_line_exit_2(llmops("estimate", "--config", str(path)), "--config", says)


@pytest.mark.parametrize("args,says", [(["--lora-rank", "0"], "--lora-rank"),
                                       (["--lora-rank", "8", "--lora-targets", "qq"], "'qq' is not a target"),
                                       (["--lora-targets", "q,v"], "needs --lora-rank"),
                                       (["--lora-rank", "8", "--params", "7B"], "needs the architecture")])
def test_bad_lora_flags_are_one_line(args, says):
    one_line_exit_2(llmops("estimate", *args), says)


def test_lora_all_linear_on_fused_experts_counts_what_peft_trains():
    """Transformers 5 fuses each layer's experts into gate_up_proj and down_proj stacks; PEFT's all-linear
    adapts each stack whole (gate_up at rank 2r). Per-expert linears (transformers 4) count otherwise."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(hf_model(TINY["mixtral"], "cpu"), peft.LoraConfig(r=8, target_modules="all-linear"))
    assert any(p.dim() == 3 for n, p in model.named_parameters() if ".experts." in n)  # fused, as in transformers 5
    trainable, _ = model.get_nb_trainable_parameters()
    spec = TrainingSpec(**spec_fields(TINY["mixtral"]))
    assert adapter_params(spec, 8, parse_targets("all-linear")) == trainable
    assert adapter_params(spec.with_(fused_experts=False), 8, parse_targets("all-linear")) < trainable


def test_fused_experts_keep_merged_stacks_per_layer_in_the_cli():
    """Mixtral 8x7B, LoRA all-linear, bf16: fused stacks (the default) keep each layer's merged experts,
    2·E·3·h·f bytes a layer whatever the batch; --per-expert-linears merges nothing."""
    args = ("estimate", "--model", "mixtral-8x7b", "--lora-rank", "8", "--lora-targets", "all-linear",
            "--seq-len", "2048", "--batch-size", "1", "--precision", "bf16-true", "--json")
    fused, linears = (json.loads(llmops(*args, *extra).stdout)["refined"] for extra in ((), ("--per-expert-linears",)))
    stacks = 32 * 2 * 8 * 3 * 4096 * 14336  # L layers × 2 bytes × E × (gate, up, down) × h × f
    assert abs(fused["activation_bytes"] - linears["activation_bytes"] - stacks) < 0.01 * stacks


def test_experts_implementation_from_the_cli():
    """Mixtral 8x7B, LoRA on q, v under bf16-mixed, 1,024 tokens, by hand (3·h·f = 176M weights an expert):
    grouped_mm stacks stay fp32 and are copied by nobody; eager experts are cast by autocast, and each of the
    E = 8 experts the tokens reach keeps its 2-byte copy for backward (less what their 2-byte activations save
    against fp32); batched_mm gathers k = 2 experts' weights per token and keeps their 2-byte copies."""
    args = ("estimate", "--model", "mixtral-8x7b", "--lora-rank", "8", "--seq-len", "1024", "--batch-size", "1",
            "--precision", "bf16-mixed", "--json")
    grouped, eager, batched = (json.loads(llmops(*args, "--experts-implementation", impl).stdout)["refined"]
                               for impl in ("grouped_mm", "eager", "batched_mm"))
    expert, layers = 3 * 4096 * 14336, 32
    copies = layers * 8 * expert * 2
    assert 0.9 * copies < eager["activation_bytes"] - grouped["activation_bytes"] < copies
    assert batched["activation_bytes"] > layers * 1024 * 2 * expert * 2
    one_line_exit_2(llmops(*args, "--experts-implementation", "grouped"), "grouped_mm")


FUSED_TINY = {
    "phi3": {"model_type": "phi3", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
             "num_key_value_heads": 4, "intermediate_size": 512, "vocab_size": 1000, "pad_token_id": 0,
             "bos_token_id": 1, "eos_token_id": 2},
    "gpt2": {"model_type": "gpt2", "n_embd": 128, "n_layer": 2, "n_head": 4, "vocab_size": 1000, "n_positions": 64,
             "bos_token_id": 0, "eos_token_id": 0},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "intermediate_size": 512, "vocab_size": 1000},
}


@pytest.mark.parametrize("family,targets", [
    ("phi3", "all-linear"), ("phi3", "qkv_proj"), ("phi3", "qkv_proj,o_proj"), ("phi3", "gate_up_proj,down_proj"),
    ("gpt2", "all-linear"), ("gpt2", "c_attn"), ("gpt2", "c_attn,c_proj"), ("gpt2", "c_fc"),
    ("gpt_neox", "all-linear"), ("gpt_neox", "query_key_value"), ("gpt_neox", "dense,dense_h_to_4h")])
def test_lora_on_fused_projections_counts_one_adapter_per_module_as_peft_does(family, targets):
    """Phi-3 (qkv_proj, gate_up_proj), GPT-2 (c_attn) and GPT-NeoX (query_key_value) compute several projections in
    one linear: PEFT adapts it whole, one adapter. Counting q, k and v apart put Phi-3's all-linear at +23%."""
    peft = pytest.importorskip("peft")
    model = hf_model(FUSED_TINY[family], "cpu")
    peft_targets = targets if targets == "all-linear" else targets.split(",")
    trainable, _ = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=peft_targets)) \
        .get_nb_trainable_parameters()
    spec = TrainingSpec(**spec_fields(FUSED_TINY[family]))
    assert spec.fused_linears and adapter_params(spec, 8, parse_targets(targets)) == trainable


def test_part_of_a_fused_module_adapts_it_whole_and_says_so():
    """The default q,v on Phi-3 is PEFT's default there (qkv_proj): one adapter over Q, K and V, with a note."""
    r = llmops("estimate", "--model", "phi-3-mini", "--lora-rank", "8", "--seq-len", "512", "--batch-size", "1",
               "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    h, q_kv = 3072, 3072 + 2 * 3072  # Phi-3-mini: 32 heads of 96, all of them key/value heads
    assert out["inputs"]["trainable_params"] == 32 * 8 * (h + q_kv)
    assert any("adapts qkv whole" in n for n in out["refined"]["notes"])


def test_a_named_expert_stack_takes_rank_r_as_peft_target_parameters_does():
    """all-linear gives Mixtral's gate_up stack r for each projection (2r, PEFT's rank_pattern); naming the stack
    (target_parameters) gives it r. Both against PEFT's own count."""
    peft = pytest.importorskip("peft")
    stacks = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    model = peft.get_peft_model(hf_model(TINY["mixtral"], "cpu"),
                                peft.LoraConfig(r=8, target_modules=["q_proj"], target_parameters=stacks))
    trainable, _ = model.get_nb_trainable_parameters()
    spec = TrainingSpec(**spec_fields(TINY["mixtral"]))
    assert adapter_params(spec, 8, parse_targets("q_proj,gate_up_proj,down_proj")) == trainable
    assert adapter_params(spec, 8, parse_targets("q_proj,gate_proj,up_proj,down_proj")) > trainable


def test_half_a_fused_expert_stack_is_one_line():
    """PEFT refuses gate without up on fused experts (they are one stack); so does the plan."""
    one_line_exit_2(llmops("estimate", "--model", "mixtral-8x7b", "--lora-rank", "8", "--lora-targets", "q_proj,gate",
                           "--seq-len", "512", "--batch-size", "1"), "one gate_up_proj stack")


def test_a_shared_expert_adapts_as_a_dense_mlp_and_the_router_follows_the_fused_experts():
    """Qwen2-MoE's shared expert is three nn.Linear and its gate one more (h → 1): all-linear adapts them. Beside
    fused stacks the router (h → E) is a bare parameter PEFT adapts only with the stacks (``lora_experts``); the
    counts against each PEFT release are in test_peft_releases.py. A hand count:"""
    cfg = {"model_type": "qwen2_moe", "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 512, "moe_intermediate_size": 64,
           "shared_expert_intermediate_size": 256, "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 1000}
    attention = 2 * 8 * ((128 + 128) * 2 + (128 + 64) * 2)  # layers × r × (q, o: h + h; k, v: h + kv·d)
    shared = 2 * 8 * (2 * (128 + 256) + 256 + 128)  # layers × r × (gate and up: h + f, down: f + h)
    gates = 2 * 8 * (128 + 1)  # the shared expert's gate, h → 1
    router = 2 * 8 * (128 + 4)  # h → E
    stacks = 2 * 4 * (8 * 2 * (128 + 2 * 64) + 8 * (64 + 128))  # layers × E × (gate_up at 2r, down at r)
    all_linear = parse_targets("all-linear")
    spec = TrainingSpec(**spec_fields(cfg))
    assert adapter_params(spec.with_(lora_experts=False), 8, all_linear) == attention + shared + gates
    assert adapter_params(spec, 8, all_linear) == attention + shared + gates + router + stacks
    assert adapter_params(spec, 8, parse_targets("gate_proj,up_proj,down_proj")) - stacks == shared
