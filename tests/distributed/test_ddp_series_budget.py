"""The series budget on a real 2-rank gloo DDP run that checkpoints every step: every series counted."""

from __future__ import annotations

from llmops.metrics.catalogue import SERIES_PER_RANK_BUDGET
from tests.distributed.test_ddp import finish, free_ports, launch, results
from tests.helpers.series import llmops_series, split


def test_two_ddp_ranks_with_checkpoints_stay_within_the_budget(tmp_path):
    port = free_ports(2)
    finish(launch(tmp_path, "--devices", "2", "--steps", "6", "--port", str(port), "--interval", "0.2",
                  "--ckpt-dir", str(tmp_path / "ckpt"), "--ckpt-every", "2"))
    rank0, rank1 = (r["samples"] for r in results(tmp_path, 2))
    names = {n for n, _ in llmops_series(rank0)}
    for name in ("llmops_comm_allreduce_duration_seconds_count", "llmops_checkpoint_save_duration_seconds_count",
                 "llmops_checkpoint_size_bytes", "llmops_step_phase_seconds_total", "llmops_tokens_total"):
        assert name in names, name  # all-reduce and checkpoint series are there, on the writing rank
    (per_rank0, run_level0), (per_rank1, run_level1) = split(rank0), split(rank1)
    print(f"series: rank 0 {per_rank0} per-rank + {run_level0} run-level; rank 1 {per_rank1} + {run_level1}")
    assert run_level1 == 0 and run_level0 > 0  # the prediction once per run, on rank 0
    assert "llmops_memory_predicted_bytes" not in {n for n, _ in llmops_series(rank1)}
    assert max(per_rank0, per_rank1) <= SERIES_PER_RANK_BUDGET
