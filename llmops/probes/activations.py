"""Bytes saved for backward during a forward pass, measured with `saved_tensors_hooks`."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.autograd.graph import saved_tensors_hooks

from llmops.probes.tensors import storage_key

_local = threading.local()  # saved-tensor hooks are per thread, and so are the active meters


def _active() -> list[ActivationMeter]:
    if not hasattr(_local, "meters"):
        _local.meters = []
        _local.hooks = None
    return _local.meters


def _pack(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    # detach(): a new view of the same storage, no copy; returning `tensor` itself would make a reference
    # cycle (graph -> saved output -> its grad_fn -> graph) that delays freeing until the gc runs.
    packed = tensor.detach()
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # a wrapper subclass without storage: count its size
        storage = None
    for meter in _active():
        meter._record(tensor, storage)
    return packed, tensor._version


def _unpack(packed: tuple[torch.Tensor, int]) -> torch.Tensor:
    tensor, version = packed
    # Under hooks autograd no longer checks versions; keep its in-place check so results can't change.
    if tensor._version != version:
        raise RuntimeError(
            "one of the variables needed for gradient computation has been modified by an inplace "
            f"operation: {tensor.dtype} tensor of shape {list(tensor.shape)} is at version "
            f"{tensor._version}; expected version {version} instead (checked by llmops ActivationMeter)")
    return tensor


class ActivationMeter:
    """Sums the bytes of the unique storages saved for backward while started, excluding `exclude`.

    `activation_bytes` (bytes) and `tensor_count` (storages) measure what autograd keeps, e.g. a full-size
    dropout mask of the compute dtype on CPU (bool on CUDA), and autocast's low-precision weight copies.
    Use `with ActivationMeter(module.parameters()):` or `start()`/`stop()` in one thread; meters nest, and
    must bracket any other `saved_tensors_hooks` context opened between them.
    Tensors saved under other saved-tensor hooks (activation checkpointing, offloading) are not seen.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._exclude = {storage_key(t) for t in exclude}
        self._seen: dict[tuple[str, int], weakref.ref[Any] | None] = {}
        self.activation_bytes = 0
        self.tensor_count = 0

    def _record(self, tensor: torch.Tensor, storage: torch.UntypedStorage | None) -> None:
        if storage is None:
            key: tuple[str, int] = ("id", id(tensor))
            nbytes = tensor.numel() * tensor.element_size()
        else:
            ptr = storage.data_ptr()
            key = (str(tensor.device), ptr) if ptr else ("id", id(storage))
            nbytes = storage.nbytes()
        if key in self._exclude:
            return
        ref = self._seen.get(key, None)
        if key in self._seen and (ref is None or ref() is not None):
            return  # already counted, and still alive (a dead one means the address was reused)
        self._seen[key] = weakref.ref(storage) if storage is not None else None
        self.activation_bytes += nbytes
        self.tensor_count += 1

    def start(self) -> ActivationMeter:
        """Start counting from zero in this thread."""
        meters = _active()
        if self in meters:
            raise RuntimeError("ActivationMeter.start(): this meter is already started")
        self._seen.clear()
        self.activation_bytes = 0
        self.tensor_count = 0
        if not meters:
            hooks = saved_tensors_hooks(_pack, _unpack)
            hooks.__enter__()
            _local.hooks = hooks
        meters.append(self)
        return self

    def stop(self) -> None:
        """Stop counting; the totals stay readable. Safe to call when not started."""
        meters = _active()
        if self not in meters:
            return
        meters.remove(self)
        self._seen.clear()  # drop the weak references; only the totals are kept
        if not meters and _local.hooks is not None:
            hooks, _local.hooks = _local.hooks, None
            hooks.__exit__(None, None, None)

    def __enter__(self) -> ActivationMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
