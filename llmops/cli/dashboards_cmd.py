"""``llmops dashboards`` (the Grafana dashboards and the PrometheusRule), ``llmops deploy`` and ``llmops stack``."""

from __future__ import annotations

import os
from pathlib import Path

import click

from llmops.ops import shipped
from llmops.ops import stack as stack_mod


def _base(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A runbook base URL as given, or one line naming it and what is allowed."""
    try:
        return None if value is None else shipped.check_base(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("dashboards")
@click.option("--out", default="dashboards", show_default=True, type=click.Path(file_okay=False),
              help="Folder the dashboard JSON files are written to.")
@click.option("--prometheus-rule", "prometheus_rule_out", default=None, type=click.Path(dir_okay=False),
              help="Also write the alert rules as a Kubernetes PrometheusRule to this file.")
@click.option("--rules", default=str(shipped.RULES), show_default="the shipped rules",
              type=click.Path(dir_okay=False), help="The Prometheus rules file the PrometheusRule is generated from.")
@click.option("--runbook-base", default=shipped.RUNBOOK_BASE, show_default=True, callback=_base, metavar="URL",
              help="Where the alerts' runbook_url links point: your copy of runbooks.md.")
def dashboards(out: str, prometheus_rule_out: str | None, rules: str, runbook_base: str) -> None:
    """Write the Grafana dashboards (grafana-foundation-sdk) as JSON, and optionally the PrometheusRule."""
    from llmops.ops.dashboards import prometheus_rule, write_all

    try:
        paths = write_all(out)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:  # a folder that cannot be made or written: the person's --out, not a bug
        raise click.BadParameter(_cannot_write(out, e), param_hint="'--out'") from None
    for path in paths:
        click.echo(f"wrote {path}")
    if prometheus_rule_out:
        try:
            text = prometheus_rule(shipped.with_runbook_base(Path(rules).read_text(), runbook_base))
        except (OSError, ValueError) as e:
            raise click.ClickException(f"--rules {rules}: {e}") from None
        try:
            Path(prometheus_rule_out).parent.mkdir(parents=True, exist_ok=True)
            Path(prometheus_rule_out).write_text(text)
        except OSError as e:
            raise click.BadParameter(_cannot_write(prometheus_rule_out, e), param_hint="'--prometheus-rule'") from None
        click.echo(f"wrote {prometheus_rule_out}")


@click.command("deploy")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write into (created); files already there with the same names are replaced.")
@click.option("--runbook-base", default=shipped.RUNBOOK_BASE, show_default=True, callback=_base, metavar="URL",
              help="Where the alerts' runbook_url links point: your copy of runbooks.md.")
def deploy(out: str, runbook_base: str) -> None:
    """Write the shipped deployment files: Prometheus, Alertmanager, alert rules and their tests, Grafana
    dashboards and provisioning, compose and Kubernetes manifests, runbooks (the repository's deploy/)."""
    try:
        paths = shipped.export(out, runbook_base)
    except OSError as e:
        raise click.BadParameter(_cannot_write(out, e), param_hint="'--out'") from None
    click.echo(f"wrote {len(paths)} files to {out}; start with docker-compose.yml or prometheus/prometheus.yml")


def _cannot_write(path: str, e: OSError) -> str:
    """One line: the path, and why the system refused it; allowed is a folder this user can write."""
    where = f" ({e.filename})" if e.filename and str(e.filename) != path else ""
    return f"cannot write {path!r}{where}: {e.strerror or e}; give a path you can write to"


def _default_dir() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "llmops", "stack")


_dir_option = click.option("--dir", "workdir", default=_default_dir, show_default="~/.cache/llmops/stack",
                           type=click.Path(file_okay=False), help="Working folder: configs, data, logs, pids.")


@click.group("stack")
def stack() -> None:
    """A local Prometheus + Alertmanager on 127.0.0.1 with llmops' configuration and alert rules."""


@stack.command("up")
@_dir_option
@click.option("--prometheus-port", default=9090, show_default=True, type=click.IntRange(0, 65535))
@click.option("--alertmanager-port", default=9093, show_default=True, type=click.IntRange(0, 65535))
@click.option("--target", "targets", multiple=True, metavar="HOST:PORT",
              help="A monitor endpoint to scrape (repeatable); default 127.0.0.1:9445 to :9452.")
@click.option("--webhook", default=None, metavar="URL", help="Also deliver every alert to this webhook.")
@click.option("--scrape-interval", default=None, metavar="DURATION", help="e.g. 1s; default the config's (5s).")
@click.option("--runbook-base", default=None, callback=_base, metavar="URL",
              help="Where the alerts' runbook_url links point; default the installed runbooks.md (file://).")
def up(workdir: str, prometheus_port: int, alertmanager_port: int, targets: tuple[str, ...],
       webhook: str | None, scrape_interval: str | None, runbook_base: str | None) -> None:
    """Start Prometheus and Alertmanager in the background and print their URLs."""
    path = Path(workdir)
    if (path / stack_mod.STATE_FILE).exists():
        raise click.ClickException(f"a stack is already running from {path}; run `llmops stack down` first")
    s = stack_mod.Stack(path, prometheus_port=prometheus_port, alertmanager_port=alertmanager_port,
                        targets=targets or stack_mod.LOCAL_TARGETS, webhook_url=webhook,
                        scrape_interval=scrape_interval, evaluation_interval=scrape_interval,
                        runbook_base=runbook_base or shipped.local_runbooks())
    try:
        s.start(detach=True)
    except (FileNotFoundError, RuntimeError, TimeoutError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"Prometheus:   {s.prometheus_url}   (alerts: {s.prometheus_url}/alerts)")
    click.echo(f"Alertmanager: {s.alertmanager_url}")
    click.echo(f"scraping {', '.join(s.targets)}; configs and logs in {path}; stop with `llmops stack down`")


@stack.command("down")
@_dir_option
def down(workdir: str) -> None:
    """Stop the Prometheus and Alertmanager that `llmops stack up` started."""
    stopped = stack_mod.stop_detached(Path(workdir))
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "no stack was running")
