"""``llmops demo``: the whole product on a laptop, no GPU and no Prometheus needed."""

from __future__ import annotations

import inspect
import os
from typing import Any

import click


@click.command()
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True, help="Training steps.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Micro-batch per process.")
@click.option("--seq-len", type=click.IntRange(min=2, max=1024), default=64, show_default=True,
              help="Characters per sample.")
@click.option("--devices", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPU processes (DDP over gloo when > 1).")
@click.option("--budget", default="1GB", show_default=True,
              help="Memory budget per device for the OOM check ('none' for no check); e.g. 20MB shows the OOM verdict.")
@click.option("--stack", is_flag=True, help="Also start the local Prometheus and Alertmanager (llmops.stack).")
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
    from ..demo.run import run_demo

    budget_value = None if budget.strip().lower() in ("none", "0", "") else budget
    handle = _start_stack() if stack and os.environ.get("LOCAL_RANK", "0") == "0" else None
    try:
        result = run_demo(steps=steps, batch_size=batch_size, seq_len=seq_len, devices=devices,
                          budget=budget_value, port=port, run_dir=run_dir, progress_bar=progress, echo=click.echo)
    except ValueError as e:  # a bad --budget, --seq-len for this text
        raise click.BadParameter(str(e)) from None
    finally:
        if handle is not None:
            _stop_stack(*handle)
    if result.interrupted and result.rank == 0:
        click.echo(f"llmops demo: interrupted at step {result.steps}; the run log and the report cover the steps run")
        raise SystemExit(130)


def _start_stack() -> tuple[Any, Any] | None:
    try:
        from .. import stack  # llmops/stack.py: local Prometheus + Alertmanager (the dashboards work)
    except ImportError:
        click.echo("llmops demo: --stack needs llmops.stack (local Prometheus and Alertmanager), which this "
                   "install does not have; going on without it: the metrics endpoint still serves", err=True)
        return None
    try:
        handle = stack.start()
    except Exception as e:  # noqa: BLE001 - the demo goes on without the stack
        click.echo(f"llmops demo: --stack could not start Prometheus/Alertmanager ({type(e).__name__}: {e}); "
                   "on Debian: apt-get install prometheus prometheus-alertmanager. Going on without it", err=True)
        return None
    for name in ("prometheus_url", "alertmanager_url"):
        url = getattr(handle, name, None)
        if url:
            click.echo(f"llmops demo: {name.split('_')[0]} at {url}")
    return stack, handle


def _stop_stack(stack: Any, handle: Any) -> None:
    try:
        takes_arg = bool(inspect.signature(stack.stop).parameters)
        stack.stop(handle) if takes_arg else stack.stop()
    except Exception as e:  # noqa: BLE001
        click.echo(f"llmops demo: stopping the stack failed ({type(e).__name__}: {e})", err=True)
