"""The metrics llmops exports: the declarative catalogue (the public interface, docs/metrics.md is generated from
it) and the thread-safe state a scrape reads."""

from llmops.metrics.catalogue import BY_NAME, METRICS, MetricSpec
from llmops.metrics.state import MetricState

__all__ = ["BY_NAME", "METRICS", "MetricSpec", "MetricState"]
