"""Next-token sampling as formulas.md §8 orders it: temperature, then top-k, then top-p, then sample.

Batched over any leading dimensions (``logits`` is ``(..., V)``), in torch, with an optional
``torch.Generator`` so a run can be repeated. Conventions:

- ``temperature=0`` is greedy (the T → 0 limit: all probability on the arg-max); T < 0 raises.
- ``top_k=None`` keeps every token; K larger than V keeps V; K < 1 raises.
- ``top_p`` is measured on the probabilities renormalised over the K tokens top-k kept
  ("among those"); P = 0 keeps only the most likely token (greedy), P = 1 keeps every token.
- Ties at the top-k boundary are broken by ``torch.topk``'s order, so exactly K tokens stay.
"""

from __future__ import annotations

import math

import torch

__all__ = ["apply_temperature", "top_k_filter", "top_p_filter", "next_token_probs", "sample"]

# Cumulative sums in float64 can land a hair under P on an exact boundary (0.5 + 0.2 vs 0.7).
_TOLERANCE = 1e-12


def _check(temperature: float, top_k: int | None, top_p: float) -> None:
    if not isinstance(temperature, (int, float)) or math.isnan(temperature) or temperature < 0:
        raise ValueError(f"temperature={temperature!r} is not allowed; expected T > 0, or 0 for greedy")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} is not allowed; expected a whole number K >= 1, or None for all tokens")
    if not isinstance(top_p, (int, float)) or not 0 <= top_p <= 1:
        raise ValueError(f"top_p={top_p!r} is not allowed; expected P in [0, 1]")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Step 1: ``logits / T``; T = 0 gives 0 on the arg-max and -inf elsewhere (greedy)."""
    _check(temperature, None, 1.0)
    if temperature == 0:
        out = torch.full_like(logits, -math.inf)
        return out.scatter(-1, logits.argmax(dim=-1, keepdim=True), 0.0)
    return logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Step 2: keep the K largest logits per row; the rest become -inf."""
    _check(1.0, top_k, 1.0)
    if top_k is None or top_k >= logits.shape[-1]:
        return logits
    kept = logits.topk(top_k, dim=-1).indices
    out = torch.full_like(logits, -math.inf)
    return out.scatter(-1, kept, logits.gather(-1, kept))


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Step 3: keep the smallest set of most likely tokens whose cumulative probability reaches P.

    ``probs`` sums to 1 per row; the result is *not* renormalised (step 4 does that).
    """
    _check(1.0, None, top_p)
    if top_p >= 1:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.double().cumsum(dim=-1) - sorted_probs.double()  # mass of the more likely tokens
    keep_sorted = before < top_p - _TOLERANCE
    keep_sorted[..., 0] = True  # P = 0: the most likely token alone
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return probs.masked_fill(~keep, 0.0)


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float = 1.0) -> torch.Tensor:
    """Steps 1–4: the distribution a token is drawn from, shape ``(..., V)``, each row summing to 1."""
    _check(temperature, top_k, top_p)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits: softmax in fp32
    logits = top_k_filter(apply_temperature(logits, temperature), top_k)
    probs = top_p_filter(torch.softmax(logits, dim=-1), top_p)
    return probs / probs.sum(dim=-1, keepdim=True)


def sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row of ``logits`` ``(..., V)``; returns ``(...)`` int64."""
    probs = next_token_probs(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
