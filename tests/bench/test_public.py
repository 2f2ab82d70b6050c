"""bench/public.py: every row names its source and quotes its figure, and every prediction computes.
The accuracy targets are what the bench reports, not what this test asserts."""

import re

import pytest

from bench.public import FIGURES, ROWS, allocator_cache_bytes, evaluate, markdown, predict, slopes, spec_for


def _number(reported: str) -> str:
    return re.match(r"[0-9.,]+", reported).group(0)  # type: ignore[union-attr]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.key)
def test_row_is_sourced_and_predicted(row):
    assert row.source and "/" in row.source and row.setup
    assert row.figure in FIGURES
    if row.reported in ("OOM", "fits"):
        assert row.reported_bytes is None
        assert row.reported != "OOM" or "OOM" in row.quote
    else:
        assert _number(row.reported) in row.quote and row.reported_bytes > 0
    result = evaluate(row)
    assert result.predicted_bytes > 0 and result.estimate.oom_risk is not None
    assert (result.error is None) == (row.reported_bytes is None)


def test_keys_are_unique_and_every_figure_kind_but_nvidia_smi_is_scored():
    assert len({r.key for r in ROWS}) == len(ROWS)
    assert {r.figure for r in ROWS if r.reported_bytes} == {"allocated", "reserved"}


def test_reserved_and_nvidia_smi_add_their_terms_in_order():
    row = next(r for r in ROWS if r.figure == "reserved")
    spec, _ = spec_for(row)
    estimate = evaluate(row).estimate
    allocated, reserved, smi = (predict(estimate, spec, f) for f in FIGURES)
    assert reserved - allocated == allocator_cache_bytes(spec, allocated) > 0
    assert smi > reserved
    with pytest.raises(ValueError, match="figure='active'"):
        predict(estimate, spec, "active")


def test_markdown_has_a_line_per_row():
    text = markdown([evaluate(r) for r in ROWS])
    assert all(f"| {r.key} |" in text for r in ROWS) and "verdicts_right=" in text


def test_litgpt_2023_rows_train_the_adapters_the_table_counts():
    """The resource table's "Trainable parameters" column (LitGPT's own count) against the adapters planned from
    each row's architecture, rank and targets: q and v at the query and the key/value widths (Falcon's GQA)."""
    rows = [r for r in ROWS if r.source.startswith("Lightning-AI/litgpt tutorials/resource-tables.md")]
    assert len(rows) == 23
    for row in rows:
        counted = int(row.quote.split("|")[5].replace(",", ""))
        assert spec_for(row)[0].trainable_params == counted, row.key


def test_slopes_compare_what_a_sample_adds_where_a_source_measured_several_batches():
    lines = slopes([evaluate(r) for r in ROWS])
    assert [line.split(",")[0] for line in lines] == ["- phi-1_5", "- stablelm-base-alpha-3b", "- llama-2-7b"]
    assert "1.95 GB a sample reported" in lines[0]  # (10.68 − 4.82) / 3, the table's own figures


def test_the_default_safety_verdict_is_scored_beside_the_strict_one():
    """safety 1 asks "does it fit"; the CLI's default 0.9 is what a user reads. Both are counted, from one estimate."""
    results = [evaluate(r) for r in ROWS]
    close = next(r for r in results if r.row.key == "litgpt-l2-7b-lora-b4")  # 42.1 GB predicted on a 42.5 GB card
    assert close.predicted_fits and not close.verdict_right and close.default_verdict_right
    assert "verdicts_right_at_default_safety=" in markdown(results)
