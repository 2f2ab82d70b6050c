"""One rank of a 2-rank FSDP2 run on the CPU over gloo (``fully_shard`` per decoder layer and on the root,
as torchtitan and Lightning's ModelParallelStrategy wrap), measured three ways; prints one JSON line.

    python fsdp2_rank.py RANK WORLD PORT PRECISION    # PRECISION: fp32 or bf16-fsdp
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.truth import live_bytes, real_peak  # noqa: E402
from bench.zoo import hf_loss  # noqa: E402
from llmops.probes.live import LiveBytes  # noqa: E402
from llmops.spec.live import fsdp2_precision  # noqa: E402
from tests.helpers.models import llama_batch, small_llama  # noqa: E402

B, S = 4, 256


def factory() -> tuple[torch.nn.Module, dict[str, torch.Tensor], object]:
    """The dry run's ``module:factory``: the same model and a batch of the same shape (built under fake tensors)."""
    ids = torch.randint(0, 1000, (B, S))
    return small_llama(), {"input_ids": ids, "labels": ids.clone()}, hf_loss


def main() -> None:
    rank, world, port, precision = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    model = small_llama()
    full_states = sum(p.numel() for p in model.parameters()) * 4 * 4  # fp32 params, grads, two Adam moments
    policy = {"mp_policy": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)} \
        if precision == "bf16-fsdp" else {}
    for layer in model.model.layers:
        fully_shard(layer, **policy)
    fully_shard(model, **policy)
    batch = llama_batch(B, S, seed=1 + rank)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    truth = real_peak(model, batch, hf_loss, opt)  # the profiler's allocation events, 3 steps
    params = list(model.parameters())
    live = LiveBytes.for_step(params, [opt], batch, model.buffers())  # the monitor's CPU count, a 4th step
    loss = hf_loss(model, batch)
    opt.zero_grad(set_to_none=True)
    live.phase("backward")
    loss.backward()
    del loss
    live.phase("optimizer")
    opt.step()
    counted = live.finish(params, [opt])
    moments = [v for s in opt.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
    held = [*params, *(p.grad for p in params if p.grad is not None), *moments]
    print(json.dumps({"rank": rank, "truth": truth.peak_bytes, "live": counted.peak_bytes,
                      "states": live_bytes(held),
                      "full_states": full_states, "read": fsdp2_precision(model, "fp32")}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
