"""Step clocks: marks the training thread drops (a clock read, or a CUDA event recorded on the current
stream) and the sampler thread reads once they have completed, never synchronising.

``HostClock`` reads ``time.perf_counter``. ``CudaEventClock`` records ``torch.cuda.Event``s; the
sampler asks ``ready`` (``Event.query``, which does not block) before ``seconds``
(``Event.elapsed_time``), so no call on either thread waits for the GPU. Its event factory is a
parameter, so a test on a machine without a GPU runs this same code on fake events.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol


class StepClock(Protocol):
    """What the step timer and the comm hook need from a clock."""

    def mark(self) -> Any:
        """Training thread: a mark of now (cheap, never blocks)."""
        ...

    def ready(self, mark: Any) -> bool:
        """Sampler thread: whether ``mark`` has completed (never blocks)."""
        ...

    def seconds(self, start: Any, end: Any) -> float:
        """Sampler thread: seconds from ``start`` to ``end``, both ready."""
        ...

    def count(self, tensor: Any) -> int:
        """Sampler thread: the non-zero values of a tensor the step used (an attention mask)."""
        ...


class HostClock:
    """Host wall time: marks are ``perf_counter()`` readings, always ready."""

    def mark(self) -> float:
        return time.perf_counter()

    def ready(self, mark: Any) -> bool:
        return True

    def seconds(self, start: Any, end: Any) -> float:
        return float(end - start)

    def count(self, tensor: Any) -> int:
        return int(tensor.count_nonzero())


class CudaEventClock:
    """CUDA events with timing, recorded on the current stream; read after they complete.

    ``count`` runs on the sampler thread on a side stream of its own, after the step's end event has
    completed (so the mask's copy to the device is done): its ``.item()`` waits on that one small
    kernel, never on the training stream.
    """

    def __init__(self, event_factory: Callable[..., Any] | None = None,
                 stream_factory: Callable[[], Any] | None = None) -> None:
        import torch

        self._event = event_factory or torch.cuda.Event
        self._stream_factory = stream_factory or torch.cuda.Stream
        self._stream: Any = None

    def mark(self) -> Any:
        event = self._event(enable_timing=True)
        event.record()
        return event

    def ready(self, mark: Any) -> bool:
        return bool(mark.query())

    def seconds(self, start: Any, end: Any) -> float:
        return float(start.elapsed_time(end)) / 1e3

    def count(self, tensor: Any) -> int:
        if not getattr(tensor, "is_cuda", False):
            return int(tensor.count_nonzero())
        import torch

        if self._stream is None:
            self._stream = self._stream_factory()
        with torch.cuda.stream(self._stream):
            return int(tensor.count_nonzero())
