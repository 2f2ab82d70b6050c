"""The hooks shared by both Lightning namespaces; each hook delegates to the ``Monitor``.

Only the public Trainer API is read (``global_rank``, ``local_rank``, ``world_size``,
``precision``, ``strategy``, ``optimizers``, ``logger``, ``global_step``,
``accumulate_grad_batches``).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any, Literal

import torch
from prometheus_client import CollectorRegistry

from llmops import version
from llmops.estimate import Estimate, TrainingSpec
from llmops.integration.loggers import LoggerMetrics, log_prediction
from llmops.monitor.config import MonitorConfig
from llmops.monitor.core import Monitor
from llmops.monitor.postmortem import is_oom, postmortem_text, write_postmortem
from llmops.runlog import run_path
from llmops.spec.live import batch_shape, introspect
from llmops.telemetry.checkpoint import mark_saves, wrap_checkpoint_io
from llmops.telemetry.comm import take_user_hook
from llmops.telemetry.steps import flop_params


class MonitorCallback:
    """Predicted-versus-actual memory, OOM risk and step timing of a Lightning run, for Prometheus.

    Serves ``http://{addr}:{port + local_rank}/metrics`` (``monitor.metrics_url``). Every series
    carries ``run`` and ``rank``. Metrics (names are a public interface, see docs/metrics.md):

    - ``llmops_memory_predicted_bytes{component,model}`` bytes, predicted per device before step 1
    - ``llmops_memory_actual_bytes{component}`` bytes, measured: ``peak`` is the step's real peak (the CUDA
      allocator's; on the CPU every live tensor counted over a sampled step, and the components, with
      ``temporaries``, are what that moment held); on CUDA the other components are the states and the
      activations saved for backward
    - ``llmops_memory_drift_ratio{model}`` ratio, measured peak / predicted peak (no fixed overhead)
    - ``llmops_memory_budget_bytes`` bytes and ``llmops_memory_safety_ratio`` ratio, the OOM check's budget
    - ``llmops_oom_risk{source}`` 0/1, ``source`` = prediction, measured, trend
    - ``llmops_batch_size``, ``llmops_batch_size_max_safe{model}``, ``llmops_batch_accumulate_predicted{model}`` samples
    - ``llmops_gpus_predicted{method,phase}`` GPUs (rule of thumb, formula)
    - ``llmops_gpu_memory_total_bytes``, ``llmops_gpu_memory_used_bytes``,
      ``llmops_gpu_process_memory_bytes`` bytes and ``llmops_gpu_utilization_ratio`` ratio,
      ``{gpu,UUID}``, from NVML; absent (not 0) without a GPU
    - ``llmops_cuda_memory_reserved_bytes`` bytes, ``llmops_cuda_ooms_total``, ``llmops_cuda_alloc_retries_total``
    - ``llmops_train_step``, ``llmops_step_duration_seconds`` (histogram, seconds), ``llmops_samples_total``
    - ``llmops_activation_sample_steps_total`` steps on which activations were measured
    - ``llmops_comm_allreduce_duration_seconds`` (histogram, seconds, one observation per DDP bucket),
      ``llmops_comm_allreduce_bytes_total`` bytes, ``llmops_comm_bus_bandwidth_bytes_per_second``,
      ``llmops_comm_step_time_ratio`` ratio, ``llmops_comm_allreduce_predicted_bytes`` bytes per optimizer step,
      ``llmops_train_accumulate_grad_batches``; FSDP/DeepSpeed: one probe all-reduce at train start
    - ``llmops_checkpoint_save_duration_seconds`` (histogram, seconds), ``llmops_checkpoint_size_bytes``,
      ``llmops_checkpoint_last_success_timestamp_seconds``, ``llmops_checkpoint_saves_total``,
      ``llmops_checkpoint_failures_total`` (the failed save is re-raised), ``llmops_checkpoint_restores_total``,
      ``llmops_run_start_timestamp_seconds`` seconds (checkpoint age counts from it before the first save),
      ``llmops_run_end_timestamp_seconds`` seconds, set when ``fit`` ends normally (alerts tell a finished
      run from a dead one by it; at exit the endpoint waits up to two scrape intervals, 60 s at most, for
      one more scrape)
    - ``llmops_tokens_total`` tokens (samples × sequence length, or the non-padding tokens of a batch's 2-D
      ``attention_mask``), ``llmops_model_flops_total`` FLOPs (tokens × (6·N + 12·L·h·s), PaLM appendix B),
      ``llmops_mfu_ratio`` ratio, model FLOP/s over the device's dense peak per sampling window (``peak_flops=``
      or the GPU table, ``llmops.telemetry.device_flops``; absent where neither knows it)
    - ``llmops_step_phase_seconds_total{phase}`` seconds per phase (``data``, ``forward``, ``backward``,
      ``optimizer``, ``comm_exposed``); on CUDA timed by CUDA events, read on the sampler thread
    - ``llmops_step_time_median_ratio`` ratio, the last step's time less its exposed all-reduce over this rank's
      recent median (a straggler's own signal)
    - ``llmops_last_step_timestamp_seconds`` seconds (Unix time of the last finished step) and
      ``llmops_train_stalled`` 0/1, set by the sampler thread when no step has finished past the stall threshold
    - ``llmops_gpu_power_watts`` watts and ``llmops_gpu_energy_joules_total`` joules ``{gpu,UUID}``, from NVML;
      absent where the device does not report them
    - ``llmops_monitor_errors_total{probe}`` errors caught inside the monitor (the run went on)
    - ``llmops_build_info{version,torch,lightning,strategy,precision}`` 1

    Args:
        port: the first rank's port; each process serves on ``port + local_rank``; 0 takes a free port.
        endpoint: ``"rank"`` (default: one endpoint per process, as ``port`` says) or ``"node"``: one per node,
            on local rank 0 at ``port``, serving every local rank's series, each under its own ``rank``; the
            other local ranks' sampler threads hand their state to it over a Unix socket (never the training
            thread), and a rank not heard from for 5 intervals (at least 10 s) is dropped until it is again.
        addr: address to listen on (``"0.0.0.0"`` for a cluster's Prometheus).
        run: the run's name; default one unique per run, the same on every rank and kept across a resume
            from a checkpoint: the logger's name and version, then the start time and a short id
            (``lightning_logs-v0-20261202-031500-a1b2``; ``run-…`` without a logger, ``fast_dev_run-…``).
        spec: what to use instead of what is read from the run: a ``TrainingSpec`` (its fields that
            differ from the defaults) or a dict of its fields (every key, defaults included:
            ``spec={"optimizer": "adamw"}``).
        memory_budget: bytes, or a size like ``"8GB"``; default the GPU's memory.
        safety: fraction of the budget a run may use, in (0, 1].
        on_oom_risk: ``"warn"`` (logged, and an ``llmops.OOMRiskWarning`` through Lightning's rank-zero
            warning, which ``-W error`` or a pytest filter can turn into a stop), or ``"raise"`` to stop
            before the first step when the prediction does not fit.
        interval: seconds between NVML / allocator readings (background thread).
        activation_interval: memory is measured on steps 0 and 1 and every this many steps. Default: every
            100, further apart (up to 1,000) where a measured step costs so much more that measuring would
            take over 0.1% of the run: on the CPU a measured step runs under a live-bytes count, about a
            third slower (``llmops.telemetry.schedule``). A number given is kept exactly.
        nvml: read NVML (default: when the run uses a CUDA device).
        certfile, keyfile: PEM files for TLS; basic_auth: ``(user, password)``.
        linger: seconds to keep the process at the end of fit so a last scrape sees the final state.
        pushgateway_url: push the final state there at the end of fit.
        serve: serve the endpoint (default yes, except under ``fast_dev_run``).
        runlog: append every sample to ``<run_dir>/<run>/rank<R>.jsonl`` (``llmops report`` reads it);
            default yes, except under ``fast_dev_run``.
        run_dir: the run log's root; default ``$LLMOPS_RUN_DIR``, else ``./llmops_runs``.
        log_to_loggers: log the same figures through the trainer's loggers under ``llmops/`` keys every
            ``log_every_n_steps`` (default: when the trainer has a logger); the preflight prediction
            goes to ``log_hyperparams`` once.
        log_all_ranks: log from every rank (keys end in ``/rank<R>``) instead of rank 0 only.
        progress_bar: show ``mem`` (measured peak / budget) and ``drift`` in the progress bar.
        record_memory_history: record CUDA allocator history (costly) so an OOM post-mortem also dumps a
            snapshot for pytorch.org/memory_viz.
        dry_run: before step 1, run one training step on fake tensors (no memory) and report its exact
            peak by category as a third prediction, ``model="dryrun"``; skipped with a warning past
            ``dry_run_timeout`` seconds.
        peak_flops: the device's peak FLOP/s for the MFU (per device, in the run's matmul dtype); default the
            table's dense figure for the GPU NVML names; on the CPU the MFU is exported only with it.
        stall_factor, stall_min_seconds: the run counts as stalled when no training step has finished for
            ``max(stall_min_seconds, stall_factor × p99 of the recent step times)`` (validation and checkpoint
            saves pause the clock); the sampler thread then writes every thread's stack to
            ``<run_dir>/<run>/stall-rank<R>.txt`` and the log (and, under NCCL with the Flight Recorder on, its
            dump). Defaults 5 and 120 s.
    """

    def __init__(self, port: int = 9445, addr: str = "127.0.0.1", run: str | None = None,
                 spec: TrainingSpec | dict[str, Any] | None = None, memory_budget: int | float | str | None = None,
                 safety: float = 0.9, on_oom_risk: Literal["warn", "raise"] = "warn", interval: float = 1.0, *,
                 activation_interval: int | None = None, nvml: bool | None = None,
                 certfile: str | None = None, keyfile: str | None = None,
                 basic_auth: tuple[str, str] | None = None, linger: float = 0.0,
                 pushgateway_url: str | None = None, serve: bool | None = None,
                 runlog: bool | None = None, run_dir: str | None = None,
                 log_to_loggers: bool | None = None, log_all_ranks: bool = False, progress_bar: bool = False,
                 record_memory_history: bool = False, dry_run: bool = False, dry_run_timeout: float = 120.0,
                 peak_flops: float | None = None, stall_factor: float = 5.0, stall_min_seconds: float = 120.0,
                 endpoint: Literal["rank", "node"] = "rank",
                 _registry: CollectorRegistry | None = None,
                 _nvml_client: Any = None, _step_clock: Any = None) -> None:
        super().__init__()
        self.config = MonitorConfig.from_args(
            port=port, addr=addr, run=run, spec=spec, memory_budget=memory_budget, safety=safety,
            on_oom_risk=on_oom_risk, interval=interval, activation_interval=activation_interval,
            nvml=nvml, certfile=certfile, keyfile=keyfile, basic_auth=basic_auth, linger=linger,
            pushgateway_url=pushgateway_url, serve=serve, runlog=runlog, run_dir=run_dir, dry_run=dry_run,
            dry_run_timeout=dry_run_timeout, peak_flops=peak_flops, stall_factor=stall_factor,
            stall_min_seconds=stall_min_seconds, endpoint=endpoint)
        # test hooks, private to this process: a copy in another process makes its own
        self._process_hooks = {"registry": _registry, "nvml_client": _nvml_client, "step_clock": _step_clock}
        self._monitor: Monitor | None = None
        self._needs_preflight = True
        self._user_hook: tuple[Any, Any] = (None, None)
        for name, value in (("log_to_loggers", log_to_loggers), ("log_all_ranks", log_all_ranks),
                            ("progress_bar", progress_bar), ("record_memory_history", record_memory_history)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"LLMOpsMonitor: {name}={value!r} is not allowed; expected True or False")
        self.log_to_loggers, self.log_all_ranks = log_to_loggers, log_all_ranks
        self.progress_bar, self.record_memory_history = progress_bar, record_memory_history
        self._logger_metrics: LoggerMetrics | None = None
        self._last_logged_step = -1
        self._batch_shape: tuple[Any, ...] = (None, None)
        self._restored_run: str | None = None  # the run name a checkpoint carried
        self._stepping = True  # the current micro-batch ends with the optimizer step

    @property
    def monitor(self) -> Monitor:
        """This process's monitor (endpoint, registry, sampler thread), made on first use, never at construction."""
        if self._monitor is None:
            self._monitor = Monitor(self.config, **self._process_hooks)
        return self._monitor

    # -- pickle and deepcopy (ddp_spawn, notebooks): the settings travel, what a process holds does not --
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_monitor=None, _process_hooks={}, _logger_metrics=None, _user_hook=(None, None))
        for name in ("log", "log_dict"):  # the fitted module's, which Lightning attaches at every fit
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._process_hooks = {}

    # -- checkpointed state: a resumed run keeps its name (one series in Prometheus, one run log) --
    def state_dict(self) -> dict[str, Any]:
        return {"run": self.monitor.run} if self.monitor.run else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        run = state_dict.get("run")
        self._restored_run = run if isinstance(run, str) and run else None

    @property
    def metrics_url(self) -> str | None:
        """The URL actually served, after fit starts."""
        return self.monitor.metrics_url

    # -- hooks: one line each ----------------------------------------------------------------
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._start(trainer)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._train_start(trainer, pl_module)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batch_end(trainer, pl_module, batch)

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        self.monitor.forward_done()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self.monitor.optimizer_step()

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self.monitor.pause_stall()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self.monitor.resume_stall()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._on_exception(trainer, exception)
        with self.monitor.guard("teardown"):  # Lightning calls no teardown after an exception
            self.monitor.close(exception)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            with self.monitor.guard("teardown"):
                self.monitor.close()

    # -- what the hooks do -------------------------------------------------------------------
    def _start(self, trainer: Any) -> None:
        self._needs_preflight = True
        with self.monitor.guard("checkpoint"):
            wrap_checkpoint_io(trainer.strategy, self.monitor.state, self.monitor.guard, self.monitor.stall_paused)
            mark_saves(trainer, self.monitor.state, self.monitor.guard, self.monitor.stall_paused)
        with self.monitor.guard("comm"):
            self._user_hook = take_user_hook(trainer.strategy)
        with self.monitor.guard("loggers"):
            if self.log_to_loggers is not False and trainer.loggers and \
                    (trainer.global_rank == 0 or self.log_all_ranks):
                self._logger_metrics = LoggerMetrics(self.monitor.state,
                                                     f"/rank{trainer.global_rank}" if self.log_all_ranks else "")
        with self.monitor.guard("memory_history"):
            if self.record_memory_history and trainer.strategy.root_device.type == "cuda":
                torch.cuda.memory._record_memory_history(max_entries=100_000)

    def _train_start(self, trainer: Any, pl_module: Any) -> None:
        """Start serving and the run log here, not at setup: a checkpoint's state (the run's name) is
        restored between the two, by every strategy."""
        m = self.monitor
        with m.guard("setup"):
            device = trainer.strategy.root_device
            m.config = self.config.for_trainer(fast_dev_run=bool(trainer.fast_dev_run))
            m.start(run=self._run_name(trainer), rank=trainer.global_rank, local_rank=trainer.local_rank,
                    device_index=(device.index or 0) if device.type == "cuda" else None,
                    build_labels=self._build_labels(trainer), local_world_size=trainer.num_devices)
            m.train_start(trainer.global_step, resumed=trainer.ckpt_path is not None,
                          accumulate=trainer.accumulate_grad_batches)
            grad_bytes = sum(p.numel() * p.element_size() for p in pl_module.parameters() if p.requires_grad)
        m.start_comm(trainer.strategy.model, trainer.world_size, trainer.strategy.root_device, grad_bytes,
                     self._user_hook)

    def _batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._needs_preflight:
            self._needs_preflight = False
            self._preflight(trainer, pl_module, batch)  # may raise OOMRiskError, by design
        m, step = self.monitor, trainer.global_step  # a Lightning property: read once per hook
        self._batch_shape = batch_shape(batch)
        m.step_start(step, batch, self._batch_shape)
        # The micro-batch that ends with the optimizer step: a training step is timed to its end, and
        # memory is measured on it (once per step, optimizer states included, under accumulation).
        self._stepping = ((batch_idx + 1) % trainer.accumulate_grad_batches == 0
                          or batch_idx + 1 == trainer.num_training_batches)
        if self._stepping and m.should_measure(step):
            with m.guard("activations"):
                m.begin_measure(pl_module, trainer.optimizers, batch)

    def _batch_end(self, trainer: Any, pl_module: Any, batch: Any) -> None:
        m = self.monitor
        if m.measuring:
            with m.guard("activations"):
                m.end_measure(pl_module, trainer.optimizers)
        step = trainer.global_step
        with m.guard("steps"):
            m.step_end(step, self._batch_shape[0], stepped=self._stepping)
        if self._logger_metrics is not None or self.progress_bar:
            with m.guard("loggers"):
                self._log(trainer, pl_module, step)

    def _log(self, trainer: Any, pl_module: Any, step: int) -> None:
        """Loggers every ``log_every_n_steps`` optimizer steps, at Lightning's own step for ``self.log``
        (the optimizer steps taken before this one: 4 and 9 for the 5th and 10th); the progress bar
        every batch (cached values)."""
        if self._logger_metrics is not None and step != self._last_logged_step \
                and step % max(1, trainer.log_every_n_steps) == 0:
            self._last_logged_step = step
            self.monitor.count_steps()  # what the sampler thread has not counted yet
            metrics = self._logger_metrics.collect()
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step - 1)
        if self.progress_bar:
            s = self.monitor.state
            peak, budget = s.get("llmops_memory_actual_bytes", component="peak"), s.get("llmops_memory_budget_bytes")
            if isinstance(peak, float) and isinstance(budget, float) and budget:
                pl_module.log("mem", peak / budget, prog_bar=True, logger=False)
            drift = s.get("llmops_memory_drift_ratio", model="refined")
            if isinstance(drift, float):
                pl_module.log("drift", drift, prog_bar=True, logger=False)

    def _on_exception(self, trainer: Any, error: BaseException) -> None:
        m = self.monitor
        m.abort_measure()
        if not is_oom(error):
            return
        with m.guard("postmortem"):  # the exception itself goes on to the caller unchanged
            device = trainer.strategy.root_device
            memory = torch.cuda.mem_get_info(device) if device.type == "cuda" else None
            text = postmortem_text(m, error, trainer.global_step, self._batch_shape, memory)
            write_postmortem(run_path(self.config.run_dir, m.run), m.rank, text, self.record_memory_history)

    def _preflight(self, trainer: Any, pl_module: Any, batch: Any) -> None:
        m = self.monitor
        intro = None
        with m.guard("preflight"):
            device = trainer.strategy.root_device
            gpu_memory = self.config.memory_budget
            if gpu_memory is None and device.type == "cuda":
                gpu_memory = torch.cuda.get_device_properties(device).total_memory
            intro = introspect(pl_module, batch, precision=trainer.precision, strategy=trainer.strategy,
                               world_size=trainer.world_size, accumulate=trainer.accumulate_grad_batches,
                               optimizers=trainer.optimizers, device=device.type, gpu_memory=gpu_memory,
                               safety=self.config.safety, override=self.config.overrides())
        if intro is not None:
            extra = self._dry_run(trainer, pl_module, batch, intro.spec) if self.config.dry_run else {}
            with m.guard("preflight"):  # only OOMRiskError (on_oom_risk="raise") gets through, by design
                m.preflight(intro, is_rank_zero=trainer.global_rank == 0, extra=extra,
                            flop_params=flop_params(pl_module))
            if self._logger_metrics is not None and trainer.global_rank == 0:
                with m.guard("loggers"):
                    for logger in trainer.loggers:
                        log_prediction(logger, self._logger_metrics.hyperparams())

    def _dry_run(self, trainer: Any, pl_module: Any, batch: Any, spec: TrainingSpec) -> dict[str, Estimate]:
        from llmops.dryrun import DryRunSkipped, for_run  # fake tensors only when asked for

        with self.monitor.guard("dryrun"):
            try:
                return {"dryrun": for_run(pl_module, batch, trainer.optimizers, spec, self.config.dry_run_timeout)}
            except DryRunSkipped as e:
                if trainer.global_rank == 0:
                    logging.getLogger("llmops").warning("llmops: %s", e)
        return {}

    def _run_name(self, trainer: Any) -> str:
        """``run=``, else the name a resumed checkpoint carried, else a new one unique per run: the
        logger's name and version (``lightning_logs-v0``), or ``fast_dev_run``, or ``run``, then the
        start time and a short id (``-20261202-031500-a1b2``). Rank 0's, on every rank."""
        if self.config.run:
            return self.config.run
        if self._restored_run:
            return self._restored_run
        base = "fast_dev_run" if trainer.fast_dev_run else "run"
        logger = trainer.logger
        if logger is not None and not trainer.fast_dev_run:
            version = logger.version
            version = f"v{version}" if isinstance(version, int) else str(version or "")
            version = version[:8] if len(version) > 12 else version  # an MLflow run id: its first 8 hex
            base = "-".join(str(x) for x in (logger.name, version) if x) or base
        name = f"{base}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        return str(trainer.strategy.broadcast(name))  # every rank labels its series alike

    def _build_labels(self, trainer: Any) -> dict[str, str]:
        return {"version": version(), "torch": torch.__version__,
                "lightning": version(self._lightning_dist), "strategy": type(trainer.strategy).__name__,
                "precision": str(trainer.precision)}

    _lightning_dist = "lightning"

