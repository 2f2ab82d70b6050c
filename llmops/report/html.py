"""One self-contained HTML page: inline CSS, plots as base64 PNG ``data:`` URIs, no script, no network."""

from __future__ import annotations

import base64
import datetime as dt
import html

from llmops import version
from llmops.report.alerts import AlertResult
from llmops.report.summary import MEASURED, comparison_rows, ending, last_memory, verdict
from llmops.report.throughput import summary as throughput_summary
from llmops.runlog import RunLog
from llmops.units import fmt_bytes, unit_for

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1000px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.8em}
.ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}.warn{color:#b26a00}
.box{border-left:4px solid #c62828;background:#fdecea;padding:.6em 1em}
img{max-width:100%;border:1px solid #eee}.note{color:#666;font-style:italic}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render(run: RunLog, figures: dict[str, tuple[str, bytes | None, str]], alerts: list[AlertResult]) -> str:
    """``figures``: key -> (title, PNG or None, the sentence shown when there is nothing to plot)."""
    r0 = run.ranks[min(run.ranks)]
    endings = [ending(r) for r in run.ranks.values()]
    worst = next((e for e in endings if e[0] == "died"), next((e for e in endings if e[0] != "ok"), endings[0]))
    cls = {"ok": "ok", "interrupted": "warn"}.get(worst[0], "bad")
    duration = (r0.last_t or 0) - float(r0.start.get("t", r0.last_t or 0))
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>llmops report: {_e(run.run)}</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>llmops report: {_e(run.run)}</h1>",
           f"<p>{len(run.ranks)} rank(s) · last step {r0.last_step} · {duration:,.0f} s logged · "
           f"started {_e(_when(r0.start.get('t')))} · device {_e(r0.start.get('device', '?'))} · "
           f"status <span class='{cls}'>{_e(worst[0])}</span></p>"]
    if worst[0] != "ok":
        out.append(_stopped(run))
    out += ["<h2>Preflight verdict</h2>", f"<p class='{'bad' if 'OOM RISK' in verdict(r0) else ''}'>"
            f"{_e(verdict(r0))}</p>"]
    if r0.preflight and r0.preflight.get("text"):
        out.append(f"<pre>{_e(r0.preflight['text'])}</pre>")
    out += ["<h2>Predicted vs measured</h2>", _comparison(run)]
    out += ["<h2>Throughput, MFU and energy</h2>", _throughput(run)]
    out += ["<h2>Stalls</h2>", _stalls(run)]
    out += ["<h2>Alerts that would have fired</h2>", _alerts(alerts)]
    for key, (title, png, empty) in figures.items():
        out.append(f"<h2 id='{key}'>{_e(title)}</h2>")
        out.append(_img(png, title) if png else f"<p class='note'>{_e(empty)}</p>")
    out.append(f"<p class='note'>Written by llmops {_e(version())} from {_e(run.path)} at "
               f"{_e(_when(dt.datetime.now().timestamp()))}; {sum(r.records for r in run.ranks.values())} records"
               f"{_bad_lines(run)}. PNGs of each plot are beside this file.</p></body></html>")
    return "\n".join(out)


def _stopped(run: RunLog) -> str:
    parts = ["<div class='box'><b>The run did not finish.</b><ul>"]
    parts += [f"<li>{_e(sentence)}</li>" for _, sentence in (ending(r) for r in run.ranks.values())]
    parts.append("</ul>")
    for rank, r in sorted(run.ranks.items()):
        if r.end is not None and r.end.get("status") == "ok":
            continue
        parts.append(f"<p>Where memory stood in the last samples of rank {rank}:</p><table>")
        parts += [f"<tr><th>{_e(k)}</th><td class='n'>{_e(v)}</td></tr>" for k, v in last_memory(r)]
        parts.append("</table>")
        stall = run.path / f"stall-rank{rank}.txt"  # written by the monitor when no step finished for too long
        if stall.exists():
            parts.append(f"<p>Rank {rank} stalled; its stall report ({_e(stall.name)}):</p>"
                         f"<pre>{_e(stall.read_text(encoding='utf-8', errors='replace'))}</pre>")
        postmortem = run.path / f"postmortem-rank{rank}.md"  # written by the monitor when a step raised OOM
        if postmortem.exists():
            parts.append(f"<p>The OOM post-mortem of rank {rank} ({_e(postmortem.name)}):</p>"
                         f"<pre>{_e(postmortem.read_text(encoding='utf-8', errors='replace'))}</pre>")
    parts.append("</div>")
    return "".join(parts)


def _comparison(run: RunLog) -> str:
    parts = []
    for rank, r in sorted(run.ranks.items()):
        rows = comparison_rows(r)
        unit = unit_for(*(v for x in rows for v in (x.document, x.refined, x.measured)))
        parts.append(f"<table><tr><th>rank {rank}, after step {r.last_step}</th><th>document</th><th>refined</th>"
                     "<th>measured</th><th>measured / refined</th></tr>")
        for x in rows:
            cells = "".join(f"<td class='n'>{_e(fmt_bytes(v, unit))}</td>" for v in (x.document, x.refined, x.measured))
            ratio = f"{x.ratio:.3f}" if x.ratio is not None else "—"
            parts.append(f"<tr><td>{_e(x.component)}</td>{cells}<td class='n'>{ratio}</td></tr>")
        parts.append("</table>")
    devices = sorted({str(r.start.get("device")) for r in run.ranks.values()} & set(MEASURED))
    measured = " ".join(f"{d.upper() if d == 'cpu' else 'CUDA'}: {MEASURED[d]}." for d in devices)
    parts.append("<p class='note'>document: formulas.md exactly; refined: the project's model; the predicted "
                 f"peak is shown without the fixed overhead, as the drift ratio compares it. {_e(measured)}</p>")
    return "".join(parts)


def _throughput(run: RunLog) -> str:
    parts = []
    for rank, r in sorted(run.ranks.items()):
        rows = throughput_summary(r)
        if rows:
            parts.append(f"<table><tr><th colspan='2'>rank {rank}</th></tr>")
            parts += [f"<tr><td>{_e(k)}</td><td class='n'>{_e(v)}</td></tr>" for k, v in rows]
            parts.append("</table>")
    if not parts:
        return "<p class='note'>no tokens were counted (the run stopped before its first step ended)</p>"
    parts.append("<p class='note'>tokens/s and FLOP/s over the steps' own time (the phases sum to the wall time "
                 "between batch ends); MFU per sampling window, absent where the device's peak is unknown; energy "
                 "from NVML's counter, the GPU's only.</p>")
    return "".join(parts)


def _stalls(run: RunLog) -> str:
    """Each stall of each rank (from its run log's ``stall`` and ``stall_end`` records) and its stack report."""
    rows, reports = [], []
    for rank, r in sorted(run.ranks.items()):
        begun: dict | None = None
        for rec in r.stalls:
            if rec.get("kind") == "stall":
                begun = rec
            elif begun is not None:
                rows.append((rank, begun, rec))
                begun = None
        if begun is not None:
            rows.append((rank, begun, None))
        path = run.path / f"stall-rank{rank}.txt"
        if path.exists() and r.stalls and (r.end is not None and r.end.get("status") == "ok"):
            reports.append(f"<details><summary>rank {rank}: {_e(path.name)}</summary>"
                           f"<pre>{_e(path.read_text(encoding='utf-8', errors='replace'))}</pre></details>")
    if not rows:
        return "<p class='note'>no stall: a step finished within the stall threshold all along</p>"
    out = ["<table><tr><th>rank</th><th>after step</th><th>noticed at</th><th>no step for</th><th>threshold</th>"
           "<th>steps resumed</th></tr>"]
    for rank, begun, ended in rows:
        resumed = (f"{ended['t'] - begun['t'] + begun['since_step_s']:.1f} s after the last step"
                   if ended else "never (the log ends stalled)")
        out.append(f"<tr><td>{rank}</td><td class='n'>{_e(begun.get('step'))}</td><td>{_e(_when(begun['t']))}</td>"
                   f"<td class='n'>{begun['since_step_s']:.1f} s</td><td class='n'>{begun['threshold_s']:.1f} s</td>"
                   f"<td>{_e(resumed)}</td></tr>")
    out.append("</table>")
    return "".join(out + reports)


def _alerts(alerts: list[AlertResult]) -> str:
    rows = ["<table><tr><th>alert</th><th>rank</th><th>condition</th><th>for</th><th>status</th><th>detail</th></tr>"]
    for a in alerts:
        cls = "bad" if a.fired else "warn" if a.intervals else "note" if not a.evaluable else "ok"
        rows.append(f"<tr><td>{_e(a.name)}</td><td>{'all' if a.rank is None else a.rank}</td><td>{_e(a.condition)}"
                    f"</td><td class='n'>{a.for_s:.0f} s</td><td class='{cls}'>{_e(a.status)}</td>"
                    f"<td>{_e(a.detail)}</td></tr>")
    rows.append("</table><p class='note'>The rules' conditions evaluated on the logged series "
                "(thresholds in llmops.report.alerts.THRESHOLDS); a run shorter than a rule's <code>for:</code> "
                "shows how long the condition held.</p>")
    return "".join(rows)


def _bad_lines(run: RunLog) -> str:
    bad = sum(r.bad_lines for r in run.ranks.values())
    return f", {bad} unreadable record(s) skipped (torn by a kill, or not what their kind should be)" if bad else ""


def _when(t: object) -> str:
    return "—" if not isinstance(t, (int, float)) else dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


