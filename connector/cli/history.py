"""`runs`, `failures` and `alerts`: what past runs did, wrote, failed and fired."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import NotFound
from ..times import parse_iso
from .base import Invocation, cli, handled
from .output import emit, out, show


@cli.command("alerts")
@click.option("--json", "as_json", is_flag=True, help="Every listed alert with its detail and deliveries, as JSON.")
@click.option("--limit", default=50, show_default=True, help="How many of the latest alerts.")
@click.pass_obj
@handled
def alerts_command(obj: Invocation, as_json: bool, limit: int) -> None:
    """Alerts that fired, newest first: the account, what triggered it, and where each action stands."""
    with obj.reader() as store:
        rows = store.fired_alerts(limit)
    records = [{"id": r["id"], "run_id": r["run_id"], "alert": r["alert"], "score": r["score"], "fired_at": r["fired_at"],
                "account": {"id": r["account_id"], "key": r["account_key"], "name": r["account_name"]},
                "detail": json.loads(r["detail"]),
                "deliveries": [{"kind": d["kind"], "target": d["target"], "status": d["status"],
                                "attempts": d["attempts"], "error": d["error"], "external_id": d["external_id"],
                                "payload": json.loads(d["payload"])} for d in r["deliveries"]]} for r in rows]
    emit(records, as_json, empty="no alert has fired", title=f"last {len(records)} alert(s)",
         columns=("id", "fired", "alert", "account", "what", "deliveries"),
         row=lambda r: (str(r["id"]), r["fired_at"], r["alert"], r["account"]["name"] or r["account"]["key"],
                        _alert_what(r["detail"]), _deliveries(r["deliveries"])))


def _deliveries(deliveries: list[dict[str, Any]]) -> str:
    return "; ".join(f"{d['kind']} {d['status']}" + (f" {d['external_id']}" if d["external_id"] else "")
                     + (f" ({d['error']})" if d["error"] and d["status"] != "done" else "") for d in deliveries)


def _alert_what(detail: dict[str, Any]) -> str:
    score, status = detail.get("score", {}), detail.get("status", {})
    text = f"{score.get('name')} {show(score.get('before'))} {status.get('before') or ''} -> " \
           f"{show(score.get('after'))} {status.get('after') or ''}".replace("  ", " ")
    if "drop" in detail:
        text += f" (-{detail['drop']['points']:g} in {detail['drop']['within_days']} d)"
    if "trigger" in detail:
        text += f"; {detail['trigger']['label']}"
    if "sub_score" in detail:
        sub = detail["sub_score"]
        text += f"; {sub['group']} {show(sub['before'])} -> {show(sub['after'])} (below {sub['below']:g})"
    return text


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
    emit(rows, as_json, title=f"last {len(rows)} run(s)",
         columns=("id", "command", "started", "status", "exit", "seconds", "written", "failed", "API calls"),
         row=lambda r: (str(r["id"]), r["command"], r["started_at"], r["status"],
                        "" if r["exit_code"] is None else str(r["exit_code"]),
                        "" if r["seconds"] is None else f"{r['seconds']:.0f}",
                        _per_system((r["counts"] or {}).get("written")), _per_system((r["counts"] or {}).get("failed")),
                        ", ".join(f"{s} {sum(e.values()):,}" for s, e in (r["api_calls"] or {}).items())))


@runs.command("show")
@click.argument("run_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@handled
def runs_show(obj: Invocation, run_id: int, as_json: bool) -> None:
    """One run's details: counts, API calls per endpoint, error, and the writes that failed in it."""
    with obj.reader() as store:
        row = store.run(run_id)
        failed = store.outbox("failed", run_id) if row else []
    if row is None:
        raise NotFound(f"no run {run_id}: `healthsync runs` lists them")
    data = {**_run_row(row), "failures": [{"system": r["system"], "record": r["record_id"], "error": r["error"]}
                                          for r in failed]}
    if emit(data, as_json):
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
        start, end = (parse_iso(row[k]) for k in ("started_at", "finished_at"))
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
def failures(obj: Invocation, as_json: bool) -> None:
    """CRM records the last push could not write, with the CRM's reason."""
    with obj.reader() as store:
        rows = store.outbox("failed")
    emit(rows, as_json, empty="no failed writes", title=f"{len(rows):,} failed write(s)",
         columns=("system", "record", "account", "fields", "attempts", "reason"),
         row=lambda r: (r["system"], r["record_id"], r["account_name"] or r["account_key"],
                        ", ".join(json.loads(r["fields"])), str(r["attempts"]), r["error"] or ""))
