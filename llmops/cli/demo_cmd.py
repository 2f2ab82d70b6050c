"""``llmops demo``: the whole product on a laptop, no GPU and no Prometheus needed."""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import click


@click.command()
@click.option("--steps", type=click.IntRange(min=1), default=700, show_default=True, help="Training steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Micro-batch per process.")
@click.option("--seq-len", type=click.IntRange(min=2, max=1024), default=64, show_default=True,
              help="Characters per sample.")
@click.option("--devices", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU processes (DDP over gloo when > 1).")
@click.option("--budget", default="1GB", show_default=True,
              help="Memory budget per device for the OOM check ('none' for no check); e.g. 20MB shows the OOM verdict.")
@click.option("--stack", is_flag=True, help="Also start the local Prometheus and Alertmanager (llmops.ops.stack).")
@click.option("--port", type=click.IntRange(0, 65535), default=9445, show_default=True,
              help="Metrics port of rank 0 (rank r serves port + r; a busy port moves on).")
@click.option("--run-dir", default=None, help="Root of the run logs (default $LLMOPS_RUN_DIR or ./llmops_runs).")
@click.option("--progress/--no-progress", default=True, help="Lightning's progress bar.")
def demo(steps: int, batch_size: int, seq_len: int, devices: int, budget: str, stack: bool, port: int,
         run_dir: str | None, progress: bool) -> None:
    """Train a small GPT on a shipped text (Shakespeare's sonnets, character level) with the monitor on.

    Prints the preflight table and the metrics URL, shows the progress bar, prints the final
    predicted-vs-measured table, writes the report and samples a few lines. Ctrl-C stops cleanly.
    """
    from llmops.demo.run import run_demo

    budget_value = None if budget.strip().lower() in ("none", "0", "") else budget
    if run_dir is not None:
        _check_writable(Path(run_dir))  # before training: the run log and the report go there
    handle = _start_stack(port, devices) if stack and os.environ.get("LOCAL_RANK", "0") == "0" else None
    try:
        result = run_demo(steps=steps, batch_size=batch_size, seq_len=seq_len, devices=devices,
                          budget=budget_value, port=port, run_dir=run_dir, progress_bar=progress, echo=click.echo)
    except ValueError as e:  # a bad --budget, --seq-len for this text
        raise click.BadParameter(str(e)) from None
    finally:
        if handle is not None:
            _stop_stack(handle)
    if result.interrupted and result.rank == 0:
        click.echo(f"llmops demo: interrupted at step {result.steps}; the run log and the report cover the steps run")
        raise SystemExit(130)


def _check_writable(root: Path) -> None:
    """``--run-dir`` must be a folder this process can create and write in; else one line, exit 2."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".llmops-write-check-"):
            pass
    except OSError as e:
        raise click.BadParameter(f"cannot write run logs in {str(root)!r}: {e.strerror or e}; give a folder you "
                                 "can write to", param_hint="'--run-dir'") from None


def _start_stack(port: int, devices: int) -> Any:
    """A local Prometheus + Alertmanager (``llmops.ops.stack``) scraping the demo's ranks; ``None`` when unavailable."""
    try:
        stack = importlib.import_module("llmops.ops.stack")  # local Prometheus + Alertmanager (the dashboards work)
    except ImportError:
        click.echo("llmops demo: --stack needs llmops.ops.stack (local Prometheus and Alertmanager), which this "
                   "install does not have; going on without it: the metrics endpoint still serves", err=True)
        return None
    targets = tuple(f"127.0.0.1:{port + r}" for r in range(devices)) if port else stack.LOCAL_TARGETS
    try:
        s = stack.Stack(Path(tempfile.mkdtemp(prefix="llmops-demo-stack-")),
                        prometheus_port=_port_or_free(9090), alertmanager_port=_port_or_free(9093),
                        targets=targets, scrape_interval="2s", evaluation_interval="2s")
        s.start()
    except Exception as e:  # noqa: BLE001 - the demo goes on without the stack
        click.echo(f"llmops demo: --stack could not start Prometheus/Alertmanager ({type(e).__name__}: {e}); "
                   "going on without it", err=True)
        return None
    click.echo(f"llmops demo: Prometheus at {s.prometheus_url} (scraping {', '.join(targets)} every 2 s), "
               f"Alertmanager at {s.alertmanager_url}; both stop when the demo ends (`llmops stack up` keeps "
               "one running)")
    return s


def _stop_stack(s: Any) -> None:
    try:
        s.stop()
    except Exception as e:  # noqa: BLE001
        click.echo(f"llmops demo: stopping the stack failed ({type(e).__name__}: {e})", err=True)
    else:
        shutil.rmtree(s.workdir, ignore_errors=True)  # its configuration and a minute of TSDB


def _port_or_free(port: int) -> int:
    """``port`` when it is free on 127.0.0.1, else 0 (the stack then takes a free one)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port
