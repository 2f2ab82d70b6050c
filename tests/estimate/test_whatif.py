"""The what-if planner: rows that say they fit really fit; a run that does not fit gets one that does."""

from hypothesis import given, settings
from hypothesis import strategies as st

from llmops.estimate import TrainingSpec, get_preset, refined
from llmops.estimate.whatif import what_if


def llama(**kw):
    return get_preset("llama-2-7b").spec.with_(gpu_memory=80 * 10**9, **kw)


def test_run_that_does_not_fit_gets_a_change_that_does():
    spec = llama(batch_size=4, seq_len=4096, world_size=8, precision="bf16-mixed")
    assert refined(spec).oom_risk is True
    rows = what_if(spec)
    assert any(r.fits for r in rows)
    assert [r.cost for r in rows] == sorted(r.cost for r in rows)


def test_smaller_micro_batch_keeps_the_global_batch():
    spec = TrainingSpec(params=350_000_000, layers=24, hidden=1024, heads=16, seq_len=1024, vocab=50257,
                        batch_size=64, precision="bf16-mixed", gpu_memory=24 * 10**9)
    rows = what_if(spec)
    first = rows[0]
    assert first.cost == 1 and "global batch kept" in first.change and first.fits
    assert first.spec.batch_size == refined(spec).max_batch_size and first.spec.global_batch == 64


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 16), s=st.sampled_from([1024, 2048, 4096]), n=st.sampled_from([1, 2, 8]),
       mem=st.sampled_from([24, 40, 80]), precision=st.sampled_from(["fp32", "bf16-mixed", "bf16"]))
def test_every_fits_row_really_fits(b, s, n, mem, precision):
    spec = llama(batch_size=b, seq_len=s, world_size=n, precision=precision).with_(gpu_memory=mem * 10**9)
    for row in what_if(spec):
        est = refined(row.spec)
        assert row.fits == (not est.oom_risk) and row.peak_bytes == est.peak_bytes
