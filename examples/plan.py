"""Planning with the estimator alone (no torch, no GPU): will it fit, what batch, how many GPUs.

``python examples/plan.py``: Llama-2-7B fine-tuning in bf16-mixed with AdamW on 80 GB GPUs.
"""

from dataclasses import replace

from llmops.estimate import estimate, get_preset
from llmops.render.tables import estimate_table, to_text
from llmops.units import fmt_bytes

spec = replace(get_preset("llama-2-7b").spec, seq_len=4096, batch_size=1, precision="bf16-mixed",
               optimizer="adamw", strategy="ddp", world_size=8, gpu_memory=80 * 10**9, device="cuda",
               attention="sdpa")  # flash attention, as every 4k-token fine-tune runs it
models = estimate(spec)
print(to_text(estimate_table(models.values(), title="Llama-2-7B, s=4096, b=1, bf16-mixed, AdamW, 80 GB")))

print("Sharding the states: the predicted peak per device for each strategy (refined model, 8 GPUs)")
for strategy in ("ddp", "zero1", "zero2", "zero3"):
    r = estimate(replace(spec, strategy=strategy))["refined"]
    print(f"  {strategy:>6}: peak {fmt_bytes(r.peak_bytes)}, OOM risk {r.oom_risk}, largest safe micro-batch "
          f"{r.max_batch_size}")

print("Full recomputation of the activations under ZeRO-3:")
r = estimate(replace(spec, strategy="zero3", recompute="full", batch_size=8))["refined"]
print(f"  b=8: peak {fmt_bytes(r.peak_bytes)}, OOM risk {r.oom_risk}, largest safe micro-batch {r.max_batch_size}")
