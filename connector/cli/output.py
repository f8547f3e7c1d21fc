"""What every command prints with: the two consoles, and one way to show a listing as JSON, CSV,
a table, or a line saying there is nothing to show."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click
from rich.console import Console
from rich.table import Table

out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def one_format(**flags: bool) -> None:
    """Flags that exclude each other: two of them are a usage error (exit 2), not a silent pick."""
    given = [name for name, on in flags.items() if on]
    if len(given) > 1:
        raise click.UsageError(f"give one of {', '.join('--' + n for n in given)}, not both")


def emit(data: Any, as_json: bool = False, *, empty: str | None = None, title: str | None = None,
         columns: Sequence[str] = (), row: Callable[[Any], Sequence[str]] | None = None,
         csv_rows: tuple[Sequence[str], Sequence[Sequence[Any]]] | None = None) -> bool:
    """Show `data` as JSON (`as_json`), as CSV (`csv_rows`: header and rows), as the line `empty`
    when there is nothing, or as a table of `columns` with `row(item)` per item. Returns True
    when it printed (False: the caller prints its own human form)."""
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return True
    if csv_rows is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(csv_rows[0])
        writer.writerows(csv_rows[1])
        click.echo(buffer.getvalue(), nl=False)
        return True
    if empty is not None and not data:
        out.print(empty, markup=False)
        return True
    if row is None:
        return False
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for item in data:
        table.add_row(*row(item))
    out.print(table)
    return True


def show(value: Any) -> str:
    """A value in a table cell: N/A for none, 4 significant digits for a float."""
    if value is None:
        return "N/A"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
