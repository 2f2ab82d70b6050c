"""A long CPU fit with the monitor on, for a test to kill with SIGKILL: ``python killable_run.py RUN_DIR RUN``."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from llmops import LLMOpsMonitor  # noqa: E402
from tests.helpers.models import GPT, GPTConfig, make_module, token_loader  # noqa: E402

if __name__ == "__main__":
    run_dir, run = sys.argv[1], sys.argv[2]
    monitor = LLMOpsMonitor(port=0, run=run, run_dir=run_dir, memory_budget="1GB", interval=0.1,
                            activation_interval=5)
    trainer = pl.Trainer(max_steps=1_000_000, accelerator="cpu", callbacks=[monitor], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(make_module(pl.LightningModule, GPT(GPTConfig())), token_loader(64, 16, 4, n=4096))
