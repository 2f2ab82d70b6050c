"""The demo: train the small GPT on the shipped text with the monitor on, then report and sample.

Every rank runs this function (``--devices N`` starts N CPU processes with DDP over gloo: Lightning
re-runs the same command for ranks 1..N-1); only rank 0 prints the table, the report and the text.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from llmops.demo.data import CharDataset, load_text
from llmops.demo.model import GPT, GPTConfig
from llmops.lightning import LLMOpsMonitor
from llmops.runlog import read_run, run_path

RUN_ENV = "LLMOPS_DEMO_RUN"  # the run's name, handed from rank 0 to the ranks Lightning starts
PROMPT = "Shall I "


@dataclass
class DemoResult:
    run_dir: Path
    steps: int = 0
    interrupted: bool = False
    report: Path | None = None
    table: str = ""
    text: str = ""
    metrics_url: str | None = None
    rank: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class CharGPT(pl.LightningModule):
    def __init__(self, config: GPTConfig, lr: float = 3e-3) -> None:
        super().__init__()
        self.model = GPT(config)
        self.lr = lr

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


class _Announce(pl.Callback):
    """Print the metrics URL once the endpoint serves (rank 0)."""

    def __init__(self, monitor: LLMOpsMonitor, echo: Callable[[str], None]) -> None:
        self.monitor, self.echo = monitor, echo

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        urls = [self.monitor.metrics_url]
        if trainer.world_size > 1:  # each rank's own URL: with --port 0 they are free ports, not consecutive
            urls = [None] * trainer.world_size
            torch.distributed.all_gather_object(urls, self.monitor.metrics_url)
        if trainer.global_rank == 0:
            self.echo("llmops demo: metrics at " + ", ".join(f"{u} (rank {r})" if len(urls) > 1 else str(u)
                                                              for r, u in enumerate(urls)))


def char_gpt(seq_len: int = 64, batch_size: int = 16, layers: int = 4, hidden: int = 128, heads: int = 4,
             seed: int = 1337) -> tuple[CharGPT, DataLoader, CharDataset]:
    """The demo's LightningModule, its shuffled loader over the shipped text, and the dataset (for decoding)."""
    data = CharDataset(load_text(), seq_len)
    pl.seed_everything(seed, verbose=False)
    config = GPTConfig(n_layer=layers, n_head=heads, n_embd=hidden, vocab_size=data.vocab_size,
                       block_size=seq_len, dropout=0.1)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    return CharGPT(config), loader, data


def run_demo(steps: int = 700, batch_size: int = 16, seq_len: int = 64, devices: int = 1,
             budget: str | None = "1GB", port: int = 9445, run_dir: str | None = None, layers: int = 4,
             hidden: int = 128, heads: int = 4, sample_chars: int = 240, seed: int = 1337,
             progress_bar: bool = True, echo: Callable[[str], None] = print) -> DemoResult:
    """Train, report and sample; ``budget`` is a size like ``"1GB"`` or ``None`` for no OOM check."""
    from llmops.report import write_report
    from llmops.report.summary import comparison_text

    module, loader, data = char_gpt(seq_len, batch_size, layers, hidden, heads, seed)
    # Leave a core to the monitor's threads and the rest of the machine: intra-op threads spin at
    # barriers, and with every core taken one busy neighbour turned 50 ms steps into 3 s ones here.
    torch.set_num_threads(min(torch.get_num_threads(), max(1, ((os.cpu_count() or 2) - 1) // devices)))
    run = os.environ.setdefault(RUN_ENV, time.strftime("demo-%Y%m%d-%H%M%S"))
    monitor = LLMOpsMonitor(port=port, run=run, memory_budget=budget, run_dir=run_dir, interval=0.5,
                            activation_interval=50)
    result = DemoResult(run_dir=run_path(run_dir, run))
    checkpoints = ModelCheckpoint(dirpath=result.run_dir / "checkpoints", every_n_train_steps=max(1, steps // 3),
                                  save_top_k=1, save_last=False)
    strategy: Any = "auto"
    if devices > 1:
        from lightning.pytorch.strategies import DDPStrategy
        strategy = DDPStrategy(process_group_backend="gloo")
    epochs = -(-steps * devices // max(1, len(data) // batch_size))  # so the progress bar counts epochs right
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=steps, max_epochs=epochs,
                         callbacks=[monitor, checkpoints, _Announce(monitor, echo)], logger=False,
                         enable_progress_bar=progress_bar, enable_model_summary=False, log_every_n_steps=10,
                         num_sanity_val_steps=0)
    try:
        trainer.fit(module, loader)
    except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit(1) after its teardown
        result.interrupted = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the report in half
        monitor.monitor.close(KeyboardInterrupt() if result.interrupted else None)
    result.steps, result.rank = trainer.global_step, trainer.global_rank
    result.metrics_url = monitor.metrics_url
    if trainer.global_rank != 0:
        return result
    _wait_for_ranks(result.run_dir, trainer.world_size)
    log = read_run(result.run_dir)
    result.table = comparison_text(log.ranks[0])
    echo(result.table)
    result.report = write_report(result.run_dir)
    echo(f"llmops demo: report {result.report} (PNGs beside it)")
    if not result.interrupted:
        g = torch.Generator().manual_seed(seed)
        out = module.model.generate(data.encode(PROMPT)[None], sample_chars, temperature=0.8, top_k=36,
                                    top_p=0.7, generator=g)
        result.text = data.decode(out[0])
        echo("llmops demo: text sampled from the model (T=0.8, top-k 36, top-p 0.7):\n\n" + result.text + "\n")
    return result


def _wait_for_ranks(run_dir: Path, world_size: int, timeout: float = 10.0) -> None:
    """Ranks close their logs on their own clocks: wait a little for all of them to end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            log = read_run(run_dir)
            if len(log.ranks) >= world_size and not log.crashed:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    logging.getLogger("llmops").warning("llmops demo: not every rank closed its run log in %s", run_dir)
