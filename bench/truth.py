"""Ground truth for the real peak of one training step on the CPU, independent of the llmops package.

The real peak is the most bytes of live tensors at any moment of a training step as Lightning runs
it: forward + loss (the previous step's gradients still alive), ``optimizer.zero_grad(set_to_none=True)``,
``loss.backward()``, ``optimizer.step()``. It is measured with the PyTorch profiler's memory events,
every allocation (+bytes) and free (−bytes) in order, on top of the bytes alive when the step starts.

The profiler sees the free of a block only if it saw its allocation, so it runs over the last two
steps: what dies in the measured step (the old gradients, say) was born in the one before.

    truth = real_peak(model, batch, loss_fn, optimizer, autocast_dtype=torch.bfloat16)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._pytree import tree_leaves

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]

_MARK = "bench.truth::measured_step"


@dataclass(frozen=True)
class Truth:
    """The measured step: ``peak_bytes`` = ``baseline_bytes`` + the highest running sum of its memory events;
    ``seconds`` is its wall time (under the profiler)."""

    peak_bytes: int
    baseline_bytes: int
    seconds: float


def run_step(
    model: torch.nn.Module,
    batch: Any,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """One training step in Lightning's order; returns the loss as a float. Autocast wraps forward + loss only."""
    ctx = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    with ctx:
        loss = loss_fn(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def live_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the unique storages behind ``tensors`` (views and tied weights counted once; a sharded
    ``DTensor``, FSDP2's parameters and their gradients, by its local shard)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        t = getattr(t, "_local_tensor", t)  # DTensor: the wrapper has no storage of its own
        st = t.untyped_storage()
        if st.data_ptr() != 0:
            seen[(str(t.device), st.data_ptr())] = st.nbytes()
    return sum(seen.values())


def state_tensors(model: torch.nn.Module, batch: Any, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """What is alive between steps: parameters, buffers, gradients, optimizer states and the batch."""
    params = list(model.parameters()) + [p for g in optimizer.param_groups for p in g["params"]]
    out: list[torch.Tensor] = [*params, *model.buffers()]
    out += [p.grad for p in params if p.grad is not None]
    out += [v for s in optimizer.state.values() for v in tree_leaves(s) if isinstance(v, torch.Tensor)]
    out += [v for v in tree_leaves(batch) if isinstance(v, torch.Tensor)]
    return out


def _memory_deltas(prof: profile) -> list[int]:
    """Signed bytes of the CPU allocations and frees inside the measured step, in time order."""
    events: list[Any] = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    marks = [e for e in events if e.name() == _MARK]
    if len(marks) != 1:
        raise RuntimeError(f"expected one {_MARK!r} range in the trace, found {len(marks)}")
    start, end = marks[0].start_ns(), marks[0].end_ns()
    mem = [
        e
        for e in events
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU and start <= e.start_ns() <= end
    ]
    mem.sort(key=lambda e: e.start_ns())  # stable: same-time events keep their per-thread order
    return [int(e.nbytes()) for e in mem]


def _highest(prof: profile) -> int:
    """The highest running sum of the measured range's memory events: bytes above where it started."""
    running = high = 0
    for delta in _memory_deltas(prof):
        running += delta
        high = max(high, running)
    return high


def highest_during(fn: Callable[[], Any]) -> int:
    """The most bytes ``fn`` holds above what was alive when it started (the profiler's events over it)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with record_function(_MARK):
            fn()
    return _highest(prof)


def real_peak(
    model: torch.nn.Module,
    batch: Any,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    autocast_dtype: torch.dtype | None = None,
    steps: int = 3,
) -> Truth:
    """Run ``steps`` training steps (at least 2) and measure the real peak of the last one."""
    if steps < 2:
        raise ValueError("steps must be >= 2: the first creates the gradients and optimizer states")
    for _ in range(steps - 2):
        run_step(model, batch, loss_fn, optimizer, autocast_dtype)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_step(model, batch, loss_fn, optimizer, autocast_dtype)
        gc.collect()  # no cyclic garbage of the step before is freed inside the measured one
        baseline = live_bytes(state_tensors(model, batch, optimizer))
        t0 = time.perf_counter()
        with record_function(_MARK):
            run_step(model, batch, loss_fn, optimizer, autocast_dtype)
        seconds = time.perf_counter() - t0
    return Truth(peak_bytes=baseline + _highest(prof), baseline_bytes=baseline, seconds=seconds)


def real_peak_holding(
    model: torch.nn.Module,
    batch: Any,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    clear: Callable[[], None],
    steps: int = 4,
    then: Any = None,
) -> Truth:
    """``real_peak`` for a loop that holds what a step leaves (its outputs, and what their graph keeps) into
    the next: ``clear`` drops that, and the last two steps are measured from the clean start it leaves, so
    what the first of them leaves is counted while the second still holds it. The peak is the higher one's.
    ``then``: the second measured step's batch, where it differs (a shorter one after the longest)."""
    if steps < 3:
        raise ValueError("steps must be >= 3: one creates the states, two are measured")
    for _ in range(steps - 2):
        run_step(model, batch, loss_fn, optimizer)
    clear()
    gc.collect()
    baseline = live_bytes(state_tensors(model, batch, optimizer))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        t0 = time.perf_counter()
        with record_function(_MARK):
            run_step(model, batch, loss_fn, optimizer)
            run_step(model, batch if then is None else then, loss_fn, optimizer)
        seconds = (time.perf_counter() - t0) / 2
    return Truth(peak_bytes=baseline + _highest(prof), baseline_bytes=baseline, seconds=seconds)
