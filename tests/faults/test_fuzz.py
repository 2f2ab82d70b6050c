"""Generated bad input over every ``llmops estimate`` flag and every ``LLMOpsMonitor`` argument: each is
either refused in one line (exit 2, or a ``ValueError`` naming the argument) or accepted with finite,
non-negative figures. Never a traceback, never a silently absurd answer."""

from __future__ import annotations

import contextlib
import io
import json
import math
from typing import Any

import click
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llmops import LLMOpsMonitor
from llmops.cli import main
from llmops.cli.estimate_cmd import estimate
from llmops.cli.params import Name
from llmops.estimate import refined

# What people (and scripts with a bug) type: good values, edge values, and nonsense of every kind.
HOSTILE = ["0", "-1", "1", "2", "7", "64", "4096", "1.5", "-0.5", "0.9", "1e3", "1e400", "-1e400", "nan", "inf",
           "-inf", "", " ", "abc", "7B", "1.3b", "80GiB", "24GB", "0GB", "1e30", "9" * 40, "0x10", "１２",
           "bf16", "adamw", "zero3", "sdpa", "full", "cpu", "gpt2", "llama-2-7b", "☃", "--help"]
OPTIONS = {p.opts[0]: p for p in estimate.params
           if isinstance(p, click.Option) and not p.is_flag and p.opts[0] not in ("--dry-run", "--model")}
VALUE_FLAGS = sorted(OPTIONS)
# Values each flag's type accepts, so that generated command lines also reach the estimator.
GOOD = {"INT": ["1", "2", "8", "32", "4096"], "N": ["7B", "1e9", "125M"], "SIZE": ["80GB", "24GiB", "40"],
        "F": ["0.5", "1"], "SECONDS": ["10"]}


def flag_value(flag: str) -> st.SearchStrategy[str]:
    kind = OPTIONS[flag].type
    good = list(kind.choices) if isinstance(kind, Name) else GOOD.get(kind.name, [])
    return st.sampled_from(good + HOSTILE) if not good else st.one_of(st.sampled_from(good), st.sampled_from(HOSTILE))


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def numbers(obj: Any) -> list[float]:
    """Every number in a JSON document."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, (int, float)):
        return [obj]
    items = obj.values() if isinstance(obj, dict) else obj
    return [x for item in items for x in numbers(item)]


def test_every_value_flag_is_fuzzed():
    assert len(VALUE_FLAGS) >= 20 and "--tensor-parallel" in VALUE_FLAGS and "--dry-run-timeout" in VALUE_FLAGS


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from([None, "gpt2", "llama-2-7b", "mixtral-8x7b", "nope"]),
       flags=st.lists(st.sampled_from(VALUE_FLAGS), max_size=6, unique=True).flatmap(
           lambda names: st.tuples(*(st.tuples(st.just(n), flag_value(n)) for n in names))))
def test_estimate_flags_refused_in_one_line_or_answered_with_sane_figures(model, flags):
    argv = ["estimate", "--json"] + (["--model", model] if model else [])
    for flag, value in flags:
        argv += [flag, value]
    code, out, err = run_cli(argv)
    assert "Traceback" not in err
    event(f"exit {code}")
    if code == 2:
        assert out == "" and err.count("\n") == 1 and err.startswith("llmops: error:"), (argv, err)
        return
    assert code == 0 and err == "", (argv, code, err)
    figures = json.loads(out)
    for model_name in ("document", "refined"):
        assert all(math.isfinite(x) and x >= 0 for x in numbers(figures[model_name])), (argv, out)


# One hostile pool per constructor argument: its type's edge values plus values of the wrong type.
ANY_WRONG = [None, True, "", "x", -1, 0, 1.5, math.nan, math.inf, [], {}, ("a",)]
ARGUMENTS: dict[str, list[Any]] = {
    "port": [0, 9445, 65535, 65536, -1, "9445", 1.5, True],
    "addr": ["127.0.0.1", "::1", "0.0.0.0", "host-1.local", "not an addr", "", "-x", "a" * 300, 7],
    "run": ["r", "日本語", "../..", "a/b", " ", "", 3],
    "spec": [{"batch_size": 2}, {"batch_size": 0}, {"batch_size": 1.5}, {"nonsense": 1}, {"seq_len": -4},
             {"precision": "bf17"}, {"tensor_parallel": 3, "heads": 4, "hidden": 64}, {"safety": 2.0}, "gpt2"],
    "memory_budget": ["80GB", "8GiB", 10**9, "0", "-1GB", "abc", math.nan, math.inf, -5],
    "safety": [0.5, 1.0, 0.0, 1.01, -0.1],
    "on_oom_risk": ["warn", "raise", "WARN", "boom"],
    "interval": [0.5, 1.0, 0.0, -1.0, 10**9],
    "activation_interval": [1, 100, 0, -3, 2.5],
    "nvml": [False, "yes", 1],
    "basic_auth": [("u", "p"), ("u", ""), ("u",), "u:p", (1, 2)],
    "linger": [0.0, 2.0, -1.0],
    "pushgateway_url": ["http://pg:9091", "pg:9091", "ftp://x", "http://", "http://pg:port", ""],
    "serve": [False, "no", 0],
    "runlog": [False, "no"],
    "run_dir": ["/tmp/x", 5],
    "log_to_loggers": [False, "yes"],
    "log_all_ranks": [True, "yes"],
    "progress_bar": [True, 1],
    "record_memory_history": [True, "on"],
    "dry_run": [True, "yes"],
    "dry_run_timeout": [1.0, 0.0, -1.0, math.nan, math.inf],
    "peak_flops": [989.5e12, 1e9, 0.0, -1.0, math.nan, math.inf, 1e19],
    "stall_factor": [5.0, 1.5, 1000, 1.49, 1001, 0.0, -2.0],
    "stall_min_seconds": [120.0, 0.5, 0.0, -1.0, 7 * 24 * 3600.0 + 1],
}


@st.composite
def monitor_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(ARGUMENTS)), min_size=1, max_size=3, unique=True))
    return {n: draw(st.one_of(st.sampled_from(ARGUMENTS[n]), st.sampled_from(ANY_WRONG))) for n in names}


@settings(max_examples=400, deadline=None)
@given(kwargs=monitor_kwargs())
def test_monitor_arguments_refused_by_name_or_accepted_sanely(kwargs):
    try:
        callback = LLMOpsMonitor(**kwargs)
    except ValueError as e:
        event("refused")
        message = str(e)
        assert "\n" not in message and "is not allowed" in message, (kwargs, message)
        assert any(message.startswith(f"LLMOpsMonitor: {n}") or f"LLMOpsMonitor: {n}=" in message
                   or (n in ("certfile", "keyfile") and "certfile/keyfile" in message) for n in kwargs), (kwargs, e)
        return
    event("accepted")
    config = callback.config
    assert 0 <= config.port <= 65535 and 0 < config.safety <= 1 and config.interval > 0
    assert config.memory_budget is None or config.memory_budget > 0
    if config.spec is not None:
        from llmops.estimate import TrainingSpec

        est = refined(TrainingSpec(**config.overrides()))
        assert all(math.isfinite(v) and v >= 0 for v in est.components().values() if v is not None), kwargs
