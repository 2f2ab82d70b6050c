"""Count the series an endpoint exposes, split into per-rank and run-level (rank 0's predictions)."""

from __future__ import annotations

from llmops.metrics.catalogue import RUN_LEVEL


def llmops_series(samples: list[tuple[str, dict[str, str], float]]) -> list[tuple[str, dict[str, str]]]:
    """Every llmops series of a scrape (a histogram's buckets, sum and count each count once)."""
    return [(n, lab) for n, lab, _ in samples if n.startswith("llmops_") and not n.endswith("_created")]


def is_run_level(name: str, labels: dict[str, str]) -> bool:
    match = RUN_LEVEL.get(name)
    return match is not None and all(labels.get(k) == v for k, v in match.items())


def split(samples: list[tuple[str, dict[str, str], float]]) -> tuple[int, int]:
    """(per-rank series, run-level series) of one rank's scrape."""
    series = llmops_series(samples)
    run_level = sum(is_run_level(n, lab) for n, lab in series)
    return len(series) - run_level, run_level
