"""Step-time cost of LLMOpsMonitor on a small CPU training run.

The same run with no monitor, with LLMOpsMonitor and with Lightning's DeviceStatsMonitor,
alternated ``--repeats`` times; each run's step time is (train end − train start) / steps,
so every hook of every step is inside the measurement. Prints the medians and the ratios.

    .venv/bin/python bench/overhead.py [--steps 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import logging
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
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("llmops").setLevel(logging.ERROR)
    configs = {
        "none": lambda: [],
        "llmops": lambda: [LLMOpsMonitor(port=0)],
        "device_stats": lambda: [DeviceStatsMonitor(cpu_stats=False)],
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    with tempfile.TemporaryDirectory() as workdir:
        step_seconds([], 5, workdir)  # warm-up: imports, allocator, threads
        for _ in range(args.repeats):
            for name, make in configs.items():  # alternated, so drift in machine load hits all alike
                times[name].append(step_seconds(make(), args.steps, workdir))
    base = statistics.median(times["none"])
    print("| monitor | median step (ms) | ratio to none |\n|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med * 1e3:.2f} | {med / base:.4f} |")
    print(f"overhead llmops={statistics.median(times['llmops']) / base - 1:+.4f} "
          f"device_stats={statistics.median(times['device_stats']) / base - 1:+.4f} "
          f"(steps={args.steps}, repeats={args.repeats})")


if __name__ == "__main__":
    main()
