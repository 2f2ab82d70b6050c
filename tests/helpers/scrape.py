"""Scrape a real endpoint and parse it with prometheus-client's parser."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return [(s.name, dict(s.labels), s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(samples, name: str, **labels: str) -> float | None:
    """The one sample with this name whose labels include ``labels``; None when absent."""
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, f"{name}{labels} matched {len(found)} series"
    return found[0] if found else None
