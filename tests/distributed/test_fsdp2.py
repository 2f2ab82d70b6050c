"""FSDP2 (``fully_shard``) on the CPU over gloo, 2 ranks: the refined model's per-rank peak against each
rank's real peak (the profiler's allocation events), per-rank model states of 1/n, and the monitor's
live-bytes count of a sharded step (DTensor shards, storages FSDP2 frees and allocates by ``resize_``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llmops.dryrun.factory import build
from llmops.estimate import TrainingSpec, refined
from tests.helpers.cli import llmops, one_line_exit_2

pytest.importorskip("transformers")
RANK = Path(__file__).with_name("fsdp2_rank.py")
WORLD = 2


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def run_ranks(precision: str) -> list[dict[str, int]]:
    port = _port()
    procs = [subprocess.Popen([sys.executable, str(RANK), str(r), str(WORLD), port, precision],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(WORLD)]
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=240)
            assert p.returncode == 0, stderr[-2000:]
            out.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
    return out


def spec(precision: str) -> TrainingSpec:
    """The same Llama as fsdp2_rank.py, as introspection reads it (tests/estimate/test_checkpointing.py)."""
    return TrainingSpec(params=3_283_200, layers=4, hidden=256, heads=8, kv_heads=2, ffn_hidden=688, gated_mlp=True,
                        activation="silu", norm="rmsnorm", vocab=1000, seq_len=256, batch_size=4, attention="sdpa",
                        dropout=False, device="cpu", precision=precision, strategy="fsdp", world_size=WORLD,
                        largest_param=256_000)


@pytest.mark.parametrize("precision", ["fp32", "bf16-fsdp"])
def test_refined_per_rank_peak_of_a_2_rank_fsdp2_run_within_1_percent(precision):
    ranks = run_ranks(precision)
    predicted = refined(spec(precision)).peak_bytes
    # the dry run: rank 0's step of a 2-rank FSDP2 run, on fake tensors over a fake process group
    dry = build("tests.distributed.fsdp2_rank:factory").run(precision, fsdp_world_size=WORLD)
    for r in ranks:
        assert abs(predicted / r["truth"] - 1) < 0.01, (predicted, r)
        assert abs(dry.peak_bytes / r["truth"] - 1) < 0.01, (dry.peak_bytes, r)
        assert dry.state["params"] == r["full_states"] / WORLD / 4  # rank 0's shards: 1/n of the fp32 weights
        assert r["live"] == r["truth"]  # the monitor's CPU count of a sharded step, to the byte
        assert r["states"] == r["full_states"] / WORLD  # parameters, gradients, Adam's moments: 1/n each
        assert r["read"] == (precision if precision != "fp32" else None)  # introspection, off the modules
    unsharded = refined(spec(precision).with_(world_size=1)).peak_bytes
    assert abs(unsharded / ranks[0]["truth"] - 1) > 0.1  # the gathered terms are not what makes it fit


def test_fsdp2_mixed_precision_needs_fsdp_and_the_cli_plans_it():
    with pytest.raises(ValueError, match="needs strategy='fsdp'"):
        refined(spec("bf16-fsdp").with_(strategy="ddp"))
    r = llmops("estimate", "--model", "llama-3.1-8b", "--strategy", "fsdp", "--world-size", "8", "--precision",
               "bf16-fsdp", "--seq-len", "8192", "--batch-size", "2", "--recompute", "selective", "--attention",
               "sdpa", "--json")
    assert r.returncode == 0, r.stderr
    one_line_exit_2(llmops("estimate", "--model", "llama-2-7b", "--precision", "bf16-fsdp"), "bf16-fsdp",
                    "strategy='fsdp'")


def test_model_parallel_strategy_is_read_as_fsdp_over_data_parallel_ranks_with_tensor_parallel():
    import torch
    from lightning.pytorch.strategies import ModelParallelStrategy

    from llmops.spec.live import introspect
    from tests.helpers.models import small_llama

    ids = torch.zeros(2, 16, dtype=torch.long)
    strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=4)
    got = introspect(small_llama(), {"input_ids": ids, "labels": ids}, precision="bf16-true", strategy=strategy,
                     world_size=8, accumulate=1, optimizers=[], device="cpu", gpu_memory=None, safety=0.9).spec
    assert (got.strategy, got.world_size, got.tensor_parallel, got.global_batch) == ("fsdp", 2, 4, 4)
