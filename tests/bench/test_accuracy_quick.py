"""The quick accuracy matrix on the CPU against the profiler's real peak (bench/truth.py): refined within 10%
(the issue's target), the dry run within 1% on the Hugging Face rows and 4% on the project's tiny GPT (whose
bf16 kernels allocate buffers inside themselves that no dispatch-level count sees), and the largest safe batch."""

from bench import zoo
from bench.accuracy import SAFE_CASES, Case, HFCase, main, max_abs_errors, run_matrix, safe_batch_row


def test_quick_matrix_against_the_real_peak():
    rows = run_matrix("cpu", quick=True)
    errors = max_abs_errors(rows)
    worst = max(rows, key=lambda r: abs(r.error("refined")))
    assert errors["refined"] < 0.10, f"refined off by {worst.error('refined'):+.1%} on {worst.case}"
    hf = [r for r in rows if isinstance(r.case, HFCase)]
    assert len(hf) == len(zoo.NAMES) and max(abs(r.error("dryrun")) for r in hf) < 0.01
    assert errors["dryrun"] < 0.04
    assert {r.case.precision for r in hf} == {"32-true", "bf16-mixed", "bf16-true"}
    gpt = [r.case for r in rows if isinstance(r.case, Case)]
    assert {c.recompute for c in gpt} == {"none", "full"} and {c.attention for c in gpt} == {"plain", "sdpa"}


def test_predicted_largest_batch_fits_and_one_more_does_not():
    row = safe_batch_row(SAFE_CASES[1])  # Qwen2's 152k vocabulary: the logits set the peak
    for model in ("refined", "dryrun"):
        b = row.predicted[model]
        assert 0.9 * row.true_max <= b <= row.true_max
        assert row.fits(b) and not row.fits(b + 1)


def test_output_ends_with_the_summary_line(capsys, monkeypatch):
    monkeypatch.setattr("bench.accuracy.matrix", lambda device, quick: [Case(L=1, h=32, a=2, s=16, b=2, V=64)])
    monkeypatch.setattr("bench.accuracy.SAFE_CASES", [])
    assert main(["--quick", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("max_abs_error document=") and " refined=" in lines[-1] and " dryrun=" in lines[-1]
    assert lines[2].startswith("| configuration | real peak MB |")
