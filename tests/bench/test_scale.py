"""bench/scale.py at N = 16: the real Prometheus scrapes 16 simulated ranks with the shipped rules; every rule
evaluates without error, every dashboard query returns, the per-run recordings find the simulated straggler,
and (where Debian's victoria-metrics is installed) a dashboard query comes back from the long-term store.
The timings are the bench's to report (python -m bench.scale), not this test's to assert."""

from __future__ import annotations

import shutil
import time

import pytest

from bench.ranks import RankFarm
from bench.scale import VictoriaMetrics, api, measure
from llmops.ops.stack import Stack

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("prometheus-alertmanager") is None,
                                reason="needs Debian's prometheus and prometheus-alertmanager (.ci/run installs them)")


def test_sixteen_ranks_rules_and_dashboard_queries(tmp_path):
    r = measure(16, interval_s=1.0, cycles=10, workdir=tmp_path)
    assert r.rule_errors == [], r.rule_errors
    assert r.query_errors == [], r.query_errors
    returned = {title for title, _, series in r.queries if series}
    for title in ("Step time across ranks", "Peak memory across ranks", "Step time per rank", "Throughput"):
        assert title in returned, title
    assert 16 * 40 <= r.head_series and r.series_per_rank <= 60  # rank 0 carries the run-level series
    assert r.scrape_mean_s > 0 and r.rule_eval_s > 0 and r.rss_bytes > 0
    if VictoriaMetrics.available():
        assert r.store["series"] == 1 and r.store["ranks_stored"] == 16
        assert r.store["value"] == pytest.approx(0.5, rel=0.15)  # the median rank's 0.5 s step


def test_slowest_rank_is_the_straggler(tmp_path):
    farm = RankFarm(8, slow_rank=5).start()
    try:
        with Stack(tmp_path, prometheus_port=0, alertmanager_port=0, targets=farm.targets, scrape_interval="1s",
                   evaluation_interval="1s") as stack:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # every rank's mean, over a few steps each
                ranks = api(stack.prometheus_url, "/api/v1/query", query="count(llmops:step_duration_seconds:mean5m)")
                if ranks["result"] and ranks["result"][0]["value"][1] == "8":
                    break
                time.sleep(1)
            time.sleep(4)
            res = api(stack.prometheus_url, "/api/v1/query",
                      query="llmops:run_slowest_rank_step_duration_seconds:mean5m")["result"]
            assert [x["metric"]["rank"] for x in res] == ["5"]
            assert float(res[0]["value"][1]) == pytest.approx(0.65, rel=0.1)  # 1.3 × 0.5 s
    finally:
        farm.stop()
