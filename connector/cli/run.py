"""`plan`, `run` and `schedule`: previews, one run, runs on a schedule, and their summaries."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from .. import pipeline, runs
from ..schedule import Schedule, run_forever
from ..shutdown import Shutdown
from .base import SKIP, Invocation, cli, handled
from .output import emit, err, out, show
from .pull import _print_failed, _print_pull
from .scores import _print_summary


@cli.command("plan")
@click.option("--json", "as_json", is_flag=True,
              help='Every planned change, score change and alert, as JSON: {"changes", "scores", "alerts", ...}.')
@click.pass_obj
@handled
def plan_command(obj: Invocation, as_json: bool) -> None:
    """What a run would write now, from the stored pull scored with the mappings as they are; changes nothing.

    The scores are recomputed in a private copy of the store, so an edited
    threshold shows at once: status transitions per segment, the biggest
    movers, the CRM fields to write, and the alerts that would fire. The store
    is only read (its bytes do not change).
    """
    mappings = obj.mappings()
    with obj.reader() as store:
        preview = pipeline.preview_plan(store, mappings, datetime.now(UTC))
    _show_preview(preview, mappings, as_json)


def _show_preview(preview: pipeline.Preview, mappings: Any, as_json: bool) -> None:
    if as_json:
        changes = [{k: (json.loads(v) if k in ("fields", "before", "drift") else v) for k, v in r.items()
                    if k not in ("status", "attempts", "error", "updated_at")} for r in preview.changes]
        emit({"changes": changes, "scores": {n: c.as_json() for n, c in preview.scores.items()},
              "alerts": preview.alerts.as_json(), "open_deliveries": preview.alerts.open_deliveries,
              "mappings_version": mappings.version}, as_json)
        return
    _print_score_changes(preview.scores, mappings)
    _print_plan(preview.planned, mappings)
    _print_alert_plan(preview.alerts, mappings)


def _print_score_changes(changes: dict[str, Any], mappings: Any, movers: int = 5) -> None:
    """Per score: the stored scores' mappings version if it is not today's, transitions per model, movers."""
    for name, c in changes.items():
        if c.stale:
            versions = ", ".join(f"{v} ({n:,} account(s))" for v, n in c.stale.most_common())
            out.print(f"{name}: the stored scores come from mappings version {versions}, not the current "
                      f"{mappings.version}: these figures use the mappings as they are now", markup=False)
        if not c.moves:
            out.print(f"{name}: no score changes ({c.accounts:,} account(s))", markup=False)
            continue
        moves = "; ".join(f"{model}: " + ", ".join(f"{a or 'none'} → {b or 'none'} {k:,}" for (a, b), k in t.most_common())
                          for model, t in c.transitions.items())
        out.print(f"{name}: {len(c.moves):,} account(s) change, {c.changed_status():,} of them status"
                  + (f" — {moves}" if moves else ""), markup=False)
        for m in c.moves[:movers]:
            out.print(f"  {m.account}: {show(m.before)} {m.status_before or ''} → {show(m.after)} "
                      f"{m.status_after or ''} ({m.delta:+.1f})".replace("  ", " "), markup=False)


def _print_alert_plan(plan: Any, mappings: Any, limit: int = 10) -> None:
    """The alerts an evaluation fires (or would), first evaluations, and deliveries still open."""
    if not mappings.alerts:
        return
    fired = plan.fired()
    verb = "fired" if plan.saved else "would fire"
    out.print(f"alerts: {', '.join(f'{a} {n:,}' for a, n in fired.items()) + ' ' + verb if fired else 'none ' + verb}"
              + ("" if plan.saved else " (shown, not recorded: a run records them, then sends them)"), markup=False)
    for alert in mappings.alerts:
        if alert.name in plan.first:
            met = fired.get(alert.name, 0) if alert.on_first_run == "fire" else plan.baseline.get(alert.name, 0)
            how = ("fired (on_first_run: fire)" if alert.on_first_run == "fire"
                   else "recorded, not fired" if plan.saved else "the first run records them without firing")
            out.print(f"  {alert.name}: first evaluation: {met:,} account(s) already meet '{alert.describe()}': {how}",
                      markup=False)
    for firing in plan.firings[:limit]:
        actions = ", ".join(f"{d.kind} {d.target}" + (f" (skipped: {d.error})" if d.status == "skipped" else "")
                            for d in firing.deliveries)
        out.print(f"  {firing.alert.name}: {firing.account_name or firing.account_key} — "
                  f"{firing.values['score_name']} {firing.values['score']} {firing.values['status']} -> {actions}",
                  markup=False)
    if len(plan.firings) > limit:
        out.print(f"  ... and {len(plan.firings) - limit:,} more (plan --json lists them all)", markup=False)
    if plan.open_deliveries:
        out.print(f"  {plan.open_deliveries:,} delivery(ies) of earlier alerts still to send or retry", markup=False)


def _print_plan(summary: Any, mappings: Any) -> None:
    stamps = {f for c in mappings.scores.values() for o in c.definition.outputs.values()
              for k, f in o.fields().items() if k == "scored_at"}
    for system, count in summary.changes.items():
        counts = summary.fields.get(system, {})
        fields = ", ".join(f"{f} {n:,}" for f, n in sorted(counts.items()) if f not in stamps)
        stamped = " (and the scored-at time of each)" if any(f in stamps for f in counts) else ""
        out.print(f"{system}: {count:,} record(s) to write, {summary.unchanged[system]:,} already right, "
                  f"{summary.drift[system]:,} hand-edited field(s) to restore"
                  + (f" — {fields}{stamped}" if fields else stamped), markup=False)
    for sample in summary.samples:
        changes = "; ".join(f"{f}: {sample['before'].get(f)!r} -> {v!r}" for f, v in sample["after"].items()
                            if f not in stamps)
        out.print(f"  {sample['system']} {sample['record']}: {changes}", markup=False)


@cli.command("run")
@click.option("--dry-run", is_flag=True,
              help="Pull, score and plan in a private copy of the store; write nothing to the store or the CRMs.")
@click.option("--full", is_flag=True, help="Ignore the pull cursors: read everything again (and score every account again).")
@SKIP
@click.pass_obj
@handled
def run_command(obj: Invocation, dry_run: bool, full: bool, skip: tuple[str, ...]) -> None:
    """One run: pull, match, measure, score, plan, push; a summary; exit 0/2/3/4/5/6.

    SIGTERM or Ctrl-C lets the batch in flight finish, then exits 6.
    """
    with Shutdown().on_signals() as shutdown:
        code = (_dry_run if dry_run else _one_run)(obj, shutdown, full=full, skip=skip)
    sys.exit(code)


def _dry_run(obj: Invocation, shutdown: Shutdown, full: bool = False, skip: tuple[str, ...] = ()) -> int:
    """`run --dry-run`: the run up to the push in a private copy of the store (runs.dry_run), shown."""
    mappings = obj.mappings()
    preview = runs.dry_run(obj.db_path, mappings, os.environ, shutdown, full=full, skip=skip,
                           progress=_progress(obj))
    result = preview.run
    assert result is not None
    _print_pull(result.pulled)
    _print_failed(result)
    if result.scored:
        _print_summary(result.scored)
    _print_score_changes(preview.scores, mappings)
    _print_plan(preview.planned, mappings)
    _print_alert_plan(preview.alerts, mappings)
    out.print("dry run: nothing was written to the CRMs or the store", markup=False)
    for stop in filter(None, [result.stopped, result.interrupted]):
        err.print(f"stopped: {stop}", markup=False)
    return result.exit_code


def _one_run(obj: Invocation, shutdown: Shutdown, full: bool = False, skip: tuple[str, ...] = (),
             command: str = "run") -> int:
    """One tracked run (runs.one_run), its summary printed; returns its exit code."""
    mappings = obj.mappings()
    result = runs.one_run(obj.db_path, mappings, os.environ, shutdown, full=full, skip=skip, command=command,
                          progress=_progress(obj))
    _print_run(result, mappings)
    return result.exit_code


def _progress(obj: Invocation) -> bool:
    """Progress bars: in the human log format, at a terminal."""
    return obj.log_format == "human" and err.is_terminal


@cli.command()
@click.option("--cron", required=True, envvar="HEALTHSYNC_CRON",
              help='When to run: a cron expression, e.g. "0 * * * *" (hourly) or "30 2 * * *" (nightly).')
@click.option("--jitter", type=float, default=0.0, show_default=True, envvar="HEALTHSYNC_JITTER",
              help="Delay each run by a random 0..N seconds.")
@click.option("--timezone", default="UTC", show_default=True, envvar="HEALTHSYNC_TIMEZONE",
              help="Time zone the cron expression is read in.")
@click.option("--run-now", is_flag=True, help="Run once at start, then on the schedule.")
@click.option("--max-runs", type=click.IntRange(1), help="Return after this many runs (default: run until stopped).")
@click.pass_obj
@handled
def schedule(obj: Invocation, cron: str, jitter: float, timezone: str, run_now: bool, max_runs: int | None) -> None:
    """Run `run` on a cron schedule in the foreground (the container's default command).

    Never two runs at once; a failed run is logged and the schedule goes on;
    SIGTERM / Ctrl-C ends the wait at once, or the run in progress after its
    batch in flight, then exits 0.
    """
    when = Schedule.parse(cron, jitter, timezone)
    obj.mappings()  # a broken mappings folder is refused at start (later edits fail only their run)
    with Shutdown().on_signals() as shutdown:
        stats = run_forever(when, lambda: _scheduled_run(obj, shutdown), shutdown, run_now=run_now,
                            max_runs=max_runs)
    out.print(f"schedule ended: {stats.runs} run(s), {stats.failed} not ok, {stats.skipped_ticks} tick(s) skipped"
              + (f" ({shutdown.reason})" if shutdown.reason else ""), markup=False)


def _scheduled_run(obj: Invocation, shutdown: Shutdown) -> int:
    """One scheduled run; whatever goes wrong is logged and becomes an exit code (runs.scheduled_run)."""
    return runs.scheduled_run(lambda: _one_run(obj, shutdown, command="schedule run"), shutdown)

def _print_run(result: pipeline.RunSummary, mappings: Any) -> None:
    _print_pull(result.pulled)
    _print_failed(result)
    if result.scored:
        _print_summary(result.scored)
    if result.planned:
        _print_plan(result.planned, mappings)
    _print_run_summary(result)
    _print_alert_summary(result)
    if result.pushed and any(result.pushed.failed.values()):
        out.print("some records failed: healthsync failures", markup=False)
    for stop in filter(None, [result.stopped, result.interrupted]):
        err.print(f"stopped: {stop}", markup=False)


def _print_alert_summary(result: pipeline.RunSummary) -> None:
    """One line: alerts fired, and their deliveries per action kind (delivered, to retry, failed, skipped)."""
    plan, sent = result.alerts, result.delivered
    if plan is None or not plan.names:
        return
    fired = ", ".join(f"{a} {n:,}" for a, n in plan.fired().items()) or "none"
    line = f"alerts {'fired' if plan.saved else 'that would fire (dry run: not recorded)'}: {fired}"
    baseline = sum(plan.baseline.get(name, 0) for name in plan.first)
    if baseline and plan.saved:
        line += f" ({baseline:,} already true at a first evaluation: recorded, not fired)"
    outcomes: dict[str, dict[str, int]] = {"delivered": {}, "to retry": {}, "failed": {}, "skipped": {}}
    if sent is not None:
        for word, counter in zip(outcomes, (sent.done, sent.retry, sent.failed, sent.skipped), strict=True):
            outcomes[word].update(counter)
    for firing in plan.firings if plan.saved else []:  # skipped when recorded: no CRM record linked
        for d in firing.deliveries:
            if d.status == "skipped":
                outcomes["skipped"][d.kind] = outcomes["skipped"].get(d.kind, 0) + 1
    for word, counter in outcomes.items():
        kinds = ", ".join(f"{k} {n:,}" for k, n in counter.items() if n)
        if kinds:
            line += f"; {word}: {kinds}"
    out.print(line, markup=False)
    if sent is not None and any(sent.failed.values()):
        out.print("some alert deliveries failed: healthsync alerts", markup=False)


def _print_run_summary(result: pipeline.RunSummary) -> None:
    """The one table an operator reads: what was pulled, scored, planned and written, per system."""
    match, calls = result.pulled.match, result.pulled.calls
    accounts = sum(match.accounts.values()) if match else 0
    linked = {s: sum(by.values()) for s, by in match.linked.items()} if match else {}
    scored = ", ".join(f"{n} {v:,}" for n, v in result.scored.scored.items()) if result.scored else "-"
    if result.scored and result.scored.standing:
        scored += f" (the scores of {result.scored.standing} stand: nothing they read changed)"
    out.print(f"accounts: {accounts:,} ({', '.join(f'{s} {n:,}' for s, n in linked.items()) or 'none'} matched); "
              f"scored: {scored}", markup=False)
    table = Table(title=f"Run summary ({result.seconds:.1f} s)")
    for column in ("system", "pulled", "planned", "written", "failed", "retried", "drift restored", "writes",
                   "API calls"):
        table.add_column(column, justify="left" if column == "system" else "right")
    systems = sorted({s for s, _ in calls.calls} | set(result.pulled.systems)
                     | set(result.planned.changes if result.planned else ()))
    planned, pushed = result.planned, result.pushed
    for system in systems:
        pulled = result.pulled.systems.get(system)
        row = [system, f"{sum(pulled.records.values()):,}" if pulled else "-"]
        if planned and system in planned.changes:
            row.append(f"{planned.changes[system]:,}")
        else:
            row.append("-")
        if pushed and system in pushed.written:
            writes = f"{pushed.calls[system]:,}" + (f" + {pushed.jobs[system]} bulk job(s)" if pushed.jobs.get(system) else "")
            row += [f"{pushed.written[system]:,}", f"{pushed.failed[system]:,}", f"{pushed.retried[system]:,}"]
            row += [f"{planned.drift[system]:,}" if planned else "-", writes]
        else:
            row += ["-", "-", "-", f"{planned.drift[system]:,}" if planned and system in planned.drift else "-", "-"]
        row.append(f"{calls.total(system):,}")
        table.add_row(*row)
    out.print(table)
