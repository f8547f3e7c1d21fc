"""The healthsync command line: parse, call, print. Exit codes: see README."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from . import logs, outputs, pipeline
from .config.mappings import check_mappings, load_mappings
from .errors import ConfigError, HealthsyncError, NotFound, Problem, StoreError
from .http import AuthError, CallLog
from .progress import RunProgress
from .runlock import RunLock
from .schedule import Schedule, run_forever
from .scoring.engine import INSUFFICIENT
from .scoring.explain import explain as explain_account
from .scoring.frame import iso
from .shutdown import Interrupted, Shutdown
from .store import Store
from .writeback import OBJECT as CRM_OBJECTS

F = TypeVar("F", bound=Callable[..., Any])
out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Context:
    def __init__(self, db: str | None, mappings: str | None, log_format: str = "human"):
        self.log_format = log_format
        self.db_path = db
        self.db_given = False  # --db on the command line (not HEALTHSYNC_DB): demo uses only such a path
        self.mappings_path = Path(mappings or os.environ.get("HEALTHSYNC_MAPPINGS") or "mappings")

    def store(self, create: bool = False) -> Store:
        """The store, to write; only `create` (pull, run) makes a new one where nothing is yet."""
        return Store(self.db_path, create=create)

    def reader(self) -> Store:
        """The store, to read only: it must exist, and its bytes never change."""
        return Store(self.db_path, readonly=True)

    def mappings(self) -> Any:
        return load_mappings(self.mappings_path)


def handled(fn: F) -> F:
    """Turn healthsync errors into a message on stderr and the documented exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            err.print(f"[bold red]{exc.title}[/] ({len(exc.problems)} problem(s)):", markup=True)
            for problem in exc.problems:
                err.print(problem.render(), markup=False)
            sys.exit(exc.exit_code)
        except HealthsyncError as exc:
            err.print(f"error: {exc}", markup=False)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


class Healthsync(click.Group):
    """The command group; its global options are also taken after the subcommand's name."""

    GLOBAL = {"--db": True, "--mappings": True, "--log-format": True, "-v": False, "--verbose": False}

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _globals_first(args, self.GLOBAL))


def _globals_first(args: list[str], known: dict[str, bool]) -> list[str]:
    """Move global options (and their values) found after the subcommand's name in front of it,
    so `healthsync scores --db x.db` means `healthsync --db x.db scores`; `--` ends the search."""
    front: list[str] = []
    rest: list[str] = []
    seen_command = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest += args[i:]
            break
        name = arg.split("=", 1)[0]
        if name in known:
            takes_value = known[name] and "=" not in arg
            (front if seen_command else rest).extend(args[i:i + 1 + takes_value])
            i += 1 + takes_value
            continue
        if not seen_command and not arg.startswith("-"):
            seen_command = True
        rest.append(arg)
        i += 1
    return front + rest


@click.group(cls=Healthsync, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="HEALTHSYNC_DB", help="SQLite store (default ./healthsync.db).")
@click.option("--mappings", envvar="HEALTHSYNC_MAPPINGS", help="Mappings folder (default ./mappings).")
@click.version_option(package_name="healthsync")
@click.pass_context
@click.option("-v", "--verbose", is_flag=True, help="Log each step, retry and quota wait (HEALTHSYNC_LOG_LEVEL=INFO).")
@click.option("--log-format", type=click.Choice(logs.FORMATS), default="human", show_default=True,
              envvar="HEALTHSYNC_LOG_FORMAT",
              help="Logs on stderr: human lines, or one JSON object per line (then at INFO, and no tables on stdout).")
def cli(ctx: click.Context, db: str | None, mappings: str | None, verbose: bool, log_format: str) -> None:
    """healthsync: customer health scores computed locally, written back to your CRM."""
    default = "INFO" if verbose or log_format == "json" else "WARNING"
    logs.setup(os.environ.get("HEALTHSYNC_LOG_LEVEL", default) if not verbose else "INFO", log_format)
    out.quiet = log_format == "json"
    ctx.obj = Context(db, mappings, log_format)
    ctx.obj.db_given = ctx.get_parameter_source("db") is click.core.ParameterSource.COMMANDLINE


@cli.command()
@click.option("--live", is_flag=True, help="Also check every mapped field in the configured CRMs (reads only).")
@click.pass_obj
@handled
def validate(obj: Context, live: bool) -> None:
    """Check the mappings; list every problem with file:line (exit 2 if any)."""
    mappings, problems = check_mappings(obj.mappings_path)
    if problems:
        raise ConfigError(problems)
    assert mappings is not None
    models = sum(len(s.models) for s in mappings.scores.values())
    out.print(
        f"mappings OK: {obj.mappings_path} — {len(mappings.scores)} score(s) "
        f"({', '.join(mappings.scores)}), {models} model(s), {len(mappings.metrics)} metric(s), "
        f"{len(mappings.inputs)} input(s), {len(mappings.alerts)} alert(s); version {mappings.version}"
    )
    if live:
        _fields(mappings, create=False, metadata=None, ping=True)


@cli.command()
@click.option("--salesforce-metadata", "metadata", type=click.Path(file_okay=False),
              help="Write the Salesforce DX project (CustomField + permission set XML) for these mappings to DIR.")
@click.pass_obj
@handled
def setup(obj: Context, metadata: str | None) -> None:
    """Create missing HubSpot output properties; check Salesforce output fields and print what is missing."""
    _fields(obj.mappings(), create=True, metadata=metadata)


def _fields(mappings: Any, create: bool, metadata: str | None, ping: bool = False) -> None:
    if metadata:
        for name, text in outputs.salesforce_metadata(mappings).items():
            target = Path(metadata) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        out.print(f"wrote the Salesforce DX project for these mappings to {metadata}", markup=False)
    expected = pipeline.expected_systems(mappings)
    found, skipped = pipeline.sources(os.environ, CallLog(), only=None if ping else list(CRM_OBJECTS),
                                      expected=expected)
    for system, why in skipped.items():
        out.print(f"{system}: {why}", markup=False)
    problems: list[Problem] = []
    if ping:  # every system's credentials, one cheap authenticated call each
        for source in list(found):
            try:
                source.ping()
            except HealthsyncError as exc:
                hint = f"set {source.CREDENTIALS} to working credentials" if isinstance(exc, AuthError) else ""
                problems.append(Problem("environment", None, source.system, str(exc), hint=hint))
                found.remove(source)
                continue
            out.print(f"{source.system}: credentials accepted", markup=False)
    reports = outputs.live_check(mappings, [s for s in found if s.system in CRM_OBJECTS], create=create)
    for report in reports:
        if report.created:
            out.print(f"{report.system}: created {', '.join(report.created)}", markup=False)
        out.print(f"{report.system}: {len(report.ok)} output field(s) ready"
                  + (f", {len(report.missing)} missing" if report.missing else "")
                  + (f", {len(report.problems)} problem(s)" if report.problems else ""), markup=False)
        if report.missing:
            out.print(f"  missing: {', '.join(spec.name for spec in report.missing)}", markup=False)
        if report.missing and report.system == "salesforce":
            out.print("  deploy them with the Salesforce CLI (the shipped project matches the shipped mappings; "
                      "`healthsync setup --salesforce-metadata DIR` writes one for yours):", markup=False)
            out.print("  " + outputs.deploy_hint(report.missing, metadata or "deploy/salesforce").replace("\n", "\n  "),
                      markup=False)
        elif report.missing:
            out.print("  `healthsync setup` creates them", markup=False)
        for warning in report.warnings:  # written cut, so never a failure: said, not refused
            err.print(f"warning: {warning.render()}", markup=False)
        problems += report.problems
        problems += [outputs.missing_problem(mappings, spec) for spec in report.missing]
    if problems:
        rejected = any(p.file == "environment" for p in problems)
        raise ConfigError(problems, "credentials were rejected or the CRM fields do not match the mappings"
                          if rejected else "the CRM fields do not match the mappings")


@cli.command()
@click.pass_obj
@handled
def score(obj: Context) -> None:
    """Compute every score from the metric values in the store and save them."""
    mappings = obj.mappings()
    with obj.store() as store, _tracked(store, "score") as run_id:
        summary = pipeline.score(store, mappings)
        store.finish_run(run_id, "ok", 0, {"accounts": summary.accounts, "scored": summary.scored, "changed": summary.changed})
    for warning in summary.warnings:
        err.print(f"warning: {warning}", markup=False)
    _print_summary(summary)


def _print_summary(summary: pipeline.ScoreSummary) -> None:
    table = Table(title=f"Scored {summary.accounts} account(s)")
    for column in ("score", "scored", "N/A", "of which no verdict", "changed", "by status"):
        table.add_column(column)
    for name in summary.scored:
        statuses = ", ".join(f"{k} {v}" for k, v in summary.by_status[name].items())
        table.add_row(name, str(summary.scored[name]), str(summary.not_scored[name]),
                      str(summary.no_verdict.get(name, 0)), str(summary.changed[name]), statuses)
    out.print(table)


EXPORT_COLUMNS = [
    "account_key", "account_name", "score", "value", "status", "grade", "trend", "trend_direction",
    "coverage", "points_to_next", "drivers", "model", "computed", "status_computed", "override_id",
    "na_reason", "model_version", "scored_at",
]


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every score.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one row per account and score.")
@click.option("--score", "score_name", help="Only this named score.")
@click.pass_obj
@handled
def scores(obj: Context, as_json: bool, as_csv: bool, score_name: str | None) -> None:
    """Export current scores with sub-scores, grade, status, trend and external ids."""
    _one_format(json=as_json, csv=as_csv)
    with obj.reader() as store:
        names = store.score_names()
        if score_name is not None and score_name not in names:
            raise NotFound(f"no score '{score_name}' in the store {store.origin}; it has "
                           + (", ".join(names) or "none yet (run `healthsync run`)"))
        rows = store.current_scores(score_name)
        external = store.external_ids()
    records = []
    for row in rows:
        record = {k: row.get(k) for k in EXPORT_COLUMNS}
        record["groups"] = json.loads(row["groups"] or "{}")
        record["external_ids"] = external.get(row["account_id"], {})
        records.append(record)
    if as_json:
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
    elif as_csv:
        group_names = sorted({g for r in records for g in r["groups"]})
        id_names = sorted({k for r in records for k in r["external_ids"]})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(EXPORT_COLUMNS + [f"group_{g}" for g in group_names] + id_names)
        for r in records:
            writer.writerow([r[c] for c in EXPORT_COLUMNS] + [r["groups"].get(g) for g in group_names] + [r["external_ids"].get(k) for k in id_names])
        click.echo(buffer.getvalue(), nl=False)
    else:
        _print_scores(records)
        _print_score_counts(records)


def _print_score_counts(records: list[dict[str, Any]]) -> None:
    """Per score: how many accounts have a number, how many have no verdict (too little data), N/A."""
    for name in dict.fromkeys(r["score"] for r in records):
        rows = [r for r in records if r["score"] == name]
        scored = sum(r["value"] is not None for r in rows)
        thin = sum(r["value"] is None and (r["na_reason"] or "").startswith(INSUFFICIENT) for r in rows)
        out.print(f"{name}: {scored:,} scored, {thin:,} with no verdict (coverage below the score's minimum), "
                  f"{len(rows) - scored - thin:,} N/A", markup=False)


def _one_format(**flags: bool) -> None:
    """Output flags exclude each other: two of them are a usage error (exit 2), not a silent pick."""
    given = [name for name, on in flags.items() if on]
    if len(given) > 1:
        raise click.UsageError(f"give one of {', '.join('--' + n for n in given)}, not both")


def _print_scores(records: list[dict[str, Any]], limit: int | None = None) -> None:
    table = Table()
    for column in ("account", "score", "value", "status", "grade", "trend", "coverage", "drivers"):
        table.add_column(column)
    for r in records[:limit]:
        coverage = "" if r["coverage"] is None else f"{r['coverage']:.0f}%"
        trend = "" if r["trend"] is None else f"{r['trend']:+.0f}"
        value = "N/A" if r["value"] is None else f"{r['value']:.0f}"
        table.add_row(r["account_name"] or r["account_key"], r["score"], value, r["status"] or "", r["grade"] or "", trend, coverage, r["drivers"] or (r["na_reason"] or ""))
    out.print(table)


@cli.command()
@click.argument("account")
@click.option("--score", "score_name", default="health", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def explain(obj: Context, account: str, score_name: str, as_json: bool) -> None:
    """Why ACCOUNT (id, key, external id or name) has its score, metric by metric."""
    mappings = obj.mappings()
    if score_name not in mappings.scores:
        raise NotFound(f"no score '{score_name}' in the mappings; have {', '.join(mappings.scores)}")
    with obj.reader() as store:
        row = store.find_account(account)
        _, results = pipeline.compute(store, mappings)
        stored = store.score_of(score_name, row["id"])
    data = explain_account(results[score_name], row["id"])
    data["account"] = {"id": row["id"], "key": row["key"], "name": row["name"]}
    data["stored"] = None if stored is None else {"value": stored["value"], "status": stored["status"], "scored_at": stored["scored_at"], "model_version": stored["model_version"]}
    data["model_version"] = mappings.version
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    _print_explanation(data)


def _print_explanation(data: dict[str, Any]) -> None:
    acct = data["account"]
    head = f"{acct['name']} ({acct['key']}) — {data['label']}: "
    if data["global"] is None:
        out.print(head + f"N/A ({data['na_reason']})", markup=False)
        return
    out.print(
        head + f"{data['global']} {data['status']}" + (f", grade {data['grade']}" if data["grade"] else "")
        + f"; model {data['model']}; coverage {data['coverage']:.0f}%"
        + (f"; {data['points_to_next_band']:g} points to the next band" if data["points_to_next_band"] is not None else "")
        + (f"; trend {data['trend']:+g} ({data['trend_direction']})" if data["trend"] is not None else ""),
        markup=False,
    )
    if data["override_id"] is not None:
        out.print(f"override #{data['override_id']} in force: computed {data['computed_rounded']} {data['status_computed']}", markup=False)
    if data["metrics"]:
        table = Table(title="contributions add up to the global score before rounding: " + f"{data['computed']}")
        for column in ("group", "metric", "raw", "per-seat", "scheme", "score", "weight", "share", "contribution", "lost", "N/A reason / note"):
            table.add_column(column)
        for m in data["metrics"]:
            table.add_row(
                m["group"], m["metric"], _show(m["raw"]), _show(m["normalized"]), m["scheme"],
                _show(m["score"]), f"{m['weight']:g}", f"{m['share']:.1%}", f"{m['contribution']:.2f}",
                f"{m['points_lost']:.2f}", m["na_reason"] or m["note"] or "",
            )
        out.print(table)
        groups = ", ".join(f"{g['label']} {_show(g['score'])}" for g in data["groups"].values())
        out.print(f"sub-scores: {groups}", markup=False)
    for t in data["triggers"]:
        out.print(f"  {t['state']:>14}  +{t['points']:g}  {t['label'] or t['name']}  ({t['when']})", markup=False)


def _show(value: Any) -> str:
    if value is None:
        return "N/A"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# ---------------------------------------------------------------- overrides


@cli.group()
def override() -> None:
    """CSM overrides of a score or status: reason and expiry required, audited."""


@override.command("set")
@click.argument("account")
@click.option("--score", "score_name", default="health", show_default=True)
@click.option("--status", help="Override the status (e.g. Green).")
@click.option("--value", type=click.FloatRange(0, 100), help="Override the score (0-100).")
@click.option("--reason", required=True, help="Why: shown in the audit trail.")
@click.option("--until", "until", type=click.DateTime(["%Y-%m-%d"]), help="Last day it applies.")
@click.option("--days", type=click.IntRange(1, 366), help="Applies for this many days.")
@click.option("--by", "actor", default=lambda: os.environ.get("USER", "cli"), help="Who sets it.")
@click.pass_obj
@handled
def override_set(obj: Context, account: str, score_name: str, status: str | None, value: float | None, reason: str, until: datetime | None, days: int | None, actor: str) -> None:
    """Override ACCOUNT's status or score until a date."""
    mappings = obj.mappings()
    if score_name not in mappings.scores:
        raise NotFound(f"no score '{score_name}' in the mappings")
    if (status is None) == (value is None):
        raise click.UsageError("give exactly one of --status or --value")
    if (until is None) == (days is None):
        raise click.UsageError("give exactly one of --until or --days: every override expires")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    names = [b.name for b in mappings.scores[score_name].definition.status]
    if status is not None and status not in names:
        raise click.UsageError(f"--status must be one of {', '.join(names)}")
    now = datetime.now(UTC)
    expires = f"{until:%Y-%m-%d}T23:59:59Z" if until else iso(now + timedelta(days=days or 0))
    if expires <= iso(now):
        raise click.UsageError("the expiry is in the past")
    with obj.store() as store, RunLock(store):
        row = store.find_account(account)
        kind, text = ("status", status) if status is not None else ("score", f"{value:g}")
        new_id = store.set_override(row["id"], score_name, kind, str(text), reason.strip(), expires, "cli", actor)
        pipeline.score(store, mappings)  # in force at once: `scores`, `plan` and `explain` all show it
        now_row = store.score_of(score_name, row["id"])
    applied = "" if now_row is None else f"; {score_name} is now {_show(now_row['value'])} {now_row['status'] or ''}"
    out.print(f"override #{new_id}: {row['name']} {score_name} {kind} = {text} until {expires[:10]} "
              f"({reason.strip()}){applied}".rstrip(), markup=False)


@override.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Include ended overrides.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def override_list(obj: Context, include_ended: bool, as_json: bool) -> None:
    """List overrides in force (or all of them)."""
    with obj.reader() as store:
        rows = store.overrides(include_ended)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table()
    for column in ("id", "account", "score", "kind", "value", "reason", "by", "set", "expires", "ended"):
        table.add_column(column)
    for r in rows:
        table.add_row(str(r["id"]), r["account_name"] or r["account_key"], r["score"], r["kind"], r["value"], r["reason"], r["set_by"], r["set_at"][:10], r["expires_at"][:10], (r["ended_reason"] or "") + (f" {r['ended_at'][:10]}" if r["ended_at"] else ""))
    out.print(table)


@override.command("clear")
@click.argument("override_id", type=int)
@click.option("--reason", required=True)
@click.option("--by", "actor", default=lambda: os.environ.get("USER", "cli"))
@click.pass_obj
@handled
def override_clear(obj: Context, override_id: int, reason: str, actor: str) -> None:
    """End an override before its expiry; the scores are recomputed at once."""
    mappings = obj.mappings()
    with obj.store() as store, RunLock(store):
        store.end_override(override_id, f"cleared: {reason}", actor)
        pipeline.score(store, mappings)
    out.print(f"override #{override_id} cleared; scores recomputed without it", markup=False)


@override.command("audit")
@click.argument("override_id", type=int, required=False)
@click.pass_obj
@handled
def override_audit(obj: Context, override_id: int | None) -> None:
    """The audit trail of all overrides, or of one."""
    with obj.reader() as store:
        rows = store.audit(override_id)
    if override_id is not None and not rows:
        raise NotFound(f"no override #{override_id}: `healthsync override list --all` lists them")
    for r in rows:
        out.print(f"{r['at']}  #{r['override_id']}  {r['action']:<12} by {r['actor']}  {r['detail']}", markup=False)


# ---------------------------------------------------------------- pull and match

SKIP = click.option("--skip", "skip", multiple=True, type=click.Choice(list(pipeline.SOURCES)),
                    help="Leave this system out on purpose (repeatable; also HEALTHSYNC_SKIP=a,b). Without it, a "
                         "system the mappings use but that has no credentials is exit 2.")




@cli.command()
@click.option("--full", is_flag=True, help="Ignore the cursors: read everything again.")
@click.option("--system", "systems", multiple=True, type=click.Choice(list(pipeline.SOURCES)),
              help="Only this system (repeatable).")
@SKIP
@click.pass_obj
@handled
def pull(obj: Context, full: bool, systems: tuple[str, ...], skip: tuple[str, ...]) -> None:
    """Read what changed in Salesforce, HubSpot, Stripe and Zendesk; match and measure."""
    mappings = obj.mappings()
    with Shutdown().on_signals() as shutdown, obj.store(create=True) as store, _tracked(store, "pull") as run_id, \
            logs.bound(run_id=run_id):
        summary = pipeline.pull(store, mappings, os.environ, full=full, only=systems or None, shutdown=shutdown,
                                skip=skip)
        result = pipeline.RunSummary(summary)
        code = result.exit_code
        store.finish_run(run_id, RUN_STATUS[code], code, _pull_counts(summary),
                         error=_run_error(result), api_calls=summary.calls.as_dict())
    _print_pull(summary)
    _print_failed(result)
    for stop in filter(None, [summary.stopped, summary.interrupted]):
        err.print(f"stopped: {stop}", markup=False)
    if code:
        sys.exit(code)


# the status a run is recorded with, by exit code
RUN_STATUS = {0: "ok", 1: "failed", 2: "failed", 3: "failures", 4: "stopped", Interrupted.exit_code: "interrupted"}


@contextmanager
def _tracked(store: Store, command: str) -> Iterator[int]:
    """Hold the store's run lock (exit 5 if another run has it) and record the run in `runs`;
    a run that fails is recorded as failed with its exit code before the error surfaces."""
    with RunLock(store) as lock:
        if lock.taken_over:
            err.print(f"note: took over the lock of a run that did not finish: {lock.taken_over.describe()}",
                      markup=False)
        run_id = store.start_run(command)
        lock.attach(run_id)
        try:
            yield run_id
        except HealthsyncError as exc:
            status = "interrupted" if isinstance(exc, Interrupted) else "failed"
            store.finish_run(run_id, status, exc.exit_code, {}, error=str(exc))
            raise
        except KeyboardInterrupt as exc:  # a second SIGTERM / Ctrl-C: stopped at once, still recorded
            why = str(exc) or "a second stop signal: stopped at once"
            store.finish_run(run_id, "interrupted", Interrupted.exit_code, {}, error=why)
            raise Interrupted(why) from None
        except Exception as exc:
            store.finish_run(run_id, "failed", 1, {}, error=f"{type(exc).__name__}: {exc}")
            raise


def _pull_counts(summary: pipeline.PullSummary) -> dict[str, Any]:
    counts: dict[str, Any] = {s: stats.records for s, stats in summary.systems.items()}
    if summary.match:
        counts["accounts"] = summary.match.accounts
        counts["unmatched"] = summary.match.unmatched
        counts["conflicts"] = summary.match.conflicts
    if summary.measure:
        counts["values_changed"] = summary.measure.changed
    return counts


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
            for system, kinds in m.linked.items() if system in ("stripe", "zendesk", "hubspot")
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
        if me.mrr_by_currency:
            out.print("MRR: " + ", ".join(f"{c.upper()} {v:,.2f}" for c, v in sorted(me.mrr_by_currency.items())), markup=False)


@cli.command()
@click.option("--unmatched", is_flag=True, help="Only records that matched no account.")
@click.option("--conflicts", is_flag=True, help="Only records claimed by several accounts.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def matches(obj: Context, unmatched: bool, conflicts: bool, as_json: bool) -> None:
    """Records of Stripe, Zendesk and the CRMs that could not be matched to one account."""
    _one_format(unmatched=unmatched, conflicts=conflicts)
    kind = "unmatched" if unmatched else "conflict" if conflicts else None
    with obj.reader() as store:
        rows = store.match_issues(kind)
    for row in rows:
        row["candidates"] = json.loads(row["candidates"]) if row["candidates"] else []
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        out.print("no unmatched or conflicting records", markup=False)
        return
    table = Table(title=f"{len(rows):,} match issue(s)")
    for column in ("kind", "system", "record", "why", "candidates"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["kind"], f"{r['system']} {r['object']}", r["external_id"], r["detail"], ", ".join(r["candidates"][:4]))
    out.print(table)


@cli.command("alerts")
@click.option("--json", "as_json", is_flag=True, help="Every listed alert with its detail and deliveries, as JSON.")
@click.option("--limit", default=50, show_default=True, help="How many of the latest alerts.")
@click.pass_obj
@handled
def alerts_command(obj: Context, as_json: bool, limit: int) -> None:
    """Alerts that fired, newest first: the account, what triggered it, and where each action stands."""
    with obj.reader() as store:
        rows = store.fired_alerts(limit)
    records = [{"id": r["id"], "run_id": r["run_id"], "alert": r["alert"], "score": r["score"], "fired_at": r["fired_at"],
                "account": {"id": r["account_id"], "key": r["account_key"], "name": r["account_name"]},
                "detail": json.loads(r["detail"]),
                "deliveries": [{"kind": d["kind"], "target": d["target"], "status": d["status"],
                                "attempts": d["attempts"], "error": d["error"], "external_id": d["external_id"],
                                "payload": json.loads(d["payload"])} for d in r["deliveries"]]} for r in rows]
    if as_json:
        click.echo(json.dumps(records, indent=2, ensure_ascii=False))
        return
    if not records:
        out.print("no alert has fired", markup=False)
        return
    table = Table(title=f"last {len(records)} alert(s)")
    for column in ("id", "fired", "alert", "account", "what", "deliveries"):
        table.add_column(column)
    for r in records:
        deliveries = "; ".join(f"{d['kind']} {d['status']}" + (f" {d['external_id']}" if d["external_id"] else "")
                               + (f" ({d['error']})" if d["error"] and d["status"] != "done" else "")
                               for d in r["deliveries"])
        table.add_row(str(r["id"]), r["fired_at"], r["alert"], r["account"]["name"] or r["account"]["key"],
                      _alert_what(r["detail"]), deliveries)
    out.print(table)


def _alert_what(detail: dict[str, Any]) -> str:
    score, status = detail.get("score", {}), detail.get("status", {})
    text = f"{score.get('name')} {_show(score.get('before'))} {status.get('before') or ''} -> " \
           f"{_show(score.get('after'))} {status.get('after') or ''}".replace("  ", " ")
    if "drop" in detail:
        text += f" (-{detail['drop']['points']:g} in {detail['drop']['within_days']} d)"
    if "trigger" in detail:
        text += f"; {detail['trigger']['label']}"
    if "sub_score" in detail:
        sub = detail["sub_score"]
        text += f"; {sub['group']} {_show(sub['before'])} -> {_show(sub['after'])} (below {sub['below']:g})"
    return text


# ---------------------------------------------------------------- plan, push, run


@cli.command("plan")
@click.option("--json", "as_json", is_flag=True,
              help='Every planned change, score change and alert, as JSON: {"changes", "scores", "alerts", ...}.')
@click.pass_obj
@handled
def plan_command(obj: Context, as_json: bool) -> None:
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
        click.echo(json.dumps({"changes": changes, "scores": {n: c.as_json() for n, c in preview.scores.items()},
                               "alerts": preview.alerts.as_json(), "open_deliveries": preview.alerts.open_deliveries,
                               "mappings_version": mappings.version},
                              indent=2, ensure_ascii=False, default=str))
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
            out.print(f"  {m.account}: {_show(m.before)} {m.status_before or ''} → {_show(m.after)} "
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
@click.option("--full", is_flag=True, help="Ignore the pull cursors: read everything again.")
@SKIP
@click.pass_obj
@handled
def run_command(obj: Context, dry_run: bool, full: bool, skip: tuple[str, ...]) -> None:
    """One run: pull, match, measure, score, plan, push; a summary; exit 0/2/3/4/5/6.

    SIGTERM or Ctrl-C lets the batch in flight finish, then exits 6.
    """
    with Shutdown().on_signals() as shutdown:
        code = (_dry_run if dry_run else _one_run)(obj, shutdown, full=full, skip=skip)
    sys.exit(code)


def _dry_run(obj: Context, shutdown: Shutdown, full: bool = False, skip: tuple[str, ...] = ()) -> int:
    """The run up to the push in a private copy of the store: what a run would pull, score, write and
    fire, with nothing sent and the store's bytes unchanged (so no lock and no row in `runs`)."""
    mappings = obj.mappings()
    try:
        with Store.preview_of(obj.db_path) as scratch:
            calls = CallLog()
            with RunProgress(calls, scratch.path, 0, enabled=obj.log_format == "human" and err.is_terminal):
                preview = pipeline.preview_run(scratch, mappings, os.environ, full=full, shutdown=shutdown,
                                               calls=calls, skip=skip)
    except KeyboardInterrupt as exc:
        raise Interrupted(str(exc) or "stopped at once") from None
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


def _one_run(obj: Context, shutdown: Shutdown, full: bool = False, skip: tuple[str, ...] = (),
             command: str = "run") -> int:
    """One tracked run (the lock, its row in `runs`, logs and progress); returns its exit code."""
    mappings = obj.mappings()
    with obj.store(create=True) as store, _tracked(store, command) as run_id, logs.bound(run_id=run_id):
        logs.event(f"run {run_id} started: {command}", step="run", command=command)
        calls = CallLog()
        with RunProgress(calls, store.path, run_id, enabled=obj.log_format == "human" and err.is_terminal):
            result = pipeline.run(store, mappings, os.environ, full=full, run_id=run_id, shutdown=shutdown,
                                  calls=calls, skip=skip)
        code = result.exit_code
        counts = _run_counts(result)
        store.finish_run(run_id, RUN_STATUS[code], code, counts, error=_run_error(result),
                         api_calls=result.pulled.calls.as_dict())
        logs.event(f"run {run_id} {RUN_STATUS[code]} (exit {code}) in {result.seconds:.1f} s", step="run",
                   status=RUN_STATUS[code], exit_code=code, seconds=result.seconds, counts=counts,
                   api_calls={s: result.pulled.calls.total(s) for s in result.pulled.calls.as_dict()})
    _print_run(result, mappings)
    return code


def _run_error(result: pipeline.RunSummary) -> str | None:
    """What a run's row in `runs` says went wrong: systems that failed, a stop, an interruption."""
    found = [f"{system} failed: {why}" for system, why in result.failed.items()]
    found += [s for s in (result.interrupted, result.stopped) if s]
    return "; ".join(found) or None


def _print_failed(result: pipeline.RunSummary) -> None:
    for what, why in result.failed.items():
        err.print(f"error: {what} failed, left out of this run (the rest went on): {why}", markup=False)


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
def schedule(obj: Context, cron: str, jitter: float, timezone: str, run_now: bool, max_runs: int | None) -> None:
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


def _scheduled_run(obj: Context, shutdown: Shutdown) -> int:
    """One scheduled run; whatever goes wrong is reported and becomes an exit code, never a crash."""
    try:
        return _one_run(obj, shutdown, command="schedule run")
    except Interrupted as exc:  # stopped at once by a second signal (recorded by _tracked): the loop ends
        logs.event(f"run interrupted: {exc}", logging.WARNING, step="run", exit_code=exc.exit_code)
        shutdown.request("a second stop signal")
        return exc.exit_code
    except ConfigError as exc:
        logs.event(f"{exc.title}: the run did not start", logging.ERROR, step="run", exit_code=exc.exit_code,
                   problems=[p.render() for p in exc.problems])
        return exc.exit_code
    except HealthsyncError as exc:
        logs.event(f"run failed: {exc}", logging.ERROR, step="run", exit_code=exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one run's bug must not end the schedule
        logs.log.exception(f"run failed unexpectedly: {type(exc).__name__}: {exc}")
        return 1


def _run_counts(result: pipeline.RunSummary) -> dict[str, Any]:
    counts = _pull_counts(result.pulled)
    if result.failed:
        counts["failed_systems"] = result.failed
    if result.scored:
        counts["scored"] = result.scored.scored
        counts["no_verdict"] = result.scored.no_verdict
    if result.planned:
        counts["planned"] = result.planned.changes
        counts["drift"] = result.planned.drift
    if result.pushed:
        counts["written"] = result.pushed.written
        counts["failed"] = result.pushed.failed
        counts["write_calls"] = result.pushed.calls
        counts["bulk_jobs"] = result.pushed.jobs
    if result.alerts and result.alerts.saved:
        counts["alerts_fired"] = result.alerts.fired()
    if result.delivered:
        counts["alerts_delivered"] = {k: n for k, n in result.delivered.done.items() if n}
        counts["alerts_failed"] = {k: n for k, n in result.delivered.failed.items() if n}
    return counts


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


@cli.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Every listed run, as JSON.")
@click.option("--limit", default=20, show_default=True, help="How many of the latest runs.")
@click.pass_context
@handled
def runs(ctx: click.Context, as_json: bool, limit: int) -> None:
    """Past runs: status, counts, API calls, duration, exit code (`runs show ID` for one)."""
    if ctx.invoked_subcommand:
        return
    with ctx.obj.reader() as store:
        rows = [_run_row(r) for r in store.runs(limit)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"last {len(rows)} run(s)")
    for column in ("id", "command", "started", "status", "exit", "seconds", "written", "failed", "API calls"):
        table.add_column(column)
    for r in rows:
        counts = r["counts"] or {}
        calls = ", ".join(f"{s} {sum(e.values()):,}" for s, e in (r["api_calls"] or {}).items())
        table.add_row(str(r["id"]), r["command"], r["started_at"], r["status"], "" if r["exit_code"] is None else str(r["exit_code"]),
                      "" if r["seconds"] is None else f"{r['seconds']:.0f}",
                      _per_system(counts.get("written")), _per_system(counts.get("failed")), calls)
    out.print(table)


@runs.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def runs_show(obj: Context, run_id: int, as_json: bool) -> None:
    """One run's details: counts, API calls per endpoint, error, and the writes that failed in it."""
    with obj.reader() as store:
        row = store.run(run_id)
        failed = store.outbox("failed", run_id) if row else []
    if row is None:
        raise NotFound(f"no run {run_id}: `healthsync runs` lists them")
    data = {**_run_row(row), "failures": [{"system": r["system"], "record": r["record_id"], "error": r["error"]}
                                          for r in failed]}
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    out.print(f"run {data['id']}: {data['command']} — {data['status']} (exit {data['exit_code']}), "
              f"{data['started_at']} → {data['finished_at'] or '…'}"
              + ("" if data["seconds"] is None else f", {data['seconds']:.0f} s"), markup=False)
    if data["error"]:
        out.print(f"error: {data['error']}", markup=False)
    for key, value in (data["counts"] or {}).items():
        out.print(f"  {key}: {value}", markup=False)
    for system, endpoints in (data["api_calls"] or {}).items():
        out.print(f"  API calls, {system}: " + ", ".join(f"{e} {n:,}" for e, n in endpoints.items()), markup=False)
    for f in data["failures"]:
        out.print(f"  failed: {f['system']} {f['record']}: {f['error']}", markup=False)


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    out_row = {k: row[k] for k in ("id", "command", "started_at", "finished_at", "status", "exit_code", "error")}
    for key in ("counts", "api_calls", "details"):
        out_row[key] = json.loads(row[key]) if row.get(key) else None
    seconds = None
    if row["finished_at"]:
        start, end = (datetime.fromisoformat(row[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at"))
        seconds = (end - start).total_seconds()
    out_row["seconds"] = seconds
    return out_row


def _per_system(value: Any) -> str:
    if not isinstance(value, dict):
        return ""
    return ", ".join(f"{s} {n:,}" for s, n in value.items())


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def failures(obj: Context, as_json: bool) -> None:
    """CRM records the last push could not write, with the CRM's reason."""
    with obj.reader() as store:
        rows = store.outbox("failed")
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    if not rows:
        out.print("no failed writes", markup=False)
        return
    table = Table(title=f"{len(rows):,} failed write(s)")
    for column in ("system", "record", "account", "fields", "attempts", "reason"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["system"], r["record_id"], r["account_name"] or r["account_key"],
                      ", ".join(json.loads(r["fields"])), str(r["attempts"]), r["error"] or "")
    out.print(table)


# ---------------------------------------------------------------- report


@cli.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default="report.html",
              show_default=True, help="The HTML file to write.")
@click.option("--days", type=click.IntRange(1, 366), default=7, show_default=True,
              help="Movers: compare each score with its value this many days ago.")
@click.pass_obj
@handled
def report(obj: Context, out_path: Path, days: int) -> None:
    """Write one self-contained HTML page: distributions, statuses, metrics, movers, matching, runs."""
    from .report import write_report

    mappings = obj.mappings()
    with obj.reader() as store:
        try:
            size = write_report(store, mappings, out_path, movers_days=days)
        except OSError as exc:
            raise click.FileError(str(out_path), hint=exc.strerror or str(exc)) from exc
    out.print(f"report written to {out_path} ({size:,} bytes)", markup=False)


# ---------------------------------------------------------------- demo


DEMO_DB = "healthsync-demo.db"


@cli.command()
@click.option("--accounts", default=300, show_default=True, help="How many Salesforce accounts the sandbox holds.")
@click.option("--faults", is_flag=True, help="Inject 429s, 5xx, dropped connections and a session expiry.")
@click.pass_obj
@handled
def demo(obj: Context, accounts: int, faults: bool) -> None:
    """Start the bundled API sandbox, pull from it over real HTTP, score, show the result.

    It uses its own store, ./healthsync-demo.db (never HEALTHSYNC_DB), made anew
    each time; `--db PATH` on the command line names another, which must be new
    or hold demo runs alone: any other store is refused (exit 2) and left as it is.
    """
    from .sandbox.dataset import build_dataset
    from .sandbox.server import Faults, Sandbox

    mappings = obj.mappings()
    path = Path(obj.db_path if obj.db_given and obj.db_path else DEMO_DB)
    _check_demo_store(path)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    now = datetime.now(UTC)
    injected = Faults(rate_429=0.1, rate_5xx=0.02, rate_drop=0.01, expire_session_after=5, seed=1) if faults else Faults()
    with Sandbox(build_dataset(accounts=accounts, seed=7, now=now), faults=injected) as sb, Store(path) as store:
        out.print(f"sandbox: Salesforce {sb.urls['salesforce']} (TLS), HubSpot {sb.urls['hubspot']}, "
                  f"Stripe {sb.urls['stripe']}, Zendesk {sb.urls['zendesk']}", markup=False)
        env = {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.05"}
        with _tracked(store, "demo") as run_id:
            calls = CallLog()
            with RunProgress(calls, store.path, run_id, enabled=obj.log_format == "human" and err.is_terminal):
                result = pipeline.run(store, mappings, env, now, run_id=run_id, calls=calls)
            store.finish_run(run_id, RUN_STATUS[result.exit_code], result.exit_code, _run_counts(result),
                             error=_run_error(result), api_calls=result.pulled.calls.as_dict())
        records = [r for r in store.current_scores("health") if r["value"] is not None]
        crm = _crm_view(store, sb.dataset)
    _print_run(result, mappings)
    out.print(f"demo store: {path} (mappings version {mappings.version})", markup=False)
    records.sort(key=lambda r: r["value"])
    for r in records:
        r["groups"] = json.loads(r["groups"] or "{}")
    out.print("lowest health scores:")
    _print_scores(records, 5)
    shown = [r for r in records if r["account_id"] in crm][:4]
    if shown:
        table = Table(title="as they now stand in the sandbox's CRMs (read back from its records)")
        for column in ("account", "score", "Salesforce Health_Score__c / Status / Grade",
                       "HubSpot health_score / health_status"):
            table.add_column(column)
        for r in shown:
            sf, hs = crm[r["account_id"]]
            table.add_row(r["account_name"], f"{r['value']:g} {r['status']}", sf, hs)
        out.print(table)
    if records:
        out.print(f"next: {_program()} --db {path} explain {records[0]['account_key']}", markup=False)
        out.print(f"      {_program()} --db {path} report --out report.html", markup=False)


def _check_demo_store(path: Path) -> None:
    """The demo remakes its store: refuse (exit 2, untouched) anything but a new file or a demo's store."""
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    try:
        with Store(path, readonly=True) as store:
            commands = {r["command"] for r in store.runs(limit=10**9)}
    except StoreError as exc:
        raise StoreError(f"demo remakes its store, and {path} is not a demo's: {exc}") from None
    if commands != {"demo"}:
        raise StoreError(f"demo remakes its store, and {path} holds "
                         + (f"runs of {', '.join(sorted(commands - {'demo'}))}" if commands else "no demo run")
                         + ": it was left untouched; give demo another --db (or none: it uses ./" + DEMO_DB + ")")


def _program() -> str:
    """How to call healthsync again from here: `healthsync` when that is on PATH, else the path run."""
    if shutil.which("healthsync"):
        return "healthsync"
    here = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if here is not None and here.name == "healthsync" and here.exists():
        return os.path.relpath(here) if not os.path.relpath(here).startswith("..") else str(here.resolve())
    return f"{Path(sys.executable).name} -m connector"


@cli.command("sandbox")
@click.option("--accounts", default=300, show_default=True, help="How many Salesforce accounts it holds.")
@click.option("--faults", is_flag=True, help="Inject 429s, 5xx, dropped connections and a session expiry.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the environment to this file (KEY=value lines, for --env-file / `set -a; .`).")
@click.pass_obj
@handled
def sandbox_command(obj: Context, accounts: int, faults: bool, env_file: Path | None) -> None:
    """Start the bundled API sandbox alone, print the environment to export, serve until Ctrl-C / SIGTERM.

    In another shell, `export` the printed lines (or source --env-file) and run
    any command against it: `healthsync run`, `validate --live`, `setup` ...
    """
    from .sandbox.dataset import build_dataset
    from .sandbox.server import Faults, Sandbox

    injected = Faults(rate_429=0.1, rate_5xx=0.02, rate_drop=0.01, expire_session_after=5, seed=1) if faults else Faults()
    with Shutdown().on_signals() as shutdown, \
            Sandbox(build_dataset(accounts=accounts, seed=7, now=datetime.now(UTC)), faults=injected) as sb:
        env = {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0"}
        lines = [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        if env_file is not None:
            env_file.write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())), encoding="utf-8")
        click.echo("\n".join(lines))
        click.echo(f"# sandbox up ({accounts} Salesforce accounts); Ctrl-C or SIGTERM stops it")
        sys.stdout.flush()
        while not shutdown.requested:
            shutdown.sleep(3600)
    click.echo(f"# sandbox stopped: {shutdown.reason}", err=True)


def _crm_view(store: Store, dataset: Any) -> dict[int, tuple[str, str]]:
    """account id -> what its Salesforce Account and HubSpot company hold, for accounts in both."""
    sf = {aid: dataset.sf_accounts[rid] for rid, aid in store.linked("salesforce", "Account").items()}
    hs = {aid: dataset.hs_companies[cid]["properties"] for cid, aid in store.linked("hubspot", "companies").items()}
    return {aid: (" / ".join(str(sf[aid].get(f)) for f in ("Health_Score__c", "Health_Status__c", "Health_Grade__c")),
                  " / ".join(str(hs[aid].get(f)) for f in ("health_score", "health_status")))
            for aid in sf.keys() & hs.keys()}


def main() -> None:
    cli(prog_name="healthsync")


if __name__ == "__main__":
    main()
