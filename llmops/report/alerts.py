"""The alerts that would have fired: the alert rules' conditions, evaluated offline on the run log.

The names are those of the shipped rules file (``llmops/ops/deploy/prometheus/rules/llmops.rules.yml``);
thresholds and ``for:`` are read from it, or from the defaults below (which mirror it) where it
cannot be read. Prometheus evaluates PromQL on scraped samples; this evaluates the same conditions
on the logged series (a value holds until the next change was written, or the end of the log), so
a short run shows which conditions held even where they did not last the rule's ``for:``.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from llmops.ops.shipped import RULES
from llmops.report.summary import budget_room
from llmops.runlog import RankLog, RunLog
from llmops.telemetry.drift import SlidingSlope

THRESHOLDS = {  # the defaults of the rules file's `llmops-thresholds` group
    "drift": 0.20,  # |measured / refined − 1|
    "growth_horizon_s": 1800.0,  # linear extrapolation reaching the budget within this
    "growth_window_s": 300.0,
    "checkpoint_max_age_s": 3600.0,
    "comm_slow_fraction": 0.5,  # bus bandwidth under this fraction of the run's own median
    "comm_step_time_ratio": 0.5,  # or all-reduce over this share of step time...
    "comm_share_window_s": 300.0,  # ...averaged over this window
    "straggler": 0.20,  # a rank's step time over the run's median by this
    "straggler_window_s": 60.0,
}
FOR_S = {"LLMOpsMemoryDrift": 600.0, "LLMOpsOOMRisk": 60.0, "LLMOpsMemoryGrowth": 300.0,
         "LLMOpsCheckpointStale": 60.0, "LLMOpsCheckpointFailures": 0.0, "LLMOpsCommSlow": 600.0,
         "LLMOpsStraggler": 600.0, "LLMOpsMonitorErrors": 0.0, "LLMOpsTargetDown": 120.0,
         "LLMOpsTrainingStalled": 60.0}
_RECORDED = {"memory_drift_ratio": "drift", "memory_growth_horizon_seconds": "growth_horizon_s",
             "checkpoint_max_age_seconds": "checkpoint_max_age_s",
             "comm_bandwidth_baseline_ratio": "comm_slow_fraction", "comm_step_time_ratio": "comm_step_time_ratio",
             "straggler_ratio": "straggler"}


def load_rules(path: Path = RULES) -> tuple[dict[str, float], dict[str, float]]:
    """Thresholds and ``for:`` durations from the rules file, or the defaults where it cannot be read."""
    thresholds, fors = dict(THRESHOLDS), dict(FOR_S)
    try:
        import yaml

        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - no yaml, or a rules file removed: the defaults hold
        return thresholds, fors
    seen: set[str] = set()
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = str(rule.get("record", "")).removeprefix("llmops:threshold:")
            m = re.fullmatch(r"\s*vector\(\s*([0-9.eE+-]+)\s*\)\s*", str(rule.get("expr", "")))
            if name in _RECORDED and m:
                thresholds[_RECORDED[name]] = float(m.group(1))
            alert = rule.get("alert")
            if alert in fors and alert not in seen:
                seen.add(alert)
                fors[alert] = _seconds(str(rule.get("for", "0s")))
    return thresholds, fors


def _seconds(duration: str) -> float:
    units = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration))


Interval = tuple[float, float, str]  # start, end (unix seconds), what held


@dataclass(frozen=True)
class AlertResult:
    name: str
    rank: int | None
    condition: str
    for_s: float
    intervals: tuple[Interval, ...]
    evaluable: bool = True

    @property
    def fired(self) -> bool:
        return any(end - start >= self.for_s for start, end, _ in self.intervals)

    @property
    def held_s(self) -> float:
        return max((end - start for start, end, _ in self.intervals), default=0.0)

    @property
    def status(self) -> str:
        if not self.evaluable:
            return "no data"
        if self.fired:
            return "would have fired"
        if self.intervals:
            return f"condition held {self.held_s:.0f} s (under for: {self.for_s:.0f} s)"
        return "quiet"

    @property
    def detail(self) -> str:
        return self.intervals[0][2] if self.intervals else ""


def _held(points: list, end_t: float, cond: Callable[[float], bool], describe: Callable[[float], str]
          ) -> list[Interval]:
    """Intervals where ``cond(value)`` held; each value holds until the next point or ``end_t``."""
    out, start, what = [], None, ""
    for i, (t, _step, v) in enumerate(points):
        ok = isinstance(v, (int, float)) and cond(v)
        if ok and start is None:
            start, what = t, describe(v)
        if not ok and start is not None:
            out.append((start, t, what))
            start = None
        if i == len(points) - 1 and start is not None:
            out.append((start, max(end_t, t), what))
    return out


def _mean_over(points: list, window_s: float) -> list:
    """Each point's value replaced by the mean of the values written in the ``window_s`` before it
    (``avg_over_time``)."""
    out, total = [], 0.0
    window: deque[tuple[float, float]] = deque()
    for t, step, v in points:
        if not isinstance(v, (int, float)):
            continue
        window.append((t, v))
        total += v
        while window[0][0] < t - window_s:
            total -= window.popleft()[1]
        out.append((t, step, total / len(window)))
    return out


def _const(text: str) -> Callable[[float], str]:
    return lambda _value: text


def _increases(points: list, end_t: float, what: str) -> list[Interval]:
    out, prev = [], 0.0
    for t, step, v in points:
        if isinstance(v, (int, float)) and v > prev:
            out.append((t, end_t, f"{what} rose to {v:g} at step {step}"))
        prev = v if isinstance(v, (int, float)) else prev
    return out[:1]


def evaluate(run: RunLog, rules: tuple[dict[str, float], dict[str, float]] | None = None) -> list[AlertResult]:
    """Every alert for every rank (the straggler alert across ranks); ``rules`` default ``load_rules()``."""
    th, fors = rules or load_rules()
    results: list[AlertResult] = []
    for r in run.ranks.values():
        results.extend(_rank_alerts(r, th, fors))
    results.append(_straggler(run, th, fors))
    return results


def _rank_alerts(r: RankLog, th: dict[str, float], fors: dict[str, float]) -> Iterable[AlertResult]:
    end = r.last_t or 0.0
    risk: list[Interval] = []
    for source in ("prediction", "measured", "trend"):
        what = f"llmops_oom_risk{{source=\"{source}\"}} = 1"
        risk += _held(r.get("llmops_oom_risk", source=source), end, lambda v: v >= 1, _const(what))
    yield AlertResult("LLMOpsOOMRisk", r.rank, "llmops_oom_risk == 1, any source", fors["LLMOpsOOMRisk"],
                      tuple(sorted(risk)), bool(r.matching("llmops_oom_risk")))
    drift = r.get("llmops_memory_drift_ratio", model="refined")
    yield AlertResult("LLMOpsMemoryDrift", r.rank, f"|measured peak / refined prediction − 1| > {th['drift']:.0%}",
                      fors["LLMOpsMemoryDrift"], tuple(_held(drift, end, lambda v: abs(v - 1) > th["drift"],
                                                     lambda v: f"drift ratio {v:.2f}")), bool(drift))
    yield _growth(r, th, fors)
    yield _stale(r, th, fors)
    fails = r.get("llmops_checkpoint_failures_total")
    yield AlertResult("LLMOpsCheckpointFailures", r.rank, "a checkpoint write failed", fors["LLMOpsCheckpointFailures"],
                      tuple(_increases(fails, end, "llmops_checkpoint_failures_total")), bool(fails))
    bw = [p for p in r.get("llmops_comm_bus_bandwidth_bytes_per_second") if isinstance(p[2], (int, float))]
    base = _best_sustained(bw)
    share = _mean_over(r.get("llmops_comm_step_time_ratio"), th["comm_share_window_s"])
    slow = _held(bw, end, lambda v: v < th["comm_slow_fraction"] * base,
                 lambda v: f"bus bandwidth {v / 1e9:.3f} GB/s, best sustained {base / 1e9:.3f} GB/s")
    slow += _held(share, end, lambda v: v > th["comm_step_time_ratio"],
                  lambda v: f"all-reduce took {v:.0%} of each step (mean over {th['comm_share_window_s']:.0f} s)")
    yield AlertResult("LLMOpsCommSlow", r.rank,
                      f"bus bandwidth under {th['comm_slow_fraction']:.0%} of the run's best sustained (10-minute "
                      f"median), or all-reduce over "
                      f"{th['comm_step_time_ratio']:.0%} of step time", fors["LLMOpsCommSlow"],
                      tuple(sorted(slow)), bool(bw or share))
    errors: list[Interval] = []
    for labels, pts in r.matching("llmops_monitor_errors_total").items():
        errors += _increases(pts, end, f"llmops_monitor_errors_total{{{dict(labels).get('probe')}}}")
    yield AlertResult("LLMOpsMonitorErrors", r.rank, "errors caught inside the monitor", fors["LLMOpsMonitorErrors"],
                      tuple(errors))
    stalled = r.get("llmops_train_stalled")
    yield AlertResult("LLMOpsTrainingStalled", r.rank, "no step finished past the stall threshold "
                      "(llmops_train_stalled = 1)", fors["LLMOpsTrainingStalled"],
                      tuple(_held(stalled, end, lambda v: v >= 1, _stall_detail(r))), bool(stalled))
    down = [(end, math.inf, "the run died without closing: its endpoint went away")] if r.end is None else []
    yield AlertResult("LLMOpsTargetDown", r.rank, "the rank's endpoint gone while its run is recent",
                      fors["LLMOpsTargetDown"],
                      tuple(down))


def _stall_detail(r: RankLog) -> Callable[[float], str]:
    first = next((x for x in r.stalls if x.get("kind") == "stall"), None)
    text = (f"no step for {first['since_step_s']:.1f} s after step {first.get('step')} (threshold "
            f"{first['threshold_s']:.1f} s)" if first else "llmops_train_stalled = 1")
    return _const(text)


def _stale(r: RankLog, th: dict[str, float], fors: dict[str, float]) -> AlertResult:
    """The age of the last save (or, before the first, of the process's start) past the allowed age."""
    max_age, end = th["checkpoint_max_age_s"], r.last_t or 0.0
    started = r.last("llmops_run_start_timestamp_seconds") or r.start.get("t")
    # (since, reference): from the start, then from each new save on, the age counts from that moment.
    saves: list[tuple[float, float]] = []
    for t, _step, v in r.get("llmops_checkpoint_last_success_timestamp_seconds"):
        if isinstance(v, (int, float)) and (not saves or float(v) != saves[-1][1]):
            saves.append((float(t), float(v)))
    from_start = isinstance(started, (int, float))
    refs = ([(float(started), float(started))] if isinstance(started, (int, float)) else []) + saves
    stale: list[Interval] = []
    for i, (since, ref) in enumerate(refs):
        until = refs[i + 1][0] if i + 1 < len(refs) else end
        if max(since, ref + max_age) < until:
            what = "no checkpoint since the process started" if i == 0 and from_start else \
                f"no checkpoint since the one at {ref:.0f} (unix time)"
            stale.append((max(since, ref + max_age), until, what))
    return AlertResult("LLMOpsCheckpointStale", r.rank,
                       f"no successful checkpoint for {max_age:.0f} s while training (from the start before the "
                       "first save)", fors["LLMOpsCheckpointStale"], tuple(stale), bool(refs))


def _growth(r: RankLog, th: dict[str, float], fors: dict[str, float]) -> AlertResult:
    room = budget_room(r)
    pts = [p for p in r.get("llmops_memory_actual_bytes", component="peak") if isinstance(p[2], (int, float))]
    out: list[Interval] = []
    if room is not None:
        window = SlidingSlope()  # the points of the last growth_window_s, one pass: linear in the run's length
        for t, step, v in pts:
            window.add(t, v)
            window.drop_before(t - th["growth_window_s"])
            if len(window) < 3:
                continue
            rate = window.slope
            if v + rate * th["growth_horizon_s"] > room and rate > 0:
                out.append((t, r.last_t or t, f"peak {v / 1e9:.3f} GB growing {rate / 1e6:.2f} MB/s at step {step}"))
                break
    return AlertResult("LLMOpsMemoryGrowth", r.rank,
                       f"measured memory, extrapolated linearly, reaches the budget within "
                       f"{th['growth_horizon_s'] / 60:.0f} min", fors["LLMOpsMemoryGrowth"], tuple(out),
                       room is not None and len(pts) >= 3)


def _straggler(run: RunLog, th: dict[str, float], fors: dict[str, float]) -> AlertResult:
    w = th["straggler_window_s"]
    if len(run.ranks) < 2:
        return AlertResult("LLMOpsStraggler", None, "a rank's step time over the run's median", fors["LLMOpsStraggler"],
                           (), evaluable=False)
    means: dict[int, dict[int, float]] = {}
    for rank, r in run.ranks.items():
        by_window: dict[int, list[float]] = {}
        for _step, t, seconds in r.steps:
            by_window.setdefault(int(t // w), []).append(seconds)
        means[rank] = {k: statistics.fmean(v) for k, v in by_window.items()}
    out: list[Interval] = []
    for k in sorted({k for m in means.values() for k in m}):
        here = {rank: m[k] for rank, m in means.items() if k in m}
        if len(here) < 2:
            continue
        med = statistics.median(here.values())
        for rank, v in here.items():
            if v > (1 + th["straggler"]) * med:
                out.append((k * w, (k + 1) * w, f"rank {rank} step {v * 1e3:.1f} ms vs median {med * 1e3:.1f} ms"))
    return AlertResult("LLMOpsStraggler", None, f"a rank's step time over the run's median by {th['straggler']:.0%}",
                       fors["LLMOpsStraggler"], tuple(_merge(out)))


def _best_sustained(points: list, window_s: float = 600.0) -> float:
    """The best 10-minute median of a series, as the rule's ``llmops:comm_bus_bandwidth_bytes_per_second:best``
    (a baseline a long fault cannot lower)."""
    by_window: dict[int, list[float]] = {}
    for t, _step, v in points:
        by_window.setdefault(int(t // window_s), []).append(v)
    return max((statistics.median(v) for v in by_window.values()), default=0.0)


def _merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for iv in sorted(intervals):
        if out and iv[0] <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], iv[1]), out[-1][2])
        else:
            out.append(iv)
    return out
