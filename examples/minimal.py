"""The minimal use: one callback on the Trainer. ``python examples/minimal.py [--steps N] [--port P]``

The five lines that matter are marked; the rest builds a small model and its data.
"""

import argparse

import lightning.pytorch as pl

from llmops import LLMOpsMonitor  # 1
from llmops.demo.run import char_gpt

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=200)
ap.add_argument("--port", type=int, default=9445)
args = ap.parse_args()
model, data, _ = char_gpt(seq_len=64, batch_size=16)

monitor = LLMOpsMonitor(port=args.port)  # 2: serves /metrics, predicts before step 1, logs the run
trainer = pl.Trainer(max_steps=args.steps, accelerator="cpu", callbacks=[monitor])  # 3
trainer.fit(model, data)  # 4
print(f"metrics were served at {monitor.metrics_url}; run log in {monitor.monitor.runlog.path.parent}")  # 5
