"""formulas.md §8, step by step on known distributions, checked against a plain-Python computation."""

from __future__ import annotations

import math

import pytest
import torch

from llmops.demo.sampling import apply_temperature, next_token_probs, sample, top_k_filter, top_p_filter

T, K, P = 0.8, 36, 0.7  # formulas.md §8's example


def known_logits(v: int = 50) -> list[float]:
    # distinct, spread out, not sorted: logit i = 3·sin(1.7·i) + 0.05·i
    return [3 * math.sin(1.7 * i) + 0.05 * i for i in range(v)]


def reference(logits: list[float], t: float, k: int, p: float) -> list[float]:
    """The four steps in plain Python, written independently of llmops.demo.sampling."""
    scaled = [x / t for x in logits]
    order = sorted(range(len(scaled)), key=lambda i: -scaled[i])[:k]
    z = sum(math.exp(scaled[i]) for i in order)
    probs = {i: math.exp(scaled[i]) / z for i in order}
    kept, total = [], 0.0
    for i in order:  # descending
        kept.append(i)
        total += probs[i]
        if total >= p:
            break
    z2 = sum(probs[i] for i in kept)
    return [probs[i] / z2 if i in kept else 0.0 for i in range(len(logits))]


def test_temperature_divides_logits_and_sharpens():
    x = torch.tensor(known_logits())
    assert torch.allclose(apply_temperature(x, T), x / T)
    # softmax(x / T) ∝ softmax(x) ** (1 / T): a second computation of the same distribution
    p = torch.softmax(x.double(), -1)
    expected = p ** (1 / T) / (p ** (1 / T)).sum()
    assert torch.allclose(torch.softmax(apply_temperature(x.double(), T), -1), expected)
    assert torch.softmax(x / T, -1).max() > p.max()  # T < 1 sharpens


def test_top_k_keeps_exactly_the_k_largest():
    x = known_logits()
    out = top_k_filter(torch.tensor(x), K)
    kept = {i for i, v in enumerate(out.tolist()) if v != -math.inf}
    assert kept == set(sorted(range(len(x)), key=lambda i: -x[i])[:K])
    assert all(out[i] == torch.tensor(x)[i] for i in kept)
    assert top_k_filter(torch.tensor(x), 10_000).equal(torch.tensor(x))  # K > V keeps all


@pytest.mark.parametrize("p,kept", [(0.0, 1), (0.4, 1), (0.41, 2), (0.7, 2), (0.71, 3), (0.9, 3),
                                    (0.91, 4), (1.0, 4)])
def test_top_p_smallest_set_reaching_p(p, kept):
    probs = torch.tensor([[0.1, 0.4, 0.2, 0.3]])  # sorted: 0.4, 0.3, 0.2, 0.1
    out = top_p_filter(probs, p)
    assert int((out > 0).sum()) == kept
    assert out[0, 1] == 0.4  # the most likely always stays, unchanged (renormalising is step 4)


def test_pipeline_matches_reference_at_documented_example():
    x = known_logits()
    got = next_token_probs(torch.tensor(x, dtype=torch.float64), T, K, P)
    want = torch.tensor(reference(x, T, K, P), dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-6)
    assert 1 < int((got > 0).sum()) < K  # top-p cut inside the top-k set here
    assert got.sum().item() == pytest.approx(1.0)


def test_top_p_measured_among_the_top_k():
    # After K=2 the kept pair is renormalised to (2/3, 1/3); P=0.6 keeps only the first.
    x = torch.log(torch.tensor([0.4, 0.2, 0.2, 0.2]))
    assert (next_token_probs(x, 1.0, 2, 0.6) > 0).sum() == 1
    # Without top-k the first holds 0.4 < 0.6, so more tokens stay.
    assert (next_token_probs(x, 1.0, None, 0.6) > 0).sum() > 1


def test_greedy_conventions():
    x = torch.tensor([[0.1, 2.0, -1.0, 1.9], [3.0, 0.0, 0.0, 2.99]])
    assert sample(x, temperature=0).tolist() == [1, 0]
    assert sample(x, temperature=1.0, top_p=0.0).tolist() == [1, 0]
    assert next_token_probs(x, temperature=0).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0]]
    # tiny T approaches greedy
    assert next_token_probs(x, temperature=1e-3)[:, [1, 0]].diagonal().min() > 0.99


def test_p_one_and_no_k_keep_every_token():
    x = torch.tensor(known_logits())
    assert bool((next_token_probs(x, 1.0, None, 1.0) > 0).all())
    assert torch.allclose(next_token_probs(x, 1.0, None, 1.0), torch.softmax(x, -1))


def test_sampled_frequencies_match_renormalised_probabilities():
    x = torch.tensor(known_logits())
    probs = next_token_probs(x, T, K, P)
    n = 200_000
    g = torch.Generator().manual_seed(1234)
    draws = sample(x.expand(n, -1), T, K, P, generator=g)
    freq = torch.bincount(draws, minlength=x.numel()).double() / n
    assert bool((freq[probs == 0] == 0).all())  # nothing outside the kept set
    sigma = (probs.double() * (1 - probs.double()) / n).sqrt()
    assert bool(((freq - probs.double()).abs() <= 5 * sigma + 1e-9).all())


def test_batched_shapes_and_seeded_generator():
    x = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(0))
    a = sample(x, 0.9, 5, 0.8, generator=torch.Generator().manual_seed(7))
    b = sample(x, 0.9, 5, 0.8, generator=torch.Generator().manual_seed(7))
    assert a.shape == (2, 3) and a.dtype == torch.int64 and a.equal(b)
    probs = next_token_probs(x, 0.9, 5, 0.8)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3))
    assert bool((probs.gather(-1, a.unsqueeze(-1)) > 0).all())


@pytest.mark.parametrize("kwargs,name", [
    ({"temperature": -0.5}, "temperature"), ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k"), ({"top_k": -3}, "top_k"), ({"top_k": 2.5}, "top_k"),
    ({"top_p": -0.1}, "top_p"), ({"top_p": 1.5}, "top_p")])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        sample(torch.zeros(4), **kwargs)
