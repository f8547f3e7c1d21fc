"""`score`, `scores`, `explain` and `override`: computing, listing and explaining scores."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.table import Table

from .. import pipeline, runs
from ..errors import NotFound
from ..runlock import RunLock
from ..scoring.engine import INSUFFICIENT
from ..scoring.explain import explain as explain_account
from ..scoring.frame import iso
from .base import Invocation, cli, handled
from .output import emit, err, one_format, out, show


@cli.command()
@click.option("--full", is_flag=True, help="Compute every score again even when nothing they read changed.")
@click.pass_obj
@handled
def score(obj: Invocation, full: bool) -> None:
    """Compute every score from the metric values in the store and save them.

    When nothing the last scores read has changed since, they stand: nothing is computed."""
    mappings = obj.mappings()
    with obj.store() as store, runs.tracked(store, "score") as run_id:
        summary = pipeline.score(store, mappings, full=full)
        store.finish_run(run_id, "ok", 0, {"accounts": summary.accounts, "scored": summary.scored, "changed": summary.changed})
    for warning in summary.warnings:
        err.print(f"warning: {warning}", markup=False)
    _print_summary(summary)


def _print_summary(summary: pipeline.ScoreSummary) -> None:
    standing = f" (the scores of {summary.standing} stand: nothing they read changed since)" if summary.standing else ""
    table = Table(title=f"Scored {summary.accounts} account(s){standing}")
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
def scores(obj: Invocation, as_json: bool, as_csv: bool, score_name: str | None) -> None:
    """Export current scores with sub-scores, grade, status, trend and external ids."""
    one_format(json=as_json, csv=as_csv)
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
    table = None
    if as_csv:
        group_names = sorted({g for r in records for g in r["groups"]})
        id_names = sorted({k for r in records for k in r["external_ids"]})
        table = (EXPORT_COLUMNS + [f"group_{g}" for g in group_names] + id_names,
                 [[r[c] for c in EXPORT_COLUMNS] + [r["groups"].get(g) for g in group_names]
                  + [r["external_ids"].get(k) for k in id_names] for r in records])
    if not emit(records, as_json, csv_rows=table):
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
def explain(obj: Invocation, account: str, score_name: str, as_json: bool) -> None:
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
    if not emit(data, as_json):
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
                m["group"], m["metric"], show(m["raw"]), show(m["normalized"]), m["scheme"],
                show(m["score"]), f"{m['weight']:g}", f"{m['share']:.1%}", f"{m['contribution']:.2f}",
                f"{m['points_lost']:.2f}", m["na_reason"] or m["note"] or "",
            )
        out.print(table)
        groups = ", ".join(f"{g['label']} {show(g['score'])}" for g in data["groups"].values())
        out.print(f"sub-scores: {groups}", markup=False)
    for t in data["triggers"]:
        out.print(f"  {t['state']:>14}  +{t['points']:g}  {t['label'] or t['name']}  ({t['when']})", markup=False)


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
def override_set(obj: Invocation, account: str, score_name: str, status: str | None, value: float | None, reason: str, until: datetime | None, days: int | None, actor: str) -> None:
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
    applied = "" if now_row is None else f"; {score_name} is now {show(now_row['value'])} {now_row['status'] or ''}"
    out.print(f"override #{new_id}: {row['name']} {score_name} {kind} = {text} until {expires[:10]} "
              f"({reason.strip()}){applied}".rstrip(), markup=False)


@override.command("list")
@click.option("--all", "include_ended", is_flag=True, help="Include ended overrides.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def override_list(obj: Invocation, include_ended: bool, as_json: bool) -> None:
    """List overrides in force (or all of them)."""
    with obj.reader() as store:
        rows = store.overrides(include_ended)
    emit(rows, as_json, empty="no override" + ("" if include_ended else " in force (--all lists ended ones too)"),
         columns=("id", "account", "score", "kind", "value", "reason", "by", "set", "expires", "ended"),
         row=lambda r: (str(r["id"]), r["account_name"] or r["account_key"], r["score"], r["kind"], r["value"],
                        r["reason"], r["set_by"], r["set_at"][:10], r["expires_at"][:10],
                        (r["ended_reason"] or "") + (f" {r['ended_at'][:10]}" if r["ended_at"] else "")))


@override.command("clear")
@click.argument("override_id", type=int)
@click.option("--reason", required=True)
@click.option("--by", "actor", default=lambda: os.environ.get("USER", "cli"))
@click.pass_obj
@handled
def override_clear(obj: Invocation, override_id: int, reason: str, actor: str) -> None:
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
def override_audit(obj: Invocation, override_id: int | None) -> None:
    """The audit trail of all overrides, or of one."""
    with obj.reader() as store:
        rows = store.audit(override_id)
    if override_id is not None and not rows:
        raise NotFound(f"no override #{override_id}: `healthsync override list --all` lists them")
    for r in rows:
        out.print(f"{r['at']}  #{r['override_id']}  {r['action']:<12} by {r['actor']}  {r['detail']}", markup=False)
