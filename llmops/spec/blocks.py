"""The linear modules of one transformer block as a spec describes them, and which of them LoRA adapts."""

from __future__ import annotations

from llmops.spec.choices import FUSED
from llmops.spec.training import TrainingSpec


def block_linears(spec: TrainingSpec, experts: int) -> dict[str, tuple[int, int, int]]:
    """``name → (in, out, copies)`` of one transformer block's linear modules in the order it runs them:
    Q, K, V, O, and the MLP's gate (gated MLPs only), up and down, ``experts`` copies of each (an expert's
    width under experts). A module of ``spec.fused_linears`` stands for its projections (``qkv``: in → Q+K+V;
    ``gate_up``: in → 2f)."""
    h = spec.hidden or 0
    q, kv = spec.attention_widths()  # exact: heads divide hidden unless head_dim is set (validate)
    f = spec.mlp_ffn()
    attn = {"qkv": (h, q + 2 * kv, 1)} if "qkv" in spec.fused_linears else {"q": (h, q, 1), "k": (h, kv, 1),
                                                                             "v": (h, kv, 1)}
    mlp = {"gate": (h, f, experts), "up": (h, f, experts)} if spec.gated_mlp else {"up": (h, f, experts)}
    if spec.gated_mlp and "gate_up" in spec.fused_linears:
        mlp = {"gate_up": (h, 2 * f, experts)}
    return {**attn, "o": (q, h, 1), **mlp, "down": (f, h, experts)}


def projections(module: str) -> tuple[str, ...]:
    """The projections a block module computes: its own name, or a fused module's (``FUSED``)."""
    return FUSED.get(module, (module,))


def adapted(spec: TrainingSpec, module: str) -> bool:
    """LoRA adapts this module of ``block_linears``: one of its projections is a target, or a fused name
    covering one is (``gate_up`` covers gate and up on any layout)."""
    return spec.lora_rank is not None and any(p in covered(spec) for p in projections(module))


def covered(spec: TrainingSpec) -> set[str]:
    """The projections LoRA's targets cover: each target, and a fused name's projections."""
    return {p for t in spec.lora_targets for p in (t, *FUSED.get(t, ()))}


def adapters_on(spec: TrainingSpec, among: tuple[str, ...]) -> int:
    """LoRA adapters on the modules that compute only projections ``among`` (a fused module counts once)."""
    return sum(adapted(spec, m) for m in block_linears(spec, 1) if set(projections(m)) <= set(among))
