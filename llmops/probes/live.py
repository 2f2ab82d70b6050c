"""The real peak: exact live bytes of tensor storages over a training step, and where it peaks.

A ``TorchDispatchMode`` sees every operator's outputs; each new storage is counted when it appears
and uncounted when it is freed (a weak reference's callback). The step's live bytes start from the
tensors alive before it (parameters, the previous step's gradients, optimizer states, the batch), so
the running maximum is what ``torch.cuda.max_memory_allocated()`` reads on a GPU, less what kernels
allocate inside themselves. It works on real and on fake tensors, so the monitor (on the CPU,
where no allocator keeps a peak) and the dry run share it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from llmops.probes.tensors import local, tensors_in
from llmops.vocabulary import LIVE_CATEGORIES, MEMORY_PHASES

# The categories of a step's peak, as PyTorch's MemTracker names them (where they differ, ours are
# the metric's component labels): states, what the forward allocated (saved for backward, the
# logits, the loss), and what the backward and the optimizer step allocate besides the gradients
# and states they produce. "other" is what was alive before the step and is none of the states.
_NEW = {"forward": "activations", "backward": "temporaries", "optimizer": "temporaries"}


@dataclass(frozen=True)
class LivePeak:
    """The most bytes alive at once over the tracked step, by category at that moment."""

    peak_bytes: int
    categories: dict[str, int]  # LIVE_CATEGORIES at the peak; they sum to peak_bytes
    phase: str  # the phase the peak fell in: forward, backward or optimizer


def _storage(t: Any) -> Any:
    if not isinstance(t, torch.Tensor) or t.is_meta:
        return None
    try:
        return local(t).untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse, or a wrapper subclass without storage
        return None


class LiveBytes(TorchDispatchMode):
    """Counts live storage bytes while entered; ``stop()`` (or ``finish()``) gives the peak and its categories.

    ``start(params=..., grads=..., optimizer_states=..., other=...)`` names the tensors alive before
    the step (each storage counted once, in that order); ``phase("backward")`` and
    ``phase("optimizer")`` mark where the step is, so new storages are filed as activations
    (forward) or temporaries; at ``stop`` the ones that became gradients or optimizer states are
    filed as those. Enter and leave on the thread that runs the step.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, tuple[weakref.ref[Any], int, str, int]] = {}  # id -> ref, bytes, category, seq
        self._bytes = dict.fromkeys(LIVE_CATEGORIES, 0)
        self._total = 0
        self._seq = 0
        self._phase = "forward"
        self._peak = 0
        self._peak_seq = 0
        self._peak_bytes: dict[str, int] = dict(self._bytes)
        self._peak_phase = "forward"
        self._seq_start = 0
        self._entered = False
        self._patch: AbstractContextManager[None] | None = None
        self.error: Exception | None = None  # what stopped the count; stop() raises it

    # -- counting --------------------------------------------------------------------------
    def _add(self, st: Any, category: str) -> None:
        key = id(st)
        if key in self._live:
            return
        nbytes = int(st.nbytes())
        self._seq += 1
        self._live[key] = (weakref.ref(st, self._on_free(key)), nbytes, category, self._seq)
        self._bytes[category] += nbytes
        self._total += nbytes
        self._grew()

    def _grew(self) -> None:
        if self._total > self._peak:
            self._peak, self._peak_seq, self._peak_phase = self._total, self._seq, self._phase
            self._peak_bytes = dict(self._bytes)

    def _resized(self, st: Any) -> None:
        """A storage's ``resize_`` frees or allocates its memory in place (FSDP2 frees a gathered
        parameter's storage that way and allocates it again for the next all-gather)."""
        entry = self._live.get(id(st))
        if entry is None:
            self._add(st, _NEW[self._phase])
            return
        ref, old, category, seq = entry
        nbytes = int(st.nbytes())
        self._live[id(st)] = (ref, nbytes, category, seq)
        self._bytes[category] += nbytes - old
        self._total += nbytes - old
        self._grew()

    @contextmanager
    def _resizes(self) -> Iterator[None]:
        """Count ``UntypedStorage.resize_`` calls made on the thread that runs the step."""
        original, thread = torch.UntypedStorage.resize_, threading.get_ident()

        def resize_(storage: Any, size: int) -> Any:
            out = original(storage, size)
            if self.error is None and threading.get_ident() == thread:
                try:
                    self._resized(storage)
                except Exception as e:  # never the run's problem: stop counting, and say so at stop()
                    self.error = e
            return out

        torch.UntypedStorage.resize_ = resize_  # type: ignore[method-assign]
        try:
            yield
        finally:
            torch.UntypedStorage.resize_ = original  # type: ignore[method-assign]

    def _on_free(self, key: int) -> Any:
        return lambda _ref: self._free(key)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self._bytes[entry[2]] -= entry[1]
            self._total -= entry[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))  # the run's own errors go on unchanged
        if self.error is None:
            try:
                category = _NEW[self._phase]
                for t in (out,) if isinstance(out, torch.Tensor) else tree_leaves(out):
                    st = _storage(t)
                    if st is not None:
                        self._add(st, category)
            except Exception as e:  # never the run's problem: stop counting, and say so at stop()
                self.error = e
        return out

    # -- the step --------------------------------------------------------------------------
    def start(self, **alive: Iterable[torch.Tensor]) -> LiveBytes:
        """Count the tensors alive now (keywords from LIVE_CATEGORIES), then every storage the step makes."""
        for category in LIVE_CATEGORIES:
            for t in alive.get(category, ()):
                st = _storage(t)
                if st is not None:
                    self._add(st, category)
        self._seq_start = self._seq
        self._patch = self._resizes()
        self._patch.__enter__()
        self.__enter__()
        self._entered = True
        return self

    @classmethod
    def for_step(cls, params: Iterable[torch.Tensor], optimizers: Iterable[Any], batch: Any = None,
                 buffers: Iterable[torch.Tensor] = ()) -> LiveBytes:
        """Started on what a training step begins with: parameters (and buffers), their gradients,
        the optimizers' states and the batch."""
        params = list(params)
        return cls().start(params=[*params, *buffers], grads=[p.grad for p in params if p.grad is not None],
                           optimizer_states=_states(optimizers), other=tensors_of(batch))

    def finish(self, params: Iterable[torch.Tensor], optimizers: Iterable[Any]) -> LivePeak:
        """``stop`` with the gradients and optimizer states as they are after the step."""
        return self.stop(grads=[p.grad for p in params if p.grad is not None], optimizer_states=_states(optimizers))

    def phase(self, name: str) -> None:
        """Mark the step's phase: ``forward`` (the default), ``backward`` or ``optimizer``."""
        if name not in _NEW:
            raise ValueError(f"phase={name!r} is not allowed; allowed: {', '.join(MEMORY_PHASES)}")
        self._phase = name

    def _leave(self) -> None:
        if self._entered:
            self._entered = False
            self.__exit__(None, None, None)
            if self._patch is not None:
                self._patch.__exit__(None, None, None)

    def abort(self) -> None:
        """Stop counting without a result (the step raised)."""
        self._leave()
        self._live.clear()

    def stop(self, grads: Iterable[torch.Tensor] = (), optimizer_states: Iterable[torch.Tensor] = ()) -> LivePeak:
        """Stop counting. ``grads`` and ``optimizer_states`` are those tensors after the step: the
        storages the step made that became them, and were alive at the peak, are filed as such."""
        self._leave()
        if self.error is not None:
            self._live.clear()
            raise RuntimeError(f"the live-bytes count stopped: {type(self.error).__name__}: {self.error}")
        categories = dict(self._peak_bytes)
        for category, tensors in (("grads", grads), ("optimizer_states", optimizer_states)):
            for t in tensors:
                st = _storage(t)
                entry = self._live.get(id(st)) if st is not None else None
                if entry is not None and entry[2] in ("activations", "temporaries") \
                        and self._seq_start < entry[3] <= self._peak_seq:
                    categories[entry[2]] -= entry[1]
                    categories[category] += entry[1]
                    self._live[id(st)] = (entry[0], entry[1], category, entry[3])  # counted once
        result = LivePeak(peak_bytes=self._peak, categories=categories, phase=self._peak_phase)
        self._live.clear()  # dropping the weak references drops their callbacks too
        return result


def _states(optimizers: Iterable[Any]) -> list[torch.Tensor]:
    return [t for opt in optimizers for t in tensors_in(opt.state)]


def tensors_of(obj: Any) -> list[torch.Tensor]:
    """The tensors in a batch or an optimizer's state (``probes.tensors.tensors_in``, as a list)."""
    return list(tensors_in(obj))
