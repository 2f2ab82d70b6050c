"""Published configurations of public models, as estimator inputs (most from their config.json)."""

from __future__ import annotations

from dataclasses import dataclass

from llmops.spec.hf_config import spec_fields
from llmops.spec.training import TrainingSpec
from llmops.units import closest


@dataclass(frozen=True)
class Preset:
    """A public model: its spec (architecture and training context) and where the figures come from."""

    name: str
    spec: TrainingSpec
    source: str
    config: dict[str, object] | None = None  # the published config.json fields it was read from


def _p(name: str, source: str, **arch: object) -> Preset:
    """A preset stated as estimator fields (a model without a Hugging Face config)."""
    if arch.get("gated_mlp"):  # the Llama family and its descendants: SwiGLU MLP, RMSNorm
        arch = {"activation": "silu", "norm": "rmsnorm", **arch}
    return Preset(name, TrainingSpec(**arch), source)  # type: ignore[arg-type]


def _hf(name: str, source: str, seq_len: int, config: dict[str, object]) -> Preset:
    """A preset from a published ``config.json`` (its architecture fields): the same reading as
    ``llmops estimate --config`` and a live model's introspection; parameters counted from it."""
    return Preset(name, TrainingSpec(**spec_fields(config), seq_len=seq_len), source, config)


def _llama(model_type: str, h: int, L: int, a: int, kv: int, f: int, V: int, tied: bool,
           **extra: object) -> dict[str, object]:
    """The fields a Llama-style config.json (Llama, Mistral, Mixtral, Qwen2, Gemma 2, Phi-3) sets."""
    return {"model_type": model_type, "hidden_size": h, "num_hidden_layers": L, "num_attention_heads": a,
            "num_key_value_heads": kv, "intermediate_size": f, "vocab_size": V, "tie_word_embeddings": tied,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_dropout": 0.0, **extra}


def _gpt2(h: int, L: int, a: int) -> dict[str, object]:
    return {"model_type": "gpt2", "n_embd": h, "n_layer": L, "n_head": a, "vocab_size": 50257,
            "n_positions": 1024, "activation_function": "gelu_new", "resid_pdrop": 0.1}


_GEMMA = {"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh"}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    _hf("gpt2-small", "Radford et al. 2019; HF gpt2 config.json", 1024, _gpt2(768, 12, 12)),
    _hf("gpt2-medium", "HF gpt2-medium config.json", 1024, _gpt2(1024, 24, 16)),
    _hf("gpt2-large", "HF gpt2-large config.json", 1024, _gpt2(1280, 36, 20)),
    _hf("gpt2-xl", "HF gpt2-xl config.json", 1024, _gpt2(1600, 48, 25)),
    _p("gpt-3-175b", "Brown et al. 2020, table 2.1", params=175 * 10**9, layers=96, hidden=12288,
       heads=96, vocab=50257, seq_len=2048),
    _hf("llama-2-7b", "Touvron et al. 2023; HF Llama-2-7b-hf config.json", 4096,
        _llama("llama", 4096, 32, 32, 32, 11008, 32000, False)),
    _hf("llama-2-13b", "Touvron et al. 2023; HF Llama-2-13b-hf config.json", 4096,
        _llama("llama", 5120, 40, 40, 40, 13824, 32000, False)),
    _hf("llama-2-70b", "Touvron et al. 2023; HF Llama-2-70b-hf config.json", 4096,
        _llama("llama", 8192, 80, 64, 8, 28672, 32000, False)),
    _hf("llama-3-8b", "HF Meta-Llama-3-8B config.json", 8192, _llama("llama", 4096, 32, 32, 8, 14336, 128256, False)),
    _hf("llama-3-70b", "HF Meta-Llama-3-70B config.json", 8192,
        _llama("llama", 8192, 80, 64, 8, 28672, 128256, False)),
    _hf("llama-3.1-8b", "HF Llama-3.1-8B config.json", 8192, _llama("llama", 4096, 32, 32, 8, 14336, 128256, False)),
    _hf("llama-3.1-70b", "HF Llama-3.1-70B config.json", 8192,
        _llama("llama", 8192, 80, 64, 8, 28672, 128256, False)),
    _hf("llama-3.2-1b", "HF Llama-3.2-1B config.json (tied embeddings)", 8192,
        _llama("llama", 2048, 16, 32, 8, 8192, 128256, True)),
    _hf("llama-3.2-3b", "HF Llama-3.2-3B config.json (tied embeddings)", 8192,
        _llama("llama", 3072, 28, 24, 8, 8192, 128256, True)),
    _hf("tinyllama-1.1b", "HF TinyLlama-1.1B-intermediate-step-1431k-3T config.json", 2048,
        _llama("llama", 2048, 22, 32, 4, 5632, 32000, False)),
    _hf("mistral-7b", "Jiang et al. 2023, table 1; HF Mistral-7B-v0.1 config.json", 8192,
        _llama("mistral", 4096, 32, 32, 8, 14336, 32000, False)),
    # Mixture of 8 experts, 2 active per token: every expert is stored and trained, a token passes through two.
    _hf("mixtral-8x7b", "HF Mixtral-8x7B-v0.1 config.json", 8192,
        _llama("mixtral", 4096, 32, 32, 8, 14336, 32000, False, num_local_experts=8, num_experts_per_tok=2)),
    _hf("qwen2.5-0.5b", "HF Qwen2.5-0.5B config.json (Q, K, V biases; tied)", 8192,
        _llama("qwen2", 896, 24, 14, 2, 4864, 151936, True, rms_norm_eps=1e-6)),
    _hf("qwen2.5-1.5b", "HF Qwen2.5-1.5B config.json", 8192,
        _llama("qwen2", 1536, 28, 12, 2, 8960, 151936, True, rms_norm_eps=1e-6)),
    _hf("qwen2.5-3b", "HF Qwen2.5-3B config.json", 8192,
        _llama("qwen2", 2048, 36, 16, 2, 11008, 151936, True, rms_norm_eps=1e-6)),
    _hf("qwen2.5-7b", "HF Qwen2.5-7B config.json", 8192,
        _llama("qwen2", 3584, 28, 28, 4, 18944, 152064, False, rms_norm_eps=1e-6)),
    _hf("qwen2.5-14b", "HF Qwen2.5-14B config.json", 8192,
        _llama("qwen2", 5120, 48, 40, 8, 13824, 152064, False, rms_norm_eps=1e-6)),
    _hf("qwen2.5-32b", "HF Qwen2.5-32B config.json", 8192,
        _llama("qwen2", 5120, 64, 40, 8, 27648, 152064, False, rms_norm_eps=1e-6)),
    _hf("qwen2.5-72b", "HF Qwen2.5-72B config.json", 8192,
        _llama("qwen2", 8192, 80, 64, 8, 29568, 152064, False, rms_norm_eps=1e-6)),
    _hf("gemma-2-2b", "HF gemma-2-2b config.json (head_dim 256)", 8192,
        _llama("gemma2", 2304, 26, 8, 4, 9216, 256000, True, head_dim=256, rms_norm_eps=1e-6, **_GEMMA)),
    _hf("gemma-2-9b", "HF gemma-2-9b config.json (head_dim 256)", 8192,
        _llama("gemma2", 3584, 42, 16, 8, 14336, 256000, True, head_dim=256, rms_norm_eps=1e-6, **_GEMMA)),
    _hf("gemma-2-27b", "HF gemma-2-27b config.json (head_dim 128)", 8192,
        _llama("gemma2", 4608, 46, 32, 16, 36864, 256000, True, head_dim=128, rms_norm_eps=1e-6, **_GEMMA)),
    _hf("phi-3-mini", "HF Phi-3-mini-4k-instruct config.json", 4096,
        _llama("phi3", 3072, 32, 32, 32, 8192, 32064, False)),
    # ~86e9 active parameters as xAI's release describes.
    _p("grok-1", "xAI grok-1 release (model.py, run.py)", params=314 * 10**9,
       active_params=86 * 10**9, layers=64, hidden=6144, heads=48, kv_heads=8,
       ffn_hidden=32768, gated_mlp=True, experts=8, experts_active=2, vocab=131072, seq_len=8192,
       dropout=False),
)}
MODEL_ALIASES = {"gpt2": "gpt2-small", "gpt-2": "gpt2-small", "gpt3": "gpt-3-175b",
           "gpt-3": "gpt-3-175b", "llama2-7b": "llama-2-7b", "llama3-8b": "llama-3-8b",
           "tinyllama": "tinyllama-1.1b", "mixtral": "mixtral-8x7b", "phi-3": "phi-3-mini", "phi3-mini": "phi-3-mini"}


def get_preset(name: str) -> Preset:
    """A preset by name (case-insensitive); ``ValueError`` suggests the closest names."""
    key = name.strip().lower()
    key = MODEL_ALIASES.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"unknown model {name!r}{closest(name, list(PRESETS))}; "
                         f"see `llmops models` for the {len(PRESETS)} presets")
    return PRESETS[key]
