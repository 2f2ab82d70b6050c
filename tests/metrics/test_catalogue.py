"""The declarative metric list against the binding contract (shared/docs/metrics.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmops.metrics.catalogue import (
    ABSENT_AT_ZERO,
    BY_NAME,
    COMMON_LABELS,
    METRICS,
    RUN_LEVEL,
    SUFFIX_UNITS,
    UNITS,
    MetricSpec,
)

CONTRACT = Path(__file__).resolve().parents[3] / "shared" / "docs" / "metrics.md"
# A table row: | `llmops_name{label,label}` | type | meaning |
ROW = re.compile(r"^\|\s*`(llmops_\w+)(?:\{([^}]*)\})?`\s*\|\s*(\w+)\s*\|", re.MULTILINE)


# Sections headed "(added with the <name> issue)" bind once that issue is built: until then a metric of
# theirs that is listed must match, and one that is not yet listed is left for that issue (time: #16,
# ecosystem: #14). Move a name here when its issue lands.
LANDED_SECTIONS: set[str] = {"ecosystem", "time"}
PENDING = re.compile(r"^## .*\(added with the ([\w-]+) issue\)", re.MULTILINE)


def _contract(binding_only: bool = True) -> str:
    """The contract's text; without the sections of issues not built yet when ``binding_only``."""
    if not CONTRACT.is_file():
        pytest.skip(f"metric contract not found at {CONTRACT} (checkout without the shared docs)")
    text = CONTRACT.read_text()
    if not binding_only:
        return text
    parts = re.split(r"(?=^## )", text, flags=re.MULTILINE)
    kept = [p for p in parts if not (m := PENDING.match(p)) or m.group(1) in LANDED_SECTIONS]
    return "".join(kept)


def test_pending_sections_metrics_already_listed_match_the_contract() -> None:
    for name, labels, kind in ROW.findall(_contract(binding_only=False)):
        if name in BY_NAME:
            assert BY_NAME[name].type == kind, name
            expected = {label.strip() for label in labels.split(",") if label.strip()}
            assert set(BY_NAME[name].labels) == expected, name


def test_every_contract_metric_is_listed_with_its_type_and_labels() -> None:
    rows = ROW.findall(_contract())
    assert len(rows) >= 25, "the contract parser found too few rows; did the table format change?"
    for name, labels, kind in rows:
        assert name in BY_NAME, f"{name} is in metrics.md but not in llmops.metrics.catalogue.METRICS"
        spec = BY_NAME[name]
        assert spec.type == kind, f"{name}: contract says {kind}, METRICS says {spec.type}"
        expected = {label.strip() for label in labels.split(",") if label.strip()}
        assert set(spec.labels) == expected, f"{name}: contract labels {expected}, METRICS {spec.labels}"


def test_every_metric_named_in_the_contract_text_is_listed() -> None:
    # Catches names mentioned in prose too, e.g. llmops_cuda_alloc_retries_total.
    for name in set(re.findall(r"\bllmops_\w+", _contract())):
        assert name in BY_NAME, f"{name} is mentioned in metrics.md but not listed"


def test_contract_common_labels_match() -> None:
    text = _contract()
    for label in COMMON_LABELS:
        assert re.search(rf"^\|\s*`{label}`\s*\|\s*every series", text, re.MULTILINE), label


def test_project_metrics_are_listed() -> None:
    expected = {
        "llmops_memory_budget_bytes": ("gauge", "bytes"),
        "llmops_memory_safety_ratio": ("gauge", "ratio"),
        "llmops_batch_accumulate_predicted": ("gauge", "count"),
        "llmops_cuda_alloc_retries_total": ("counter", "count"),
        "llmops_activation_sample_steps_total": ("counter", "count"),
    }
    for name, (kind, unit) in expected.items():
        assert (BY_NAME[name].type, BY_NAME[name].unit) == (kind, unit), name


def test_names_follow_prometheus_conventions() -> None:
    assert len(BY_NAME) == len(METRICS), "duplicate metric names"
    for spec in METRICS:
        assert spec.name.startswith("llmops_"), spec.name
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        assert spec.unit in UNITS, spec.name
        stem = spec.name.removesuffix("_total")
        if spec.unit in SUFFIX_UNITS:
            assert stem.endswith("_" + spec.unit), spec.name
        for unit in SUFFIX_UNITS:  # a unit suffix in the name is the metric's real unit
            if stem.endswith("_" + unit):
                assert spec.unit == unit, spec.name
                break
        for banned in ("_mib", "_mb", "_gb", "_gib", "_percent", "_ms", "_milliseconds"):
            assert banned not in spec.name, spec.name
        assert not set(spec.labels) & set(COMMON_LABELS), spec.name
        assert spec.help.endswith("."), spec.name


def test_histogram_buckets_span_their_range() -> None:
    # LLM scale: a small fine-tune's step to a large model's; an all-reduce on NVLink to a slow network;
    # a checkpoint on local disk to a sharded one on network storage.
    spans = {"llmops_step_duration_seconds": (0.1, 15), "llmops_comm_allreduce_duration_seconds": (0.005, 0.5),
             "llmops_checkpoint_save_duration_seconds": (10, 600)}
    for name, (low, high) in spans.items():
        buckets = BY_NAME[name].buckets
        assert buckets is not None and buckets[0] <= low and buckets[-1] >= high, name
    for spec in METRICS:
        if spec.type == "histogram":
            assert spec.buckets and list(spec.buckets) == sorted(set(spec.buckets)), spec.name
            assert len(spec.buckets) <= 6, f"{spec.name}: each bucket is a series per rank (the series budget)"
            ratios = [b / a for a, b in zip(spec.buckets, spec.buckets[1:], strict=False)]
            assert max(ratios) <= 10, f"{spec.name}: a gap over 10x leaves histogram_quantile blind"


def test_run_level_and_absent_at_zero_name_real_series() -> None:
    for name, match in RUN_LEVEL.items():
        assert name in BY_NAME and set(match) <= set(BY_NAME[name].labels), name
    assert all(BY_NAME[name].type == "counter" for name in ABSENT_AT_ZERO)


HISTOGRAM = {"type": "histogram", "name": "llmops_x_seconds", "unit": "seconds"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "memory_bytes"}, "llmops_"),
        ({"name": "llmops_x_bytes", "type": "counter"}, "_total"),
        ({"name": "llmops_x_total"}, "_total"),
        ({"name": "llmops_x_mib"}, "ends in _bytes"),
        ({"labels": ("rank",)}, "labels"),
        ({"labels": ("gpu", "gpu")}, "labels"),
        ({"unit": "mebibytes"}, "unit"),
        ({"buckets": (1.0,)}, "buckets"),
        ({**HISTOGRAM, "buckets": (2.0, 1.0)}, "buckets"),
        ({**HISTOGRAM, "buckets": (1.0, float("inf"))}, "buckets"),
        (HISTOGRAM, "buckets"),
        ({"help": ""}, "help"),
    ],
)
def test_spec_rejects_convention_breaks(kwargs: dict, message: str) -> None:
    fields = {"name": "llmops_x_bytes", "type": "gauge", "unit": "bytes", "labels": (), "help": "X."}
    with pytest.raises(ValueError, match=message):
        MetricSpec(**{**fields, **kwargs})


def test_the_callback_docstring_names_every_metric() -> None:
    """Users read the metrics off ``help(LLMOpsMonitor)``: a metric added to the list must be documented there."""
    from llmops import LLMOpsMonitor

    doc = LLMOpsMonitor.__doc__ or ""
    assert [m.name for m in METRICS if m.name not in doc] == []
