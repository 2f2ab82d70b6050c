"""The monitor's settings, checked when the callback is built."""

from __future__ import annotations

from dataclasses import dataclass

from .estimate import TrainingSpec
from .estimate.units import parse_size

ON_OOM_RISK = ("warn", "raise")


@dataclass(frozen=True)
class MonitorConfig:
    """Constructor arguments of ``LLMOpsMonitor``; see its docstring for each."""

    port: int = 9445
    addr: str = "127.0.0.1"
    run: str | None = None
    spec: TrainingSpec | None = None
    memory_budget: int | None = None  # bytes; parsed from "8GB" by ``from_args``
    safety: float = 0.9
    on_oom_risk: str = "warn"
    interval: float = 1.0
    activation_interval: int = 100
    trend_window: int = 20
    trend_horizon_steps: int = 1000
    nvml: bool | None = None
    certfile: str | None = None
    keyfile: str | None = None
    basic_auth: tuple[str, str] | None = None
    linger: float = 0.0
    pushgateway_url: str | None = None
    serve: bool = True
    runlog: bool = True  # append every sample to the local run log
    run_dir: str | None = None  # the run log's root; None: $LLMOPS_RUN_DIR, else ./llmops_runs
    dry_run: bool = False  # one fake training step before step 1: a third prediction, model="dryrun"
    dry_run_timeout: float = 120.0  # seconds; past it the dry run is skipped with a warning

    @classmethod
    def from_args(cls, memory_budget: int | float | str | None = None, **kw: object) -> MonitorConfig:
        """Validate arguments a person wrote; ``ValueError`` names the argument, value and what is allowed."""
        budget = None
        if memory_budget is not None:
            try:
                budget = parse_size(memory_budget, bare_unit=1)
            except ValueError:
                allowed = "bytes as a number, or a size like '8GB' or '80GiB'"
                raise _bad("memory_budget", memory_budget, allowed) from None
        config = cls(memory_budget=budget, **kw)  # type: ignore[arg-type]
        config.check()
        return config

    def check(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise _bad("port", self.port, "a whole number in 0..65535 (0 takes a free port)")
        if not isinstance(self.addr, str) or not self.addr:
            raise _bad("addr", self.addr, "an address to listen on, e.g. '127.0.0.1' or '0.0.0.0'")
        if self.run is not None and (not isinstance(self.run, str) or not self.run.strip()):
            raise _bad("run", self.run, "a non-empty name, or None to derive it from the logger")
        if self.spec is not None and not isinstance(self.spec, TrainingSpec):
            raise _bad("spec", type(self.spec).__name__, "a llmops.TrainingSpec or None")
        if not isinstance(self.safety, (int, float)) or not 0 < self.safety <= 1:
            raise _bad("safety", self.safety, "a fraction in (0, 1]")
        if self.on_oom_risk not in ON_OOM_RISK:
            raise _bad("on_oom_risk", self.on_oom_risk, "'warn' or 'raise'")
        if not isinstance(self.interval, (int, float)) or not self.interval > 0:
            raise _bad("interval", self.interval, "seconds > 0")
        for name in ("activation_interval", "trend_window", "trend_horizon_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _bad(name, value, "a whole number ≥ 1")
        if self.trend_window < 3:
            raise _bad("trend_window", self.trend_window, "at least 3 samples")
        if not isinstance(self.dry_run_timeout, (int, float)) or not self.dry_run_timeout > 0:
            raise _bad("dry_run_timeout", self.dry_run_timeout, "seconds > 0")
        if not isinstance(self.linger, (int, float)) or self.linger < 0:
            raise _bad("linger", self.linger, "seconds ≥ 0")
        if (self.certfile is None) != (self.keyfile is None):
            raise _bad("certfile/keyfile", (self.certfile, self.keyfile), "both set for TLS, or neither")
        if self.basic_auth is not None and (len(self.basic_auth) != 2 or not all(self.basic_auth)):
            raise _bad("basic_auth", "(…)", "a (user, password) pair of non-empty strings")


def _bad(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"LLMOpsMonitor: {name}={value!r} is not allowed; expected {allowed}")
