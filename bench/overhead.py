"""Step-time cost of LLMOpsMonitor on a small CPU training run.

The same run with no monitor, with LLMOpsMonitor (run log on, the default, and off) and with
Lightning's DeviceStatsMonitor, alternated ``--repeats`` times; each run's step time is
(train end − train start) / steps, so every hook of every step is inside the measurement.
Prints the medians and the ratios, and what the run log costs the training thread per step.

    .venv/bin/python bench/overhead.py [--steps 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, DeviceStatsMonitor
from lightning.pytorch.loggers import CSVLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmops import LLMOpsMonitor  # noqa: E402
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader  # noqa: E402


class TrainTimer(Callback):
    def on_train_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def step_seconds(extra: list[Callback], steps: int, workdir: str) -> float:
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=4, n_head=4, n_embd=128, vocab_size=256, block_size=64, dropout=0.1)
    timer = TrainTimer()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[timer, *extra],
                         logger=CSVLogger(workdir), enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=10)
    trainer.fit(make_module(pl.LightningModule, GPT(cfg)), token_loader(256, 64, 8, n=8 * steps))
    return timer.seconds / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="", help="comma-separated configs to run (none is always run)")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("llmops").setLevel(logging.ERROR)
    configs = {
        "none": lambda: [],
        "llmops": lambda: [LLMOpsMonitor(port=0)],  # with the run log (the default)
        "llmops_no_runlog": lambda: [LLMOpsMonitor(port=0, runlog=False)],
        "device_stats": lambda: [DeviceStatsMonitor(cpu_stats=False)],
    }
    if args.only:
        configs = {k: v for k, v in configs.items() if k == "none" or k in args.only.split(",")}
    times: dict[str, list[float]] = {k: [] for k in configs}
    with tempfile.TemporaryDirectory() as workdir:
        os.environ["LLMOPS_RUN_DIR"] = workdir  # the run logs go with the rest
        step_seconds([], 5, workdir)  # warm-up: imports, allocator, threads
        for _ in range(args.repeats):
            for name, make in configs.items():  # alternated, so drift in machine load hits all alike
                times[name].append(step_seconds(make(), args.steps, workdir))
    base = statistics.median(times["none"])
    print("| monitor | median step (ms) | ratio to none |\n|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.2f} | {med / base:.4f} |")
    med = {k: statistics.median(ts) for k, ts in times.items()}
    print(", ".join(f"overhead {k}={med[k] / base - 1:+.4f}" for k in med if k != "none")
          + f" (steps={args.steps}, repeats={args.repeats})")
    if "llmops" in med and "llmops_no_runlog" in med:
        print(f"run log: {med['llmops'] / med['llmops_no_runlog'] - 1:+.4f} of the step (llmops vs llmops_no_runlog)")
    print(f"run log on the training thread: RunLogWriter.step {runlog_step_ns():.0f} ns per call (one per step)")


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


if __name__ == "__main__":
    main()
