"""Where the time went, from one rank's log: phase totals, tokens/s, MFU and joules per token."""

from __future__ import annotations

from typing import Any

from llmops.estimate.flops import COUNTED, hardware_flops_per_token, model_flops_per_token
from llmops.runlog import RankLog
from llmops.vocabulary import STEP_PHASES


def phase_seconds(rank: RankLog) -> dict[str, float]:
    """Seconds per phase over the run (the counters' last values); empty when none was logged."""
    out = {p: rank.last("llmops_step_phase_seconds_total", phase=p) for p in STEP_PHASES}
    return {p: float(v) for p, v in out.items() if isinstance(v, (int, float))}


def joules_per_token(rank: RankLog) -> float | None:
    """The GPU's energy over the tokens between the first and the last energy reading; ``None`` without both."""
    energy = [p for pts in rank.matching("llmops_gpu_energy_joules_total").values() for p in pts]
    tokens = rank.get("llmops_tokens_total")
    if len(energy) < 2 or not tokens:
        return None
    (t0, _, e0), (t1, _, e1) = energy[0], energy[-1]
    used = _at(tokens, t1) - _at(tokens, t0)
    return (e1 - e0) / used if used > 0 and e1 >= e0 else None


def summary(rank: RankLog) -> list[tuple[str, str]]:
    """``(what, value)`` rows for the report: tokens, tokens/s, MFU, hardware FLOPs, energy."""
    rows: list[tuple[str, str]] = []
    phases = phase_seconds(rank)
    tokens = rank.last("llmops_tokens_total")
    seconds = sum(phases.values())
    if isinstance(tokens, (int, float)):
        rows.append(("tokens", f"{tokens:,.0f}"))
        if seconds > 0:
            rows.append(("tokens/s (tokens over the phases' seconds)", f"{tokens / seconds:,.1f}"))
    flops = rank.last("llmops_model_flops_total")
    if isinstance(flops, (int, float)) and seconds > 0:
        rows.append(("model FLOP/s (6·N + 12·L·h·s per token)", f"{flops / seconds:.4g}"))
    mfu = [p[2] for p in rank.get("llmops_mfu_ratio") if isinstance(p[2], (int, float))]
    if mfu:
        rows.append(("MFU, last window (range over the windows logged)",
                     f"{mfu[-1]:.2%} ({min(mfu):.2%}–{max(mfu):.2%})"))
        ratio = _hardware_ratio((rank.preflight or {}).get("spec") or {})
        if ratio is not None and ratio != 1:
            rows.append(("hardware FLOPs utilisation (recomputation counted), last window", f"{mfu[-1] * ratio:.2%}"))
    if seconds > 0:
        rows.append(("where the time went", ", ".join(f"{p} {v / seconds:.1%}" for p, v in phases.items())))
    jpt = joules_per_token(rank)
    if jpt is not None:
        rows.append(("GPU energy per token", f"{jpt:.4g} J"))
    return rows


def _hardware_ratio(spec: dict[str, Any]) -> float | None:
    """Hardware over model FLOPs per token for the spec's recomputation (the spec's N, L, h, s); ``None`` for
    op-level ``selective``, whose repeated FLOPs depend on the policy (``flops.COUNTED``)."""
    n = spec.get("active_params") or spec.get("params")
    recompute = spec.get("recompute", "none")
    if not n or recompute not in COUNTED:
        return None
    args = (n, spec.get("layers"), spec.get("hidden"), spec.get("seq_len"))
    return hardware_flops_per_token(*args, recompute) / model_flops_per_token(*args)


def _at(points: list, t: float) -> float:
    """A counter's value at time ``t``: its last point at or before it (0 before the first)."""
    value = 0.0
    for pt, _step, v in points:
        if pt > t:
            break
        value = float(v)
    return value
