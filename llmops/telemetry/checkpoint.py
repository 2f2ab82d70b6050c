"""Checkpoint status: a CheckpointIO wrapper that times each write where it happens, and, on ranks
whose saves do not pass through CheckpointIO, the success time of ``trainer.save_checkpoint``."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from llmops.metrics import MetricState
from llmops.telemetry.guard import Guard

Pause = Callable[[], AbstractContextManager[Any]]  # pauses the stall clock while a save runs


def path_bytes(path: Any) -> int | None:
    """Bytes a checkpoint occupies: a file, or every file under a directory (sharded checkpoints)."""
    p = os.fspath(path)
    if os.path.isfile(p):
        return os.path.getsize(p)
    if os.path.isdir(p):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(p) for f in files)
    try:  # remote paths, through the filesystem Lightning itself uses
        from fsspec.core import url_to_fs

        fs, fs_path = url_to_fs(p)
        return int(fs.du(fs_path))
    except Exception:  # noqa: BLE001 - size unknown is not a failed save
        return None


class TimedCheckpointIO:
    """Wraps a Lightning ``CheckpointIO``: duration, bytes, success time, saves and failures.

    A failed save is counted and re-raised unchanged: the monitor never hides it.
    Everything else is delegated to the wrapped plugin.
    """

    def __init__(self, inner: Any, state: MetricState, guard: Guard | None = None,
                 pause: Pause = contextlib.nullcontext) -> None:
        self.inner, self._state, self._guard, self._pause = inner, state, guard or Guard(state), pause

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        t0 = time.perf_counter()
        try:
            with self._pause():  # a save is no stall
                self.inner.save_checkpoint(checkpoint, path, storage_options=storage_options)
        except BaseException:
            self._state.inc("llmops_checkpoint_failures_total")
            raise
        seconds, s = time.perf_counter() - t0, self._state
        with self._guard("checkpoint"):  # the save succeeded: nothing from here may fail it
            s.set("llmops_checkpoint_last_success_timestamp_seconds", time.time())
            s.inc("llmops_checkpoint_saves_total")
            s.observe("llmops_checkpoint_save_duration_seconds", seconds)
            s.set("llmops_checkpoint_size_bytes", path_bytes(path))  # a file may vanish while it is read

    def load_checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner.load_checkpoint(*args, **kwargs)

    def remove_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        self.inner.remove_checkpoint(*args, **kwargs)

    def teardown(self) -> None:
        self.inner.teardown()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def wrap_checkpoint_io(strategy: Any, state: MetricState, guard: Guard | None = None,
                       pause: Pause = contextlib.nullcontext) -> None:
    """Put the timer where the bytes are written: inside an async wrapper, else outermost (once)."""
    io = strategy.checkpoint_io
    if isinstance(io, TimedCheckpointIO):
        return
    inner = getattr(io, "checkpoint_io", None)
    if inner is not None and hasattr(io, "_checkpoint_io"):  # AsyncCheckpointIO and other wrappers
        if not isinstance(inner, TimedCheckpointIO):
            io._checkpoint_io = TimedCheckpointIO(inner, state, guard, pause)  # the setter refuses a configured base
        return
    strategy.checkpoint_io = TimedCheckpointIO(io, state, guard, pause)


def writes_through_io(strategy: Any) -> bool:
    """Whether this rank's saves reach ``strategy.checkpoint_io``: Lightning's base
    ``Strategy.save_checkpoint`` writes there on global rank 0 only; DeepSpeed, FSDP, ModelParallel
    and XLA override it and (sharded) write their own way."""
    for cls in type(strategy).__mro__:
        if "save_checkpoint" in vars(cls):
            return cls.__name__ == "Strategy" and bool(strategy.is_global_zero)
    return False


def mark_saves(trainer: Any, state: MetricState, guard: Guard, pause: Pause = contextlib.nullcontext) -> None:
    """On a rank that writes nothing through CheckpointIO, time stamp each ``trainer.save_checkpoint``
    that returns (every rank then shows when the run last checkpointed) and count one that raises."""
    save = trainer.save_checkpoint
    if writes_through_io(trainer.strategy) or getattr(save, "llmops_marked", False):
        return

    @functools.wraps(save)
    def marked(*args: Any, **kwargs: Any) -> Any:
        try:
            with pause():  # waiting for rank 0's save is no stall
                out = save(*args, **kwargs)
        except BaseException:
            state.inc("llmops_checkpoint_failures_total")
            raise
        with guard("checkpoint"):
            state.set("llmops_checkpoint_last_success_timestamp_seconds", time.time())
        return out

    marked.llmops_marked = True  # type: ignore[attr-defined]
    trainer.save_checkpoint = marked

