"""Where each step went: phases, tokens, model FLOPs and MFU, from marks the training thread drops.

Training thread (the hooks): ``batch_start``, ``backward_start``, ``optimizer_start`` and
``batch_end`` each take one clock mark; ``batch_end`` appends the micro-batch to a deque. Sampler
thread: ``drain`` reads the micro-batches whose marks have completed (CUDA events that ``query``
true; host clock readings at once) into ``llmops_step_phase_seconds_total{phase}``,
``llmops_tokens_total``, ``llmops_model_flops_total`` and, over the window, ``llmops_mfu_ratio``.

The phases of one micro-batch cover the time from the previous one's end to its own end: ``data``
(the previous end to this start: the loader and Lightning's loop), ``forward`` (to
``on_before_backward``), ``backward`` (to ``on_before_optimizer_step``, gradient clipping
included), ``optimizer`` (to the batch's end) and, under DDP, ``comm_exposed`` (taken out of
backward: all-reduce time after the last bucket was launched). They sum to the wall time between
batch ends, so ``rate()`` of each over the sum is its share. On CUDA the times are the GPU's, so
``data`` is how long the GPU waited for the host.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmops.estimate.flops import utilization
from llmops.metrics import MetricState
from llmops.probes.clock import StepClock
from llmops.spec.live import batch_shape
from llmops.vocabulary import STEP_PHASES

MAX_WAIT_FOR_COMM = 4  # micro-batches queued behind one whose all-reduce never reported: count it without
RECENT_STEPS = 100  # llmops_step_time_median_ratio: a step against the median of this many before it


@dataclass
class MicroBatch:
    """One micro-batch's marks (``None`` where its hook did not run) and what it processed."""

    prev_end: Any
    start: Any
    tokens: int | None  # b × s from the shape, when no attention mask is counted
    mask: Any  # the batch's 2-D attention mask, counted on the sampler thread
    seq_len: int | None
    backward: Any = None
    optimizer: Any = None
    end: Any = None
    comm: list[list[Any]] | None = None  # the optimizer step's all-reduce buckets (CommTimer.take_step)


def batch_tokens(batch: Any, shape: tuple[Any, ...] | None = None) -> tuple[int | None, int | None, Any]:
    """``(b × s, s, attention_mask)`` of a batch without reading its data; the mask only when the batch is
    a mapping with a 2-D ``attention_mask`` (padding tokens are its zeros). ``shape``: its ``batch_shape``,
    when known."""
    b, s = shape if shape is not None else batch_shape(batch)
    mask = batch.get("attention_mask") if isinstance(batch, Mapping) else None
    if mask is not None and getattr(mask, "dim", lambda: 0)() != 2:
        mask = None
    return (b * s if b and s else None), s, mask


def flop_params(module: Any) -> int:
    """N of ``6·N``: the parameters that take part in matmuls, each shared tensor once; an embedding table
    that is only looked up (learned positions, an untied token embedding) does no FLOPs, as nanoGPT's
    ``get_num_params(non_embedding=True)`` leaves out ``wpe``; one tied to the output head does."""
    from torch import nn

    lookups = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    tied = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    return sum(p.numel() for p in module.parameters() if id(p) not in lookups - tied)


class StepTimer:
    """Phases, tokens and FLOPs of each micro-batch, and the MFU of each sampling window.

    ``flops_per_token(s)`` (FLOPs per token at sequence length s) and ``peak_flops`` (FLOP/s of the
    device) are set once known; without them the FLOPs, or the MFU, stay absent.
    """

    def __init__(self, state: MetricState, clock: StepClock, peak_flops: float | None = None) -> None:
        self.state, self.clock = state, clock
        self.peak_flops = peak_flops
        self.flops_per_token: Callable[[int | None], float | None] | None = None
        self.comm: Any = None  # a CommTimer under DDP
        self._pending: deque[MicroBatch] = deque()
        self._current: MicroBatch | None = None
        self._last_end: Any = None
        self._step_seconds = 0.0  # the optimizer step in progress, for the comm share
        self._window_flops = 0.0
        self._window_seconds = 0.0
        self._busy = 0.0  # the optimizer step in progress, all phases but the exposed all-reduce
        self._recent_busy: deque[float] = deque(maxlen=RECENT_STEPS)
        for phase in STEP_PHASES:
            state.inc("llmops_step_phase_seconds_total", 0, phase=phase)

    # -- the training thread: a mark each ----------------------------------------------------
    def batch_start(self, batch: Any, shape: tuple[Any, ...] | None = None) -> None:
        tokens, seq_len, mask = batch_tokens(batch, shape)
        self._current = MicroBatch(self._last_end, self.clock.mark(), tokens, mask, seq_len)

    def backward_start(self) -> None:
        if self._current is not None:
            self._current.backward = self.clock.mark()

    def optimizer_start(self) -> None:
        if self._current is not None:
            self._current.optimizer = self.clock.mark()

    def batch_end(self, stepped: bool) -> None:
        mb, self._current = self._current, None
        if mb is None:
            return
        mb.end = self._last_end = self.clock.mark()
        if stepped and self.comm is not None:
            mb.comm = self.comm.take_step()
        self._pending.append(mb)

    def abort(self) -> None:
        """The step raised: drop it; the next batch's data wait starts from nothing."""
        self._current = self._last_end = None

    # -- the sampler thread ------------------------------------------------------------------
    def drain(self) -> None:
        """Count every completed micro-batch, in order; then the window's MFU. The counters take one
        ``inc_many`` per series per drain, and the median ratio is set for the drain's last step only
        (a gauge shows only its last value): the sampler thread's cost per step, which takes the GIL."""
        drained = _Drained()
        try:
            while self._pending and self._ready(self._pending[0]):
                self._account(self._pending.popleft(), drained)
        finally:  # what was accounted before an error is counted, as it was one ``inc`` at a time
            self._count(drained)
        if self._window_seconds > 0:
            mfu = utilization(self._window_flops, self._window_seconds, self.peak_flops)
            if mfu is not None and self._window_flops > 0:
                self.state.set("llmops_mfu_ratio", mfu)
            self._window_flops = self._window_seconds = 0.0

    def _count(self, drained: _Drained) -> None:
        s = self.state
        for phase, values in drained.phase_seconds.items():
            s.inc_many("llmops_step_phase_seconds_total", values, phase=phase)
        if drained.tokens:
            s.inc_many("llmops_tokens_total", drained.tokens)
        if drained.flops:
            s.inc_many("llmops_model_flops_total", drained.flops)
        if drained.busy:
            *before, last = drained.busy
            self._recent_busy.extend(before)
            self._step_done(last)

    def _step_done(self, busy: float) -> None:
        """A straggler's own signal: this step's time less the all-reduce it waited for (another rank's
        slowness), over the median of this rank's recent steps."""
        if self._recent_busy:
            median = statistics.median(self._recent_busy)
            if median > 0:
                self.state.set("llmops_step_time_median_ratio", busy / median)
        self._recent_busy.append(busy)

    def _ready(self, mb: MicroBatch) -> bool:
        if not self.clock.ready(mb.end):
            return False
        return (not mb.comm or self.comm.ready(mb.comm)) or len(self._pending) > MAX_WAIT_FOR_COMM

    def _account(self, mb: MicroBatch, drained: _Drained) -> None:
        c = self.clock
        forward_end = mb.backward if mb.backward is not None else mb.optimizer if mb.optimizer is not None else mb.end
        backward_end = mb.optimizer if mb.optimizer is not None else mb.end
        seconds = {
            "data": max(0.0, c.seconds(mb.prev_end, mb.start)) if mb.prev_end is not None else 0.0,
            "forward": max(0.0, c.seconds(mb.start, forward_end)),
            "backward": max(0.0, c.seconds(forward_end, backward_end)),
            "optimizer": max(0.0, c.seconds(backward_end, mb.end)),
        }
        first_of_step = self._step_seconds == 0.0
        self._step_seconds += sum(v for k, v in seconds.items() if k != "data" or not first_of_step)
        if mb.comm is not None and self.comm is not None:
            exposed = min(seconds["backward"], self.comm.exposed_seconds(mb.comm)) if self.comm.ready(mb.comm) else 0.0
            seconds["backward"] -= exposed
            seconds["comm_exposed"] = exposed
            self.comm.flush(self._step_seconds)
        self._busy += sum(seconds.values()) - seconds.get("comm_exposed", 0.0)
        if mb.optimizer is not None or mb.comm is not None:
            self._step_seconds = 0.0
            drained.busy.append(self._busy)
            self._busy = 0.0
        for phase, value in seconds.items():
            drained.phase_seconds.setdefault(phase, []).append(value)
        tokens = c.count(mb.mask) if mb.mask is not None else mb.tokens
        self._window_seconds += sum(seconds.values())
        if tokens is None:
            return
        drained.tokens.append(tokens)
        per_token = self.flops_per_token(mb.seq_len) if self.flops_per_token is not None else None
        if per_token is not None:
            drained.flops.append(tokens * per_token)
            self._window_flops += tokens * per_token


@dataclass
class _Drained:
    """What one drain accounted, in order, to be counted at its end: each series' amounts, and the
    busy seconds of each optimizer step completed (for the median ratio)."""

    phase_seconds: dict[str, list[float]] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    flops: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
