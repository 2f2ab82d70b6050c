"""LoRA adapters counted from the architecture: what ``--lora-rank`` and ``--lora-targets`` add.

A LoRA adapter on a linear layer ``in → out`` of rank ``r`` is two matrices, ``A`` (``in × r``) and
``B`` (``r × out``): ``r · (in + out)`` trainable parameters, beside the frozen base weight. The
run then trains only the adapters: ``trainable_params`` is their count and ``params`` the base's
plus theirs, which is what the refined model reads for gradients and optimizer states.

``adapters`` lists one block's adapters as the model stores them; the count (``adapter_params``), what
they keep for backward (``layer.adapter_activation_bytes``) and the merged expert stacks
(``experts.merged_stack_bytes``) all read that one list.
"""

from __future__ import annotations

from typing import NamedTuple

from llmops.spec.blocks import adapted, block_linears, covered
from llmops.spec.choices import FUSED, LINEARS, LORA_TARGETS, MAX_LORA_RANK
from llmops.spec.training import TrainingSpec

ROUTER = "router"  # a mixture of experts' routing gates, which PEFT's all-linear adapts too
MLP = ("gate", "up", "gate_up", "down")  # block modules of the MLP (gate_up: a fused one)
QKV = FUSED["qkv"]
# PEFT's target names → the projections they cover. Decoder LMs' names: Llama's *_proj, Mixtral's experts (w1, w3,
# w2), Phi-3's and the fused experts' qkv_proj and gate_up_proj, GPT-2's c_attn, c_fc and c_proj (the attention's
# output and the MLP's down projection share that name), GPT-NeoX's query_key_value, dense, dense_h_to_4h and
# dense_4h_to_h, Phi-2's dense, fc1 and fc2.
HF_NAMES: dict[str, tuple[str, ...]] = {f"{n}_proj": (n,) for n in LINEARS} | {
    "w1": ("gate",), "w3": ("up",), "w2": ("down",), "qkv_proj": QKV, "qkv": QKV, "gate_up_proj": ("gate_up",),
    "c_attn": QKV, "c_fc": ("up",), "c_proj": ("o", "down"), "query_key_value": QKV, "dense": ("o",),
    "dense_h_to_4h": ("up",), "dense_4h_to_h": ("down",), "fc1": ("up",), "fc2": ("down",)}
PRESET_TARGETS = {"q,v": ("q", "v"), "q,k,v,o": ("q", "k", "v", "o"), "all-linear": (*LINEARS, ROUTER)}


class Adapter(NamedTuple):
    """One LoRA adapter of a block: ``rank · (d_in + d_out)`` parameters per stored copy."""

    module: str  # what it adapts: a block_linears module or stack, a shared expert's ("shared." + it), a router
    d_in: int
    d_out: int
    rank: int
    stored: int  # copies a block stores: one, or one per expert
    per_token: int  # copies a token's forward runs (experts_active for per-expert linears); 0 for a merged stack
    stack: bool = False  # over a fused expert stack (E × in × out), merged into it every forward


def parse_targets(text: str) -> tuple[str, ...]:
    """``q,v``, ``q,k,v,o``, ``all-linear`` or module names (``q_proj,v_proj``, ``qkv_proj``, ``c_attn``);
    ``ValueError`` names the bad one."""
    key = text.strip().lower()
    if key in PRESET_TARGETS:
        return PRESET_TARGETS[key]
    names: list[str] = []
    for part in filter(None, (p.strip() for p in key.split(","))):
        covered = HF_NAMES.get(part, (part,))
        if any(n not in LORA_TARGETS or n == ROUTER for n in covered):
            raise ValueError(f"{part!r} is not a target; allowed: q,v / q,k,v,o / all-linear, or a list of "
                             f"{', '.join(LINEARS)}, gate_up (or their *_proj names, qkv_proj, c_attn)")
        names.extend(covered)
    if not names:
        raise ValueError(f"{text!r} names no target; allowed: q,v / q,k,v,o / all-linear")
    return tuple(dict.fromkeys(names))


def adapters(spec: TrainingSpec) -> list[Adapter]:
    """One block's adapters at ``spec.lora_rank`` on ``spec.lora_targets``, as the model stores them.

    - A module that computes several projections (``spec.fused_linears``) is adapted once, whole.
    - Experts as one ``nn.Linear`` each: an adapter per expert (``stored`` E), a token runs ``experts_active``.
    - Fused expert stacks (``spec.stacked_experts``; transformers 5 stores ``gate_up_proj``, E × 2f × h, and
      ``down_proj``, E × h × f): PEFT's ParamWrapper adapts a stack whole, at r for each projection named (its
      all-linear gives gate_up 2r through ``rank_pattern``), at r where ``gate_up`` is named itself.
    - A shared expert (Qwen2-MoE) is a dense MLP its own linears adapt; ``router`` adapts the routing gates: a
      shared expert's gate (h → 1), an ``nn.Linear``, and the router (h → E). Beside fused stacks the router is a
      bare parameter that PEFT adapts through the same conversion that reaches the stacks (``lora_experts``).
    """
    if spec.lora_rank is None:
        return []
    r, h, E = spec.lora_rank, spec.hidden or 0, spec.experts
    linears = adaptable_linears(spec)
    out = [Adapter(m, i, o, r, 1, 1) for m, (i, o, _) in linears.items() if m not in MLP and adapted(spec, m)]
    moe = E > 1
    if spec.stacked_experts and spec.lora_experts:
        out += _stacks(spec)
    elif spec.lora_experts or not moe:
        out += [Adapter(m, i, o, r, E if moe else 1, spec.experts_active if moe else 1)
                for m, (i, o, _) in linears.items() if m in MLP and adapted(spec, m)]
    f_shared = spec.shared_expert_ffn_hidden if moe else None
    if f_shared:
        shared = {"gate": (h, f_shared), "up": (h, f_shared)} if spec.gated_mlp else {"up": (h, f_shared)}
        out += [Adapter(f"shared.{m}", i, o, r, 1, 1) for m, (i, o) in {**shared, "down": (f_shared, h)}.items()
                if adapted(spec, m)]
    if ROUTER in spec.lora_targets and moe:
        if spec.lora_experts or not spec.stacked_experts:
            out.append(Adapter(ROUTER, h, E, r, 1, 1))
        if f_shared:
            out.append(Adapter("shared.router", h, 1, r, 1, 1))
    return out


def lora_experts_note(spec: TrainingSpec) -> list[str]:
    """The PEFT behaviour a plan assumes where LoRA's targets reach a mixture's fused experts (``lora_experts``)."""
    if not (spec.lora_rank and spec.lora_experts and spec.stacked_experts and {*MLP, ROUTER} & set(spec.lora_targets)):
        return []
    return ["LoRA adapts the mixture's fused expert stacks and router, as PEFT 0.22 does; PEFT 0.21 leaves "
            "Qwen2-MoE's alone (--no-lora-experts plans that)"]


def adaptable_linears(spec: TrainingSpec) -> dict[str, tuple[int, int, int]]:
    """``block_linears`` as LoRA sees them: PEFT adapts a fused module whole; LitGPT's ``LoRAQKVLinear`` gives
    its fused qkv an adapter per projection its ``enable_lora`` turns on."""
    if spec.lora_layout == "litgpt" and "qkv" in spec.fused_linears:
        spec = spec.with_(fused_linears=tuple(m for m in spec.fused_linears if m != "qkv"))
    return block_linears(spec, 1)


def widened(spec: TrainingSpec) -> list[str]:
    """Notes for fused modules the targets name only part of: LoRA adapts such a module whole."""
    named = covered(spec)
    return [f"LoRA on {', '.join(p for p in FUSED[m] if p in named)} adapts {m} whole: the model computes "
            f"{', '.join(FUSED[m])} in one linear" for m in adaptable_linears(spec)
            if m in FUSED and adapted(spec, m) and not set(FUSED[m]) <= named]


def _up_stack(spec: TrainingSpec) -> tuple[tuple[str, ...], list[str]]:
    """The projections an experts' up stack holds (gate and up, or up), and those of them the targets name."""
    stack = FUSED["gate_up"] if spec.gated_mlp else ("up",)
    return stack, [p for p in stack if p in spec.lora_targets]


def _stacks(spec: TrainingSpec) -> list[Adapter]:
    """The adapters on fused expert stacks (``adapters``)."""
    assert spec.lora_rank is not None
    r, h, f, E = spec.lora_rank, spec.hidden or 0, spec.expert_ffn(), spec.experts
    stack, named = _up_stack(spec)
    out = []
    if named or "gate_up" in spec.lora_targets:
        out.append(Adapter("gate_up", h, f * len(stack), r * (len(named) or 1), E, 0, stack=True))
    if "down" in spec.lora_targets:
        out.append(Adapter("down", f, h, r, E, 0, stack=True))
    return out


def adapter_params(spec: TrainingSpec, rank: int, targets: tuple[str, ...]) -> int:
    """Trainable adapter parameters over all layers (``adapters``, each ``rank · (in + out)`` per stored copy).

    ``gate`` on a non-gated MLP has no layer to adapt and counts nothing. ``ValueError`` when the
    architecture (layers, hidden, heads) is not known.
    """
    if not (spec.layers and spec.hidden and spec.heads):
        raise ValueError("LoRA needs the architecture: give --model, --config or --layers, --hidden and --heads")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= MAX_LORA_RANK:
        raise ValueError(f"lora rank {rank!r} is not allowed; a whole number from 1 to {MAX_LORA_RANK}")
    spec = spec.with_(lora_rank=rank, lora_targets=targets)
    stack, named = _up_stack(spec)
    if spec.stacked_experts and spec.lora_experts and 0 < len(named) < len(stack):
        raise ValueError(f"lora targets {', '.join(named)} without {', '.join(set(stack) - set(named))}: fused "
                         "experts keep gate and up in one gate_up_proj stack; target both, or gate_up "
                         "(a mixture's router is 'router')")
    block = adapters(spec)
    return spec.layers * sum(a.stored * a.rank * (a.d_in + a.d_out) for a in block)


LORA_FIELDS = ("params", "trainable_params", "lora_rank", "lora_targets", "lora_dropout")  # what with_lora sets


def with_lora(spec: TrainingSpec, rank: int, targets: tuple[str, ...],
              dropout: bool = False) -> tuple[TrainingSpec, int]:
    """``spec`` training LoRA adapters only: ``(spec, adapter count)``; its ``params`` are the base model's."""
    if spec.params is None:
        raise ValueError("LoRA needs the base model's parameter count: give --model, --config or --params")
    n = adapter_params(spec, rank, targets)
    return spec.with_(params=spec.params + n, trainable_params=n, lora_rank=rank, lora_targets=targets,
                      lora_dropout=dropout), n
