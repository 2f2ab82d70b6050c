"""A final push of the run's metrics to a Prometheus Pushgateway, for runs shorter than a scrape."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, push_to_gateway


def push_final(
    pushgateway_url: str,
    registry: CollectorRegistry,
    job: str = "llmops",
    grouping_key: Mapping[str, object] | None = None,
    timeout: float = 10.0,
) -> None:
    """PUT every metric of ``registry`` to the Pushgateway group ``job`` + ``grouping_key``.

    Use a grouping key such as ``{"run": run, "rank": rank}`` so ranks do not overwrite each other.
    Raises ``OSError`` (``urllib.error.URLError`` included) when the push fails, for the caller to
    count in ``llmops_monitor_errors_total``; ``ValueError`` for an empty URL.
    """
    if not pushgateway_url:
        raise ValueError("pushgateway_url is empty: expected e.g. 'http://pushgateway:9091'")
    key = {str(k): str(v) for k, v in (grouping_key or {}).items()}
    push_to_gateway(pushgateway_url, job=job, registry=registry, grouping_key=key, timeout=timeout)
