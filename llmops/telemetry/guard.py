"""Errors inside the monitor: caught, logged once per probe, counted; the run goes on."""

from __future__ import annotations

import logging
from typing import Any

from llmops.estimate.verdict import OOMRiskError, OOMRiskWarning
from llmops.metrics import MetricState

log = logging.getLogger("llmops")


class Guard:
    """``with guard("nvml"): ...`` swallows and counts errors, except the OOM verdict the user asked to
    stop on: ``OOMRiskError``, and ``OOMRiskWarning`` made an error by a warnings filter (``-W error``)."""

    def __init__(self, state: MetricState) -> None:
        self._state = state
        self._seen: set[str] = set()
        self._scopes: dict[str, _Scope] = {}

    def __call__(self, probe: str) -> _Scope:
        # One reusable scope per probe: the hooks enter one every step, and a generator-based context
        # manager costs a generator and a wrapper object each time.
        scope = self._scopes.get(probe)
        if scope is None:
            scope = self._scopes[probe] = _Scope(self, probe)
        return scope

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


class _Scope:
    """``with guard(probe):`` — swallows and counts what the block raises (but the OOM verdict)."""

    __slots__ = ("_guard", "_probe")

    def __init__(self, guard: Guard, probe: str) -> None:
        self._guard, self._probe = guard, probe

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, _tb: Any) -> bool:
        if error is None or not isinstance(error, Exception) or isinstance(error, (OOMRiskError, OOMRiskWarning)):
            return False
        self._guard.record(self._probe, error)  # the monitor never kills the run
        return True
