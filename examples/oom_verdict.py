"""The OOM verdict, step by step: predicted before the first step, stopped on request, fixed by the batch.

``python examples/oom_verdict.py [--steps N] [--port P]``. A CPU run has no GPU memory to run out of,
so ``memory_budget`` plays the GPU: the same check a 24 GB card gets with ``memory_budget=None``.

1. Batch 64 against a 40 MB budget: the preflight says OOM risk and names the largest safe micro-batch.
2. ``on_oom_risk="raise"``: the run stops before any step with ``OOMRiskError`` (no minutes lost).
3. The run with the suggested micro-batch and gradient accumulation fits, and trains.
"""

import argparse

import lightning.pytorch as pl

from llmops import LLMOpsMonitor, OOMRiskError
from llmops.demo.run import char_gpt

BUDGET = "40MB"


def trainer(monitor, steps, accumulate=1):
    return pl.Trainer(max_steps=steps, accelerator="cpu", callbacks=[monitor], logger=False,
                      enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                      accumulate_grad_batches=accumulate)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--port", type=int, default=9445)
    args = ap.parse_args()

    print(f"== 1-2. batch 64 against a {BUDGET} budget, on_oom_risk='raise'")
    model, data, _ = char_gpt(seq_len=64, batch_size=64)
    monitor = LLMOpsMonitor(port=args.port, run="example-oom-raise", memory_budget=BUDGET, on_oom_risk="raise")
    try:
        trainer(monitor, args.steps).fit(model, data)
        raise SystemExit("expected OOMRiskError: the prediction should not fit")
    except OOMRiskError as e:
        print(f"stopped before step 1: {e}")
    refined = monitor.monitor.prediction["refined"]
    safe = refined.max_batch_size
    accumulate = -(-64 // safe)
    print(f"largest safe micro-batch {safe}: keep 64 samples per optimizer step with accumulate_grad_batches="
          f"{accumulate}")

    print(f"== 3. micro-batch {safe} × {accumulate} accumulated")
    model, data, _ = char_gpt(seq_len=64, batch_size=safe)
    monitor = LLMOpsMonitor(port=args.port, run="example-oom-fixed", memory_budget=BUDGET, on_oom_risk="raise")
    t = trainer(monitor, args.steps, accumulate)
    t.fit(model, data)
    fixed = monitor.monitor.prediction["refined"]
    peak = monitor.monitor.state.get("llmops_memory_actual_bytes", component="peak")
    print(f"trained {t.global_step} optimizer steps: predicted peak {fixed.peak_bytes / 1e6:.1f} MB, measured "
          f"{peak / 1e6:.1f} MB, budget {fixed.budget_bytes / 1e6:.1f} MB; OOM risk {fixed.oom_risk}")
