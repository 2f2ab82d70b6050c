"""Step-time cost of LLMOpsMonitor on a small CPU training run.

The same run with no monitor, with LLMOpsMonitor (run log on, the default, and off) and with
Lightning's DeviceStatsMonitor, alternated ``--repeats`` times in a rotating order; each run's step
time is (train end − start of step 10) / steps, so every hook of every steady step is inside the
measurement; the first step, where the preflight runs once, is printed apart.
Prints each config's median step, its median ratio to the run without a monitor of the same round
(and the range of those ratios: the noise of the machine), and what the run log costs the training
thread per step; the time inside the monitor's hooks is taken on plain steps. Then what a measured
step costs (on the CPU the live-bytes count, the real peak, and the activation meter): the same
training step plain and measured, alternated, and that cost spread over the steps the default schedule
puts between measurements at that cost (``llmops.telemetry.schedule``). Then the time issue's targets:
the monitor (phases, tokens, FLOPs and MFU with ``peak_flops`` given, on top of everything above)
under 0.5% of the step, and tokens/s and MFU
against a figure computed by hand from the run's own wall clock (a callback's timestamps, not the
monitor's), the tokens counted from the loader and N counted from the config. Last, ``endpoint="node"``:
what a local rank's hand-off to its node endpoint costs the training thread, with that endpoint serving,
stopped and stalled (``bench/node_blocking.py``; the target: zero monitor-caused blocking).
The monitor's background threads (sampler, run-log writer, exporter; a scrape's request thread) run
Python and take the GIL: their CPU seconds over the same steady steps, by thread name, against the
threads a run without the monitor has, bound what they can take from the training thread.

    .venv/bin/python bench/overhead.py [--steps 100] [--repeats 5] [--node-only] [--loops]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, DeviceStatsMonitor
from lightning.pytorch.loggers import CSVLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.node_blocking import report as node_blocking_report  # noqa: E402
from llmops import LLMOpsMonitor  # noqa: E402
from llmops.telemetry.schedule import DEFAULT_INTERVAL, stretch  # noqa: E402
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader  # noqa: E402


class HookClock:
    """Wall time spent inside the monitor on the training thread, per plain step: its per-step hooks. A
    measured step (begin_measure ran: the live-bytes count and the activation meter's saved-tensor hooks)
    is left out here; what it costs in all is measured side by side (``measured_step_cost``) and spread
    over the steps the schedule puts between measurements."""

    seconds = 0.0  # inside the monitor on plain steps, since ``reset``
    plain_steps = 0
    _step = 0.0  # the step in progress
    _measured = False

    @classmethod
    def wrap(cls, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                cls._step += time.perf_counter() - t0
        return timed

    @classmethod
    def reset(cls) -> None:
        cls.seconds, cls.plain_steps, cls._step, cls._measured = 0.0, 0, 0.0, False

    @classmethod
    def per_plain_step(cls) -> float:
        return cls.seconds / cls.plain_steps if cls.plain_steps else 0.0

    @classmethod
    def install(cls, monitor: LLMOpsMonitor) -> LLMOpsMonitor:
        for hook in ("on_train_batch_start", "on_before_backward", "on_before_optimizer_step"):
            setattr(monitor, hook, cls.wrap(getattr(monitor, hook)))
        batch_end = cls.wrap(monitor.on_train_batch_end)
        begin = monitor.monitor.begin_measure

        def end_step(*args, **kwargs):
            batch_end(*args, **kwargs)
            if not cls._measured:
                cls.seconds += cls._step
                cls.plain_steps += 1
            cls._step, cls._measured = 0.0, False

        def begin_measure(*args, **kwargs):
            cls._measured = True
            return begin(*args, **kwargs)

        monitor.on_train_batch_end = end_step  # type: ignore[method-assign]
        monitor.monitor.begin_measure = begin_measure  # type: ignore[method-assign]
        return monitor


def task_cpu_seconds(tid: int) -> float | None:
    """CPU seconds (user + system) of this process's thread ``tid``, or None once it is gone; from
    ``schedstat`` (ns), else ``stat`` (clock ticks)."""
    task = Path(f"/proc/self/task/{tid}")
    try:
        return int((task / "schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):  # gone, or a kernel without schedstat
        pass
    try:
        fields = (task / "stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return None


def thread_label(name: str) -> str:
    """A thread's name with the counter Python numbers unnamed threads by taken out, so that runs
    compare: ``Thread-12 (process_request_thread)`` -> ``Thread-N (process_request_thread)``."""
    return re.sub(r"^Thread-\d+", "Thread-N", name)


class ThreadExits:
    """The CPU seconds of every Python thread at the end of its ``run``: what a thread that exits before
    the window closes spent, which no CPU clock can read afterwards. ``install`` before threads start."""

    cpu: dict[int, tuple[str, float]] = {}  # native id -> (name, CPU seconds at exit)
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        cls._installed = True
        start = threading.Thread.start

        def start_recorded(thread: threading.Thread) -> None:
            run = thread.run

            def run_recorded() -> None:
                try:
                    run()
                finally:
                    cls.cpu[threading.get_native_id()] = (thread.name, time.thread_time())

            thread.run = run_recorded  # type: ignore[method-assign]
            start(thread)

        threading.Thread.start = start_recorded  # type: ignore[method-assign]


def thread_cpu_snapshot() -> dict[int, tuple[str, float]]:
    """Native id -> (label, CPU seconds) of every thread of this process but the main (training) one;
    threads Python does not know (torch's, native libraries') are labelled ``native:<comm>``."""
    names = {t.native_id: thread_label(t.name) for t in threading.enumerate()}
    main = threading.main_thread().native_id
    out = {}
    for entry in os.scandir("/proc/self/task"):
        tid = int(entry.name)
        if tid == main:
            continue
        cpu = task_cpu_seconds(tid)
        if cpu is None:
            continue
        if tid not in names:
            try:
                names[tid] = "native:" + Path(entry.path, "comm").read_text().strip()
            except OSError:
                names[tid] = "native:?"
        out[tid] = (names[tid], cpu)
    return out


class ThreadWindow:
    """CPU seconds per thread label between ``open`` and ``close``: a thread alive at ``close`` by its
    CPU clock, one that exited in between by ``ThreadExits``; less what each had spent at ``open``."""

    def open(self) -> None:
        self.start = thread_cpu_snapshot()
        ThreadExits.cpu.clear()

    def close(self) -> dict[str, float]:
        end = {**{tid: (thread_label(n), c) for tid, (n, c) in ThreadExits.cpu.items()}, **thread_cpu_snapshot()}
        by_label: dict[str, float] = defaultdict(float)
        for tid, (label, cpu) in end.items():
            by_label[label] += cpu - self.start.get(tid, (label, 0.0))[1]
        return dict(by_label)


class TrainTimer(Callback):
    """Wall and training-thread CPU time from the start of batch ``warmup`` to train end (steady
    state: the one-time preflight on the first batch is timed apart, as ``first``)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.window = ThreadWindow()

    def on_train_start(self, trainer, pl_module):
        self.t_start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            self.first = time.perf_counter() - self.t_start  # step 0, preflight included
        if batch_idx == self.warmup:
            self.window.open()
            self.t0, self.c0 = time.perf_counter(), time.thread_time()
            HookClock.reset()

    def on_train_end(self, trainer, pl_module):
        # Before the monitor's teardown (which stops its threads and takes a last reading): the window
        # is the steady steps only.
        self.seconds, self.cpu = time.perf_counter() - self.t0, time.thread_time() - self.c0
        self.in_monitor = HookClock.per_plain_step()
        self.threads = self.window.close()


def step_seconds(extra: list[Callback], steps: int, workdir: str,
                 warmup: int = 10) -> tuple[float, float, float, float, dict[str, float]]:
    """(wall, training-thread CPU, inside the monitor) seconds per step after ``warmup`` steps, the
    first step's seconds, and the other threads' CPU seconds by label over the same steps."""
    torch.manual_seed(0)
    cfg = CFG
    timer = TrainTimer(warmup)
    trainer = pl.Trainer(max_steps=steps + warmup, accelerator="cpu", devices=1, callbacks=[timer, *extra],
                         logger=CSVLogger(workdir), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10)
    trainer.fit(make_module(pl.LightningModule, GPT(cfg)), token_loader(256, 64, 8, n=8 * (steps + warmup)))
    for cb in extra:  # one fit per process in real use: no endpoint of an earlier fit serves in the next run
        if isinstance(cb, LLMOpsMonitor):
            cb.monitor.shutdown()
    return timer.seconds / steps, timer.cpu / steps, timer.in_monitor, timer.first, timer.threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100, help="steps timed, after 10 untimed ones")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated configs to run (none is always run)")
    ap.add_argument("--node-only", action="store_true", help='only the endpoint="node" blocking measurement')
    ap.add_argument("--loops", action="store_true", help="only the CPU per call of the background threads' loops")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("llmops").setLevel(logging.ERROR)
    if args.node_only:
        print(node_blocking_report())
        return
    if args.loops:
        print(loop_costs(args.steps))
        return
    configs = {
        "none": lambda: [],
        # with the run log (the default), and the MFU computed (peak_flops given, as a CPU run needs)
        "llmops": lambda: [HookClock.install(LLMOpsMonitor(port=0, peak_flops=PEAK_FLOPS))],
        "llmops_no_runlog": lambda: [HookClock.install(LLMOpsMonitor(port=0, runlog=False))],
        "device_stats": lambda: [DeviceStatsMonitor(cpu_stats=False)],
    }
    if args.only:
        configs = {k: v for k, v in configs.items() if k == "none" or k in args.only.split(",")}
    times: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, list[float]] = {k: [] for k in configs}
    first: dict[str, list[float]] = {k: [] for k in configs}
    inside: dict[str, list[float]] = {k: [] for k in configs}
    threads: dict[str, list[dict[str, float]]] = {k: [] for k in configs}
    ThreadExits.install()
    with tempfile.TemporaryDirectory() as workdir:
        os.environ["LLMOPS_RUN_DIR"] = workdir  # the run logs go with the rest
        step_seconds([], 5, workdir)  # warm-up: imports, allocator, threads
        names = list(configs)
        for r in range(args.repeats):
            # Alternated, so drift in machine load hits all alike, and rotated, so no config always
            # runs first (or right after another) in its round.
            for name in names[r % len(names):] + names[:r % len(names)]:
                wall, thread, in_monitor, step0, by_label = step_seconds(configs[name](), args.steps, workdir)
                threads[name].append(by_label)
                inside[name].append(in_monitor)
                times[name].append(wall)
                cpu[name].append(thread)
                first[name].append(step0)
    # Each round's ratio to that round's run without a monitor (paired), then the median over rounds.
    # Wall time carries the machine's noise (a shared VM: ±15% between runs here); the training
    # thread's CPU time (torch runs on it with OMP_NUM_THREADS=1) is what the monitor's hooks add to.
    ratios = {k: [t / b for t, b in zip(ts, times["none"], strict=True)] for k, ts in times.items()}
    cpu_ratios = {k: [t / b for t, b in zip(ts, cpu["none"], strict=True)] for k, ts in cpu.items()}
    print("| monitor | median step (ms) | paired ratio to none (range) | training-thread CPU per step (ms) "
          "| paired CPU ratio (range) |\n|---|---|---|---|---|")
    for name, ts in times.items():
        rs, cs = ratios[name], cpu_ratios[name]
        print(f"| {name} | {statistics.median(ts) * 1e3:.2f} | {statistics.median(rs):.4f} "
              f"({min(rs):.3f}–{max(rs):.3f}) | {statistics.median(cpu[name]) * 1e3:.2f} | "
              f"{statistics.median(cs):.4f} ({min(cs):.3f}–{max(cs):.3f}) |")
    print("training-thread CPU: " + ", ".join(f"overhead {k}={statistics.median(cs) - 1:+.4f}"
                                               for k, cs in cpu_ratios.items() if k != "none"))
    base_step = statistics.median(times["none"])
    for k in ("llmops", "llmops_no_runlog"):
        if k in inside:
            t = statistics.median(inside[k])
            print(f"inside the monitor on the training thread ({k}): {t * 1e6:.1f} µs per step = "
                  f"{t / base_step:.4%} of the step without a monitor (its hooks, on plain steps)")
    print("first step (preflight included, once per run): " + ", ".join(
        f"{k} {statistics.median(ts) * 1e3:.1f} ms" for k, ts in first.items()))
    med = {k: statistics.median(rs) for k, rs in ratios.items()}
    print(", ".join(f"overhead {k}={med[k] - 1:+.4f}" for k in med if k != "none")
          + f" (wall; steps={args.steps}, repeats={args.repeats}; the ranges show this machine's noise)")
    if "llmops" in med and "llmops_no_runlog" in med:
        paired = statistics.median(a / b for a, b in zip(times["llmops"], times["llmops_no_runlog"], strict=True))
        print(f"run log: {paired - 1:+.4f} of the step (llmops vs llmops_no_runlog, paired)")
    print(f"run log on the training thread: RunLogWriter.step {runlog_step_ns():.0f} ns per call (one per step)")
    if "llmops" in inside:
        t = statistics.median(inside["llmops"]) / base_step
        print(f"the monitor's hooks on the training thread: {t:.4%} of the step (one part of the time issue's "
              "0.5% target; the whole is below)")
    background = None
    for k in ("llmops", "llmops_no_runlog"):
        if k in threads:
            share = background_report(k, threads[k], threads["none"], [t * args.steps for t in times[k]])
            background = share if k == "llmops" else background
    scrape_s = scrape_cpu_seconds()
    print(f"one scrape of the endpoint: {scrape_s * 1e6:.0f} µs CPU (accept and request threads); every "
          f"{SCRAPE_INTERVAL_S:g} s (deploy/prometheus/prometheus.yml): {scrape_s / SCRAPE_INTERVAL_S:.4%} of the time")
    a = agreement()
    print(f"agreement (one window, the whole run): tokens {a['tokens']:.0f} vs {a['tokens_hand']:.0f} counted; "
          f"tokens/s {a['tokens_s']:.1f} vs {a['tokens_s_hand']:.1f} by hand "
          f"({a['tokens_s'] / a['tokens_s_hand'] - 1:+.3%}); "
          f"MFU {a['mfu']:.5f} vs {a['mfu_hand']:.5f} by hand ({a['mfu'] / a['mfu_hand'] - 1:+.3%}); target within 1%")
    base, extra = measured_step_cost()
    gap = stretch(extra / base, DEFAULT_INTERVAL) * DEFAULT_INTERVAL  # where the default schedule puts them
    print(f"a measured step (live-bytes count, CPU real peak; activation meter): +{extra * 1e3:.1f} ms on a "
          f"step of {base * 1e3:.1f} ms "
          f"({extra / base:.2f}×); the default schedule measures steps 0, 1, {DEFAULT_INTERVAL} and then every "
          f"{gap} at that cost (llmops.telemetry.schedule): {extra / base / gap:.3%} of the step, amortized "
          f"({extra / base / DEFAULT_INTERVAL:.3%} at a fixed {DEFAULT_INTERVAL})")
    if "llmops" in inside and background is not None:
        hooks, live = statistics.median(inside["llmops"]) / base_step, extra / base / gap
        total = hooks + live + background + scrape_s / SCRAPE_INTERVAL_S
        print(f"time issue target, all of it: hooks {hooks:.3%} + measured steps {live:.3%} amortized + background "
              f"threads {background:.3%} (CPU, an upper bound) + scrapes {scrape_s / SCRAPE_INTERVAL_S:.3%} = "
              f"{total:.3%} of the step (target < 0.5%): {'met' if total < 0.005 else 'NOT met'}")
    print(node_blocking_report())


PEAK_FLOPS = 1e11  # FLOP/s handed to the monitor for the CPU (no table peak there)
CFG = GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=256, block_size=64, dropout=0.1)


class Stopwatch(Callback):
    """The bench's own clock: the first batch's start and the last batch's end (placed after the monitor)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.t1 = time.perf_counter()


def agreement(steps: int = 60, batch: int = 8) -> dict[str, float]:
    """Tokens/s and MFU as the monitor reports them (one window: the whole run) and as computed by hand:
    tokens = steps × b × s, FLOPs per token 6·N + 12·L·h·s with N counted from the config (blocks, tied head,
    final norm; no position table), time from the stopwatch."""
    from llmops.vocabulary import STEP_PHASES as PHASES

    torch.manual_seed(0)
    monitor, watch = LLMOpsMonitor(port=0, runlog=False, peak_flops=PEAK_FLOPS, interval=3600), Stopwatch()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[monitor, watch], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(CFG)), token_loader(256, 64, batch, n=batch * steps))
    h, s = CFG.n_embd, CFG.block_size
    n = CFG.n_layer * (12 * h * h + 13 * h) + CFG.vocab_size * h + 2 * h
    tokens, wall = steps * batch * s, watch.t1 - watch.t0
    state = monitor.monitor.state
    phases = sum(state.get("llmops_step_phase_seconds_total", phase=p) for p in PHASES)
    return {"tokens_s": state.get("llmops_tokens_total") / phases, "tokens_s_hand": tokens / wall,
            "mfu": state.get("llmops_mfu_ratio"), "mfu_hand": tokens * (6 * n + 12 * CFG.n_layer * h * s) / wall
            / PEAK_FLOPS, "tokens": state.get("llmops_tokens_total"), "tokens_hand": tokens}


def measured_step_cost(rounds: int = 20) -> tuple[float, float]:
    """``(step seconds, extra seconds of a measured step)``: the bench's GPT step (forward, zero_grad,
    backward, AdamW) timed plain and as the monitor measures it on the CPU (the live-bytes count over the
    step, the activation meter over forward), alternated, medians."""
    from bench.gpt import lm_loss
    from llmops.dryrun.run import lightning_step
    from llmops.probes import ActivationMeter, LiveBytes

    torch.manual_seed(0)
    net = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=256, block_size=64, dropout=0.1))
    opt = torch.optim.AdamW(net.parameters())
    x = torch.randint(0, 256, (8, 65))

    def step(measured: bool) -> float:
        t0 = time.perf_counter()
        meter = ActivationMeter(exclude=net.parameters()) if measured else None
        live = LiveBytes.for_step(net.parameters(), [opt], x, net.buffers()) if measured else None
        saved = SimpleNamespace(hooks=lambda: meter) if meter is not None else None  # over forward, as the monitor
        lightning_step(net, x, lm_loss, opt, "fp32", "cpu", saved, live)  # type: ignore[arg-type]
        if live is not None:
            live.finish(net.parameters(), [opt])
        return time.perf_counter() - t0

    for _ in range(3):
        step(False)
    plain, measured = [], []
    for _ in range(rounds):
        plain.append(step(False))
        measured.append(step(True))
    return statistics.median(plain), statistics.median(measured) - statistics.median(plain)


def runlog_step_ns(calls: int = 200_000) -> float:
    """What the run log adds to the training thread per step: one ``RunLogWriter.step`` (a deque append)."""
    from llmops.runlog import RunLogWriter

    with tempfile.TemporaryDirectory() as d:
        writer = RunLogWriter(Path(d) / "rank0.jsonl", None, interval=0.5)
        writer.open("bench", 0)
        t0 = time.perf_counter()
        for i in range(calls):
            writer.step(i, 0.01)
        seconds = time.perf_counter() - t0
        writer.close()
    return seconds / calls * 1e9


SCRAPE_INTERVAL_S = 5.0  # the shipped deploy/prometheus/prometheus.yml's scrape_interval


def monitor_labels(label: str, without: set[str]) -> bool:
    """A thread is the monitor's when it bears the monitor's name (``llmops-``) or a run without the
    monitor has no thread of its label (a scrape's request thread, or anything else it brings)."""
    return label.startswith("llmops-") or label not in without


def background_report(config: str, runs: list[dict[str, float]], unmonitored: list[dict[str, float]],
                      walls: list[float]) -> float:
    """Print each thread label's CPU seconds over the steady steps (median over rounds), which of them
    are the monitor's, and return the median over rounds of the monitor's CPU / the steps' wall time."""
    without = {label for run in unmonitored for label in run}
    labels = sorted({label for run in runs for label in run} | without)
    print(f"| thread ({config} run; CPU over the timed steps) | CPU ms, median (range) | without the monitor "
          f"(ms) | the monitor's |\n|---|---|---|---|")
    for label in labels:
        mine, base = [run.get(label, 0.0) for run in runs], [run.get(label, 0.0) for run in unmonitored]
        print(f"| {label} | {statistics.median(mine) * 1e3:.2f} ({min(mine) * 1e3:.2f}–{max(mine) * 1e3:.2f}) | "
              f"{statistics.median(base) * 1e3:.2f} | {'yes' if monitor_labels(label, without) else 'no'} |")
    shares = [sum(c for label, c in run.items() if monitor_labels(label, without)) / wall
              for run, wall in zip(runs, walls, strict=True)]
    share = statistics.median(shares)
    print(f"background threads ({config}): the monitor's {share:.4%} of the steps' wall time "
          f"({min(shares):.4%}–{max(shares):.4%}; CPU seconds, an upper bound on the GIL they hold)")
    return share


def scrape_cpu_seconds(scrapes: int = 50) -> float:
    """CPU seconds one scrape of the endpoint costs this process (the exporter's accept thread and the
    request's own thread), the mean over ``scrapes`` scrapes after a short monitored fit."""
    ThreadExits.install()
    torch.manual_seed(0)
    monitor = LLMOpsMonitor(port=0, runlog=False, peak_flops=PEAK_FLOPS)
    trainer = pl.Trainer(max_steps=20, accelerator="cpu", devices=1, callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(CFG)), token_loader(256, 64, 8, n=8 * 20))
    window = ThreadWindow()
    window.open()  # the sampler and the run log have stopped with the fit; the endpoint serves on
    for _ in range(scrapes):
        with urllib.request.urlopen(monitor.metrics_url, timeout=10) as response:
            response.read()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(t.name.endswith("(process_request_thread)")
                                              for t in threading.enumerate()):
        time.sleep(0.01)  # the last request's thread ends just after the response is read
    by_label = window.close()
    monitor.monitor.shutdown()
    return (by_label.get("llmops-exporter", 0.0) + by_label.get("Thread-N (process_request_thread)", 0.0)) / scrapes


def loop_costs(steps: int = 100) -> str:
    """What one pass of each background loop costs in CPU: the sampler's ``Fit.sample`` and its parts,
    the run-log writer's ``_flush`` and its parts, each timed by its thread's CPU clock over a monitored
    fit of ``steps`` steps (the calls on the training thread, at open and close, left out)."""
    from llmops.monitor.fit import Fit
    from llmops.runlog.writer import RunLogWriter
    from llmops.telemetry.steps import StepTimer

    parts = [(Fit, "sample"), (Fit, "count_steps"), (Fit, "_check_stall"), (StepTimer, "drain"),
             (RunLogWriter, "_flush"), (RunLogWriter, "_drain"), (RunLogWriter, "_metrics_line"),
             (RunLogWriter, "_reopen_if_gone")]
    cpu: dict[str, list[float]] = defaultdict(list)

    def clocked(key: str, fn):
        def run(*args, **kwargs):
            c0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                if threading.current_thread() is not threading.main_thread():
                    cpu[key].append(time.thread_time() - c0)
        return run

    originals = [(cls, name, getattr(cls, name)) for cls, name in parts]
    for cls, name, fn in originals:
        setattr(cls, name, clocked(f"{cls.__name__}.{name}", fn))
    try:
        with tempfile.TemporaryDirectory() as workdir:
            os.environ["LLMOPS_RUN_DIR"] = workdir
            wall, *_ = step_seconds([LLMOpsMonitor(port=0, peak_flops=PEAK_FLOPS)], steps, workdir)
    finally:
        for cls, name, fn in originals:
            setattr(cls, name, fn)
    rows = [f"| {key} | {len(cs)} | {statistics.median(cs) * 1e6:.0f} | {max(cs) * 1e6:.0f} | "
            f"{sum(cs) / (steps + 10) * 1e6:.1f} |"
            for key, cs in ((f"{cls.__name__}.{name}", cpu[f"{cls.__name__}.{name}"]) for cls, name in parts) if cs]
    return (f"| background call (step {wall * 1e3:.1f} ms) | calls | CPU µs per call, median | max "
            "| µs per training step |\n|---|---|---|---|---|\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
