"""A rank's ``Snapshot`` as bytes and back: what a local rank hands to its node endpoint."""

from __future__ import annotations

import json
import math
from types import MappingProxyType

from llmops.metrics.state import HistogramValue, Series, Snapshot

VERSION = 1


def encode(run: str, rank: int, snapshot: Snapshot) -> bytes:
    """JSON of the run, the global rank and every series (a histogram as its cumulative buckets, sum, count)."""
    series = {name: [[list(s.labels), _value(s.value)] for s in items] for name, items in snapshot.items()}
    return json.dumps({"v": VERSION, "run": run, "rank": rank, "series": series},
                      separators=(",", ":")).encode()


def decode(data: bytes) -> tuple[str, int, Snapshot]:
    """The inverse of ``encode``; ``ValueError`` for anything else."""
    try:
        doc = json.loads(data)
        if doc["v"] != VERSION:
            raise ValueError(f"hand-off version {doc['v']!r}, expected {VERSION}")
        out = {str(name): tuple(Series(tuple(str(x) for x in labels), _parse(value)) for labels, value in items)
               for name, items in doc["series"].items()}
        return str(doc["run"]), int(doc["rank"]), MappingProxyType(out)
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"not a llmops hand-off: {type(e).__name__}: {e}") from None


def _value(value: float | HistogramValue) -> float | dict:
    if isinstance(value, HistogramValue):
        # +Inf is written as null: strict JSON has no infinity.
        return {"b": [[None if math.isinf(le) else le, n] for le, n in value.buckets], "s": value.sum, "c": value.count}
    return value


def _parse(value: object) -> float | HistogramValue:
    if isinstance(value, dict):
        buckets = tuple((math.inf if le is None else float(le), int(n)) for le, n in value["b"])
        return HistogramValue(buckets, float(value["s"]), int(value["c"]))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value {value!r} is not a number")
    return float(value)
