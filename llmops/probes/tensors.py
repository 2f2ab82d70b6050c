"""Exact bytes of parameters, gradients and optimizer states, counted from the tensors themselves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The memory a tensor holds on this rank: a ``DTensor``'s local shard (FSDP2's parameters, their
    gradients and optimizer states; the wrapper has no storage of its own), else the tensor itself."""
    return getattr(tensor, "_local_tensor", tensor)


def storage_key(tensor: torch.Tensor) -> tuple[str, int]:
    """Identity of the memory a tensor views: (device, storage address).

    Meta and empty tensors have no address, so they are keyed by the tensor object and never merged.
    """
    tensor = local(tensor)
    ptr = tensor.untyped_storage().data_ptr()
    return (str(tensor.device), ptr) if ptr else (f"id:{tensor.device}", id(tensor))


def tensors_in(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors in a batch or an optimizer's state (nested dicts, lists, tuples)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensors_in(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensors_in(value)


def _count(tensors: Iterable[torch.Tensor], seen: set[tuple[str, int]]) -> int:
    """Bytes of the storages not yet in `seen` (whole storages: a view keeps all of its storage alive)."""
    total = 0
    for t in tensors:
        key = storage_key(t)
        if key not in seen:
            seen.add(key)
            total += local(t).untyped_storage().nbytes()
    return total


def state_bytes(module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> dict[str, int]:
    """Bytes held by `params` (= `params_trainable` + `params_frozen`), `grads` and `optimizer_states`.

    Each storage is counted once (tied weights, flat buffers, grads that are bucket views), in that
    order of categories. Optimizer states are every tensor in `optimizer.state`, step counters included:
    that is what memory holds.
    """
    seen: set[tuple[str, int]] = set()
    params = list(module.parameters())
    trainable = _count((p for p in params if p.requires_grad), seen)
    frozen = _count((p for p in params if not p.requires_grad), seen)
    grads = _count((p.grad for p in params if p.grad is not None), seen)
    states = _count((t for opt in optimizers for t in tensors_in(opt.state)), seen)
    return {"params": trainable + frozen, "params_trainable": trainable, "params_frozen": frozen,
            "grads": grads, "optimizer_states": states}
