"""The Lightning-free monitor of one process: its ``Session`` (state and endpoint, kept across fits) and the
``Fit`` in progress (made at each start, closed at its end, however it ends).

The training thread's hooks (``step_start``, ``step_end``, a measurement on sampled steps) are a clock read or a
CUDA event and a few appends; NVML, the CUDA allocator and the step timer's marks are read on the fit's sampler
thread every ``interval`` seconds. Everything is exported through the session's one ``MetricState``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from llmops.estimate import Estimate
from llmops.exporter import push_final
from llmops.metrics import MetricState
from llmops.monitor.config import MonitorConfig
from llmops.monitor.fit import PROBE_TIMEOUT_S, Fit
from llmops.monitor.preflight import preflight as run_preflight
from llmops.monitor.session import Session
from llmops.probes.clock import StepClock
from llmops.runlog import RunLogWriter
from llmops.spec.live import Introspection
from llmops.telemetry.guard import Guard
from llmops.telemetry.stall import StallDetector
from llmops.telemetry.steps import StepTimer

__all__ = ["PROBE_TIMEOUT_S", "Monitor"]
log = logging.getLogger("llmops")


class Monitor:
    """Predicted-versus-actual memory for one process (rank) of a training run."""

    def __init__(self, config: MonitorConfig, registry: CollectorRegistry | None = None,
                 nvml_client: Any = None, step_clock: StepClock | None = None) -> None:
        self.config = config
        self.session = Session(registry)
        self.fit: Fit | None = None  # the fit in progress, or the last one once it closed
        self._nvml_client = nvml_client
        self._step_clock = step_clock  # None: CUDA events on a GPU, the host clock on the CPU
        self._segments: dict[str, int] = {}  # fits this monitor ran under each run name (run log segments)
        self._final_scrape_registered = False

    # -- what the process holds ------------------------------------------------------------------
    @property
    def state(self) -> MetricState:
        return self.session.state

    @property
    def guard(self) -> Guard:
        return self.session.guard

    @property
    def exporter(self) -> Any:
        return self.session.exporter

    @property
    def metrics_url(self) -> str | None:
        """The URL actually served, once started."""
        return self.session.metrics_url

    # -- what the fit holds (the last one's, once it ended) -----------------------------------------
    @property
    def run(self) -> str:
        return self.fit.run if self.fit else ""

    @property
    def rank(self) -> int:
        return self.fit.rank if self.fit else 0

    @property
    def prediction(self) -> dict[str, Estimate]:
        return self.fit.prediction if self.fit else {}

    @property
    def intro(self) -> Introspection | None:
        return self.fit.intro if self.fit else None

    @property
    def preflight_text(self) -> str:
        return self.fit.preflight_text if self.fit else ""

    @property
    def measured(self) -> dict[str, int]:
        return self.fit.measured if self.fit else {}

    @property
    def saved_bytes(self) -> int:
        return self.fit.saved_bytes if self.fit else 0

    @property
    def runlog(self) -> RunLogWriter | None:
        return self.fit.runlog if self.fit else None

    @property
    def stall(self) -> StallDetector | None:
        return self.fit.stall if self.fit else None

    @property
    def steps(self) -> StepTimer | None:
        return self.fit.steps if self.fit else None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, run: str, rank: int, local_rank: int, device_index: int | None,
              build_labels: dict[str, str], local_world_size: int = 1) -> None:
        """Serve the endpoint (once per process) and open a fit; a fit already open is kept."""
        if self.fit is not None and not self.fit.closed:
            return
        self.session.serve(self.config, run, rank, local_rank, local_world_size)
        self._segments[run] = segment = self._segments.get(run, 0) + 1
        if segment > 1 and rank == 0:
            log.info("llmops: fit %d with this monitor under run %s: its run log goes on as segment %d",
                     segment, run, segment)
        self.fit = Fit(self.config, self.session, run, rank, device_index, build_labels, segment,
                       step_clock=self._step_clock, nvml_client=self._nvml_client)

    def close(self, error: BaseException | None = None) -> None:
        """End the fit: stop sampling, close the run log (its end record names ``error``, what stopped the fit)
        and push the final state; the endpoint serves until the process ends. Once per fit: a fit that failed
        before train start (nothing opened) and a second call do nothing."""
        fit = self.fit
        if fit is None or fit.closed:
            return
        fit.close(error)
        self.session.ended_at = time.time()
        if self.session.exporter is not None and not self._final_scrape_registered:
            self._final_scrape_registered = True
            atexit.register(self.session.final_scrape)
        if self.config.pushgateway_url:
            with self.guard("pushgateway"):
                push_final(self.config.pushgateway_url, self.session.registry,
                           grouping_key={"run": fit.run, "rank": str(fit.rank)})
        if self.config.linger:
            time.sleep(self.config.linger)
        fit.close_probes()

    def shutdown(self) -> None:
        """Close, and stop serving the endpoint (and the node hand-off) now."""
        self.close()
        self.session.close()

    @contextlib.contextmanager
    def stall_paused(self) -> Iterator[None]:
        """Pause the stall clock of the fit in progress (a checkpoint save, a wait for rank 0's save): looked
        up when the pause begins, so a wrapper made before the fit opened pauses that fit's detector."""
        fit = self.fit
        if fit is None or fit.closed:
            yield
            return
        with fit.stall_paused():
            yield

    def pause_stall(self) -> None:
        if self.fit is not None:
            self.fit.stall.pause()

    def resume_stall(self) -> None:
        if self.fit is not None:
            self.fit.stall.resume()

    # -- before step 1 -------------------------------------------------------------------------
    def preflight(self, intro: Introspection, is_rank_zero: bool = True,
                  extra: dict[str, Estimate] | None = None, flop_params: int | None = None) -> dict[str, Estimate]:
        """``monitor.preflight.preflight`` for the fit in progress."""
        if self.fit is None:
            return {}
        return run_preflight(self.fit, intro, is_rank_zero, extra, flop_params)

    def train_start(self, step: int, resumed: bool, accumulate: int) -> None:
        if self.fit is not None:
            self.fit.train_start(step, resumed, accumulate)

    def start_comm(self, model: Any, world_size: int, device: torch.device, grad_bytes: int,
                   user_hook: tuple[Any, Any] = (None, None)) -> None:
        if self.fit is not None:
            self.fit.start_comm(model, world_size, device, grad_bytes, user_hook)

    # -- the training thread: each a call to the fit in progress ---------------------------------
    def step_start(self, step: int, batch: Any = None, shape: tuple[Any, ...] | None = None) -> None:
        if self.fit is not None:
            self.fit.step_start(step, batch, shape)

    def step_end(self, step: int, samples: int | None, stepped: bool = True) -> None:
        if self.fit is not None:
            self.fit.step_end(step, samples, stepped)

    def count_steps(self) -> None:
        if self.fit is not None:
            self.fit.count_steps()

    def should_measure(self, step: int) -> bool:
        return self.fit is not None and self.fit.should_measure(step)

    @property
    def measuring(self) -> bool:
        """A memory measurement is open (``begin_measure`` ran on this micro-batch)."""
        return self.fit is not None and self.fit.measurement is not None

    def begin_measure(self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer], batch: Any) -> None:
        if self.fit is not None:
            self.fit.begin_measure(module, optimizers, batch)

    def forward_done(self) -> None:
        if self.fit is not None:
            self.fit.forward_done()

    def optimizer_step(self) -> None:
        if self.fit is not None:
            self.fit.optimizer_step()

    def end_measure(self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
        if self.fit is not None:
            self.fit.end_measure(module, optimizers)

    def abort_measure(self) -> None:
        if self.fit is not None:
            self.fit.abort_measure()
