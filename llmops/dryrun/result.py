"""The dry run as an ``Estimate``: its measured peak by category, the largest batch, CUDA's kernel terms
where it ran on the CPU; and the monitor's call of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from llmops.dryrun.run import DEFAULT_TIMEOUT_S, DryRun, dry_run
from llmops.estimate import Estimate, TrainingSpec, refined
from llmops.estimate.activations import weight_copy_bytes
from llmops.estimate.document import _int
from llmops.estimate.layer import layer_activation_bytes
from llmops.estimate.numerics import DEFAULT_OVERHEAD_BYTES
from llmops.estimate.solver import accumulate_for, max_batch
from llmops.spec.choices import CHECKPOINTED
from llmops.units import exact


def cuda_kernel_bytes(spec: TrainingSpec) -> int:
    """What CUDA's kernels keep minus what the CPU's keep for ``spec`` (dropout masks of 1 byte,
    fused SDPA with dropout, softmax in fp32 under autocast), from the refined model's layer terms."""
    b = spec.batch_size or 1
    L = 1 if spec.recompute in CHECKPOINTED else spec.layers or 0
    with_scores = spec.recompute != "attention"
    diff = (layer_activation_bytes(spec.with_(device="cuda"), b, with_scores)
            - layer_activation_bytes(spec.with_(device="cpu"), b, with_scores))
    return math.ceil(L * diff)


def to_estimate(result: DryRun, spec: TrainingSpec) -> Estimate:
    """The dry run as the monitor's third model, ``model="dryrun"``: its measured peak, by category at
    that moment. For ``spec.device == "cuda"`` the fixed overhead is added, and a step run on fake
    CPU tensors adds what CUDA's kernels keep differently (``cuda_kernel_bytes``, from the refined model).
    """
    notes = [f"dry run: one fake {result.device} training step, {result.seconds:.1f} s; "
             f"its peak falls in the {result.phase} phase"]
    c = result.categories
    params, grads, states = c["params"], c["grads"], c["optimizer_states"]
    act, temps = c["activations"], c["temporaries"] + c["other"]
    overhead = 0
    ref = refined(spec)
    if spec.device == "cuda":
        if result.device == "cpu" and result.phase != "optimizer" and spec.layers and spec.heads and spec.hidden \
                and spec.seq_len:
            act += cuda_kernel_bytes(spec.with_(attention=result.attention, dropout=result.dropout))
            notes.append("ran on fake CPU tensors; CUDA's kernel differences added from the refined model")
        overhead = spec.overhead_bytes if spec.overhead_bytes is not None else DEFAULT_OVERHEAD_BYTES["cuda"]
    peak = params + grads + states + act + temps + overhead
    budget = exact(spec.safety) * spec.gpu_memory if spec.gpu_memory else None
    # The largest batch: the states stay, what the forward saved grows with b. The optimizer step's
    # moment does not grow with b, so it alone can rule every batch out.
    full_states = sum(result.state.values())
    fixed = math.ceil(weight_copy_bytes(spec)) if spec.layers and spec.hidden and spec.heads else 0
    b = result.batch_size or spec.batch_size
    scaled = max(result.saved_bytes, act + temps + grads + params + states - full_states
                 if result.phase != "optimizer" else 0)
    per_sample = Fraction(max(scaled - fixed, 1), b) if b else None
    b_max = max_batch(budget, full_states + overhead + fixed, per_sample) if per_sample else None
    if b_max and budget is not None and result.phase == "optimizer" and peak > budget:
        b_max = 0
    return Estimate(
        model="dryrun", inference_bytes=ref.inference_bytes, params_bytes=params, grads_bytes=grads,
        optimizer_state_bytes=states, activation_bytes=act, temporary_bytes=temps, overhead_bytes=overhead,
        peak_bytes=peak, budget_bytes=_int(budget), peak_phase=result.phase,
        gpus_training=ref.gpus_training, gpus_inference=ref.gpus_inference,
        max_batch_size=b_max, accumulate=accumulate_for(spec.global_batch, b_max, spec.world_size),
        oom_risk=None if budget is None else peak > budget, notes=tuple(notes),
        extra={"dryrun_categories": dict(c), "dryrun_seconds": round(result.seconds, 3),
               "dryrun_saved_bytes": result.saved_bytes, "gpus_training_fsdp": ref.extra.get("gpus_training_fsdp")},
    )


def for_run(module: nn.Module, batch: Any, optimizers: list[torch.optim.Optimizer], spec: TrainingSpec,
            timeout_s: float = DEFAULT_TIMEOUT_S) -> Estimate:
    """The callback's dry run: the run's module (a LightningModule's ``training_step``), first batch
    and optimizer on fake tensors, as the third model of the preflight table.

    Raises ``DryRunSkipped`` past ``timeout_s``; the module, batch and optimizer are not touched.
    """
    result = dry_run(module, batch, optimizer=optimizers[0] if optimizers else None, precision=spec.precision,
                     timeout_s=timeout_s)
    return to_estimate(result, spec)


def largest_batch(peak: Callable[[int], int], budget: int, known: dict[int, int] | None = None,
                  max_runs: int = 8) -> tuple[int | None, dict[int, int]]:
    """The largest micro-batch whose dry-run peak fits ``budget``, from dry runs: ``peak(b)`` at b = 1 and 2 (the
    peak is close to linear in b), the line's answer, then confirmed (b_max fits, b_max + 1 does not) and walked
    to where that holds. ``known`` holds peaks already run. ``(b_max, {b: peak})``; b_max is 0 where b = 1 does not
    fit, None past ``max_runs`` dry runs."""
    seen: dict[int, int] = dict(known or {})

    def at(b: int) -> int:
        if b not in seen:
            if len(seen) - len(known or {}) >= max_runs:
                raise _OutOfRuns
            seen[b] = peak(b)
        return seen[b]

    try:
        if at(1) > budget:
            return 0, seen
        slope = max(at(2) - at(1), 1)
        b = max(1, (budget - (at(1) - slope)) // slope)
        while b > 1 and at(b) > budget:
            b -= 1
        while at(b + 1) <= budget:
            b += 1
        return b, seen
    except _OutOfRuns:
        return None, seen


class _OutOfRuns(Exception):
    """``largest_batch`` spent its dry runs before the answer was confirmed."""
