"""The ``llmops`` command line."""

from __future__ import annotations

import sys

import click

from llmops import DISTRIBUTION
from llmops.cli.dashboards_cmd import dashboards, deploy, stack
from llmops.cli.demo_cmd import demo
from llmops.cli.estimate_cmd import estimate, models
from llmops.cli.report_cmd import report


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=DISTRIBUTION)
def cli() -> None:
    """Predict and monitor memory and GPU needs of PyTorch Lightning training runs."""


cli.add_command(estimate)
cli.add_command(models)
cli.add_command(demo)
cli.add_command(report)
cli.add_command(dashboards)
cli.add_command(deploy)
cli.add_command(stack)


def main(argv: list[str] | None = None) -> int:
    """Entry point: a person's bad input gets one line on stderr and exit code 2, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="llmops", standalone_mode=False)  # an Exit's code, or None
    except click.exceptions.Abort:
        click.echo("llmops: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"llmops: error: {e.format_message()}", err=True)
        return e.exit_code if e.exit_code else 1
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
