"""LoRA adapters counted from the architecture: what ``--lora-rank`` and ``--lora-targets`` add.

A LoRA adapter on a linear layer ``in → out`` of rank ``r`` is two matrices, ``A`` (``in × r``) and
``B`` (``r × out``): ``r · (in + out)`` trainable parameters, beside the frozen base weight. The
run then trains only the adapters: ``trainable_params`` is their count and ``params`` the base's
plus theirs, which is what the refined model reads for gradients and optimizer states.
"""

from __future__ import annotations

from .spec import LORA_TARGETS, MAX_LORA_RANK, TrainingSpec, block_linears

# The linear layers of a Llama-style block, by short name, as PEFT's target_modules name them.
LINEARS = LORA_TARGETS[:-1]
ROUTER = LORA_TARGETS[-1]  # a mixture of experts' router, which PEFT's all-linear adapts too
HF_NAMES = {f"{n}_proj": n for n in LINEARS} | {"w1": "gate", "w3": "up", "w2": "down"}  # Mixtral's experts
MLP = ("gate", "up", "down")
PRESET_TARGETS = {"q,v": ("q", "v"), "q,k,v,o": ("q", "k", "v", "o"), "all-linear": LINEARS}


def parse_targets(text: str) -> tuple[str, ...]:
    """``q,v``, ``q,k,v,o``, ``all-linear`` or module names (``q_proj,v_proj``); ``ValueError`` names the bad one."""
    key = text.strip().lower()
    if key in PRESET_TARGETS:
        return PRESET_TARGETS[key] + ((ROUTER,) if key == "all-linear" else ())
    names = []
    for part in filter(None, (p.strip() for p in key.split(","))):
        name = HF_NAMES.get(part, part)
        if name not in LINEARS:
            raise ValueError(f"{part!r} is not a target; allowed: q,v / q,k,v,o / all-linear, or a list of "
                             f"{', '.join(LINEARS)} (or their *_proj names)")
        names.append(name)
    if not names:
        raise ValueError(f"{text!r} names no target; allowed: q,v / q,k,v,o / all-linear")
    return tuple(dict.fromkeys(names))


def adapter_params(spec: TrainingSpec, rank: int, targets: tuple[str, ...]) -> int:
    """Trainable adapter parameters over all layers; the MLP's once per expert under a mixture of experts
    (``mlp_adapters``: per linear, or per fused stack).

    ``gate`` on a non-gated MLP has no layer to adapt and counts nothing. ``ValueError`` when the
    architecture (layers, hidden, heads) is not known.
    """
    if not (spec.layers and spec.hidden and spec.heads):
        raise ValueError("LoRA needs the architecture: give --model, --config or --layers, --hidden and --heads")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= MAX_LORA_RANK:
        raise ValueError(f"lora rank {rank!r} is not allowed; a whole number from 1 to {MAX_LORA_RANK}")
    per_layer = sum(copies * rank * (d_in + d_out) for name, (d_in, d_out, copies)
                    in block_linears(spec, spec.experts).items() if name in targets and name not in MLP)
    per_layer += sum(spec.experts * rank * k * (d_in + d_out) for _, d_in, d_out, k in mlp_adapters(spec, targets))
    if ROUTER in targets and spec.experts > 1:
        per_layer += rank * (spec.hidden + spec.experts)
    return spec.layers * per_layer


def mlp_adapters(spec: TrainingSpec, targets: tuple[str, ...]) -> list[tuple[tuple[str, ...], int, int, int]]:
    """The MLP's adapters, each ``(linears it covers, in, out, rank multiple)`` per expert.

    Per linear, one adapter each (a dense MLP, or experts as one ``nn.Linear`` each). Fused experts
    (``spec.fused_experts`` under a mixture) are different. Transformers 5 stores one ``gate_up_proj`` stack
    (E × 2f × h) and one ``down_proj`` stack (E × h × f) per layer. PEFT's ParamWrapper puts one adapter on a
    whole stack, and gives ``gate_up_proj`` rank 2r (the ``rank_pattern`` PEFT's all-linear sets: r for each
    projection the stack holds). So a stack is adapted whole, at r per targeted linear it holds."""
    linears = block_linears(spec, 1)
    mlp = tuple(n for n in MLP if n in targets and n in linears)
    if not spec.stacked_experts:
        return [((n,), linears[n][0], linears[n][1], 1) for n in mlp]
    h, f = linears["up"][0], linears["up"][1]
    up = tuple(n for n in mlp if n != "down")
    out = [(up, h, f * (2 if spec.gated_mlp else 1), len(up))] if up else []
    return out + ([(("down",), f, h, 1)] if "down" in mlp else [])


def with_lora(spec: TrainingSpec, rank: int, targets: tuple[str, ...],
              dropout: bool = False) -> tuple[TrainingSpec, int]:
    """``spec`` training LoRA adapters only: ``(spec, adapter count)``; its ``params`` are the base model's."""
    if spec.params is None:
        raise ValueError("LoRA needs the base model's parameter count: give --model, --config or --params")
    n = adapter_params(spec, rank, targets)
    return spec.with_(params=spec.params + n, trainable_params=n, lora_rank=rank, lora_targets=targets,
                      lora_dropout=dropout), n
