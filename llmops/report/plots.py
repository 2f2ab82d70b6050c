"""The report's figures, drawn with matplotlib (Agg: no display needed) from the run log, as PNG bytes.

Each function returns ``None`` when the log has nothing to draw (a single process has no
communication; a run without checkpoints has no checkpoint timeline): the report says so instead.
"""

from __future__ import annotations

import io
import statistics
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from llmops.report.summary import budget_room, predicted  # noqa: E402
from llmops.report.throughput import phase_seconds
from llmops.runlog import RankLog, RunLog  # noqa: E402
from llmops.units import unit_for  # noqa: E402
from llmops.vocabulary import (
    STEP_PHASES,  # noqa: E402
    TENSOR_COMPONENTS,
)

MAX_POINTS = 4000  # steps drawn one by one; past it, per-bucket median and range
PHASE_COLORS = {"data": "tab:gray", "forward": "tab:blue", "backward": "tab:orange", "optimizer": "tab:green",
                "comm_exposed": "tab:red"}
COLORS = {"params": "tab:blue", "grads": "tab:orange", "optimizer_states": "tab:green",
          "activations": "tab:red", "temporaries": "tab:purple", "peak": "black"}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _xy(points: list, numeric: bool = True) -> tuple[list[float], list[Any]]:
    pts = [(p[1], p[2]) for p in points if p[1] is not None and (not numeric or isinstance(p[2], (int, float)))]
    return [float(s) for s, _ in pts], [v for _, v in pts]


def _extend(xs: list[float], ys: list[Any], last_step: int | None) -> tuple[list[float], list[Any]]:
    """A logged value holds until it changes: carry the last one to the last step."""
    if xs and last_step is not None and last_step > xs[-1]:
        return [*xs, float(last_step)], [*ys, ys[-1]]
    return xs, ys


def _steps_axis(ax: Any, r: RankLog) -> None:
    """The whole run on the x axis, so a value first logged late shows where it started."""
    ax.set_xlim(0, max(1, r.last_step or 1))


def memory(r: RankLog) -> bytes | None:
    """Measured bytes per component over the steps (solid), the refined prediction (dashed)."""
    series = {c: _xy(r.get("llmops_memory_actual_bytes", component=c)) for c in (*TENSOR_COMPONENTS, "peak")}
    if not any(xs for xs, _ in series.values()):
        return None
    values = [v for _, ys in series.values() for v in ys]
    values += [predicted(r, "refined", c) for c in (*TENSOR_COMPONENTS, "peak")]
    d, unit = unit_for(*values)
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for c, (xs, ys) in series.items():
        xs, ys = _extend(xs, ys, r.last_step)
        label = "peak (live tensors)" if c == "peak" else c
        if xs:
            ax.step(xs, [y / d for y in ys], where="post", color=COLORS[c], lw=2, marker=".",
                    label=f"{label} measured")
        p = predicted(r, "refined", c)
        if p is not None:
            ax.axhline(p / d, color=COLORS[c], ls="--", lw=1, label=f"{label} predicted")
    for name, label in (("llmops_gpu_process_memory_bytes", "GPU, this process (NVML)"),
                        ("llmops_cuda_memory_reserved_bytes", "CUDA reserved")):
        for _labels, pts in r.matching(name).items():
            xs, ys = _xy(pts)
            if xs:
                ax.plot(xs, [y / d for y in ys], lw=1, label=label)
    ax.set(xlabel="training step", ylabel=unit, title=f"Memory per device, rank {r.rank}: predicted vs measured")
    ax.set_ylim(bottom=0)
    _steps_axis(ax, r)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return _png(fig)


def drift(r: RankLog) -> bytes | None:
    found = r.matching("llmops_memory_drift_ratio")
    if not found:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for labels, pts in sorted(found.items()):
        xs, ys = _extend(*_xy(pts), r.last_step)
        ax.step(xs, ys, where="post", lw=2, marker=".", label=dict(labels).get("model", "?"))
    ax.axhspan(0.8, 1.2, color="tab:green", alpha=0.1, label="within 20 %")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="training step", ylabel="measured / predicted",
           title=f"Drift: measured peak over predicted peak (no fixed overhead), rank {r.rank}")
    _steps_axis(ax, r)
    ax.legend(fontsize=8)
    return _png(fig)


def headroom(r: RankLog) -> bytes | None:
    room = budget_room(r)
    xs, ys = _xy(r.get("llmops_memory_actual_bytes", component="peak"))
    if room is None or not xs:
        return None
    xs, ys = _extend(xs, ys, r.last_step)
    left = [room - y for y in ys]
    d, unit = unit_for(room, *left)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    ax.step(xs, [v / d for v in left], where="post", lw=2, marker=".", color="tab:purple",
            label="budget − measured peak")
    _steps_axis(ax, r)
    ax.axhline(0, color="tab:red", lw=1, label="no headroom left (OOM)")
    ax.set(xlabel="training step", ylabel=unit,
           title=f"Headroom to the budget (safety × memory − fixed overhead = {room / d:,.2f} {unit}), rank {r.rank}")
    ax.legend(fontsize=8)
    return _png(fig)


def step_time(run: RunLog) -> bytes | None:
    """Each step's time and a running median; past ``MAX_POINTS`` steps, per bucket of consecutive
    steps the range (min to max) and the median, so a month-long run draws as fast as a short one."""
    if not any(r.steps for r in run.ranks.values()):
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for rank, r in sorted(run.ranks.items()):
        steps, ms = r.steps.step, [sec * 1e3 for sec in r.steps.seconds]
        if len(ms) <= MAX_POINTS:
            line = ax.plot(steps, ms, lw=0.6, alpha=0.5)[0]
            k = 15
            smooth = [statistics.median(ms[max(0, i - k): i + 1]) for i in range(len(ms))]
            ax.plot(steps, smooth, lw=2, color=line.get_color(), label=f"rank {rank} (median of {k})")
            continue
        k = -(-len(ms) // (MAX_POINTS // 2))  # steps per bucket
        xs, lo, hi, mid = [], [], [], []
        for i in range(0, len(ms), k):
            chunk = sorted(ms[i:i + k])
            xs.append(steps[i + len(chunk) // 2])
            lo.append(chunk[0])
            hi.append(chunk[-1])
            mid.append(chunk[len(chunk) // 2])
        band = ax.fill_between(xs, lo, hi, alpha=0.25, lw=0)
        ax.plot(xs, mid, lw=1.5, color=band.get_facecolor()[0][:3], label=f"rank {rank} (median of {k}; band: range)")
    ax.set(xlabel="training step", ylabel="ms", title="Step time")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig)


def _windowed_mean(points: list) -> tuple[list[float], list[float]]:
    """Mean of a histogram over each logged window: Δsum / Δcount."""
    xs, ys, prev = [], [], (0.0, 0)
    for _t, step, v in points:
        if isinstance(v, dict) and step is not None and v.get("count", 0) > prev[1]:
            xs.append(float(step))
            ys.append((v["sum"] - prev[0]) / (v["count"] - prev[1]))
            prev = (v["sum"], v["count"])
    return xs, ys


def comm(run: RunLog) -> bytes | None:
    durations = {k: _windowed_mean(r.get("llmops_comm_allreduce_duration_seconds")) for k, r in run.ranks.items()}
    bandwidth = {k: _xy(r.get("llmops_comm_bus_bandwidth_bytes_per_second")) for k, r in run.ranks.items()}
    if not any(xs for xs, _ in durations.values()) and not any(xs for xs, _ in bandwidth.values()):
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    for rank in sorted(run.ranks):
        xs, ys = durations[rank]
        if xs:
            a.plot(xs, [y * 1e3 for y in ys], marker=".", lw=1, label=f"rank {rank}")
        xs, ys = bandwidth[rank]
        if xs:
            b.plot(xs, [y / 1e9 for y in ys], marker=".", lw=1, label=f"rank {rank}")
    a.set(xlabel="training step", ylabel="ms", title="All-reduce time (mean per window)")
    b.set(xlabel="training step", ylabel="GB/s", title="Bus bandwidth")
    for ax in (a, b):
        ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _png(fig)


def checkpoints(run: RunLog) -> bytes | None:
    events = []  # (step, seconds to save or None, bytes or None, failed)
    for r in run.ranks.values():
        prev_saves, prev_fail = 0.0, 0.0
        durations = dict(zip(*_windowed_mean(r.get("llmops_checkpoint_save_duration_seconds")), strict=True))
        sizes = r.get("llmops_checkpoint_size_bytes")
        for t, step, v in r.get("llmops_checkpoint_saves_total"):
            if isinstance(v, (int, float)) and v > prev_saves:
                size = next((p[2] for p in reversed(sizes) if p[0] <= t), None)
                events.append((step, durations.get(float(step)) if step is not None else None, size, False, r.rank))
                prev_saves = v
        for _t, step, v in r.get("llmops_checkpoint_failures_total"):
            if isinstance(v, (int, float)) and v > prev_fail:
                events.append((step, None, None, True, r.rank))
                prev_fail = v
    if not events:
        return None
    fig, ax = plt.subplots(figsize=(9, 2.6))
    last = max((r.last_step or 0) for r in run.ranks.values())
    ax.hlines(0, 0, max(last, 1), color="grey", lw=1)
    for step, seconds, size, failed, rank in events:
        if step is None:
            continue
        ax.plot([step], [0], marker="x" if failed else "o", ms=10, color="tab:red" if failed else "tab:green")
        text = "failed" if failed else f"{size / 1e6:.1f} MB" if size else "saved"
        text += f", {seconds:.2f} s" if seconds is not None else ""
        ax.annotate(f"step {step}\n{text}" + (f"\nrank {rank}" if len(run.ranks) > 1 else ""), (step, 0),
                    textcoords="offset points", xytext=(0, 12), ha="center", fontsize=7)
    ax.set(xlabel="training step", yticks=[], title="Checkpoints (o saved, x failed)")
    ax.set_ylim(-1, 2)
    return _png(fig)


def phases(run: RunLog) -> bytes | None:
    """Where each step went: rank 0's share of each phase per logged window over the steps (stacked), and
    each rank's seconds per phase over the run."""
    r0 = run.ranks[min(run.ranks)]
    series = {p: _xy(r0.get("llmops_step_phase_seconds_total", phase=p)) for p in STEP_PHASES}
    totals = {k: phase_seconds(r) for k, r in sorted(run.ranks.items())}
    if not any(sum(t.values()) > 0 for t in totals.values()):
        return None
    steps = sorted({x for xs, _ in series.values() for x in xs})
    value = {p: dict(zip(*series[p], strict=True)) for p in STEP_PHASES}
    cumulative = {p: _carry(steps, value[p]) for p in STEP_PHASES}
    xs: list[float] = []
    shares: dict[str, list[float]] = {p: [] for p in STEP_PHASES}
    for i in range(1, len(steps)):
        delta = {p: cumulative[p][i] - cumulative[p][i - 1] for p in STEP_PHASES}
        whole = sum(delta.values())
        if whole > 0:
            xs.append(steps[i])
            for p in STEP_PHASES:
                shares[p].append(delta[p] / whole)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [2, 1]})
    if xs:
        a.stackplot(xs, *(shares[p] for p in STEP_PHASES), labels=STEP_PHASES,
                    colors=[PHASE_COLORS[p] for p in STEP_PHASES], step="post")
    a.set(xlabel="training step", ylabel="share of the time", ylim=(0, 1),
          title=f"Where each step went, rank {r0.rank} (per logged window)")
    left = [0.0] * len(totals)
    names = [f"rank {k}" for k in totals]
    for p in STEP_PHASES:
        widths = [t.get(p, 0.0) for t in totals.values()]
        b.barh(names, widths, left=left, color=PHASE_COLORS[p], label=p)
        left = [x + w for x, w in zip(left, widths, strict=True)]
    b.set(xlabel="seconds", title="Seconds per phase, whole run")
    b.invert_yaxis()
    a.legend(fontsize=7, loc="lower left", ncol=3)
    return _png(fig)


def _carry(steps: list[float], points: dict[float, Any]) -> list[float]:
    """A counter's value at each step: its last logged value at or before it (0 before the first)."""
    out, last = [], 0.0
    for x in steps:
        last = float(points.get(x, last))
        out.append(last)
    return out
