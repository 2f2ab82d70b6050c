"""Read a run directory back: one ``RankLog`` per ``rank<R>.jsonl``, a torn last line skipped."""

from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Point = tuple[float, float | None, Any]  # (unix time, train step, value)
# A step record exactly as the writer formats it: read without the JSON parser (most of a long log).
_STEP_LINE = re.compile(r'\{"kind": "step", "t": (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?), "step": (-?\d+), '
                        r'"seconds": (-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\}\n?')


class Steps:
    """``(step, unix time, seconds)`` per training step, in three typed arrays (24 bytes a step, not
    ~150 as tuples): a month-long run's 10M steps take 240 MB. Iterates and indexes as tuples."""

    def __init__(self) -> None:
        self.step, self.t, self.seconds = array("q"), array("d"), array("d")

    def append(self, item: tuple[int, float, float]) -> None:
        self.step.append(item[0])
        self.t.append(item[1])
        self.seconds.append(item[2])

    def __len__(self) -> int:
        return len(self.step)

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        return zip(self.step, self.t, self.seconds, strict=True)

    def __getitem__(self, i: int) -> tuple[int, float, float]:
        return self.step[i], self.t[i], self.seconds[i]

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, (Steps, list)) else NotImplemented

    def __repr__(self) -> str:
        return f"Steps({len(self)} steps)"


@dataclass
class RankLog:
    """What one rank wrote in its last session (a re-run under the same name appends a new one)."""

    path: Path
    start: dict[str, Any] = field(default_factory=dict)
    preflight: dict[str, Any] | None = None
    steps: Steps = field(default_factory=Steps)  # (step, unix time, seconds)
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[Point]] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    stalls: list[dict[str, Any]] = field(default_factory=list)  # "stall" and "stall_end" records, in order
    records: int = 0
    bad_lines: int = 0  # torn by a kill mid-write, or not JSON
    last_t: float | None = None

    @property
    def rank(self) -> int:
        return int(self.start.get("rank", _rank_from_name(self.path)))

    @property
    def crashed(self) -> bool:
        """No ``end`` record: the process died (OOM, SIGKILL) before the monitor closed."""
        return self.end is None

    @property
    def last_step(self) -> int | None:
        if self.steps:
            return self.steps[-1][0]
        points = self.get("llmops_train_step")
        return int(points[-1][2]) if points else None

    def get(self, name: str, **labels: str) -> list[Point]:
        """The points of the one series ``name{labels}``; ``[]`` when it was never written."""
        return self.series.get((name, _key(labels)), [])

    def matching(self, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], list[Point]]:
        """Every series of ``name`` whose labels include ``labels``, by its full label set."""
        return {lab: pts for (n, lab), pts in self.series.items()
                if n == name and all(dict(lab).get(k) == v for k, v in labels.items())}

    def last(self, name: str, **labels: str) -> Any:
        """The last value written for ``name{labels}``, or ``None``."""
        points = self.get(name, **labels)
        return points[-1][2] if points else None


@dataclass
class RunLog:
    path: Path
    ranks: dict[int, RankLog]

    @property
    def run(self) -> str:
        for r in self.ranks.values():
            if r.start.get("run"):
                return str(r.start["run"])
        return self.path.name

    @property
    def crashed(self) -> bool:
        return any(r.crashed for r in self.ranks.values())


def read_run(path: str | os.PathLike[str]) -> RunLog:
    """Read ``path``: a run directory of ``rank<R>.jsonl`` files, or one such file."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("rank*.jsonl"), key=_rank_from_name)
    if not files:
        raise FileNotFoundError(f"no run log in {path}: expected rank<R>.jsonl files (llmops_runs/<run>/)")
    ranks = {}
    for f in files:
        r = read_rank(f)
        ranks[r.rank] = r
    return RunLog(path if path.is_dir() else path.parent, ranks)


def read_rank(path: Path) -> RankLog:
    """One rank's log. A line that is not JSON (torn by a kill), or a record that is not what its kind
    should be (a field missing or of the wrong type), is skipped and counted in ``bad_lines``."""
    out = RankLog(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            fast = _STEP_LINE.fullmatch(line)
            if fast:  # inlined: this branch runs once per training step
                t = float(fast[1])
                out.steps.step.append(int(fast[2]))
                out.steps.t.append(t)
                out.steps.seconds.append(float(fast[3]))
                out.records += 1
                out.last_t = t
                continue
            try:
                rec = json.loads(line)
                kind, parsed = _parse(rec)
            except (ValueError, KeyError, TypeError, AttributeError):
                out.bad_lines += 1
                continue
            if kind == "start":  # a new session under the same name: keep only the last
                out = RankLog(path, bad_lines=out.bad_lines)
                out.start = rec
            elif kind == "preflight":
                out.preflight = rec
            elif kind == "step":
                out.steps.append(parsed)
            elif kind == "metrics":
                t, step, values = parsed
                for name, labels, value in values:
                    out.series.setdefault((name, _key(labels)), []).append((t, step, value))
            elif kind == "end":
                out.end = rec
            elif kind in ("stall", "stall_end"):
                out.stalls.append(rec)
            out.records += 1
            out.last_t = parsed[1] if kind == "step" else rec.get("t", out.last_t)
    return out


def _number(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
        raise TypeError(f"not a number: {x!r}")
    return float(x)


def _value(x: Any) -> Any:
    """A sample: a number, None (the series was cleared), or a histogram's ``{"sum", "count", …}`` of numbers."""
    if x is None:
        return None
    if isinstance(x, dict):
        for v in x.values():
            _number(v)
        return x
    return _number(x)


def _parse(rec: Any) -> tuple[str, Any]:
    """``(kind, what the reader keeps)``; raises on a record that is not of its kind's shape."""
    kind = rec["kind"]
    if not isinstance(kind, str):
        raise TypeError("kind")
    if "t" in rec:
        _number(rec["t"])
    if kind == "step":
        return kind, (int(_number(rec["step"])), _number(rec["t"]), _number(rec["seconds"]))
    if kind == "metrics":
        step = rec.get("step")
        values = [(str(name), dict(labels), _value(value)) for name, labels, value in rec.get("values", ())]
        return kind, (_number(rec["t"]), None if step is None else _number(step), values)
    if kind == "start" and "rank" in rec:
        int(_number(rec["rank"]))
    if kind in ("stall", "stall_end"):
        for key in ("t", "since_step_s", "threshold_s") if kind == "stall" else ("t",):
            _number(rec[key])
    if kind == "end" and not isinstance(rec.get("status", "ok"), str):
        raise TypeError("status")
    if kind == "preflight":
        models, spec = rec.get("models", {}), rec.get("spec", {})
        if not isinstance(models, dict) or not all(isinstance(m, dict) for m in models.values()) \
                or not isinstance(spec, dict) or not isinstance(rec.get("text", ""), str):
            raise TypeError("preflight")
    return kind, None  # a kind this reader does not know (a newer writer): counted, nothing kept


def _key(labels: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _rank_from_name(path: Path) -> int:
    m = re.search(r"rank(\d+)", path.name)
    return int(m.group(1)) if m else 0
