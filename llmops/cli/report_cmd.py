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
    from llmops.report import write_report
    from llmops.report.summary import ending
    from llmops.runlog import read_run

    try:
        run = read_run(run_dir)
    except FileNotFoundError as e:
        raise click.BadParameter(str(e), param_hint="'RUN_DIR'") from None
    for r in run.ranks.values():
        skipped = f" ({r.bad_lines} record(s) skipped: unreadable or malformed)" if r.bad_lines else ""
        click.echo(f"{run.run}: {ending(r)[1]}{skipped}")
    try:
        page = write_report(run_dir, out)
    except OSError as e:  # a folder that cannot be made or written: the person's --out (or RUN_DIR), not a bug
        target = str(out or run_dir / "report")
        where = f" ({e.filename})" if e.filename and str(e.filename) != target else ""
        raise click.BadParameter(f"cannot write the report to {target!r}{where}: "
                                 f"{e.strerror or e}; give a folder you can write to",
                                 param_hint="'--out'" if out is not None else "'RUN_DIR'") from None
    click.echo(f"report: {page}")
