"""A monitored CPU training run in its own process(es), for the distributed and restart tests.

Lightning's DDP on the CPU relaunches this script for the other ranks, so it must be a file.
Each rank writes ``OUT/rank{global_rank}.json`` with its endpoint's samples at the end of fit. With
``--endpoint node`` local rank 1 serves nothing: it writes what the per-rank mode would have served
(``alone``), and rank 0 scrapes its node endpoint once that has arrived there.
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
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from llmops import LLMOpsMonitor  # noqa: E402
from llmops.exporter import LLMOpsCollector  # noqa: E402
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
                 stall: tuple[int | None, int, float] = (None, 0, 0.0), stop_node_at: int | None = None):
        self.monitor, self.sleep, self.info = monitor, sleep, {}
        self.die_rank, self.die_at, self.torch_hook = die_rank, die_at, torch_hook
        self.stall_rank, self.stall_at, self.stall_sleep = stall
        self.stop_node_at = stop_node_at

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
        m = self.monitor.monitor if self.monitor is not None else None
        if trainer.global_rank == 0 and trainer.global_step == self.stop_node_at and m is not None:
            m.session.node.close()  # the node endpoint goes away mid-run: its hand-off socket and its HTTP server
            m.exporter.close()
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
    ap.add_argument("--endpoint", default="rank")
    ap.add_argument("--stop-node-at", type=int, help="rank 0 closes its node endpoint after this step")
    ap.add_argument("--no-monitor", action="store_true", help="the same run without llmops, for comparison")
    ap.add_argument("--torch-hook", action="store_true",
                    help="register PyTorch's own Python all-reduce hook at train start (Lightning does not on CPU)")
    args = ap.parse_args()

    pl.seed_everything(0)
    monitor = None if args.no_monitor else LLMOpsMonitor(port=args.port, run="dist-test", interval=args.interval,
                                                         stall_min_seconds=args.stall_min_seconds,
                                                         stall_factor=args.stall_factor, endpoint=args.endpoint)
    record = Record(monitor, args.sleep, args.die_rank, args.die_at, args.torch_hook,
                    (args.stall_rank, args.stall_at, args.stall_sleep), args.stop_node_at)
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    alone = served_alone(monitor) if monitor is not None else []
    if args.endpoint == "node" and trainer.global_rank == 0 and args.stop_node_at is None:
        samples = scrape_when_arrived(monitor.metrics_url, out / "rank1.json")
    elif monitor is None or not monitor.metrics_url or args.stop_node_at is not None:
        samples = []  # nothing served here (rank 1 under endpoint="node"), or no more (the endpoint was stopped)
    else:
        samples = scrape(monitor.metrics_url)
    result = {"rank": trainer.global_rank, "url": monitor.metrics_url, "samples": samples, "alone": alone,
              "global_step": trainer.global_step, "grad_bytes": grad_bytes, "hook_calls": HOOK_CALLS["n"],
              **record.info}
    path = out / f"rank{trainer.global_rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(result))
    os.replace(path.with_suffix(".tmp"), path)  # whole, for a rank that waits on it


def served_alone(monitor) -> list:
    """What the per-rank mode serves for this rank: the same collector on a registry of its own."""
    m = monitor.monitor
    registry = CollectorRegistry()
    registry.register(LLMOpsCollector(m.state, run=m.run, rank=m.rank))
    text = generate_latest(registry).decode()
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def scrape_when_arrived(url: str, other: Path, limit_s: float = 60.0) -> list:
    """Rank 0's node endpoint, once rank 1's last hand-off has reached it (rank 1 writes ``other`` after
    its fit, so its final state is on the way); after ``limit_s``, whatever it serves then."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if other.exists():
            expected = sorted(json.dumps(s, sort_keys=True) for s in json.loads(other.read_text())["alone"])
            samples = scrape(url)
            if sorted(json.dumps(s, sort_keys=True) for s in samples if s[1].get("rank") == "1") == expected:
                return samples
        time.sleep(0.1)
    return scrape(url)


if __name__ == "__main__":
    main()
