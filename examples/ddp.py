"""A DDP run on two CPU processes (gloo): each rank serves its own endpoint and writes its own log.

``python examples/ddp.py [--steps N] [--port P]``. Lightning re-runs this script for rank 1, so it
must be run as a file. Afterwards ``llmops report llmops_runs/<run>`` shows both ranks' step times.
"""

import argparse

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy

from llmops import LLMOpsMonitor
from llmops.demo.run import char_gpt

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--port", type=int, default=9445)
    args = ap.parse_args()
    model, data, _ = char_gpt(seq_len=32, batch_size=8, layers=2, hidden=64)
    monitor = LLMOpsMonitor(port=args.port, run="example-ddp")  # rank r serves port + r
    trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", devices=2,
                         strategy=DDPStrategy(process_group_backend="gloo"), callbacks=[monitor],
                         enable_progress_bar=False, logger=False, enable_checkpointing=False)
    trainer.fit(model, data)
    spec = monitor.monitor.intro.spec
    print(f"rank {trainer.global_rank}: served {monitor.metrics_url}; world_size={spec.world_size} "
          f"strategy={spec.strategy}; run log {monitor.monitor.runlog.path}")
