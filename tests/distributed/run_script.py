"""A monitored CPU training run in its own process(es), for the distributed and restart tests.

Lightning's DDP on the CPU relaunches this script for the other ranks, so it must be a file.
Each rank writes ``OUT/rank{global_rank}.json`` with its endpoint's samples at the end of fit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from llmops import LLMOpsMonitor  # noqa: E402
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader  # noqa: E402
from tests.helpers.scrape import scrape  # noqa: E402

HOOK_CALLS = {"n": 0}


def counting_hook(state, bucket):
    """A user's comm hook: the default all-reduce, counted."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    HOOK_CALLS["n"] += 1
    return allreduce_hook(state, bucket)


def sleep_inside_step(seconds: float) -> None:
    """A rank stuck inside a step (its stall report's stack shows this frame)."""
    time.sleep(seconds)


class Record(pl.Callback):
    def __init__(self, monitor, sleep: float, die_rank: int | None = None, die_at: int = 2, torch_hook: bool = False,
                 stall: tuple[int | None, int, float] = (None, 0, 0.0)):
        self.monitor, self.sleep, self.info = monitor, sleep, {}
        self.die_rank, self.die_at, self.torch_hook = die_rank, die_at, torch_hook
        self.stall_rank, self.stall_at, self.stall_sleep = stall

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_rank == self.stall_rank and trainer.global_step == self.stall_at:
            sleep_inside_step(self.stall_sleep)

    def on_train_start(self, trainer, pl_module):
        if self.torch_hook:
            from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

            trainer.strategy.model.register_comm_hook(None, allreduce_hook)
        self.info["start_step"] = trainer.global_step
        if self.monitor is not None:
            self.info["start_exported_step"] = self.monitor.monitor.state.get("llmops_train_step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.sleep:
            time.sleep(self.sleep)
        if trainer.global_rank == self.die_rank and trainer.global_step >= self.die_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a rank lost mid-run: no exception, no cleanup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--num-nodes", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--accumulate", type=int, default=1)
    ap.add_argument("--user-hook", action="store_true")
    ap.add_argument("--ckpt-dir")
    ap.add_argument("--ckpt-every", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--die-rank", type=int, help="this global rank kills itself (SIGKILL) at --die-at")
    ap.add_argument("--die-at", type=int, default=2)
    ap.add_argument("--stall-rank", type=int, help="this global rank sleeps inside step --stall-at")
    ap.add_argument("--stall-at", type=int, default=5)
    ap.add_argument("--stall-sleep", type=float, default=0.0)
    ap.add_argument("--stall-min-seconds", type=float, default=120.0)
    ap.add_argument("--stall-factor", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--no-monitor", action="store_true", help="the same run without llmops, for comparison")
    ap.add_argument("--torch-hook", action="store_true",
                    help="register PyTorch's own Python all-reduce hook at train start (Lightning does not on CPU)")
    args = ap.parse_args()

    pl.seed_everything(0)
    monitor = None if args.no_monitor else LLMOpsMonitor(port=args.port, run="dist-test", interval=args.interval,
                                                         stall_min_seconds=args.stall_min_seconds,
                                                         stall_factor=args.stall_factor)
    record = Record(monitor, args.sleep, args.die_rank, args.die_at, args.torch_hook,
                    (args.stall_rank, args.stall_at, args.stall_sleep))
    callbacks = [c for c in (monitor, record) if c is not None]
    if args.ckpt_dir:
        callbacks.append(ModelCheckpoint(dirpath=args.ckpt_dir, every_n_train_steps=args.ckpt_every, save_last=True))
    distributed = args.devices * args.num_nodes > 1
    strategy = (DDPStrategy(ddp_comm_hook=counting_hook) if args.user_hook else "ddp") if distributed else "auto"
    trainer = pl.Trainer(accelerator="cpu", devices=args.devices, num_nodes=args.num_nodes, strategy=strategy,
                         max_steps=args.steps, accumulate_grad_batches=args.accumulate, callbacks=callbacks,
                         logger=False, enable_checkpointing=bool(args.ckpt_dir), enable_progress_bar=False,
                         enable_model_summary=False)
    module = make_module(pl.LightningModule, GPT(GPTConfig()))
    trainer.fit(module, token_loader(64, 16, 4, n=512), ckpt_path="last" if args.resume else None)
    grad_bytes = sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    result = {"rank": trainer.global_rank, "url": monitor.metrics_url, "samples": scrape(monitor.metrics_url),
              "global_step": trainer.global_step, "grad_bytes": grad_bytes, "hook_calls": HOOK_CALLS["n"],
              **record.info}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
