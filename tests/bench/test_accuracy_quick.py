"""The quick accuracy matrix on the CPU: the refined model within 5% of measured, the dry run within 1%."""

from bench.accuracy import Case, main, max_abs_errors, run_matrix


def test_quick_matrix_refined_within_5_percent_dryrun_within_1():
    rows = run_matrix("cpu", quick=True)
    errors = max_abs_errors(rows)
    worst = max(rows, key=lambda r: abs(r.error("refined")))
    assert errors["refined"] < 0.05, f"refined off by {worst.error('refined'):+.1%} on {worst.case}"
    assert errors["dryrun"] < 0.01
    assert {r.case.precision for r in rows} == {"fp32", "bf16-mixed", "bf16-true"}
    assert {r.case.recompute for r in rows} == {"none", "full"}
    assert {r.case.attention for r in rows} == {"plain", "sdpa"}


def test_output_ends_with_the_summary_line(capsys, monkeypatch):
    monkeypatch.setattr("bench.accuracy.matrix", lambda device, quick: [Case(L=1, h=32, a=2, s=16, b=2, V=64)])
    assert main(["--quick", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("max_abs_error document=") and " refined=" in lines[-1] and " dryrun=" in lines[-1]
    assert lines[2].startswith("| L | h | a |")
