"""One fit: made when training starts, closed when the fit ends however it ends (a normal end, an exception,
Ctrl-C, SIGTERM). It owns the run log, the step timer, the stall detector, the measuring schedule, the probes
and the sampler thread; the process's ``Session`` outlives it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from llmops.estimate import Estimate
from llmops.estimate.verdict import deciding
from llmops.exporter import NodeSender
from llmops.monitor.config import MonitorConfig
from llmops.monitor.measure import StepMeasurement
from llmops.monitor.risk import warn_oom
from llmops.monitor.session import Session
from llmops.probes import CudaAllocatorProbe, NvmlProbe, PynvmlClient
from llmops.probes.base import ProbeHung, bounded
from llmops.probes.clock import CudaEventClock, HostClock, StepClock
from llmops.probes.cuda import cuda_device_uuid
from llmops.runlog import RunLogWriter, run_path
from llmops.spec.live import Introspection
from llmops.telemetry.comm import CommTimer, attach, probe_allreduce
from llmops.telemetry.drift import drift_ratio, trend_risk
from llmops.telemetry.schedule import MeasureSchedule
from llmops.telemetry.stall import StallDetector
from llmops.telemetry.steps import StepTimer
from llmops.units import fmt_bytes, unit_for

log = logging.getLogger("llmops")
PROBE_TIMEOUT_S = 5.0  # the longest the training thread waits on a probe (open, close, the sampler's last read)


class Fit:
    """One fit of one process: the training thread drops marks (``step_start``, ``step_end``, a measurement on
    sampled steps); the sampler thread reads the probes and the marks every ``interval`` seconds."""

    def __init__(self, config: MonitorConfig, session: Session, run: str, rank: int, device_index: int | None,
                 build_labels: dict[str, str], segment: int = 1, step_clock: StepClock | None = None,
                 nvml_client: Any = None) -> None:
        self.config, self.session = config, session
        self.state, self.guard = session.state, session.guard
        self.run, self.rank, self.segment = run, rank, segment
        self.device = "cuda" if device_index is not None else "cpu"
        self.precision = build_labels.get("precision", "")
        self.prediction: dict[str, Estimate] = {}
        self.intro: Introspection | None = None
        self.preflight_text = ""
        self.step = 0
        self.measured: dict[str, int] = {}
        self.peak_phase = ""  # where the last measured CPU peak fell: forward, backward, optimizer
        self.saved_bytes = 0  # activations the forward saved for backward, last measured step
        self.measurement: StepMeasurement | None = None
        self.schedule = MeasureSchedule(config.activation_interval)  # which steps memory is measured on
        self.comm: CommTimer | None = None
        self.runlog: RunLogWriter | None = None  # the local run log, llmops_runs/<run>/
        self.nvml: NvmlProbe | None = None
        self.allocator: CudaAllocatorProbe | None = None
        self.failed = False  # the fit ended with an exception: no end marker
        self.closed = False
        self._t0: float | None = None  # when the optimizer step in progress began (its first micro-batch)
        # (step, samples, seconds or None) per micro-batch, for the sampler thread: the hooks only append
        self._done: deque[tuple[int, int | None, float | None]] = deque()
        self._peaks: deque[tuple[float, float]] = deque(maxlen=config.trend_window)
        self._warned: set[str] = set()
        self._stop = threading.Event()
        clock: StepClock = step_clock or HostClock()
        if step_clock is None and device_index is not None:
            with self.guard("steps"):  # without CUDA events the host clock times the steps
                clock = CudaEventClock()
        self.steps = StepTimer(self.state, clock, config.peak_flops)
        self.stall = StallDetector(self.state, config.stall_factor, config.stall_min_seconds)
        self.stall.rank = rank
        self.state.set("llmops_build_info", 1, **build_labels)
        self.state.set("llmops_run_start_timestamp_seconds", time.time())
        self.state.set("llmops_run_end_timestamp_seconds", None)  # a later fit of the same monitor runs again
        self._open_runlog(build_labels)
        if config.nvml if config.nvml is not None else device_index is not None:
            with self.guard("nvml"):
                uuid = cuda_device_uuid(device_index) if device_index is not None else None
                probe = NvmlProbe(nvml_client or PynvmlClient(), cuda_uuid=uuid,
                                  cuda_index=device_index if device_index is not None else 0)
                bounded(probe.open, PROBE_TIMEOUT_S, "nvml open")
                self.nvml = probe
        if device_index is not None:
            with self.guard("cuda_allocator"):
                self.allocator = CudaAllocatorProbe(device_index)
        self._thread: threading.Thread | None = threading.Thread(target=self._loop, name="llmops-sampler",
                                                                 daemon=True)
        self._thread.start()

    def _open_runlog(self, build_labels: dict[str, str]) -> None:
        """Open ``llmops_runs/<run>/rank<R>.jsonl``; its thread writes what changes in the state."""
        if not self.config.runlog:
            return
        with self.guard("runlog"):
            writer = RunLogWriter(run_path(self.config.run_dir, self.run) / f"rank{self.rank}.jsonl", self.state,
                                  interval=self.config.interval, on_error=lambda e: self.guard.record("runlog", e))
            writer.open(self.run, self.rank, build=build_labels, device=self.device, interval=self.config.interval,
                        url=self.session.metrics_url, segment=self.segment)
            self.runlog = writer

    def close(self, error: BaseException | None = None) -> None:
        """Stop sampling, take the last reading, close the run log (its end record names ``error``) and push the
        final state. Once: a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        self.failed = error is not None
        self._stop.set()
        hung = False
        if self._thread is not None:
            self._thread.join(timeout=PROBE_TIMEOUT_S)  # the stop event wakes it unless a probe call blocks
            hung = self._thread.is_alive()
            self._thread = None
        # A normal end: alerts tell a finished run from a dead one by it. Set before the last reading, so the
        # last hand-off to the node endpoint (endpoint="node") carries it.
        if not self.failed:
            self.state.set("llmops_run_end_timestamp_seconds", time.time())
        if hung:  # never call the probe that blocks it from this (the training) thread: leave both behind
            self.guard.record("nvml" if self.nvml is not None else "cuda_allocator",
                              ProbeHung(f"the sampler is stuck in a probe call past {PROBE_TIMEOUT_S:g} s; "
                                        "it is left behind, and the run ends without a last reading"))
            self.nvml = None
        else:  # the last reading, so a final scrape or push sees it; on a thread of its own, as every reading
            try:
                bounded(self.sample, PROBE_TIMEOUT_S, "sampler")
            except ProbeHung as e:
                self.guard.record("nvml" if self.nvml is not None else "steps", e)
        if self.runlog is not None:
            status = ("ok" if error is None else "interrupted" if isinstance(error, KeyboardInterrupt)
                      else f"error: {type(error).__name__}: {error}")
            with self.guard("runlog"):
                self.runlog.close(status)

    def close_probes(self) -> None:
        if self.nvml is not None:
            with self.guard("nvml"):
                bounded(self.nvml.close, PROBE_TIMEOUT_S, "nvml close")
            self.nvml = None

    @contextlib.contextmanager
    def stall_paused(self) -> Iterator[None]:
        with self.stall.paused():
            yield

    # -- train start: resume, communication ------------------------------------------------------
    def train_start(self, step: int, resumed: bool, accumulate: int) -> None:
        """Continue ``llmops_train_step`` from a restored step and count the restore."""
        self.step = step
        self.state.set("llmops_train_step", step)
        self.state.set("llmops_train_accumulate_grad_batches", accumulate)
        self.state.inc("llmops_checkpoint_restores_total", 1 if resumed else 0)

    def start_comm(self, model: Any, world_size: int, device: torch.device, grad_bytes: int,
                   user_hook: tuple[Any, Any] = (None, None)) -> None:
        """Time DDP all-reduces; without DDP hooks, measure one all-reduce sized like the gradients."""
        if world_size < 2:
            return
        self.state.set("llmops_comm_allreduce_predicted_bytes", grad_bytes)
        with self.guard("comm"):
            self.comm = attach(model, self.state, world_size, device, user_hook, clock=self.steps.clock)
            self.steps.comm = self.stall.comm = self.comm
        if self.comm is None:  # FSDP, DeepSpeed, or a hook we could not wrap: every rank runs the probe
            with self.guard("comm_probe"):
                probe_allreduce(self.state, grad_bytes, device, world_size)

    # -- the training thread -----------------------------------------------------------------
    def step_start(self, step: int, batch: Any = None, shape: tuple[Any, ...] | None = None) -> None:
        """A micro-batch begins; the first of an optimizer step starts its clock."""
        self.step = step
        if self._t0 is None:
            self._t0 = time.perf_counter()
        with self.guard("steps"):
            self.steps.batch_start(batch, shape)

    def step_end(self, step: int, samples: int | None, stepped: bool = True) -> None:
        """A micro-batch ends; ``stepped``: it ended with the optimizer step, so a training step is timed (all its
        micro-batches under gradient accumulation). The counters are updated on the sampler thread."""
        with self.guard("steps"):
            self.steps.batch_end(stepped)
        if not stepped or self._t0 is None:
            self._done.append((step, samples, None))
            return
        now = time.perf_counter()
        seconds = now - self._t0
        self._t0 = None
        self.stall.step_done(now, seconds)
        self.schedule.step_seconds(seconds)
        self._done.append((step, samples, seconds))
        if self.runlog is not None:  # a deque append; the run log's thread writes it
            self.runlog.step(step, seconds)

    def count_steps(self) -> None:
        """The samples, step times and step numbers the training thread queued, into the metrics: on the
        sampler thread, and before the loggers read them (either thread; each entry is taken once)."""
        done, samples_each, step_seconds, last_step = self._done, [], [], None
        while done:  # one inc_many, observe_many and set per call, not per step: the sampler takes the GIL
            step, samples, seconds = done.popleft()
            if samples:
                samples_each.append(samples)
            if seconds is not None:
                step_seconds.append(seconds)
                last_step = step if step is not None else last_step  # as set() skips a None
        if samples_each:
            self.state.inc_many("llmops_samples_total", samples_each)
        if step_seconds:
            self.state.observe_many("llmops_step_duration_seconds", step_seconds)
            self.state.set("llmops_train_step", last_step)

    def should_measure(self, step: int) -> bool:
        """Memory is measured on steps 0 and 1 and then as ``self.schedule`` says (``telemetry.schedule``)."""
        return self.schedule.due(step)

    def begin_measure(self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer], batch: Any) -> None:
        self.measurement = StepMeasurement(module, optimizers, batch, self.device)

    def forward_done(self) -> None:
        self.steps.backward_start()
        if self.measurement is not None:
            self.measurement.forward_done()

    def optimizer_step(self) -> None:
        self.steps.optimizer_start()
        if self.measurement is not None:
            self.measurement.optimizer_step()

    def end_measure(self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
        """The step's memory by component, exported; on the CPU its peak judged as the sampler judges CUDA's."""
        measurement, self.measurement = self.measurement, None
        if measurement is None:
            return
        measured, phase, self.saved_bytes = measurement.finish(module, optimizers)
        self.schedule.measured(self.step)
        self.state.inc("llmops_activation_sample_steps_total")
        self.measured, self.peak_phase = measured, phase or self.peak_phase
        for component, value in measured.items():
            if component != "peak":
                self.state.set("llmops_memory_actual_bytes", value, component=component)
        if "peak" in measured:
            self.observe_peak(float(measured["peak"]))

    def abort_measure(self) -> None:
        self.steps.abort()
        self._t0 = None
        if self.measurement is not None:
            self.measurement.abort()
            self.measurement = None

    # -- the sampler thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.config.interval):
            self.sample()

    def sample(self) -> None:
        """Read NVML, the CUDA allocator and the step timer's completed marks once."""
        s, session = self.state, self.session
        with self.guard("steps"):
            self.count_steps()
        with self.guard("stall"):
            self._check_stall()
        with self.guard("steps"):
            self.steps.drain()
        if self.nvml is not None:
            with self.guard("nvml"):
                r = self.nvml.read()
                labels = {"gpu": str(r.index), "UUID": r.uuid}
                s.set("llmops_gpu_memory_total_bytes", r.memory_total_bytes, **labels)
                s.set("llmops_gpu_memory_used_bytes", r.memory_used_bytes, **labels)
                s.set("llmops_gpu_process_memory_bytes", r.process_memory_bytes, **labels)
                s.set("llmops_gpu_utilization_ratio", r.utilization_ratio, **labels)
                s.set("llmops_gpu_power_watts", r.power_watts, **labels)
                if r.energy_joules is not None:
                    session.count("llmops_gpu_energy_joules_total", r.energy_joules, **labels)
        if self.allocator is not None:
            with self.guard("cuda_allocator"):
                a = self.allocator.read()
                s.set("llmops_cuda_memory_reserved_bytes", a.reserved_bytes)
                session.count("llmops_cuda_ooms_total", a.num_ooms)
                session.count("llmops_cuda_alloc_retries_total", a.num_alloc_retries)
                self.observe_peak(float(a.peak_allocated_bytes))
        if isinstance(session.node, NodeSender):  # a failed send is counted by the sender, once per outage
            with self.guard("node_handoff"):
                session.node.send(self.run, self.rank, s.snapshot())

    def _check_stall(self) -> None:
        """On a stall: every thread's stack to ``stall-rank<R>.txt``, the log and the run log; when steps
        resume, say so."""
        event = self.stall.check()
        if event == "resumed":
            log.warning("llmops: rank %d: training steps resumed at step %d; the stall is over", self.rank, self.step)
            if self.runlog is not None:
                self.runlog.record("stall_end", step=self.step)
        elif event == "stalled":
            path = run_path(self.config.run_dir, self.run) / f"stall-rank{self.rank}.txt"
            report = self.stall.last_report
            text = self.stall.write_report(path, f"llmops stall report: run {self.run}, rank {self.rank}, after step "
                                                 f"{self.step}, at {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
            log.warning("llmops: rank %d: training stalled (stack written to %s)\n%s", self.rank, path, text)
            if self.runlog is not None:
                self.runlog.record("stall", step=self.step, path=str(path), since_step_s=report["since_step_s"],
                                   threshold_s=report["threshold_s"])

    def observe_peak(self, peak: float) -> None:
        """Drift and OOM risk from a measured peak (allocator or tensors; no fixed overhead), against the
        deciding prediction (``estimate.verdict``)."""
        s = self.state
        s.set("llmops_memory_actual_bytes", peak, component="peak")
        for model, est in self.prediction.items():
            if est.peak_bytes is not None:
                predicted = est.peak_bytes - (est.overhead_bytes or 0)
                s.set("llmops_memory_drift_ratio", drift_ratio(peak, predicted), model=model)
        best = deciding(self.prediction)[1]
        if best is None or best.budget_bytes is None:
            return
        room = best.budget_bytes - (best.overhead_bytes or 0)
        self._peaks.append((float(self.step), peak))
        for source, risk in (
            ("measured", peak > room),
            ("trend", trend_risk(list(self._peaks), room, self.config.trend_horizon_steps)),
        ):
            s.set("llmops_oom_risk", int(risk), source=source)
            if risk and source not in self._warned:  # the message is built only when it is logged
                self._warned.add(source)
                unit = unit_for(peak, room)
                detail = (f"measured peak {fmt_bytes(peak, unit)}" if source == "measured" else
                          f"memory growing step after step from {fmt_bytes(self._peaks[0][1], unit)} to "
                          f"{fmt_bytes(peak, unit)}")
                warn_oom(f"llmops: OOM risk ({source}) at step {self.step}: {detail}; budget for tensors "
                         f"{fmt_bytes(room, unit)}", rank_zero_only=False)
