"""Nonsense that used to be accepted: each is one line naming the value and what is allowed, exit 2 on the
command line and ValueError at construction; an unwritable --run-dir stops the demo before training."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmops import LLMOpsMonitor
from llmops.estimate import TrainingSpec, refined
from llmops.spec.training import validate_input


def cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from llmops.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,says", [
    (["--model", "llama-2-7b", "--tensor-parallel", "64"], "must divide heads=32"),
    (["--model", "gpt2", "--global-batch", "10", "--world-size", "8", "--batch-size", "1", "--strategy", "ddp"],
     "a multiple of batch_size × world_size = 8"),
    (["--model", "gpt2", "--world-size", "8", "--strategy", "single"], "strategy='single'"),
    (["--params", "1.5"], "not a whole number of parameters"),
    (["--model", "gpt2", "--dry-run-timeout", "nan"], "seconds > 0 and finite"),
])
def test_estimate_refuses_with_one_line_and_exit_2(args, says):
    r = cli("estimate", *args)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.count("\n") == 1 and says in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("kwargs,says", [
    ({"addr": "not an addr"}, "addr='not an addr'"),
    ({"pushgateway_url": "ftp://x"}, "pushgateway_url='ftp://x'"),
    ({"spec": {"batch_size": 1.5}}, "batch_size=1.5"),
    ({"spec": {"tensor_parallel": 64, "heads": 32, "hidden": 4096}}, "tensor_parallel=64"),
    ({"spec": {"world_size": 8, "strategy": "single"}}, "world_size=8"),
    ({"dry_run_timeout": math.nan}, "dry_run_timeout=nan"),
])
def test_monitor_refuses_at_construction(kwargs, says):
    with pytest.raises(ValueError, match="is not allowed") as e:
        LLMOpsMonitor(**kwargs)
    assert says in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kwargs", [{"addr": "0.0.0.0"}, {"addr": "::1"}, {"addr": "node-7.cluster.local"},
                                    {"pushgateway_url": "pushgateway:9091"}, {"pushgateway_url": "https://pg/x"}])
def test_reasonable_settings_still_pass(kwargs):
    LLMOpsMonitor(**kwargs)


def test_demo_refuses_a_run_dir_it_cannot_write(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = cli("demo", "--run-dir", str(blocker / "runs"), "--steps", "1")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--run-dir" in r.stderr and "Traceback" not in r.stderr


@settings(max_examples=150, deadline=None)
@given(layers=st.integers(1, 200), heads=st.sampled_from([1, 2, 4, 8, 16, 32, 64]), k=st.integers(1, 256),
       tp=st.integers(1, 128), b=st.integers(1, 64), n=st.integers(1, 64), gb=st.integers(1, 4096),
       strategy=st.sampled_from(["single", "ddp", "zero1", "zero2", "zero3", "fsdp"]))
def test_accepted_specs_give_finite_non_negative_figures(layers, heads, k, tp, b, n, gb, strategy):
    spec = TrainingSpec(params=10**9, layers=layers, heads=heads, hidden=heads * k, vocab=32000, seq_len=512,
                        batch_size=b, world_size=n, tensor_parallel=tp, global_batch=gb, strategy=strategy,
                        gpu_memory=80 * 10**9)
    try:
        validate_input(spec)
    except ValueError as e:
        assert "\n" not in str(e) and "is not allowed" in str(e)
        return
    est = refined(spec)
    for value in est.components().values():
        assert value is not None and value >= 0 and math.isfinite(value)
    assert est.max_batch_size is not None and est.max_batch_size >= 0
