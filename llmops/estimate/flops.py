"""Model FLOPs of a training step and the utilisation they make of a device; imports no torch.

Model FLOPs per token, as the PaLM paper (Chowdhery et al. 2022, appendix B) and nanoGPT's
``estimate_mfu`` count them: ``6·N`` for the matmuls of forward (2N) and backward (4N) with N
parameters, plus ``12·L·h·s`` for the attention scores and their weighted sum (``QKᵀ`` and ``AV``,
2·s·h per token and layer each, times 3 for forward and backward) at sequence length s.
Hardware FLOPs add what activation recomputation runs again in backward.
"""

from __future__ import annotations

import math

# The recomputation modes (llmops.vocabulary.RECOMPUTE) whose repeated FLOPs are counted: op-level ``selective``
# rebuilds about half the matmuls, depending on the policy, and is not.
COUNTED = ("none", "attention", "full")


def model_flops_per_token(params: int, layers: int | None = None, hidden: int | None = None,
                          seq_len: int | None = None) -> float:
    """``6·N + 12·L·h·s`` FLOPs per token of a training step; without ``L``, ``h`` or ``s`` (a model that
    is no transformer, or a shape not known) the attention term is left out: ``6·N``."""
    _check("params", params)
    attention = 0.0
    if layers and hidden and seq_len:
        for name, value in (("layers", layers), ("hidden", hidden), ("seq_len", seq_len)):
            _check(name, value)
        attention = 12.0 * layers * hidden * seq_len
    return 6.0 * params + attention


def hardware_flops_per_token(params: int, layers: int | None, hidden: int | None, seq_len: int | None,
                             recompute: str = "none") -> float:
    """Model FLOPs plus what recomputation repeats of the forward: ``full`` runs every layer's forward
    again (``2·N + 4·L·h·s``: ``8·N + 16·L·h·s`` in all), ``attention`` only the attention core
    (``4·L·h·s``; Korthikanti et al. 2022, section 5, their "selective")."""
    if recompute not in COUNTED:
        raise ValueError(f"recompute={recompute!r} is not allowed; allowed: {', '.join(COUNTED)}")
    base = model_flops_per_token(params, layers, hidden, seq_len)
    attention_forward = 4.0 * layers * hidden * seq_len if layers and hidden and seq_len else 0.0
    if recompute == "full":
        return base + 2.0 * params + attention_forward
    if recompute == "attention":
        return base + attention_forward
    return base


def utilization(flops: float, seconds: float, peak_flops: float | None) -> float | None:
    """Achieved FLOP/s over the peak FLOP/s (a ratio); ``None`` when the peak is unknown or no time passed."""
    if peak_flops is None or not peak_flops > 0 or not seconds > 0:
        return None
    return flops / seconds / peak_flops


def _check(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r} is not allowed; it must be a positive number")
