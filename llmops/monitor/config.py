"""The monitor's settings, checked when the callback is built."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from llmops.estimate import TrainingSpec
from llmops.spec.builder import explicit
from llmops.spec.training import validate_input
from llmops.units import parse_size

ON_OOM_RISK = ("warn", "raise")
ENDPOINTS = ("rank", "node")  # one endpoint per process (the default), or one per node on local rank 0
MAX_SECONDS = 7 * 24 * 3600.0  # a week: past it a setting in seconds is a typo, not a plan
MAX_PEAK_FLOPS = 1e18  # FLOP/s per device: an exaFLOP/s, far past any device
MIN_STALL_FACTOR, MAX_STALL_FACTOR = 1.5, 1000.0  # under 1.5 × p99 ordinary jitter would count as a stall


@dataclass(frozen=True)
class MonitorConfig:
    """Constructor arguments of ``LLMOpsMonitor``; see its docstring for each."""

    port: int = 9445
    addr: str = "127.0.0.1"
    endpoint: str = "rank"  # "rank": each process serves port + local_rank; "node": local rank 0 serves the node
    run: str | None = None
    spec: TrainingSpec | Mapping[str, Any] | None = None
    memory_budget: int | None = None  # bytes; parsed from "8GB" by ``from_args``
    safety: float = 0.9
    on_oom_risk: str = "warn"
    interval: float = 1.0
    activation_interval: int | None = None  # None: llmops.telemetry.schedule's default, stretched to its budget
    trend_window: int = 20
    trend_horizon_steps: int = 1000
    nvml: bool | None = None
    certfile: str | None = None
    keyfile: str | None = None
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)  # a secret: never in a repr
    linger: float = 0.0
    pushgateway_url: str | None = None
    serve: bool | None = None  # None: serve, except under fast_dev_run
    runlog: bool | None = None  # append every sample to the local run log; None: yes, except under fast_dev_run
    run_dir: str | None = None  # the run log's root; None: $LLMOPS_RUN_DIR, else ./llmops_runs
    dry_run: bool = False  # one fake training step before step 1: a third prediction, model="dryrun"
    dry_run_timeout: float = 120.0  # seconds; past it the dry run is skipped with a warning
    # FLOP/s per device for the MFU; None: the GPU table's (llmops.telemetry.device_flops)
    peak_flops: float | None = None
    # A stall: no step finished for stall_factor × the recent p99 step time, and at least stall_min_seconds.
    # 5 is nvidia-resiliency-ext's safety factor; 2 minutes keeps a short-step run's checkpoints, GC pauses
    # and recompilations quiet, and for steps up to 2 minutes reports well inside NCCL's 10-minute timeout.
    stall_factor: float = 5.0
    stall_min_seconds: float = 120.0

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
        if self.endpoint not in ENDPOINTS:
            raise _bad("endpoint", self.endpoint, "'rank' (each process serves port + local_rank) or 'node' "
                       "(local rank 0 serves every local rank's series on port)")
        if not _address(self.addr):
            raise _bad("addr", self.addr, "an IP address or host name to listen on, e.g. '127.0.0.1' or '0.0.0.0'")
        if self.run is not None and (not isinstance(self.run, str) or not self.run.strip()):
            raise _bad("run", self.run, "a non-empty name, or None to derive it from the logger")
        if self.spec is not None and not isinstance(self.spec, (TrainingSpec, Mapping)):
            raise _bad("spec", type(self.spec).__name__, "a llmops.TrainingSpec, a dict of its fields, or None")
        if isinstance(self.spec, Mapping):
            known = {f.name for f in fields(TrainingSpec)}
            for key in self.spec:
                if key not in known:
                    raise _bad("spec", key, f"a field of TrainingSpec: {', '.join(sorted(known))}")
        if self.spec is not None:
            try:  # the estimator's own checks, now rather than at the first batch
                validate_input(TrainingSpec(**self.overrides()))
            except (ValueError, TypeError) as e:
                raise ValueError(f"LLMOpsMonitor: spec is not allowed: {e}") from None
        if not _number(self.safety) or not 0 < self.safety <= 1:
            raise _bad("safety", self.safety, "a fraction in (0, 1]")
        if self.on_oom_risk not in ON_OOM_RISK:
            raise _bad("on_oom_risk", self.on_oom_risk, "'warn' or 'raise'")
        for name, zero_ok in (("interval", False), ("dry_run_timeout", False), ("linger", True)):
            value = getattr(self, name)
            if not _number(value) or not (0 <= value if zero_ok else 0 < value) or value > MAX_SECONDS:
                raise _bad(name, value, f"seconds {'≥' if zero_ok else '>'} 0 and at most {MAX_SECONDS:g} (a week)")
        for name in ("activation_interval", "trend_window", "trend_horizon_steps"):
            value = getattr(self, name)
            if name == "activation_interval" and value is None:
                continue  # llmops.telemetry.schedule's default
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise _bad(name, value, "a whole number ≥ 1" + (", or None (every 100 steps, further apart where "
                                                                 "measuring costs over 0.1%)"
                                                                 if name == "activation_interval" else ""))
        if self.trend_window < 3:
            raise _bad("trend_window", self.trend_window, "at least 3 samples")
        for name, none_ok in (("serve", True), ("runlog", True), ("dry_run", False)):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (none_ok and value is None):
                raise _bad(name, value, "True or False" + (", or None (yes, except under fast_dev_run)"
                                                           if none_ok else ""))
        if self.nvml is not None and not isinstance(self.nvml, bool):
            raise _bad("nvml", self.nvml, "True, False or None (None: read NVML when the run uses a GPU)")
        if (self.certfile is None) != (self.keyfile is None):
            raise _bad("certfile/keyfile", (self.certfile, self.keyfile), "both set for TLS, or neither")
        for name in ("certfile", "keyfile"):
            path = getattr(self, name)
            if path is not None and not (isinstance(path, (str, os.PathLike)) and os.path.isfile(path)):
                raise _bad(name, path, "the path of a readable PEM file")
        auth = self.basic_auth
        if auth is not None and (not isinstance(auth, (tuple, list)) or len(auth) != 2
                                 or not all(isinstance(x, str) and x for x in auth)):
            raise _bad("basic_auth", "(…)", "a (user, password) pair of non-empty strings")
        url = self.pushgateway_url
        if url is not None and not _push_url(url):
            raise _bad("pushgateway_url", url, "a Pushgateway address like 'http://pushgateway:9091' (http or "
                                               "https, or host:port), or None")
        if self.peak_flops is not None and (not _number(self.peak_flops)
                                            or not 0 < self.peak_flops <= MAX_PEAK_FLOPS):
            raise _bad("peak_flops", self.peak_flops, f"FLOP/s per device, > 0 and at most {MAX_PEAK_FLOPS:g} "
                       "(e.g. 989e12 for an H100 SXM in bf16), or None for the GPU table's")
        if not _number(self.stall_factor) or not MIN_STALL_FACTOR <= self.stall_factor <= MAX_STALL_FACTOR:
            raise _bad("stall_factor", self.stall_factor, f"a number in [{MIN_STALL_FACTOR:g}, {MAX_STALL_FACTOR:g}]: "
                       "how many times the recent p99 step time a step may take before the run counts as stalled")
        if not _number(self.stall_min_seconds) or not 0 < self.stall_min_seconds <= MAX_SECONDS:
            raise _bad("stall_min_seconds", self.stall_min_seconds,
                       f"seconds > 0 and at most {MAX_SECONDS:g} (a week): the shortest time without a step that "
                       "counts as a stall")
        if self.run_dir is not None and not isinstance(self.run_dir, (str, os.PathLike)):
            raise _bad("run_dir", self.run_dir, "a folder path, or None")

    def for_trainer(self, fast_dev_run: bool) -> MonitorConfig:
        """The settings in effect for a run: ``serve`` and ``runlog`` left at None are on, except under
        ``fast_dev_run`` (a smoke test serves no port and writes no run log unless asked)."""
        return replace(self, serve=not fast_dev_run if self.serve is None else self.serve,
                       runlog=not fast_dev_run if self.runlog is None else self.runlog)

    def overrides(self) -> dict[str, Any]:
        """The fields ``spec`` sets: every key of a dict; of a ``TrainingSpec``, those that differ
        from its defaults (a dataclass cannot tell a default passed on purpose: use a dict for that)."""
        if isinstance(self.spec, Mapping):
            return dict(self.spec)
        if isinstance(self.spec, TrainingSpec):
            return explicit(self.spec)
        return {}


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")  # a host name by RFC 1123


def _address(value: object) -> bool:
    """An IP address (v4 or v6) or a host name by RFC 1123."""
    if not isinstance(value, str) or not value:
        return False
    try:
        ipaddress.ip_address(value.strip("[]"))
        return True
    except ValueError:
        return bool(_HOST.fullmatch(value))


def _push_url(value: object) -> bool:
    """``http(s)://host[:port][/path]`` or ``host:port``, as prometheus_client's push accepts."""
    if not isinstance(value, str) or not value.strip():
        return False
    parsed = urllib.parse.urlsplit(value if "://" in value else f"http://{value}")
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and _address(parsed.hostname or "")


def _number(value: object) -> bool:
    """A real, finite number (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(name: str, value: object, allowed: str) -> ValueError:
    return ValueError(f"LLMOpsMonitor: {name}={value!r} is not allowed; expected {allowed}")
