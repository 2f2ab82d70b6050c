"""``llmops report RUN_DIR``: the run log as an HTML page with its plots."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=True, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for report.html and the PNGs (default RUN_DIR/report).")
def report(run_dir: Path, out: Path | None) -> None:
    """Write an offline HTML report (and PNGs) from a run log, llmops_runs/<run>/."""
    from ..report import write_report
    from ..report.summary import ending
    from ..runlog import read_run

    try:
        run = read_run(run_dir)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    for r in run.ranks.values():
        click.echo(f"{run.run}: {ending(r)[1]}")
    click.echo(f"report: {write_report(run_dir, out)}")
