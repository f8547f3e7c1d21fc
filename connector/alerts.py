"""Alert evaluation: which alert conditions became true for which accounts, recorded before anything is sent.

evaluate  per alert and account, whether the condition holds now: true, false, or
          unknown (the score, sub-score or a trigger's inputs are N/A). Against the
          alert's stored state: false -> true fires, true -> false re-arms, unknown
          changes nothing. The first evaluation of an alert (or of an alert whose
          condition was edited) is a baseline: accounts already meeting it are
          recorded as such without firing, unless the alert says `on_first_run:
          fire`. Read-only, so `healthsync plan` and `run --dry-run` can show it.
record    saves an evaluation in one transaction: the state, each fired alert with
          what triggered it (before / after values), and one delivery per action
          holding exactly what will be sent. connector/delivery.py sends them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .config.alerts import (
    DEFAULT_SUMMARY,
    Action,
    CompiledAlert,
    HubSpotTaskAction,
    SalesforceTaskAction,
    WebhookAction,
    render,
)
from .config.mappings import Mappings
from .scoring.frame import Frame, from_store, iso
from .store import ScoreRow, Store

TARGETS = {"salesforce_task": ("salesforce", "Account"), "hubspot_task": ("hubspot", "companies")}
SF_SUBJECT_MAX = 255  # Task.Subject is a 255-character field
SF_DESCRIPTION_MAX = 32_000  # Task.Description: a 32k long text area
HUBSPOT_PRIORITY = {"High": "HIGH", "Medium": "MEDIUM", "Low": "LOW"}


@dataclass
class Delivery:
    """One action of a fired alert: where it goes and exactly what is sent."""

    action: int  # index in the alert's actions
    kind: str  # webhook | salesforce_task | hubspot_task
    target: str  # webhook: the env var naming the URL (never the URL); tasks: the CRM record id
    payload: dict[str, Any]
    status: str = "pending"  # or skipped, with the reason in error
    error: str | None = None


@dataclass
class Firing:
    """An alert whose condition became true for one account."""

    alert: CompiledAlert
    account_id: int
    account_key: str
    account_name: str | None
    detail: dict[str, Any]  # what triggered it, with before and after values
    values: dict[str, str]  # the message placeholders
    targets: dict[str, tuple[str, dict[str, Any]] | None]  # task kind -> (CRM record id, its stored data)
    deliveries: list[Delivery] = field(default_factory=list)


@dataclass
class AlertPlan:
    """One evaluation of every alert: what fires now, and the state to save."""

    evaluated_at: str
    firings: list[Firing] = field(default_factory=list)
    holding: dict[str, int] = field(default_factory=dict)  # alert -> accounts whose condition holds now
    first: list[str] = field(default_factory=list)  # alerts evaluated for the first time (or since edited): baselines
    baseline: dict[str, int] = field(default_factory=dict)  # alert -> accounts meeting it at its baseline, not fired
    rearmed: dict[str, int] = field(default_factory=dict)  # alert -> accounts whose condition ended
    unknown: dict[str, int] = field(default_factory=dict)  # alert -> accounts it could not evaluate (N/A)
    open_deliveries: int = 0  # deliveries of earlier alerts still to send or retry
    saved: bool = False  # recorded in the store (a run), or only shown (plan, dry run)
    alert_ids: list[int] = field(default_factory=list)  # of the fired alerts, once recorded
    rules: list[tuple[str, str, str, str]] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    states: list[tuple[str, int, int, str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def fired(self) -> dict[str, int]:
        """alert -> how many accounts it fires for."""
        out: dict[str, int] = {}
        for firing in self.firings:
            out[firing.alert.name] = out.get(firing.alert.name, 0) + 1
        return out

    def as_json(self) -> list[dict[str, Any]]:
        return [{"alert": f.alert.name, "label": f.alert.label, "score": f.alert.score,
                 "account": {"id": f.account_id, "key": f.account_key, "name": f.account_name},
                 "detail": f.detail,
                 "deliveries": [{"kind": d.kind, "target": d.target, "status": d.status, "error": d.error,
                                 "payload": d.payload} for d in f.deliveries]}
                for f in self.firings]


@dataclass
class _Seen:
    holds: bool | None  # None: unknown
    value: Any  # what the state remembers: status, score, trigger outcome or sub-score
    context: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ evaluate


def evaluate(store: Store, mappings: Mappings, now: datetime, given: Frame | None = None) -> AlertPlan:
    """Every alert against the current scores and its stored state; changes nothing. `given`: the
    metric values as the score step just loaded them (else they are read when an alert needs them)."""
    stamp = iso(now)
    plan = AlertPlan(stamp, names=[a.name for a in mappings.alerts])
    if not mappings.alerts:
        return plan
    rules = store.alert_rules()
    accounts = store.live_accounts()
    scores: dict[str, dict[int, ScoreRow]] = {}
    frame: list[Frame] = [] if given is None else [given]

    def frame_now() -> Frame:
        if not frame:
            frame.append(from_store(store, mappings, now))
        return frame[0]

    for alert in mappings.alerts:
        rule = rules.get(alert.name)
        fingerprint = alert.fingerprint()
        restarted = rule is not None and rule["condition"] != fingerprint
        baseline = rule is None or restarted
        if restarted:
            plan.restarted.append(alert.name)
        if baseline:
            plan.first.append(alert.name)
        state = {} if baseline else store.alert_state(alert.name)
        if alert.score not in scores:
            scores[alert.score] = store.score_results(alert.score)
        rows = scores[alert.score]
        seen = _observe(store, mappings, alert, rows, accounts, now, frame_now)
        counts = {"holding": 0, "baseline": 0, "rearmed": 0, "unknown": 0}
        fire: list[tuple[int, _Seen]] = []
        for account_id, obs in seen.items():
            if obs.holds is None:
                counts["unknown"] += 1
                continue
            old = state.get(account_id)
            if old is None or old[0] != int(obs.holds) or old[1] != obs.value:
                plan.states.append((alert.name, account_id, int(obs.holds), stamp, obs.value))
            if not obs.holds:
                counts["rearmed"] += bool(old and old[0] == 1)
                continue
            counts["holding"] += 1
            if old is not None and old[0] == 1:
                continue  # still true: it fired when it became true
            if old is None and baseline and alert.on_first_run != "fire":
                counts["baseline"] += 1  # already true when first seen: recorded, not fired
                continue
            obs.context["before"] = old[1] if old else None
            fire.append((account_id, obs))
        plan.holding[alert.name], plan.baseline[alert.name] = counts["holding"], counts["baseline"]
        plan.rearmed[alert.name], plan.unknown[alert.name] = counts["rearmed"], counts["unknown"]
        plan.rules.append((alert.name, fingerprint, stamp if baseline or rule is None else rule["baseline_at"], stamp))
        previous_at = None if baseline or rule is None else rule["evaluated_at"]
        plan.firings += _firings(store, alert, fire, rows, accounts, previous_at, baseline, now)
    plan.open_deliveries = store.open_deliveries()
    return plan


def _observe(
    store: Store, mappings: Mappings, alert: CompiledAlert, rows: dict[int, ScoreRow],
    accounts: dict[int, tuple[str, str | None]], now: datetime, frame_now: Callable[[], Frame],
) -> dict[int, _Seen]:
    """account_id -> whether the alert's condition holds for it, for every live account with a score row."""
    seen: dict[int, _Seen] = {}
    peaks = store.score_peaks(alert.score, iso(now - timedelta(days=alert.days)), iso(now)) \
        if alert.condition == "drops_by" and alert.days else {}
    outcome: np.ndarray | None = None
    position: dict[int, int] = {}
    names: list[str] = []
    if alert.condition == "trigger_fires":
        frame = frame_now()
        trigger, expr = next((t, e) for t, e in mappings.scores[alert.score].triggers if t.name == alert.trigger)
        outcome = np.asarray(expr.evaluate(frame), dtype=float)
        position = {int(a): i for i, a in enumerate(frame.ids.tolist())}
        names = sorted(expr.names)
    for account_id, row in rows.items():
        if account_id not in accounts:
            continue
        if alert.models is not None and row["model"] is not None and row["model"] not in alert.models:
            seen[account_id] = _Seen(False, _state_value(alert, row), {"model": row["model"]})
            continue
        if alert.condition == "status_becomes":
            status = row["status"]
            seen[account_id] = _Seen(None if status is None else status == alert.status, status)
        elif alert.condition == "drops_by":
            value, peak = row["value"], peaks.get(account_id)
            if value is None or peak is None:
                seen[account_id] = _Seen(None, value)
                continue
            drop = round(peak[0] - value, 2)
            seen[account_id] = _Seen(drop >= (alert.drop or 0), value, {"peak": peak[0], "peak_at": peak[1], "drop": drop})
        elif alert.condition == "trigger_fires":
            assert outcome is not None
            at = position.get(account_id)
            fired = math.nan if at is None else float(outcome[at])
            if math.isnan(fired):
                seen[account_id] = _Seen(None, None)
                continue
            context = {"label": trigger.label or trigger.name, "when": trigger.when}
            if fired == 1.0:  # what made it fire, for the alert's detail
                context["inputs"] = {n: _plain(frame_now().column(n)[at]) for n in names}
            seen[account_id] = _Seen(fired == 1.0, int(fired == 1.0), context)
        else:
            sub = json.loads(row["groups"] or "{}").get(alert.group)
            seen[account_id] = _Seen(None if sub is None else sub < (alert.below or 0), sub)
    return seen


def _state_value(alert: CompiledAlert, row: ScoreRow) -> Any:
    if alert.condition == "status_becomes":
        return row["status"]
    if alert.condition == "sub_score_below":
        return json.loads(row["groups"] or "{}").get(alert.group)
    return row["value"] if alert.condition == "drops_by" else 0


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ------------------------------------------------------------------ firings


def _firings(
    store: Store, alert: CompiledAlert, fire: list[tuple[int, _Seen]], rows: dict[int, ScoreRow],
    accounts: dict[int, tuple[str, str | None]], previous_at: str | None, baseline: bool, now: datetime,
) -> list[Firing]:
    if not fire:
        return []
    ids = [account_id for account_id, _ in fire]
    before = store.scores_before(alert.score, ids, previous_at) if previous_at else {}
    json_body = any(a.kind == "webhook" and a.spec.format == "json" for a in alert.actions)  # names both CRM ids
    targets = {kind: store.crm_targets(system, obj, ids) for kind, (system, obj) in TARGETS.items()
               if json_body or any(a.kind == kind for a in alert.actions)}
    out = []
    for account_id, obs in fire:
        row = rows[account_id]
        key, name = accounts[account_id]
        was_value, was_status = before.get(account_id, (None, None))
        if alert.condition == "drops_by":
            was_value = obs.context["peak"]
        detail: dict[str, Any] = {
            "condition": alert.condition, "watching": alert.describe(),
            "score": {"name": alert.score, "before": was_value, "after": row["value"]},
            "status": {"before": was_status, "after": row["status"]},
            "drivers": row["drivers"] or None,
        }
        values = {"account": name or key, "alert": alert.label, "score_name": alert.score_label,
                  "score": _shown(row["value"]), "status": row["status"] or "N/A", "previous": _shown(was_value),
                  "previous_status": was_status or "N/A", "drivers": row["drivers"] or "none"}
        if alert.condition == "drops_by":
            detail["drop"] = {"points": obs.context["drop"], "within_days": alert.days,
                              "peak": obs.context["peak"], "peak_since": obs.context["peak_at"]}
            values |= {"drop": _shown(obs.context["drop"]), "days": str(alert.days)}
        elif alert.condition == "trigger_fires":
            detail["trigger"] = {"name": alert.trigger, "label": obs.context["label"], "when": obs.context["when"],
                                 "inputs": obs.context["inputs"]}
            values["trigger"] = detail["trigger"]["label"]
        elif alert.condition == "sub_score_below":
            detail["sub_score"] = {"group": alert.group, "below": alert.below, "before": obs.context["before"],
                                   "after": obs.value}
            values |= {"group": str(alert.group), "sub_score": _shown(obs.value), "below": _shown(alert.below)}
        if baseline:
            detail["first_run"] = True  # fired by on_first_run: fire
        if alert.models is not None:
            detail["model"] = row["model"]
        firing = Firing(alert, account_id, key, name, detail, values,
                        {kind: found.get(account_id) for kind, found in targets.items()})
        firing.deliveries = deliveries(firing, now, None)
        out.append(firing)
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "N/A"
    if isinstance(value, float):
        return f"{round(value, 1):g}"
    return str(value)


# ------------------------------------------------------------------ what each action sends


def deliveries(firing: Firing, now: datetime, alert_id: int | None) -> list[Delivery]:
    """One delivery per action, with the exact payload (the alert id once it is recorded)."""
    out = []
    for index, action in enumerate(firing.alert.actions):
        out.append(_delivery(firing, index, action, now, alert_id))
    return out


def _delivery(firing: Firing, index: int, action: Action, now: datetime, alert_id: int | None) -> Delivery:
    alert, spec = firing.alert, action.spec
    summary = DEFAULT_SUMMARY[alert.condition]
    trailer = f"healthsync alert {alert.name}" + (f" #{alert_id}" if alert_id is not None else "")
    if isinstance(spec, WebhookAction):
        if spec.format == "slack":
            text = render(spec.text or ("*{alert}*: " + summary), {k: _slack(v) for k, v in firing.values.items()})
            return Delivery(index, action.kind, spec.url_env, {"text": text})
        text = render(spec.text or ("{alert}: " + summary), firing.values)
        body = {"alert": alert.name, "label": alert.label, "alert_id": alert_id, "fired_at": iso(now),
                "account": {"id": firing.account_id, "key": firing.account_key, "name": firing.account_name,
                            **{f"{TARGETS[k][0]}_id": t[0] for k, t in firing.targets.items() if t}},
                "text": text, "detail": firing.detail}
        return Delivery(index, action.kind, spec.url_env, body)
    target = firing.targets.get(action.kind)
    system = "Salesforce Account" if action.kind == "salesforce_task" else "HubSpot company"
    if target is None:
        return Delivery(index, action.kind, "-", {}, "skipped", f"no live {system} is linked to this account")
    record_id, data = target
    due = now + timedelta(days=spec.due_in_days)
    if isinstance(spec, SalesforceTaskAction):
        subject = render(spec.subject or "{alert}: {account}", firing.values)
        description = render(spec.description or summary + "\nDrivers: {drivers}", firing.values)
        task = {"Subject": subject[:SF_SUBJECT_MAX], "Description": f"{description}\n\n{trailer}"[:SF_DESCRIPTION_MAX],
                "ActivityDate": due.date().isoformat(), "Priority": spec.priority, "Status": "Not Started",
                "WhatId": record_id}
        if data.get("OwnerId"):
            task["OwnerId"] = data["OwnerId"]  # the Account's owner; without one Salesforce assigns the API user
        return Delivery(index, action.kind, record_id, task)
    assert isinstance(spec, HubSpotTaskAction)
    subject = render(spec.subject or "{alert}: {account}", firing.values)
    text = render(spec.body or summary + "\nDrivers: {drivers}", firing.values)
    properties = {"hs_task_subject": subject, "hs_task_body": f"{text}\n\n{trailer}",
                  "hs_timestamp": due.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                  "hs_task_priority": HUBSPOT_PRIORITY[spec.priority], "hs_task_status": "NOT_STARTED",
                  "hs_task_type": "TODO"}
    if data.get("hubspot_owner_id"):
        properties["hubspot_owner_id"] = str(data["hubspot_owner_id"])
    return Delivery(index, action.kind, record_id, {"properties": properties, "company": record_id})


def _slack(text: str) -> str:
    """Slack's mrkdwn reads &, < and > as markup: a value that holds them is escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ------------------------------------------------------------------ record


def record(store: Store, plan: AlertPlan, run_id: int | None, now: datetime) -> list[int]:
    """Save the evaluation, the fired alerts and their deliveries in one transaction."""

    def deliveries_of(firing: Firing) -> Callable[[int], list[tuple[Any, ...]]]:
        def build(alert_id: int) -> list[tuple[Any, ...]]:
            firing.deliveries = deliveries(firing, now, alert_id)
            return [(d.action, d.kind, d.target, json.dumps(d.payload, sort_keys=True, ensure_ascii=False),
                     d.status, d.error) for d in firing.deliveries]
        return build

    fired = [((run_id, f.alert.name, f.alert.score, f.account_id, plan.evaluated_at,
               json.dumps(f.detail, sort_keys=True, ensure_ascii=False, default=str)), deliveries_of(f))
             for f in plan.firings]
    plan.alert_ids = store.record_alerts(plan.rules, plan.restarted, plan.states, fired, plan.names)
    plan.states = []  # saved: a first run's (one per account and alert) are not held through the push
    plan.saved = True
    return plan.alert_ids


def plan_alerts(store: Store, mappings: Mappings, now: datetime, run_id: int | None = None,
                save: bool = True, frame: Frame | None = None) -> AlertPlan:
    """Evaluate every alert and, unless `save` is false (plan, dry run), record the result."""
    plan = evaluate(store, mappings, now, frame)
    if save and (mappings.alerts or store.alert_rules()):  # with none left, the old ones' state is removed
        record(store, plan, run_id, now)
    return plan
