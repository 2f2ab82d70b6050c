"""Errors inside the monitor: caught, logged once per probe, counted; the run goes on."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .exporter import MetricState

log = logging.getLogger("llmops")


class OOMRiskError(RuntimeError):
    """Raised before the first step when ``on_oom_risk="raise"`` and the prediction does not fit."""


class Guard:
    """``with guard("nvml"): ...`` swallows and counts errors, except ``OOMRiskError``."""

    def __init__(self, state: MetricState) -> None:
        self._state = state
        self._seen: set[str] = set()

    @contextmanager
    def __call__(self, probe: str) -> Iterator[None]:
        try:
            yield
        except OOMRiskError:
            raise
        except Exception as e:  # noqa: BLE001 - the monitor never kills the run
            self.record(probe, e)

    def record(self, probe: str, error: BaseException) -> None:
        """Count an error and log it the first time this probe fails."""
        try:
            self._state.inc("llmops_monitor_errors_total", probe=probe)
        except Exception:  # noqa: BLE001
            pass
        if probe not in self._seen:
            self._seen.add(probe)
            log.warning("llmops: %s failed (%s: %s); the run goes on, further errors are counted in "
                        "llmops_monitor_errors_total{probe=%r}", probe, type(error).__name__, error, probe)
