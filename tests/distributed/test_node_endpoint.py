"""endpoint="node" on a real 2-rank gloo DDP run: local rank 0 serves both ranks; its loss stops no rank."""

from __future__ import annotations

import json

from tests.distributed.test_ddp import finish, free_ports, launch, results
from tests.helpers.scrape import value


def as_set(samples: list) -> set[str]:
    return {json.dumps(s, sort_keys=True) for s in samples}


def test_one_scrape_of_local_rank_zero_serves_both_ranks_as_measured(tmp_path):
    port = free_ports(2)
    finish(launch(tmp_path, "--devices", "2", "--steps", "4", "--port", str(port), "--interval", "0.2",
                           "--endpoint", "node"))
    rank0, rank1 = results(tmp_path, 2)
    assert rank0["url"] == f"http://127.0.0.1:{port}/metrics" and rank1["url"] is None  # one endpoint
    served = rank0["samples"]
    assert {lab["rank"] for n, lab, _ in served if n.startswith("llmops_")} == {"0", "1"}
    for r in (rank0, rank1):  # every series the per-rank mode would serve, with the value the rank measured
        mine = [s for s in served if s[1].get("rank") == str(r["rank"])]
        assert as_set(mine) == as_set(r["alone"])
        assert value(mine, "llmops_train_step") == r["global_step"] == 4
        assert value(mine, "llmops_comm_allreduce_bytes_total") == r["grad_bytes"] * 4
        assert value(mine, "llmops_run_end_timestamp_seconds") is not None  # its last hand-off arrived
    peak0 = value(served, "llmops_memory_actual_bytes", rank="0", component="peak")
    peak1 = value(served, "llmops_memory_actual_bytes", rank="1", component="peak")
    assert peak0 == value(rank0["alone"], "llmops_memory_actual_bytes", component="peak") and peak0 > 0
    assert peak1 == value(rank1["alone"], "llmops_memory_actual_bytes", component="peak") and peak1 > 0
    assert value(served, "llmops_monitor_errors_total", probe="node_handoff") is None


def test_the_node_endpoint_stopped_mid_run_stops_no_rank_and_is_counted_once(tmp_path):
    port = free_ports(2)
    err = finish(launch(tmp_path, "--devices", "2", "--steps", "10", "--port", str(port),
                                 "--interval", "0.1", "--sleep", "0.1", "--endpoint", "node", "--stop-node-at", "2"))
    rank0, rank1 = results(tmp_path, 2)
    assert rank0["global_step"] == rank1["global_step"] == 10  # both ranks finished fit
    assert value(rank1["alone"], "llmops_monitor_errors_total", probe="node_handoff") == 1  # once, not per send
    assert err.count("llmops: node_handoff failed") == 1, err[-3000:]  # logged once
