"""`report`: the HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from .base import Invocation, cli, handled
from .output import out


@cli.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default="report.html",
              show_default=True, help="The HTML file to write.")
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True,
              help="Movers: compare each score with its value this many days ago.")
@click.pass_obj
@handled
def report(obj: Invocation, out_path: Path, days: int) -> None:
    """Write one self-contained HTML page: distributions, statuses, metrics, movers, matching, runs."""
    from ..report import write_report

    mappings = obj.mappings()
    with obj.reader() as store:
        try:
            size = write_report(store, mappings, out_path, movers_days=days)
        except OSError as exc:
            raise click.FileError(str(out_path), hint=exc.strerror or str(exc)) from exc
    out.print(f"report written to {out_path} ({size:,} bytes)", markup=False)
