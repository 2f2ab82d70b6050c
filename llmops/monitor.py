"""The Lightning-free core: preflight prediction, sampling thread, drift and OOM risk.

The training thread calls ``step_start``/``step_end`` (a clock read or a CUDA event, and a few dict
updates) and, on sampled steps, ``measure``; NVML, the CUDA allocator and the step timer's marks
(``steps.StepTimer``: phases, tokens, FLOPs, MFU) are read on a background thread every ``interval``
seconds. Everything is exported through one ``MetricState``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import asdict
from collections.abc import Iterator
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from .comm import CommTimer, attach, probe_allreduce
from .config import MonitorConfig
from .drift import drift_ratio, trend_risk
from .estimate import Estimate, document, refined
from .estimate.units import fmt_bytes, unit_for
from .estimate.whatif import what_if
from .exporter import LLMOpsCollector, MetricState, NodeReceiver, NodeSender, node_address, push_final, start_exporter
from .flops import model_flops_per_token
from .guard import Guard, OOMRiskError, ProbeHung, bounded, warn_oom
from .introspect import Introspection
from .measure_schedule import MeasureSchedule
from .peaks import matmul_dtype, peak_flops
from .probes import ActivationMeter, CudaAllocatorProbe, LiveBytes, NvmlProbe, PynvmlClient, state_bytes
from .probes.clock import CudaEventClock, HostClock, StepClock
from .probes.cuda import cuda_device_uuid
from .runlog import RunLogWriter, run_path
from .stall import StallDetector
from .steps import StepTimer
from .tables import estimate_table, to_text, whatif_table

log = logging.getLogger("llmops")
FINAL_SCRAPE_MAX_S = 60.0  # at exit, the longest wait for Prometheus to read the end marker
PROBE_TIMEOUT_S = 5.0  # the longest the training thread waits on a probe (open, close, the sampler's last read)
# endpoint="node": a local rank not heard from for this many sampling intervals, and at least this long, is stale
NODE_STALE_INTERVALS, NODE_STALE_MIN_S = 5, 10.0


class Monitor:
    """Predicted-versus-actual memory for one process (rank) of a training run."""

    def __init__(self, config: MonitorConfig, registry: CollectorRegistry | None = None,
                 nvml_client: Any = None, step_clock: StepClock | None = None) -> None:
        self.config = config
        self.state = MetricState()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.guard = Guard(self.state)
        self.exporter: Any = None
        self.node: NodeReceiver | NodeSender | None = None  # endpoint="node": local rank 0 receives, the others send
        self.prediction: dict[str, Estimate] = {}
        self.intro: Introspection | None = None
        self.preflight_text = ""
        self.run, self.rank, self.device = "", 0, "cpu"
        self._nvml_client = nvml_client
        self._nvml: NvmlProbe | None = None
        self._allocator: CudaAllocatorProbe | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._peaks: deque[tuple[float, float]] = deque(maxlen=config.trend_window)
        self._warned: set[str] = set()
        self._last_counters: dict[str, float] = {}
        self._meter: ActivationMeter | None = None
        self._live: LiveBytes | None = None  # the CPU's real peak, on sampled steps
        self._t0: float | None = None  # when the optimizer step in progress began (its first micro-batch)
        # (step, samples, seconds or None) per micro-batch, for the sampler thread: the hooks only append
        self._done: deque[tuple[int, int | None, float | None]] = deque()
        self.step = 0
        self.schedule = MeasureSchedule(config.activation_interval)  # which steps memory is measured on
        self.measured: dict[str, int] = {}
        self.peak_phase = ""  # where the last measured CPU peak fell: forward, backward, optimizer
        self.saved_bytes = 0  # activations the forward saved for backward, last measured step
        self.comm: CommTimer | None = None
        self._started = False
        self._collector: LLMOpsCollector | None = None
        self.runlog: RunLogWriter | None = None  # the local run log, llmops_runs/<run>/
        self._failed = False  # the fit ended with an exception: no end marker
        self._ended_at = 0.0
        self._final_scrape_registered = False
        self._step_clock = step_clock  # None: CUDA events on a GPU, the host clock on the CPU
        self.steps = StepTimer(self.state, step_clock or HostClock(), config.peak_flops)
        self.stall = StallDetector(self.state, config.stall_factor, config.stall_min_seconds)
        self._precision = ""
        self._segments: dict[str, int] = {}  # fits this monitor ran under each run name (run log segments)

    @property
    def metrics_url(self) -> str | None:
        """The URL actually served, once started."""
        return self.exporter.url if self.exporter is not None else None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, run: str, rank: int, local_rank: int, device_index: int | None,
              build_labels: dict[str, str], local_world_size: int = 1) -> None:
        """Register the collector, serve the endpoint and start the sampling thread (once per fit; a
        later fit with the same monitor keeps the collector and the endpoint and starts the rest again)."""
        if self._started:
            return
        self._started = True
        self._stop.clear()
        self.run, self.rank = run, rank
        self.device = "cuda" if device_index is not None else "cpu"
        if self._collector is None:
            with self.guard("collector"):
                self._collector = LLMOpsCollector(self.state, run=run, rank=rank)
                self.registry.register(self._collector)
        else:  # a later fit: the same endpoint, under this fit's run name
            self._collector.run, self._collector.rank = run, rank
        c = self.config
        per_node = c.endpoint == "node" and local_world_size > 1
        if c.serve and per_node and self.node is None:
            self._start_node(run, rank, local_rank)
        if c.serve and self.exporter is None and not (per_node and local_rank > 0):
            with self.guard("exporter"):
                port = c.port if per_node or not c.port else c.port + local_rank
                self.exporter = start_exporter(self.registry, port=port, addr=c.addr, certfile=c.certfile,
                                               keyfile=c.keyfile, basic_auth=c.basic_auth,
                                               announce=_node_note(c.port, local_world_size, per_node)
                                               if local_rank == 0 else None)
        self.state.set("llmops_build_info", 1, **build_labels)
        self._precision = build_labels.get("precision", "")
        with self.guard("steps"):
            clock = self._step_clock or (CudaEventClock() if device_index is not None else HostClock())
            self.steps = StepTimer(self.state, clock, self.config.peak_flops)
        self.stall = StallDetector(self.state, self.config.stall_factor, self.config.stall_min_seconds)
        self.stall.rank = rank
        self.state.set("llmops_run_start_timestamp_seconds", time.time())
        self.state.set("llmops_run_end_timestamp_seconds", None)  # a later fit of the same monitor runs again
        self._failed = False
        self._segments[run] = segment = self._segments.get(run, 0) + 1
        if segment > 1 and rank == 0:
            log.info("llmops: fit %d with this monitor under run %s: its run log goes on as segment %d",
                     segment, run, segment)
        self._open_runlog(run, rank, build_labels, segment)
        use_nvml = self.config.nvml if self.config.nvml is not None else device_index is not None
        if use_nvml:
            with self.guard("nvml"):
                uuid = cuda_device_uuid(device_index) if device_index is not None else None
                probe = NvmlProbe(self._nvml_client or PynvmlClient(), cuda_uuid=uuid,
                                  cuda_index=device_index if device_index is not None else 0)
                bounded(probe.open, PROBE_TIMEOUT_S, "nvml open")
                self._nvml = probe
        if device_index is not None:
            with self.guard("cuda_allocator"):
                self._allocator = CudaAllocatorProbe(device_index)
        self._thread = threading.Thread(target=self._loop, name="llmops-sampler", daemon=True)
        self._thread.start()

    def _start_node(self, run: str, rank: int, local_rank: int) -> None:
        """endpoint="node": local rank 0 listens for the other local ranks' snapshots and serves them beside its
        own; the others send theirs from the sampler thread (``sample``)."""
        with self.guard("node"):
            address = node_address(run, self.config.port)
            if local_rank == 0:
                stale_s = max(NODE_STALE_MIN_S, NODE_STALE_INTERVALS * self.config.interval)
                self.node = NodeReceiver(address, stale_s, on_error=lambda e: self.guard.record("node", e),
                                         own_rank=rank)
                if self._collector is not None:
                    self._collector.peers = self.node.peers
            else:
                self.node = NodeSender(address, on_error=lambda e: self.guard.record("node_handoff", e))

    def close(self, error: BaseException | None = None) -> None:
        """End the fit: stop sampling, close the run log (its end record names ``error``, what stopped the fit)
        and push the final state; the endpoint serves until the process ends. Once per start: a fit that failed
        before train start (nothing started) and a second call do nothing."""
        if not self._started:
            return
        self._started = False
        if error is not None:
            self._failed = True
        self._stop.set()
        hung = False
        if self._thread is not None:
            self._thread.join(timeout=PROBE_TIMEOUT_S)  # the stop event wakes it unless a probe call blocks
            hung = self._thread.is_alive()
            self._thread = None
        # A normal end: alerts tell a finished run from a dead one by it. Set before the last reading, so the
        # last hand-off to the node endpoint (endpoint="node") carries it.
        if not self._failed:
            self.state.set("llmops_run_end_timestamp_seconds", time.time())
        if hung:  # never call the probe that blocks it from this (the training) thread: leave both behind
            self.guard.record("nvml" if self._nvml is not None else "cuda_allocator",
                              ProbeHung(f"the sampler is stuck in a probe call past {PROBE_TIMEOUT_S:g} s; "
                                        "it is left behind, and the run ends without a last reading"))
            self._nvml = None
        else:  # the last reading, so a final scrape or push sees it; on a thread of its own, as every reading
            try:
                bounded(self.sample, PROBE_TIMEOUT_S, "sampler")
            except ProbeHung as e:
                self.guard.record("nvml" if self._nvml is not None else "steps", e)
        self._ended_at = time.time()
        if self.exporter is not None and not self._final_scrape_registered:
            self._final_scrape_registered = True
            atexit.register(self._final_scrape)
        self.end_runlog(error)
        if self.config.pushgateway_url:
            with self.guard("pushgateway"):
                push_final(self.config.pushgateway_url, self.registry,
                           grouping_key={"run": self.run, "rank": str(self.rank)})
        if self.config.linger:
            time.sleep(self.config.linger)
        if self._nvml is not None:
            with self.guard("nvml"):
                bounded(self._nvml.close, PROBE_TIMEOUT_S, "nvml close")
            self._nvml = None

    def _final_scrape(self) -> None:
        """At interpreter exit, when a Prometheus scrapes this endpoint (two scrapes seen): wait for one
        scrape after the run ended, at most two scrape intervals and ``FINAL_SCRAPE_MAX_S``, so it reads
        the end marker. Never on the training path: ``fit`` has returned."""
        exporter = self.exporter
        interval = exporter.scrapes.interval() if exporter is not None else None
        if exporter is None or interval is None or exporter.closed:
            return
        exporter.scrapes.wait_after(self._ended_at, min(FINAL_SCRAPE_MAX_S, 2 * interval + 1))

    def shutdown(self) -> None:
        """Close, and stop serving the endpoint (and the node hand-off) now."""
        self.close()
        if self.exporter is not None:
            self.exporter.close()
        if self.node is not None:
            self.node.close()

    @contextlib.contextmanager
    def stall_paused(self) -> Iterator[None]:
        """Pause the stall clock of the fit in progress (a checkpoint save, a wait for rank 0's save): the
        detector is the fit's, made at each start, so this is looked up when the pause begins."""
        with self.stall.paused():
            yield

    # -- the run log -------------------------------------------------------------------------
    def _open_runlog(self, run: str, rank: int, build_labels: dict[str, str], segment: int = 1) -> None:
        """Open ``llmops_runs/<run>/rank<R>.jsonl``; its thread writes what changes in ``self.state``."""
        if not self.config.runlog:
            return
        with self.guard("runlog"):
            writer = RunLogWriter(run_path(self.config.run_dir, run) / f"rank{rank}.jsonl", self.state,
                                  interval=self.config.interval, on_error=lambda e: self.guard.record("runlog", e))
            writer.open(run, rank, build=build_labels, device=self.device, interval=self.config.interval,
                        url=self.metrics_url, segment=segment)
            self.runlog = writer

    def _log_preflight(self, models: dict[str, Estimate]) -> None:
        if self.runlog is not None and self.intro is not None:
            self.runlog.record("preflight", text=self.preflight_text, spec=asdict(self.intro.spec),
                               sources=dict(self.intro.sources), models={k: asdict(v) for k, v in models.items()})

    def end_runlog(self, error: BaseException | None = None) -> None:
        """Close the run log; after an exception its ``end`` record says what stopped the run."""
        if error is not None:
            self._failed = True
        if self.runlog is not None:
            status = ("ok" if error is None else "interrupted" if isinstance(error, KeyboardInterrupt)
                      else f"error: {type(error).__name__}: {error}")
            with self.guard("runlog"):
                self.runlog.close(status)

    # -- preflight ---------------------------------------------------------------------------
    def preflight(self, intro: Introspection, is_rank_zero: bool = True,
                  extra: dict[str, Estimate] | None = None, flop_params: int | None = None) -> dict[str, Estimate]:
        """Predict, export and log; raise ``OOMRiskError`` when asked to and the prediction does not fit.

        ``extra`` adds models made elsewhere (the dry run's ``"dryrun"``) to the table and the metrics;
        ``flop_params`` is the N of the FLOPs per token (``steps.flop_params``; default the spec's).
        """
        self.intro = intro
        spec, missing = intro.spec, set(intro.missing)
        models: dict[str, Estimate] = {}
        if "precision" not in missing:
            models["document"] = document(spec)
            if not missing & {"strategy", "optimizer"}:
                models["refined"] = refined(spec)
        models.update(extra or {})
        self.prediction = models
        if intro.missing and is_rank_zero:
            log.warning("llmops: could not infer %s from the run; set them with spec={%s}. Predictions that "
                        "need them are left out.", ", ".join(intro.missing),
                        ", ".join(f"{k!r}: ..." for k in intro.missing))
        self._export_prediction(spec.batch_size)
        with self.guard("steps"):
            self._set_flops(intro, flop_params)
        best = models.get("refined") or models.get("document")
        if best is None:
            return models
        self.preflight_text = self._preflight_text(best)
        self._log_preflight(models)
        if is_rank_zero:
            log.info("%s", self.preflight_text)
        if best.oom_risk:
            msg = self._risk_message(best)
            if self.config.on_oom_risk == "raise":
                raise OOMRiskError(msg + " (on_oom_risk='raise': stopped before the first step)")
            if is_rank_zero:
                warn_oom(msg, rank_zero_only=True)
        return models

    def _set_flops(self, intro: Introspection, flop_params: int | None) -> None:
        """FLOPs per token from the architecture introspection read (N, L, h; s per batch; a mixture of
        experts' active parameters), and the device's peak: ``peak_flops=``, else the GPU table's for the
        run's matmul dtype (absent on the CPU)."""
        spec = intro.spec
        n = spec.active_params or flop_params or spec.params
        if n:
            layers, hidden = spec.layers, spec.hidden
            self.steps.flops_per_token = lambda s: model_flops_per_token(n, layers, hidden, s)
        if self.config.peak_flops is None and self._nvml is not None:
            self.steps.peak_flops = peak_flops(self._nvml.name, matmul_dtype(
                self._precision, torch.get_float32_matmul_precision()))

    def _export_prediction(self, batch_size: int | None) -> None:
        s = self.state
        s.set("llmops_batch_size", batch_size)
        s.set("llmops_memory_safety_ratio", self.config.safety)
        for model, est in self.prediction.items():
            for component, value in est.components().items():
                s.set("llmops_memory_predicted_bytes", value, component=component, model=model)
            s.set("llmops_batch_size_max_safe", est.max_batch_size, model=model)
            s.set("llmops_batch_accumulate_predicted", est.accumulate, model=model)
            method = "rule_of_thumb" if model == "document" else "formula"
            s.set("llmops_gpus_predicted", est.gpus_training, method=method, phase="training")
            s.set("llmops_gpus_predicted", est.gpus_inference, method=method, phase="inference")
        best = self.prediction.get("refined") or self.prediction.get("document")
        if best is not None and best.oom_risk is not None:
            s.set("llmops_oom_risk", int(best.oom_risk), source="prediction")
            for source in ("measured", "trend"):
                if s.get("llmops_oom_risk", source=source) is None:
                    s.set("llmops_oom_risk", 0, source=source)
        if self.intro is not None:
            s.set("llmops_memory_budget_bytes", self.intro.spec.gpu_memory)

    def _preflight_text(self, best: Estimate) -> str:
        spec = self.intro.spec if self.intro else None
        table = estimate_table(self.prediction.values(), title="llmops preflight: predicted memory per device")
        lines = [f"run={self.run} rank={self.rank} b={spec.batch_size} s={spec.seq_len} "
                 f"precision={spec.precision} strategy={spec.strategy} n={spec.world_size} "
                 f"optimizer={spec.optimizer}" if spec else ""]
        if best.budget_bytes is None:
            lines.append("OOM check: no memory budget (no GPU found); pass memory_budget= to check")
        else:
            lines.append(f"budget {fmt_bytes(best.budget_bytes)} (safety {self.config.safety} × "
                         f"{fmt_bytes(spec.gpu_memory if spec else None)}); largest safe micro-batch "
                         f"{best.max_batch_size}; gradient accumulation for the global batch "
                         f"{best.accumulate}")
        extra: list[Any] = []
        if best.oom_risk and spec is not None:
            extra.append(whatif_table(what_if(spec)))
        return to_text(table, "\n".join(lines), *extra)

    def _risk_message(self, best: Estimate) -> str:
        spec = self.intro.spec if self.intro else None
        b = spec.batch_size if spec else None
        unit = unit_for(best.peak_bytes, best.budget_bytes)
        return (f"llmops: OOM risk — predicted peak {fmt_bytes(best.peak_bytes, unit)} per device exceeds the "
                f"budget {fmt_bytes(best.budget_bytes, unit)} (safety {self.config.safety}); largest safe "
                f"micro-batch {best.max_batch_size} (in use: {b})"
                + (f"; keep the global batch with accumulate_grad_batches={best.accumulate}"
                   if best.accumulate else ""))

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
        """A micro-batch begins; the first of an optimizer step starts its clock. ``shape``: the batch's
        ``batch_shape`` when the caller has it."""
        self.step = step
        if self._t0 is None:
            self._t0 = time.perf_counter()
        with self.guard("steps"):
            self.steps.batch_start(batch, shape)

    def step_end(self, step: int, samples: int | None, stepped: bool = True) -> None:
        """A micro-batch ends; ``stepped``: it ended with the optimizer step, so a training step is timed
        (all its micro-batches under gradient accumulation, one observation per optimizer step). The
        counters and the histogram are updated on the sampler thread (``count_steps``)."""
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
        s = self.state
        if samples_each:
            s.inc_many("llmops_samples_total", samples_each)
        if step_seconds:
            s.observe_many("llmops_step_duration_seconds", step_seconds)
            s.set("llmops_train_step", last_step)

    def should_measure(self, step: int) -> bool:
        """Memory is measured on steps 0 and 1 and then as ``self.schedule`` says (``llmops.measure_schedule``)."""
        return self.schedule.due(step)

    def begin_measure(self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer], batch: Any) -> None:
        """Count what the forward saves for backward; on the CPU also every live byte of the step."""
        self._meter = ActivationMeter(exclude=module.parameters())
        if self.device == "cpu":  # CUDA's allocator keeps the peak itself (max_memory_allocated)
            self._live = LiveBytes.for_step(module.parameters(), optimizers, batch, module.buffers())
        self._meter.start()

    def forward_done(self) -> None:
        """Stop counting saved tensors before backward, so recomputation in backward is not counted."""
        self.steps.backward_start()
        if self._meter is not None:
            self._meter.stop()
        if self._live is not None:
            self._live.phase("backward")

    def optimizer_step(self) -> None:
        """The optimizer step begins: what it allocates is its temporaries."""
        self.steps.optimizer_start()
        if self._live is not None:
            self._live.phase("optimizer")

    @property
    def measuring(self) -> bool:
        """A memory measurement is open (``begin_measure`` ran on this micro-batch)."""
        return self._meter is not None

    def end_measure(self, module: torch.nn.Module, optimizers: list[torch.optim.Optimizer]) -> None:
        """Components of the step's memory. CPU: what the live-bytes count held at the step's peak, by
        category (they sum to the peak). CUDA: the states counted from the tensors and the activations
        saved for backward; the peak comes from the allocator on the sampling thread."""
        meter, self._meter = self._meter, None
        live, self._live = self._live, None
        if meter is None:
            return
        meter.stop()
        self.schedule.measured(self.step)
        self.saved_bytes = meter.activation_bytes
        self.state.inc("llmops_activation_sample_steps_total")
        if live is not None:
            peak = live.finish(module.parameters(), optimizers)
            c = peak.categories
            self.measured = {"params": c["params"], "grads": c["grads"], "optimizer_states": c["optimizer_states"],
                             "activations": c["activations"], "temporaries": c["temporaries"] + c["other"],
                             "peak": peak.peak_bytes}
            self.peak_phase = peak.phase
        else:
            counted = state_bytes(module, optimizers)
            self.measured = {"params": counted["params"], "grads": counted["grads"],
                             "optimizer_states": counted["optimizer_states"], "activations": meter.activation_bytes}
        for component, value in self.measured.items():
            if component != "peak":
                self.state.set("llmops_memory_actual_bytes", value, component=component)
        if live is not None:
            self._observe_peak(float(self.measured["peak"]))

    def abort_measure(self) -> None:
        self.steps.abort()
        self._t0 = None
        if self._meter is not None:
            self._meter.stop()
            self._meter = None
        if self._live is not None:
            self._live.abort()
            self._live = None

    # -- sampling ----------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.config.interval):
            self.sample()

    def sample(self) -> None:
        """Read NVML, the CUDA allocator and the step timer's completed marks once (the background thread
        calls this)."""
        s = self.state
        with self.guard("step"):
            self.count_steps()
        with self.guard("stall"):
            self._check_stall()
        with self.guard("steps"):
            self.steps.drain()
        if self._nvml is not None:
            with self.guard("nvml"):
                r = self._nvml.read()
                labels = {"gpu": str(r.index), "UUID": r.uuid}
                s.set("llmops_gpu_memory_total_bytes", r.memory_total_bytes, **labels)
                s.set("llmops_gpu_memory_used_bytes", r.memory_used_bytes, **labels)
                s.set("llmops_gpu_process_memory_bytes", r.process_memory_bytes, **labels)
                s.set("llmops_gpu_utilization_ratio", r.utilization_ratio, **labels)
                s.set("llmops_gpu_power_watts", r.power_watts, **labels)
                if r.energy_joules is not None:
                    self._count("llmops_gpu_energy_joules_total", r.energy_joules, **labels)
        if self._allocator is not None:
            with self.guard("cuda_allocator"):
                a = self._allocator.read()
                s.set("llmops_cuda_memory_reserved_bytes", a.reserved_bytes)
                self._count("llmops_cuda_ooms_total", a.num_ooms)
                self._count("llmops_cuda_alloc_retries_total", a.num_alloc_retries)
                self._observe_peak(float(a.peak_allocated_bytes))
        if isinstance(self.node, NodeSender):  # a failed send is counted by the sender, once per outage
            with self.guard("node_handoff"):
                self.node.send(self.run, self.rank, s.snapshot())

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

    def _count(self, name: str, cumulative: float, **labels: str) -> None:
        """A counter that follows a cumulative reading (its first value in full; a reset adds nothing)."""
        key = name + repr(sorted(labels.items()))
        delta = cumulative - self._last_counters.get(key, 0.0)
        self._last_counters[key] = cumulative
        self.state.inc(name, max(0.0, delta), **labels)

    def _observe_peak(self, peak: float) -> None:
        """Drift and OOM risk from a measured peak (allocator or tensors; no fixed overhead)."""
        s = self.state
        s.set("llmops_memory_actual_bytes", peak, component="peak")
        for model, est in self.prediction.items():
            if est.peak_bytes is not None:
                predicted = est.peak_bytes - (est.overhead_bytes or 0)
                s.set("llmops_memory_drift_ratio", drift_ratio(peak, predicted), model=model)
        best = self.prediction.get("refined") or self.prediction.get("document")
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


def _node_note(port: int, local_world_size: int, per_node: bool = False) -> str:
    """What local rank 0 adds to its "serving on" line about the node's other processes."""
    if local_world_size < 2:
        return ""
    if per_node:
        return f" (endpoint='node': the series of all {local_world_size} local ranks)"
    others = f"local ranks 1–{local_world_size - 1}" if local_world_size > 2 else "local rank 1"
    if not port:
        return f" ({others}: a free port each, written in each rank's run log start record as `url`)"
    return f" ({others}: ports {port + 1}–{port + local_world_size - 1}, or the next free one)"
