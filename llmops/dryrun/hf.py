"""A Hugging Face ``config.json`` as a dry run: the model transformers builds from it, on fake tensors (no weights,
any size), with the plan's batch, sequence, LoRA (through PEFT), checkpointing, precision and optimizer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from llmops.dryrun.factory import Built
from llmops.dryrun.result import largest_batch, to_estimate
from llmops.dryrun.run import fake_copy
from llmops.estimate.result import Estimate
from llmops.estimate.solver import accumulate_for
from llmops.spec.choices import LINEARS
from llmops.spec.training import TrainingSpec

# The spec's optimizers as torch builds them; bitsandbytes' 8-bit and paged ones are the refined model's alone.
OPTIMIZERS: dict[str, Callable[[list[Any]], torch.optim.Optimizer]] = {
    "adamw": lambda p: torch.optim.AdamW(p), "adam": lambda p: torch.optim.Adam(p),
    "adamw-amsgrad": lambda p: torch.optim.AdamW(p, amsgrad=True),
    "adam-amsgrad": lambda p: torch.optim.Adam(p, amsgrad=True),
    "sgd": lambda p: torch.optim.SGD(p, lr=1e-3), "sgd-momentum": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
    "rmsprop": lambda p: torch.optim.RMSprop(p), "adagrad": lambda p: torch.optim.Adagrad(p),
}


def unsupported(spec: TrainingSpec) -> str | None:
    """Why a plan cannot be dry-run from its config (the refined model then decides), or None."""
    if not (spec.batch_size and spec.seq_len):
        return "the dry run needs --batch-size and --seq-len"
    if spec.quantize is not None:
        return f"the dry run does not quantise ({spec.quantize}): bitsandbytes' kernels do not run on fake tensors"
    if spec.recompute not in ("none", "full"):
        return f"the dry run checkpoints whole layers or none; --recompute {spec.recompute} is the refined model's"
    if spec.optimizer not in OPTIMIZERS:
        return f"the dry run builds {', '.join(OPTIMIZERS)}; --optimizer {spec.optimizer} is the refined model's"
    if spec.tensor_parallel > 1:
        return "the dry run runs one data-parallel rank; tensor parallelism is the refined model's"
    return None


def peft_targets(text: str | None) -> str | list[str]:
    """``--lora-targets`` as PEFT's ``target_modules``: all-linear as it is, a projection's short name as its
    ``*_proj`` module (q → q_proj), module names as given."""
    key = (text or "q,v").strip().lower()
    if key == "all-linear":
        return key
    return [f"{p}_proj" if p in LINEARS else p for p in (s.strip() for s in key.split(",")) if p]


def build_config(config: dict[str, Any], spec: TrainingSpec, attention: str | None,
                 lora_targets: str | None) -> Built:
    """The causal LM transformers builds from ``config`` in training mode, ready for ``Built.run``: built on the
    meta device (no weights, any size; PEFT adapts it there), then made of fake CPU tensors. ``attention`` is the
    kernel a flag named, else the config's, else transformers' default; the batch is ``spec.batch_size``
    sequences of ``spec.seq_len`` tokens that are their own labels."""
    import transformers
    from torch._subclasses.fake_tensor import FakeTensorMode

    cfg = transformers.AutoConfig.for_model(**config)
    kwargs = {"attn_implementation": {"plain": "eager", "sdpa": "sdpa"}[attention]} if attention else {}
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg, **kwargs)
        model.train()
        if spec.recompute == "full":
            model.gradient_checkpointing_enable()
        if spec.lora_rank is not None:
            import peft

            model = peft.get_peft_model(model, peft.LoraConfig(
                r=spec.lora_rank, target_modules=peft_targets(lora_targets),
                lora_dropout=0.1 if spec.lora_dropout else 0.0))
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    fake = fake_copy(model, mode, torch.device("cpu"))
    with mode:
        ids = torch.randint(0, int(cfg.vocab_size), (spec.batch_size or 1, spec.seq_len or 1))
    return Built(fake, {"input_ids": ids, "labels": ids}, lambda m, batch: m(**batch).loss,
                 OPTIMIZERS[spec.optimizer], mode)


def max_batch(config: dict[str, Any], spec: TrainingSpec, attention: str | None, lora_targets: str | None,
              timeout_s: float, estimate: Estimate) -> Estimate:
    """``estimate`` (the dry run at ``spec.batch_size``) with the largest safe micro-batch found by dry runs of the
    config at other batch sizes (``result.largest_batch``), where a budget is known."""
    if estimate.budget_bytes is None or estimate.peak_bytes is None or not spec.batch_size:
        return estimate

    def peak(b: int) -> int:
        at = spec.with_(batch_size=b, global_batch=None)
        run = build_config(config, at, attention, lora_targets).run(
            at.precision, timeout_s, at.world_size if at.strategy == "fsdp" else 1)
        return to_estimate(run, at).peak_bytes or 0

    b_max, seen = largest_batch(peak, estimate.budget_bytes, known={spec.batch_size: estimate.peak_bytes})
    if b_max is None:
        return estimate
    note = f"largest safe micro-batch {b_max}: dry runs at b = {', '.join(map(str, sorted(seen)))}"
    return replace(estimate, max_batch_size=b_max, accumulate=accumulate_for(spec.global_batch, b_max, spec.world_size),
                   notes=(*estimate.notes, note))
