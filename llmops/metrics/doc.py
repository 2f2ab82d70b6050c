"""docs/metrics.md, generated from ``llmops.metrics.catalogue``: ``python -m llmops.metrics.doc > docs/metrics.md``."""

from __future__ import annotations

import sys

from llmops.metrics.catalogue import ABSENT_AT_ZERO, COMMON_LABELS, LABELS, RUN_LEVEL, SECTIONS, MetricSpec

HEADER = """\
# Metrics

<!-- Generated from llmops/metrics/catalogue.py by `python -m llmops.metrics.doc > docs/metrics.md`; do not edit. -->

The names are a public interface: dashboards, alert rules and users' queries depend on them, so a
name is never renamed or removed. Conventions (Prometheus practice): the prefix `llmops_`, base
units (`_bytes`, `_seconds`, `_ratio` from 0 to 1), counters end in `_total`, no unbounded label
values. Every series carries {common}. A histogram `x` is exposed as `x_bucket{{le}}`, `x_sum` and
`x_count`. Marked *rank 0*: a run-level series (every rank computes the same), exported by global
rank 0 only; join it to any rank's series `on(run)`. Marked *from 1*: a counter absent until it
counts something. Both keep each rank within its series budget (README, "Series per rank").
"""


def _name(m: MetricSpec) -> str:
    return f"`{m.name}{{{','.join(m.labels)}}}`" if m.labels else f"`{m.name}`"


def _cell(text: str) -> str:
    return text.rstrip(".").replace("|", "\\|")


def _scope(m: MetricSpec) -> str:
    if m.name in RUN_LEVEL:
        match = ", ".join(f"{k}={v}" for k, v in RUN_LEVEL[m.name].items())
        return f"; *rank 0{' (' + match + ')' if match else ''}*"
    return "; *from 1*" if m.name in ABSENT_AT_ZERO else ""


def render() -> str:
    """The whole page: conventions, the labels, then one table per section."""
    out = [HEADER.format(common=" and ".join(f"`{n}`" for n in COMMON_LABELS)), "## Labels", "",
           "| label | meaning |", "| --- | --- |"]
    out += [f"| `{name}` | {_cell(meaning)} |" for name, meaning in LABELS.items()]
    for title, metrics in SECTIONS.items():
        out += ["", f"## {title}", "", "| metric | type | unit | meaning |", "| --- | --- | --- | --- |"]
        for m in metrics:
            buckets = f" (buckets {', '.join(f'{b:g}' for b in m.buckets)})" if m.buckets else ""
            out.append(f"| {_name(m)} | {m.type} | {m.unit} | {_cell(m.help)}{buckets}{_scope(m)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
