"""Prometheus at scale: N simulated ranks (bench/ranks.py) scraped by the real Prometheus from Debian's
package with the shipped rules, every 15 s; measured at N = 64, 256 and 1,024 in one run:

- scrape duration per target (mean and max of ``scrape_duration_seconds``);
- rule evaluation time per cycle (the sum of every group's last evaluation, worst of the cycles seen);
- Prometheus' resident memory (VmRSS) and its head series (``prometheus_tsdb_head_series``);
- the latency of every dashboard query (Grafana's range query over the last 10 minutes, all ranks selected).

With VictoriaMetrics installed (Debian's ``victoria-metrics``), Prometheus also remote-writes to it
(deploy/prometheus/remote-write/victoria-metrics.yml) and a dashboard query is read back from the store.
``python -m bench.scale [--ranks 64 256 1024] [--interval 15] [--cycles 6]`` prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.ranks import RankFarm
from llmops.ops.dashboards import panel_queries, substitute
from llmops.ops.shipped import DASHBOARDS, DEPLOY
from llmops.ops.stack import Stack, free_port

REMOTE_WRITE = DEPLOY / "prometheus" / "remote-write" / "victoria-metrics.yml"
RUN = "scale"


def get(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def api(base: str, path: str, **params: str) -> Any:
    body = json.loads(get(f"{base}{path}?{urllib.parse.urlencode(params)}"))
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def dashboard_queries(rate_interval: str) -> list[tuple[str, str]]:
    values = {"run": RUN, "rank": ".*", "gpu": ".*", "datasource": "prometheus", "__rate_interval": rate_interval}
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for title, expr in panel_queries(json.loads(path.read_text())):
            out.append((title, substitute(expr, values)))
    return out


class VictoriaMetrics:
    """Debian's victoria-metrics on a loopback port with its data in ``workdir``; ``None`` when not installed."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        binary = shutil.which("victoria-metrics")
        assert binary is not None
        self.proc = subprocess.Popen([binary, f"-storageDataPath={workdir / 'vm-data'}",
                                      f"-httpListenAddr=127.0.0.1:{self.port}", "-retentionPeriod=1d",
                                      "-search.latencyOffset=0s"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(f"{self.url}/health", timeout=2).strip() == b"OK":
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("victoria-metrics did not start") from None
                time.sleep(0.2)

    @classmethod
    def available(cls) -> bool:
        return shutil.which("victoria-metrics") is not None

    def remote_write(self) -> list[dict[str, Any]]:
        """The shipped example's remote_write block, pointed at this instance."""
        block = yaml.safe_load(REMOTE_WRITE.read_text())["remote_write"]
        return [{**block[0], "url": f"{self.url}/api/v1/write"}]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class ScaleStack(Stack):
    """The shipped Stack, plus a remote_write block in its Prometheus configuration."""

    remote_write: list[dict[str, Any]] = field(default_factory=list)

    def write_configs(self) -> tuple[Path, Path]:
        prom, am = super().write_configs()
        if self.remote_write:
            cfg = yaml.safe_load(prom.read_text())
            cfg["remote_write"] = self.remote_write
            prom.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return prom, am


@dataclass
class Result:
    ranks: int
    series_per_rank: float
    scrape_mean_s: float
    scrape_max_s: float
    rule_eval_s: float
    rule_errors: list[str]
    rss_bytes: int
    head_series: int
    queries: list[tuple[str, float, int]]  # (title, latency s, series returned)
    query_errors: list[str]
    store: dict[str, Any] = field(default_factory=dict)

    @property
    def slowest(self) -> tuple[str, float, int]:
        return max(self.queries, key=lambda q: q[1])


def rule_groups(base: str) -> tuple[float, list[str]]:
    """(seconds of the last evaluation cycle over every group, errors of any rule)."""
    groups = api(base, "/api/v1/rules")["groups"]
    errors = [f"{r['name']}: {r.get('lastError')}" for g in groups for r in g["rules"]
              if r.get("health") not in ("ok", "unknown") or r.get("lastError")]
    return sum(g.get("evaluationTime", 0.0) for g in groups), errors


def head_series(base: str) -> int:
    m = re.search(rb"^prometheus_tsdb_head_series (\S+)$", get(f"{base}/metrics"), re.M)
    return int(float(m.group(1))) if m else -1


def rss_bytes(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(m.group(1)) * 1024 if m else -1


def time_queries(base: str, queries: list[tuple[str, str]], window_s: float, step_s: float
                 ) -> tuple[list[tuple[str, float, int]], list[str]]:
    end = time.time()
    out, errors = [], []
    for title, expr in queries:
        t0 = time.perf_counter()
        try:
            data = api(base, "/api/v1/query_range", query=expr, start=f"{end - window_s:.3f}", end=f"{end:.3f}",
                       step=f"{step_s:g}")
        except (OSError, RuntimeError) as exc:
            errors.append(f"{title}: {exc}")
            continue
        out.append((title, time.perf_counter() - t0, len(data["result"])))
    return out, errors


def measure(n: int, interval_s: float = 15.0, cycles: int = 6, store: bool = True,
            workdir: Path | None = None) -> Result:
    """Run N simulated ranks under Prometheus for ``cycles`` scrape intervals, then measure."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix=f"llmops-scale-{n}-"))
    farm = RankFarm(n).start()
    vm = VictoriaMetrics(tmp) if store and VictoriaMetrics.available() else None
    interval = f"{interval_s:g}s"
    stack = ScaleStack(tmp, prometheus_port=0, alertmanager_port=0, targets=farm.targets,
                       scrape_interval=interval, evaluation_interval=interval,
                       remote_write=vm.remote_write() if vm else [])
    try:
        stack.start(timeout=60)
        base = stack.prometheus_url
        pid = stack.processes["prometheus"].pid
        worst_eval, errors = 0.0, []
        deadline = time.monotonic() + cycles * interval_s
        while time.monotonic() < deadline:
            time.sleep(interval_s / 3)
            seconds, errors = rule_groups(base)
            worst_eval = max(worst_eval, seconds)
        scrape = api(base, "/api/v1/query", query='avg(scrape_duration_seconds{job="llmops"})')["result"]
        scrape_max = api(base, "/api/v1/query", query='max(scrape_duration_seconds{job="llmops"})')["result"]
        samples = api(base, "/api/v1/query", query='avg(scrape_samples_scraped{job="llmops"})')["result"]
        rate_interval = f"{4 * interval_s:g}s"
        queries, query_errors = time_queries(base, dashboard_queries(rate_interval), 600.0, interval_s)
        result = Result(n, float(samples[0]["value"][1]) if samples else 0.0,
                        float(scrape[0]["value"][1]) if scrape else -1.0,
                        float(scrape_max[0]["value"][1]) if scrape_max else -1.0,
                        worst_eval, errors, rss_bytes(pid), head_series(base), queries, query_errors)
        if vm is not None:
            result.store = read_back(vm, interval_s)
        return result
    finally:
        stack.stop()
        farm.stop()
        if vm is not None:
            vm.stop()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)


def read_back(vm: VictoriaMetrics, interval_s: float) -> dict[str, Any]:
    """A dashboard query (the run's median step time, recorded by Prometheus) read back from the store."""
    expr = f'llmops:run_step_duration_seconds:median5m{{run="{RUN}"}}'
    deadline = time.monotonic() + 4 * interval_s + 10  # remote_write batches for up to a few seconds
    while True:
        t0 = time.perf_counter()
        data = api(vm.url, "/api/v1/query", query=expr)
        latency = time.perf_counter() - t0
        if data["result"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    raw = api(vm.url, "/api/v1/query", query=f'count(llmops_train_step{{run="{RUN}"}})')["result"]
    return {"expr": expr, "series": len(data["result"]),
            "value": float(data["result"][0]["value"][1]) if data["result"] else None,
            "latency_s": latency, "ranks_stored": int(float(raw[0]["value"][1])) if raw else 0}


def table(results: list[Result]) -> str:
    lines = ["| ranks | series/rank | scrape per target mean / max | rule eval per cycle | Prometheus RSS "
             "| head series | dashboard queries: slowest (which) | store read-back |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in results:
        title, latency, _ = r.slowest
        store = (f"{r.store['latency_s'] * 1e3:.0f} ms, {r.store['ranks_stored']} ranks" if r.store else "—")
        lines.append(f"| {r.ranks} | {r.series_per_rank:.1f} | {r.scrape_mean_s * 1e3:.1f} / "
                     f"{r.scrape_max_s * 1e3:.1f} ms | {r.rule_eval_s * 1e3:.1f} ms | {r.rss_bytes / 2**20:.0f} MiB "
                     f"| {r.head_series} | {latency * 1e3:.0f} ms ({title}) | {store} |")
    return "\n".join(lines)


def query_table(r: Result) -> str:
    lines = [f"Dashboard queries at {r.ranks} ranks (range query, 10 minutes):", "",
             "| panel | latency | series |", "| --- | ---: | ---: |"]
    lines += [f"| {t} | {s * 1e3:.1f} ms | {k} |" for t, s, k in sorted(r.queries, key=lambda q: -q[1])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--interval", type=float, default=15.0, help="scrape and evaluation interval, seconds")
    ap.add_argument("--cycles", type=int, default=6, help="scrape intervals to run before measuring")
    ap.add_argument("--no-store", action="store_true", help="no VictoriaMetrics even where installed")
    args = ap.parse_args(argv)
    if args.interval <= 0 or args.cycles < 2 or min(args.ranks) < 1:
        raise ValueError(f"--interval {args.interval} must be > 0, --cycles {args.cycles} >= 2, ranks >= 1")
    results = []
    for n in args.ranks:
        results.append(measure(n, args.interval, args.cycles, store=not args.no_store))
        r = results[-1]
        print(f"{n} ranks: rule errors {r.rule_errors or 'none'}, query errors {r.query_errors or 'none'}",
              flush=True)
    print(table(results))
    print()
    print(query_table(results[-1]))
    return 0 if not any(r.rule_errors or r.query_errors for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
