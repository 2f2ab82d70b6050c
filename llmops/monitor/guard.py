"""Errors inside the monitor: caught, logged once per probe, counted; the run goes on."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from llmops.metrics import MetricState

log = logging.getLogger("llmops")


T = TypeVar("T")


class ProbeHung(RuntimeError):
    """A probe call did not return within its bound; it was left behind on a daemon thread."""


def bounded(fn: Callable[[], T], seconds: float, what: str) -> T:
    """``fn()`` on a daemon thread, waited for at most ``seconds``: a driver call that blocks (a GPU
    fallen off the bus) cannot hold the training thread. Raises ``ProbeHung`` past the bound; ``fn``'s
    own exception is raised as it is."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            result["error"] = e

    thread = threading.Thread(target=run, name=f"llmops-{what}", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ProbeHung(f"{what} did not return within {seconds:g} s; the call is left behind")
    if "error" in result:
        raise result["error"]
    return result["value"]  # type: ignore[no-any-return]


class OOMRiskError(RuntimeError):
    """Raised before the first step when ``on_oom_risk="raise"`` and the prediction does not fit."""


class OOMRiskWarning(UserWarning):
    """The run may not fit: ``warnings`` filters, ``-W error`` and pytest's filters see it."""


def warn_oom(message: str, rank_zero_only: bool) -> None:
    """Log an OOM risk and raise it as an ``OOMRiskWarning``: through Lightning's rank-zero warning for
    what every rank predicts alike, on any rank for what one rank measured."""
    log.warning(message)
    if rank_zero_only:
        from lightning_utilities.core.rank_zero import rank_zero_warn

        rank_zero_warn(message, category=OOMRiskWarning, stacklevel=4)
    else:
        warnings.warn(message, OOMRiskWarning, stacklevel=4)


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
