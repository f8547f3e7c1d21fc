"""`pull` and `matches`: reading the systems, and the records that matched no account."""

from __future__ import annotations

import json
import os
import sys

import click
from rich.table import Table

from .. import logs, pipeline, runs
from ..shutdown import Shutdown
from ..sources import registry
from ..store import Store
from .base import SKIP, Invocation, cli, handled
from .output import emit, err, one_format, out, show


@cli.command()
@click.option("--full", is_flag=True, help="Ignore the cursors: read everything again.")
@click.option("--system", "systems", multiple=True, type=click.Choice(registry.systems()),
              help="Only this system (repeatable).")
@SKIP
@click.pass_obj
@handled
def pull(obj: Invocation, full: bool, systems: tuple[str, ...], skip: tuple[str, ...]) -> None:
    """Read what changed in every source (Salesforce, HubSpot, Stripe, Zendesk); match and measure."""
    mappings = obj.mappings()
    with Shutdown().on_signals() as shutdown, obj.store(create=True) as store, runs.tracked(store, "pull") as run_id, \
            logs.bound(run_id=run_id):
        summary = pipeline.pull(store, mappings, os.environ, full=full, only=systems or None, shutdown=shutdown,
                                skip=skip)
        result = pipeline.RunSummary(summary)
        code = result.exit_code
        store.finish_run(run_id, runs.RUN_STATUS[code], code, runs.pull_counts(summary),
                         error=runs.run_error(result), api_calls=summary.calls.as_dict())
    _print_pull(summary)
    _print_failed(result)
    for stop in filter(None, [summary.stopped, summary.interrupted]):
        err.print(f"stopped: {stop}", markup=False)
    if code:
        sys.exit(code)


def _print_pull(summary: pipeline.PullSummary) -> None:
    for system, why in summary.skipped.items():
        out.print(f"{system}: {why}", markup=False)
    table = Table(title="Pulled")
    for column in ("system", "records", "mode", "API calls", "retries", "notes"):
        table.add_column(column)
    for system, stats in summary.systems.items():
        records = ", ".join(f"{n:,} {obj}" for obj, n in stats.records.items()) or "nothing new"
        mode = "full" if any(stats.full.values()) else "incremental"
        retries = sum(n for (s, _k), n in summary.calls.retries.items() if s == system)
        table.add_row(system, records, mode, f"{summary.calls.total(system):,}", str(retries), "; ".join(stats.notes))
    out.print(table)
    if summary.match:
        m = summary.match
        accounts = " + ".join(f"{n:,} from {s}" for s, n in m.accounts.items())
        linked = "; ".join(
            f"{system}: " + ", ".join(f"{n:,} by {how}" for how, n in kinds.items())
            for system, kinds in m.linked.items() if registry.plugin(system).identity.role != "account"
        )
        out.print(f"accounts: {accounts}", markup=False)
        out.print(f"matched: {linked or 'nothing'}", markup=False)
        issues = {s: (m.unmatched.get(s, 0), m.conflicts.get(s, 0)) for s in set(m.unmatched) | set(m.conflicts)}
        if issues:
            out.print("not matched: " + "; ".join(f"{s} {u:,} unmatched, {c:,} conflicts" for s, (u, c) in sorted(issues.items()))
                      + "  (healthsync matches)", markup=False)
    if summary.measure:
        me = summary.measure
        out.print(f"measured: {me.values:,} values for {me.accounts:,} accounts, {me.changed:,} changed", markup=False)
        for metric, by_unit in me.totals.items():
            out.print(f"{metric.upper()}: " + ", ".join(f"{u.upper()} {v:,.2f}" for u, v in sorted(by_unit.items())),
                      markup=False)


@cli.command()
@click.option("--unmatched", is_flag=True, help="Only records that matched no account.")
@click.option("--conflicts", is_flag=True, help="Only records claimed by several accounts.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def matches(obj: Invocation, unmatched: bool, conflicts: bool, as_json: bool) -> None:
    """Records of Stripe, Zendesk and the CRMs that could not be matched to one account."""
    one_format(unmatched=unmatched, conflicts=conflicts)
    kind = "unmatched" if unmatched else "conflict" if conflicts else None
    with obj.reader() as store:
        rows = store.match_issues(kind)
    for row in rows:
        row["candidates"] = json.loads(row["candidates"]) if row["candidates"] else []
    emit(rows, as_json, empty="no unmatched or conflicting records", title=f"{len(rows):,} match issue(s)",
         columns=("kind", "system", "record", "why", "candidates"),
         row=lambda r: (r["kind"], f"{r['system']} {r['object']}", r["external_id"], r["detail"],
                        ", ".join(r["candidates"][:4])))


def _print_failed(result: pipeline.RunSummary) -> None:
    for what, why in result.failed.items():
        err.print(f"error: {what} failed, left out of this run (the rest went on): {why}", markup=False)


@cli.command()
@click.argument("source")
@click.option("--rows", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many rows to read.")
@click.option("--json", "as_json", is_flag=True, help="The rows, their accounts and metric values as JSON.")
@click.pass_obj
@handled
def preview(obj: Invocation, source: str, rows: int, as_json: bool) -> None:
    """The first rows of one `sources:` entry (a usage query or file drop) as a pull would match and
    measure them: each row's key, the account it names (or why none), its values and the account's
    usage metrics. Read into a private copy of the store: nothing is written."""
    mappings = obj.mappings()
    if source not in mappings.sources:
        known = ", ".join(mappings.sources) or "none: add mappings/sources/*.yaml (docs/usage.md)"
        raise click.BadParameter(f"no source named {source!r} in the mappings (sources: {known})", param_hint="SOURCE")
    with Store.preview_of(obj.db_path) as copy:
        found = pipeline.preview_source(copy, mappings, os.environ, source, rows)
    if as_json:
        click.echo(json.dumps(found.__dict__, indent=2, default=str))
        return
    table = Table(title=f"{source}: the first {len(found.rows)} row(s)")
    entry = mappings.sources[source]
    for column in ("key", "at", *entry.settings.columns, "account", *found.metrics):
        table.add_column(column)
    for row in found.rows:
        metrics = row.get("metrics") or {}
        table.add_row(row["key"], str(row["at"])[:10], *(show(row.get(c)) if c not in row["na"] else f"N/A: {row['na'][c]}"
                                                         for c in entry.settings.columns),
                      row["account"] or f"none: {row['why']}", *(show(metrics.get(m)) for m in found.metrics))
    out.print(table)
    for note in found.notes:
        err.print(f"warning: {note}", markup=False)
