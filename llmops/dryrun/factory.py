"""``--dry-run MODULE:FACTORY``: the user's factory called under fake tensors, and the spec its model and
batch fill in.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import nn

from llmops.dryrun.run import DEFAULT_TIMEOUT_S, DryRun, LossFn, dry_run, hf_masks
from llmops.estimate import TrainingSpec
from llmops.spec.builder import SpecBuilder


@dataclass
class Built:
    """What ``module:factory`` built under fake tensors, ready to ``run``."""

    model: nn.Module
    batch: Any
    loss: LossFn | None
    optimizer: Any
    mode: Any

    def run(self, precision: str = "fp32", timeout_s: float = DEFAULT_TIMEOUT_S, fsdp_world_size: int = 1) -> DryRun:
        return dry_run(self.model, self.batch, loss=self.loss, optimizer=self.optimizer, precision=precision,
                       timeout_s=timeout_s, fake_mode=self.mode, fsdp_world_size=fsdp_world_size)


def build(target: str) -> Built:
    """Call ``module:factory`` under fake tensors (a 7B model allocates nothing). It returns
    ``(model, batch)``, ``(model, batch, loss)`` or ``(model, batch, loss, optimizer_factory)``;
    ``ValueError`` says what was wrong."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    factory = load_factory(target)
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    try:
        with mode:
            made = factory()
    except Exception as e:  # the user's code: report it as a bad --dry-run value, not a traceback
        raise ValueError(f"{target}() raised {type(e).__name__}: {e}") from None
    if not isinstance(made, (tuple, list)) or not 2 <= len(made) <= 4 or not isinstance(made[0], nn.Module):
        raise ValueError(f"{target}() returned {type(made).__name__}; expected (model, batch[, loss[, optimizer]])")
    model, batch, *rest = made
    return Built(model, batch, rest[0] if rest else None, rest[1] if len(rest) > 1 else None, mode)


def spec_from_model(model: nn.Module, batch: Any, spec: TrainingSpec,
                    keep: Iterable[str] = ()) -> tuple[TrainingSpec, list[str]]:
    """``spec`` with ``model_fields`` layered over it, except the fields in ``keep``: ``(spec, fields filled)``."""
    builder = SpecBuilder(spec)
    filled = builder.layer("model", model_fields(model, batch), keep=keep)
    return builder.build(), filled


def model_fields(model: nn.Module, batch: Any) -> dict[str, Any]:
    """What a built model and its batch say of the spec: parameters, config, batch shape, dropout, recomputation,
    LoRA and quantisation (``spec.live``'s readers), and K and V repeated where SDPA gets a mask."""
    from llmops.spec.live import (
        batch_shape,
        count_parameters,
        find_config,
        has_dropout,
        largest_trainable_param,
        lora_fields,
        quant_fields,
        recompute_mode,
    )

    total, trainable = count_parameters(model)
    b, s = batch_shape(batch)
    found: dict[str, Any] = {**find_config(model)[0], "params": total, "trainable_params": trainable,
                             "batch_size": b, "seq_len": s, "dropout": has_dropout(model),
                             "largest_param": largest_trainable_param(model),
                             "recompute": recompute_mode(model), **lora_fields(model), **quant_fields(model)}
    if found.get("attention") == "sdpa" and hf_masks(model, batch, s):
        found["kv_repeat"] = True
    return {k: v for k, v in found.items() if v is not None}


def load_factory(target: str) -> Callable[[], Any]:
    """``package.module:function`` → the function; ``ValueError`` says what was wrong."""
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} is not module:factory, e.g. mypkg.models:make_gpt")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the user's own modules are importable
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as e:  # the user's module: a syntax error or a raise at import is a bad value
        raise ValueError(f"{target!r}: cannot import {module_name!r} ({type(e).__name__}: {e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"{target!r}: {module_name!r} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]
