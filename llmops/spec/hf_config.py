"""A model's architecture from its configuration (Hugging Face ``config.json``, LitGPT's, nanoGPT's).

The same reading serves a live model's ``config`` (``introspect``), a local ``config.json``
(``llmops estimate --config``) and the presets, which are published configs. ``param_count``
counts the parameters the config builds, term by term, as Hugging Face's modelling code lays
them out (checked against the models themselves, built on the meta device, in the tests).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmops.spec.choices import EXPERTS_IMPLEMENTATIONS

# estimator field → config attribute names, in order of preference
CONFIG_NAMES: dict[str, tuple[str, ...]] = {
    "layers": ("num_hidden_layers", "n_layer", "n_layers", "num_layers"),
    "heads": ("num_attention_heads", "n_head", "n_heads", "num_heads"),
    "hidden": ("hidden_size", "n_embd", "d_model", "dim"),
    "kv_heads": ("num_key_value_heads", "n_query_groups", "n_kv_heads"),
    "ffn_hidden": ("intermediate_size", "n_inner", "ffn_dim", "hidden_dim"),
    # LitGPT's embedding and head are padded_vocab_size wide (vocab_size is the tokenizer's: phi-1.5's 50,257 in 51,200)
    "vocab": ("padded_vocab_size", "vocab_size", "n_vocab"),
    # mixture of experts (Mixtral, Qwen2-MoE, DeepSeek, LitGPT's LLaMAMoE)
    "experts": ("num_local_experts", "num_experts", "n_routed_experts", "n_expert"),
    "experts_active": ("num_experts_per_tok", "num_selected_experts", "n_expert_per_token", "moe_topk"),
    "expert_ffn_hidden": ("moe_intermediate_size", "expert_intermediate_size"),
    "shared_expert_ffn_hidden": ("shared_expert_intermediate_size",),
}
# the MLP activation's config name → the estimator's (what it saves for backward)
ACTIVATION_NAMES = {"gelu_new": "gelu_new", "gelu_fast": "gelu_new", "gelu_pytorch_tanh": "gelu_tanh",
                    "silu": "silu", "swish": "silu", "relu": "relu", "gelu": "gelu"}
GATED_ACTIVATIONS = ("silu", "swiglu", "geglu", "swish")
# Hugging Face model types whose MLP is gated whatever the activation is called (Gemma's gelu_pytorch_tanh)
GATED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "gemma", "gemma2", "phi3")
# Hugging Face model types whose blocks compute several projections in one linear (spec.FUSED): Phi-3's qkv_proj
# and gate_up_proj, GPT-2's c_attn, GPT-NeoX's query_key_value
FUSED_MODEL_TYPES = {"phi3": ("qkv", "gate_up"), "gpt2": ("qkv",), "gpt_neox": ("qkv",), "falcon": ("qkv",)}
# Hugging Face model types whose attention and MLP both read the block's input (spec.parallel_residual), by the
# config flag that turns it off where there is one, and those with one norm for both (Phi-2, GPT-J, Falcon-7B)
PARALLEL_MODEL_TYPES = {"gpt_neox": "use_parallel_residual", "falcon": "parallel_attn", "phi": None, "gptj": None}
# learned absolute positions instead of RoPE (spec.rotary); RoPE by concatenating rotated and passed parts
# (spec.rope_concat: apply_rotary_pos_emb or the attention's torch.cat in their modelling code)
UNROTATED_MODEL_TYPES = ("gpt2",)
CONCAT_ROPE_MODEL_TYPES = ("gpt_neox", "phi", "phi3", "gptj")
# LitGPT's Config (litgpt/config.py) names its MLP and norm by class (mlp_class_name, norm_class_name; _mlp_class and
# _norm_class before 2024): MLP class → (gated, activation; GELU's tanh form by gelu_approximate).
LITGPT_MLPS = {"LLaMAMLP": (True, "silu"), "LLaMAMoE": (True, "silu"), "GemmaMLP": (True, "gelu"),
               "GptNeoxMLP": (False, "gelu")}
# What LitGPT's code does with any config: Q, K, V from one fused linear, K and V repeated to the query heads in
# training, RoPE by concatenation, F.scaled_dot_product_attention, no KV cache in training, and a loss
# (chunked_cross_entropy) that keeps the logits' dtype.
LITGPT_CODE: dict[str, Any] = {"attention": "sdpa", "loss_upcast": False, "fused_linears": ("qkv",), "kv_repeat": True,
                               "kv_cache": False, "rope_concat": True}
# Whose code runs a model (``llmops estimate --framework``), beyond what its config says: Hugging Face's (transformers
# and PEFT, what the presets' configs describe) or LitGPT's model, LoRA layers (one LoRAQKVLinear) and finetune
# scripts, which hold the last micro-batch's logits into the next forward.
FRAMEWORKS: dict[str, dict[str, Any]] = {"hf": {},
                                         "litgpt": {**LITGPT_CODE, "lora_layout": "litgpt", "keeps_outputs": True}}


def get(cfg: Any, *names: str) -> Any:
    """The first of ``names`` set on ``cfg`` (a mapping or an object), else ``None``."""
    for n in names:
        value = cfg.get(n) if isinstance(cfg, Mapping) else getattr(cfg, n, None)
        if value is not None:
            return value
    return None


def architecture(cfg: Any) -> dict[str, Any]:
    """``TrainingSpec`` fields the config states; empty when it states none of the shapes."""
    found: dict[str, Any] = {}
    for key, names in CONFIG_NAMES.items():
        for attr in names:
            value = get(cfg, attr)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                found[key] = value
                break
    if not found:
        return found
    litgpt = get(cfg, "mlp_class_name", "_mlp_class")
    if litgpt in LITGPT_MLPS:
        gated, activation = LITGPT_MLPS[litgpt]
        if activation == "gelu" and get(cfg, "gelu_approximate") == "tanh":
            activation = "gelu_tanh"
        found.update(gated_mlp=gated, activation=activation, **LITGPT_CODE)
        if get(cfg, "parallel_residual"):
            found["parallel_residual"] = True
        if get(cfg, "norm_class_name", "_norm_class") == "RMSNorm":
            found["norm"] = "rmsnorm"
    act = str(get(cfg, "hidden_activation", "hidden_act", "activation_function", "mlp_class_name") or "").lower()
    if any(g in act for g in GATED_ACTIVATIONS) or "llamamlp" in act or get(cfg, "model_type") in GATED_MODEL_TYPES:
        found["gated_mlp"] = True
    if act in ACTIVATION_NAMES:
        found["activation"] = ACTIVATION_NAMES[act]
    if get(cfg, "rms_norm_eps") is not None:
        found["norm"] = "rmsnorm"
    if found.get("experts", 1) < 2:
        found.pop("experts", None)
        found.pop("experts_active", None)
    h, a = found.get("hidden"), found.get("heads")
    if h and a and get(cfg, "head_dim") and _head_dim(cfg, h, a) * a != h:
        found["head_dim"] = _head_dim(cfg, h, a)  # Gemma 2: heads × head_dim is not hidden
    if get(cfg, "_experts_implementation") in EXPERTS_IMPLEMENTATIONS:
        found["experts_implementation"] = get(cfg, "_experts_implementation")
    if get(cfg, "model_type") in FUSED_MODEL_TYPES:
        found["fused_linears"] = FUSED_MODEL_TYPES[get(cfg, "model_type")]
    model_type = get(cfg, "model_type")
    if model_type in PARALLEL_MODEL_TYPES and get(cfg, PARALLEL_MODEL_TYPES[model_type] or "") is not False:
        found["parallel_residual"] = True
    if model_type is not None and get(cfg, "use_cache") is not False:  # transformers' default, in training too
        found["kv_cache"] = True
    if model_type in CONCAT_ROPE_MODEL_TYPES:
        found["rope_concat"] = True
    if model_type in UNROTATED_MODEL_TYPES:
        found["rotary"] = False
    if block_norms(cfg) != 2:
        found["block_norms"] = block_norms(cfg)
    impl = str(get(cfg, "_attn_implementation", "attn_implementation") or "")
    if impl in ("sdpa", "flash_attention_2", "flash_attention_3"):
        found["attention"] = "sdpa"
    if impl == "eager":  # transformers' eager attention repeats K and V to the query heads (repeat_kv)
        found["kv_repeat"] = True
    if unknown := unmodelled(cfg):
        found["unmodelled"] = unknown
    return found


# The architectures the refined model's terms were checked on against torch.profiler (bench/zoo.py and the tests);
# another model_type is read as the nearest of them, and the plan says so.
CHECKED_MODEL_TYPES = ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "gemma2", "phi", "phi3", "gpt2",
                       "gpt_neox", "bert")
STATE_SPACE_MODEL_TYPES = ("mamba", "mamba2", "falcon_mamba", "jamba", "zamba", "zamba2", "bamba", "rwkv",
                           "recurrent_gemma", "falcon_h1", "granitemoehybrid", "nemotron_h")
QK_NORM_MODEL_TYPES = ("qwen3", "qwen3_moe", "olmo2", "olmoe", "gemma3", "gemma3_text", "cohere", "cohere2")


def unmodelled(cfg: Any) -> tuple[str, ...]:
    """What a config holds that the refined model does not model: said beside its figure, which may then be low,
    so that the dry run decides (``estimate.verdict``)."""
    model_type = get(cfg, "model_type")
    out = []
    if get(cfg, "is_encoder_decoder"):
        out.append("an encoder-decoder (it counts one decoder stack)")
    if model_type in STATE_SPACE_MODEL_TYPES or get(cfg, "state_size", "ssm_state_size", "d_state") is not None:
        out.append("state-space blocks")
    if get(cfg, "kv_lora_rank") is not None:
        out.append("multi-head latent attention (kv_lora_rank)")
    if get(cfg, "qk_norm", "use_qk_norm") or model_type in QK_NORM_MODEL_TYPES:
        out.append("per-head norms on Q and K")
    if get(cfg, "first_k_dense_replace"):
        out.append("dense layers before the first mixture layer (first_k_dense_replace)")
    if get(cfg, "n_shared_experts"):
        out.append("shared experts (n_shared_experts)")
    if model_type is not None and model_type not in CHECKED_MODEL_TYPES:
        out.append(f"model_type {model_type!r} as such (it has not been checked on it)")
    return tuple(out)


def block_norms(cfg: Any) -> int:
    """Norms per block: Gemma 2 adds one after the attention and one after the MLP to the two before them;
    Phi-2, GPT-J, Falcon's first decoder and LitGPT's ``shared_attention_norm`` have one for both."""
    model_type = get(cfg, "model_type")
    if model_type == "gemma2":
        return 4
    single = model_type in ("phi", "gptj") or (model_type == "falcon" and not get(cfg, "new_decoder_architecture"))
    return 1 if single or get(cfg, "shared_attention_norm") else 2


def _head_dim(cfg: Any, h: int, a: int) -> int:
    return int(get(cfg, "head_dim") or h // a)


def param_count(cfg: Any) -> tuple[int, int]:
    """``(total, active per token)`` parameters of a decoder-only config, as Hugging Face builds it.

    Per layer: the attention's Q, K, V and output projections (biases where the config has them:
    Qwen2's on Q, K and V, GPT-2's everywhere), the MLP (gated: gate, up and down; else up and
    down), each expert's MLP and the router under a mixture of experts, and the norms (RMSNorm: a
    weight; LayerNorm: weight and bias; Gemma 2: four per layer). Then the token embedding, GPT-2's
    position embedding, the final norm, and the output head unless it is tied to the embedding.
    """
    arch = architecture(cfg)
    h, L, a, V = arch["hidden"], arch["layers"], arch["heads"], arch["vocab"]
    kv = arch.get("kv_heads", a)
    d = _head_dim(cfg, h, a)
    model_type = get(cfg, "model_type")
    gpt2 = model_type == "gpt2"
    f = arch.get("ffn_hidden") or 4 * h
    qkv_bias = bool(get(cfg, "attention_bias")) or model_type == "qwen2" or gpt2
    attn = h * a * d + 2 * h * kv * d + a * d * h
    attn += (a * d + 2 * kv * d if qkv_bias else 0) + (h if gpt2 or get(cfg, "attention_bias") else 0)
    mlp_bias = f + h if gpt2 or get(cfg, "mlp_bias") else 0
    mlp = (3 if arch.get("gated_mlp") else 2) * h * f + mlp_bias
    norm = h if arch.get("norm") == "rmsnorm" else 2 * h
    norms = block_norms(cfg) * norm
    E, k = arch.get("experts", 1), arch.get("experts_active", 1)
    if E > 1:
        expert = 3 * h * arch.get("expert_ffn_hidden", f)
        layer_total = attn + E * expert + h * E + norms
        layer_active = attn + k * expert + h * E + norms
    else:
        layer_total = layer_active = attn + mlp + norms
    tied = get(cfg, "tie_word_embeddings")
    tied = gpt2 if tied is None else bool(tied)
    rest = V * h + norm + (0 if tied else V * h) + (int(get(cfg, "n_positions") or 0) * h if gpt2 else 0)
    return L * layer_total + rest, L * layer_active + rest


def read_config(path: str | Path) -> dict[str, Any]:
    """A local ``config.json`` (nothing is downloaded); ``ValueError`` in one line when it cannot serve."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a JSON config ({e})") from None
    if isinstance(cfg, dict) and isinstance(cfg.get("text_config"), dict):  # a multimodal model's language part
        cfg = {**cfg["text_config"], "model_type": cfg["text_config"].get("model_type", cfg.get("model_type"))}
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a config is a JSON object")
    need = ("hidden", "layers", "heads", "vocab")
    absent = [n for n in need if n not in architecture(cfg)]
    if absent and not get(cfg, "model_type"):  # with a model_type, transformers can build it for the dry run
        raise ValueError(f"{path}: no {', '.join(absent)} in it (looked for {', '.join(CONFIG_NAMES[absent[0]])})")
    return cfg


def spec_fields(cfg: Any) -> dict[str, Any]:
    """``TrainingSpec`` fields for a config: its architecture and parameter counts (no run context)."""
    fields = architecture(cfg)
    if not {"hidden", "layers", "heads", "vocab"} <= set(fields):
        return fields  # no count without the shapes: a dry run counts the model transformers builds
    total, active = param_count(cfg)
    fields["params"] = total
    if active != total:
        fields["active_params"] = active
    if get(cfg, "hidden_dropout", "resid_pdrop", "attention_dropout", "attn_pdrop") in (0, 0.0):
        fields["dropout"] = False
    return fields
