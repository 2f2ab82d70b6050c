"""A local Prometheus + Alertmanager on 127.0.0.1 with the repository's configuration and rules.

Used by ``llmops stack up|down`` and by the end-to-end tests. The binaries come from Debian
(``prometheus``, ``prometheus-alertmanager``) or upstream (``alertmanager``). Configuration is
read from the shipped ``llmops/ops/deploy`` and written, rewritten for loopback, into a working folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmops.ops.shipped import ALERTMANAGER_YML, PROMETHEUS_YML, RULES, local_runbooks, with_runbook_base

LOCAL_TARGETS = tuple(f"127.0.0.1:{9445 + r}" for r in range(8))  # LLMOpsMonitor's port + local_rank
STATE_FILE = "stack.json"


def find_binary(*names: str) -> str:
    """The first of ``names`` on PATH; ``FileNotFoundError`` says how to install it."""
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(f"none of {', '.join(names)} is on PATH; on Debian: "
                            "apt-get install prometheus prometheus-alertmanager")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_config(base: dict[str, Any], *, targets: Sequence[str], alertmanager: str,
                      rule_files: Sequence[str | Path], scrape_interval: str | None = None,
                      evaluation_interval: str | None = None,
                      extra_scrape_configs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """``base`` (deploy/prometheus/prometheus.yml) with the llmops job's targets, the Alertmanager
    address and the rule files replaced; intervals overridden when given."""
    cfg = json.loads(json.dumps(base))  # a deep copy
    glob = cfg.setdefault("global", {})
    if scrape_interval:
        glob["scrape_interval"] = scrape_interval
    if evaluation_interval:
        glob["evaluation_interval"] = evaluation_interval
    cfg["rule_files"] = [str(Path(r).resolve()) for r in rule_files]
    cfg["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    jobs = [j for j in cfg.get("scrape_configs", []) if j.get("job_name") == "llmops"]
    if not jobs:
        raise ValueError("the Prometheus configuration has no scrape job named 'llmops'")
    jobs[0]["static_configs"] = [{"targets": list(targets)}]
    cfg["scrape_configs"] = [*cfg["scrape_configs"], *extra_scrape_configs]
    return cfg


def alertmanager_config(base: dict[str, Any], *, webhook_url: str | None = None,
                        group_wait: str | None = None, group_interval: str | None = None) -> dict[str, Any]:
    """``base`` (deploy/alertmanager/alertmanager.yml) with a webhook added to every receiver and the
    route's timings overridden when given."""
    cfg = json.loads(json.dumps(base))
    if webhook_url:
        for receiver in cfg.get("receivers", []):
            receiver.setdefault("webhook_configs", []).append({"url": webhook_url, "send_resolved": True})
    for key, value in (("group_wait", group_wait), ("group_interval", group_interval)):
        if value:
            cfg["route"][key] = value
    return cfg


@dataclass
class Stack:
    """Prometheus and Alertmanager as child processes on 127.0.0.1, configured in ``workdir``.

    ``start()`` waits until both answer ``/-/ready``; ``stop()`` (or leaving a ``with`` block)
    ends them. Port 0 takes a free port. The rule files are copied into ``workdir`` with their
    runbook links pointing at ``runbook_base`` (default: the installed runbooks, on this machine).
    """

    workdir: Path
    prometheus_port: int = 9090
    alertmanager_port: int = 9093
    targets: Sequence[str] = LOCAL_TARGETS
    rule_files: Sequence[str | Path] = (RULES,)
    webhook_url: str | None = None
    scrape_interval: str | None = None
    evaluation_interval: str | None = None
    group_wait: str | None = None
    group_interval: str | None = None
    extra_scrape_configs: Sequence[dict[str, Any]] = ()
    prometheus_yml: Path = PROMETHEUS_YML
    alertmanager_yml: Path = ALERTMANAGER_YML
    runbook_base: str = field(default_factory=local_runbooks)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.prometheus_port = self.prometheus_port or free_port()
        self.alertmanager_port = self.alertmanager_port or free_port()

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def write_configs(self) -> tuple[Path, Path]:
        """Write the loopback configurations into ``workdir``; returns (prometheus.yml, alertmanager.yml)."""
        rules_dir = self.workdir / "rules"
        rules_dir.mkdir(parents=True, exist_ok=True)
        rule_files = []
        for i, src in enumerate(map(Path, self.rule_files)):
            rule_files.append(rules_dir / f"{i}-{src.name}")
            rule_files[-1].write_text(with_runbook_base(src.read_text(encoding="utf-8"), self.runbook_base))
        prom = prometheus_config(
            yaml.safe_load(self.prometheus_yml.read_text()), targets=self.targets,
            alertmanager=f"127.0.0.1:{self.alertmanager_port}", rule_files=rule_files,
            scrape_interval=self.scrape_interval, evaluation_interval=self.evaluation_interval,
            extra_scrape_configs=self.extra_scrape_configs)
        am = alertmanager_config(yaml.safe_load(self.alertmanager_yml.read_text()), webhook_url=self.webhook_url,
                                 group_wait=self.group_wait, group_interval=self.group_interval)
        prom_path, am_path = self.workdir / "prometheus.yml", self.workdir / "alertmanager.yml"
        prom_path.write_text(yaml.safe_dump(prom, sort_keys=False))
        am_path.write_text(yaml.safe_dump(am, sort_keys=False))
        return prom_path, am_path

    def commands(self) -> dict[str, list[str]]:
        prom_path, am_path = self.workdir / "prometheus.yml", self.workdir / "alertmanager.yml"
        return {
            "alertmanager": [
                find_binary("prometheus-alertmanager", "alertmanager"), f"--config.file={am_path}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                "--cluster.listen-address=",  # else it gossips on 0.0.0.0:9094
            ],
            "prometheus": [
                find_binary("prometheus"), f"--config.file={prom_path}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
        }

    def start(self, timeout: float = 30.0, detach: bool = False) -> None:
        """Start both (Alertmanager first) and wait until they are ready; on failure stop what started.

        ``detach`` puts them in their own session, so they outlive this process (``llmops stack up``).
        """
        self.write_configs()
        try:
            for name, cmd in self.commands().items():
                log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
                self.processes[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                        stdin=subprocess.DEVNULL, start_new_session=detach)
                log.close()
            deadline = time.monotonic() + timeout
            for name, url in (("alertmanager", self.alertmanager_url), ("prometheus", self.prometheus_url)):
                self._wait_ready(name, url, deadline)
        except BaseException:
            self.stop()
            raise
        if detach:
            state = {"workdir": str(self.workdir), "prometheus_url": self.prometheus_url,
                     "alertmanager_url": self.alertmanager_url,
                     "pids": {name: p.pid for name, p in self.processes.items()}}
            (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def _wait_ready(self, name: str, url: str, deadline: float) -> None:
        proc = self.processes[name]
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{self.log_tail(name)}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} was not ready at {url} in time:\n{self.log_tail(name)}")
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate both, kill what is still running after ``timeout`` seconds."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout)
        self.processes.clear()

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_detached(workdir: Path, timeout: float = 10.0) -> list[str]:
    """Stop the processes a detached ``Stack`` in ``workdir`` started; returns the names stopped.

    A pid is only signalled while its command line still names ``workdir``, so a pid reused by
    another program since is left alone.
    """
    state_path = Path(workdir) / STATE_FILE
    if not state_path.exists():
        return []
    state = json.loads(state_path.read_text())
    stopped = []
    for name, pid in state["pids"].items():
        if _is_ours(pid, str(workdir)):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _is_ours(pid, str(workdir)) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _is_ours(pid, str(workdir)):
                os.kill(pid, signal.SIGKILL)
            stopped.append(name)
    state_path.unlink()
    return stopped


def _is_ours(pid: int, workdir: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return status != "Z" and workdir in cmdline
