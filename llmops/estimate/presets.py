"""Published configurations of public models, as estimator inputs."""

from __future__ import annotations

from dataclasses import dataclass

from .spec import TrainingSpec
from .units import closest


@dataclass(frozen=True)
class Preset:
    """A public model: its spec (architecture and training context) and where the figures come from."""

    name: str
    spec: TrainingSpec
    source: str


def _p(name: str, source: str, **arch: object) -> Preset:
    if arch.get("gated_mlp"):  # the Llama family and its descendants: SwiGLU MLP, RMSNorm
        arch = {"activation": "silu", "norm": "rmsnorm", **arch}
    if name.startswith("gpt2"):  # GPT-2's tanh GELU written out of elementwise ops
        arch = {"activation": "gelu_new", **arch}
    return Preset(name, TrainingSpec(**arch), source)  # type: ignore[arg-type]


PRESETS: dict[str, Preset] = {p.name: p for p in (
    _p("gpt2-small", "Radford et al. 2019; HF gpt2 config", params=124_439_808, layers=12,
       hidden=768, heads=12, vocab=50257, seq_len=1024),
    _p("gpt-3-175b", "Brown et al. 2020, table 2.1", params=175 * 10**9, layers=96, hidden=12288,
       heads=96, vocab=50257, seq_len=2048),
    _p("llama-2-7b", "Touvron et al. 2023; HF Llama-2-7b-hf config", params=6_738_415_616,
       layers=32, hidden=4096, heads=32, ffn_hidden=11008, gated_mlp=True, vocab=32000,
       seq_len=4096, dropout=False),
    _p("llama-2-13b", "Touvron et al. 2023; HF Llama-2-13b-hf config", params=13_015_864_320,
       layers=40, hidden=5120, heads=40, ffn_hidden=13824, gated_mlp=True, vocab=32000,
       seq_len=4096, dropout=False),
    _p("llama-2-70b", "Touvron et al. 2023; HF Llama-2-70b-hf config (8 key/value heads)",
       params=68_976_648_192, layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672,
       gated_mlp=True, vocab=32000, seq_len=4096, dropout=False),
    _p("llama-3-8b", "Meta Llama 3 model card; HF Meta-Llama-3-8B config", params=8_030_261_248,
       layers=32, hidden=4096, heads=32, kv_heads=8, ffn_hidden=14336, gated_mlp=True,
       vocab=128256, seq_len=8192, dropout=False),
    _p("llama-3-70b", "Meta Llama 3 model card; HF Meta-Llama-3-70B config",
       params=70_553_706_496, layers=80, hidden=8192, heads=64, kv_heads=8, ffn_hidden=28672,
       gated_mlp=True, vocab=128256, seq_len=8192, dropout=False),
    _p("mistral-7b", "Jiang et al. 2023, table 1", params=7_241_732_096, layers=32, hidden=4096,
       heads=32, kv_heads=8, ffn_hidden=14336, gated_mlp=True, vocab=32000, seq_len=8192,
       dropout=False),
    # Mixture of 8 experts, 2 active per token: every expert is stored and trained, a token
    # passes through two. ~86e9 active parameters as xAI's release describes.
    _p("grok-1", "xAI grok-1 release (model.py, run.py)", params=314 * 10**9,
       active_params=86 * 10**9, layers=64, hidden=6144, heads=48, kv_heads=8,
       ffn_hidden=32768, gated_mlp=True, experts=8, experts_active=2, vocab=131072, seq_len=8192,
       dropout=False),
)}
ALIASES = {"gpt2": "gpt2-small", "gpt-2": "gpt2-small", "gpt3": "gpt-3-175b",
           "gpt-3": "gpt-3-175b", "llama2-7b": "llama-2-7b", "llama3-8b": "llama-3-8b"}


def get_preset(name: str) -> Preset:
    """A preset by name (case-insensitive); ``ValueError`` suggests the closest names."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        raise ValueError(f"unknown model {name!r}{closest(name, list(PRESETS))}; "
                         f"see `llmops models` for the {len(PRESETS)} presets")
    return PRESETS[key]
