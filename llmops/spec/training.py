"""``TrainingSpec``, what the estimator needs to know about a run, joined from its sections
(``spec.sections``), and its validation: one check per section."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from llmops.spec.sections import (
    Adapters,
    Batch,
    Device,
    Kernels,
    Loop,
    Model,
    Numerics,
    Parallelism,
    Quantisation,
    allowed,
)

SECTIONS = (Model, Kernels, Batch, Parallelism, Numerics, Adapters, Quantisation, Loop, Device)


# A dataclass lists the fields of its bases from the last base to the first: the sections are named here in
# reverse so that a spec's fields read in SECTIONS' order (the model's first).
@dataclass(frozen=True)
class TrainingSpec(Device, Loop, Quantisation, Adapters, Numerics, Parallelism, Batch, Kernels, Model):
    """What the estimator needs to know about a run; ``None`` means unknown, never guessed."""

    def attention_widths(self) -> tuple[int, int]:
        """``(a·d, kv·d)``: the widths of Q (and the attention's output) and of K and V, d the head size."""
        a = self.heads or 1
        d = self.head_dim or (self.hidden or 0) // a
        return a * d, (self.kv_heads or a) * d

    @property
    def stacked_experts(self) -> bool:
        """The experts are fused stacks (``fused_experts``) and there is a mixture to fuse."""
        return self.fused_experts and self.experts > 1

    def expert_ffn(self) -> int:
        """An expert's MLP width (the dense width when not set)."""
        return self.expert_ffn_hidden or self.ffn_hidden or 4 * (self.hidden or 0)

    def mlp_ffn(self) -> int:
        """The width of the MLP a token runs: an expert's under a mixture, else the dense one (4h when not set)."""
        return self.expert_ffn() if self.experts > 1 else self.ffn_hidden or 4 * (self.hidden or 0)

    def with_(self, **changes: Any) -> TrainingSpec:
        """A copy with some fields changed."""
        return replace(self, **changes)


def section_fields(section: type) -> tuple[str, ...]:
    """The names of the fields a section declares itself."""
    return tuple(f.name for f in fields(section))


def validate(spec: TrainingSpec) -> TrainingSpec:
    """Each section's check, in ``SECTIONS``' order: ``ValueError`` names the field, its value and what is allowed."""
    for section in SECTIONS:
        getattr(section, f"_check_{section.__name__.lower()}")(spec)
    return spec


def validate_input(spec: TrainingSpec) -> TrainingSpec:
    """``validate``, and what only a person's input can get wrong (a plan the what-if derives may
    round the global batch up): a global batch that is no whole number of micro-batches per rank,
    or more than one rank with ``strategy="single"``."""
    validate(spec)
    if spec.strategy == "single" and spec.world_size > 1:
        raise allowed("world_size", spec.world_size,
                       "1 with strategy='single'; use ddp, zero1-3 or fsdp for more ranks")
    if spec.global_batch and spec.batch_size and spec.global_batch % (spec.batch_size * spec.world_size):
        raise allowed("global_batch", spec.global_batch,
                       f"a multiple of batch_size × world_size = {spec.batch_size * spec.world_size} "
                       "(micro-batches per rank per step are whole)")
    return spec
