"""What-if planner: the changes that would make a run fit, each with its refined peak.

Ranked by how little each change alters the run (``cost``): a smaller micro-batch with
gradient accumulation keeps the training maths; recomputation and fused attention cost time;
precision changes numerics; sharding and more GPUs change the job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmops.estimate.refined import refined
from llmops.spec.choices import SHARDED
from llmops.spec.training import TrainingSpec


@dataclass(frozen=True)
class WhatIf:
    """One change, the spec it leads to, and its refined prediction."""

    change: str
    cost: int
    spec: TrainingSpec
    peak_bytes: int | None
    fits: bool | None


def what_if(spec: TrainingSpec) -> list[WhatIf]:
    """Candidate changes for ``spec``, ranked by cost; ``fits`` is ``None`` without a budget."""
    base = refined(spec)
    options: list[tuple[str, int, TrainingSpec]] = []
    b = spec.batch_size
    if b and base.max_batch_size and base.max_batch_size < b:
        small = base.max_batch_size
        keep = spec.global_batch or b * spec.world_size
        acc = math.ceil(keep / (small * spec.world_size))
        options.append((f"micro-batch {small} × accumulate_grad_batches={acc} (global batch kept)", 1,
                        spec.with_(batch_size=small, global_batch=keep)))
    if spec.attention != "sdpa":
        options.append(("SDPA / flash attention (no s×s scores kept)", 2, spec.with_(attention="sdpa")))
    for level, cost in (("selective", 2), ("full", 3)):
        if spec.recompute != level and not (level == "selective" and spec.recompute == "full"):
            options.append((f"activation checkpointing ({level})", cost, spec.with_(recompute=level)))
    if spec.precision in ("fp32", "32-true"):
        options.append(("precision bf16-mixed", 3, spec.with_(precision="bf16-mixed")))
    if spec.precision not in ("bf16-true", "16-true"):
        options.append(("precision bf16-true (weights, grads, optimizer in bf16)", 4,
                        spec.with_(precision="bf16-true")))
    if spec.world_size > 1:
        for stage, cost in (("zero1", 5), ("zero2", 6), ("fsdp", 7)):
            if not SHARDED[stage] <= SHARDED[spec.strategy]:
                options.append((f"{stage} across the current {spec.world_size} GPUs", cost,
                                spec.with_(strategy=stage)))
    if spec.world_size > 1 and spec.recompute != "full":
        options.append((f"fsdp across the current {spec.world_size} GPUs + full checkpointing", 8,
                        spec.with_(strategy="fsdp", recompute="full")))
    n_fsdp = base.extra.get("gpus_training_fsdp")
    if isinstance(n_fsdp, int) and n_fsdp > spec.world_size:
        options.append((f"fsdp on {n_fsdp} GPUs", 8, spec.with_(strategy="fsdp", world_size=n_fsdp)))
    everything = spec.with_(strategy="fsdp" if spec.world_size > 1 else spec.strategy, recompute="full",
                            attention="sdpa", precision="bf16-true", batch_size=1)
    options.append(("all of: fsdp, full checkpointing, SDPA, bf16-true, micro-batch 1", 9, everything))
    rows = []
    for change, cost, changed in options:
        est = refined(changed)
        rows.append(WhatIf(change, cost, changed, est.peak_bytes,
                           None if est.oom_risk is None else not est.oom_risk))
    return sorted(rows, key=lambda r: r.cost)
