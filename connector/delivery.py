"""Delivery: the recorded actions of fired alerts sent out — webhook POSTs and CRM tasks.

Runs after the push. Deliveries go out by kind: Salesforce Tasks in sObject
Collections of 200, HubSpot tasks in batch creates of 100, one POST per webhook
message. Each request's deliveries are marked sent (committed) before it goes
out, then settled one by one: done (with the created task's id), retry (a
transient error, or retries ran out: tried again by the next run, never fired
again), or failed (a permanent error, or the last of MAX_ATTEMPTS runs). A
request the CRM refuses as a whole (a 405 on the Task create, a 400 on the
HubSpot tasks batch, a 403 for a user without the permission to create tasks)
counts as one attempt for every delivery in it, with the CRM's reason as the
error: kept to retry, failed after MAX_ATTEMPTS runs, like a per-record error
that may clear. A rejected credential (401) is not the deliveries' fault: they
go back to pending untouched. Either way the other kinds are still sent.
Quota reserves apply as for the push; a stop request ends the loop after the
request in flight. A kind with nothing to send it with (no credentials for that
CRM, the webhook's variable unset) has its deliveries skipped, with the reason.
A run that crashed between a request and its answer leaves those deliveries
`sent`: the next run sends them again (at least once: the receiver may see one
twice, and X-Healthsync-Delivery lets a webhook receiver drop it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import HealthsyncError
from .http import ApiError, AuthError, CallLog, QuotaStop, RetryPolicy
from .logs import event
from .outbox import MAX_ATTEMPTS, CreateResult, send_all, verdict
from .shutdown import Interrupted, Shutdown
from .sources import registry
from .store import Store
from .webhook import WebhookSender


def _task_kinds() -> dict[str, tuple[str, int]]:
    """'<system>_task' -> (system, batch size) for every source with the tasks capability."""
    return {f"{p.system}_task": (p.system, p.crm.batch if p.crm else 1)
            for p in registry.plugins() if p.capabilities.tasks}


@dataclass
class DeliverySummary:
    done: dict[str, int] = field(default_factory=dict)  # kind -> delivered
    failed: dict[str, int] = field(default_factory=dict)  # kind -> failed for good
    retry: dict[str, int] = field(default_factory=dict)  # kind -> to try again next run
    skipped: dict[str, int] = field(default_factory=dict)  # kind -> not sendable here
    requests: dict[str, int] = field(default_factory=dict)  # kind -> requests made
    notes: list[str] = field(default_factory=list)  # why deliveries were skipped
    stopped: str | None = None  # a quota reserve was reached
    interrupted: str | None = None  # a stop was asked for
    failed_kinds: dict[str, str] = field(default_factory=dict)  # kind -> the error that ended its sending this run
    failed_exit_codes: dict[str, int] = field(default_factory=dict)  # kind -> that error's exit code (2: credentials)


def deliver(store: Store, env: Mapping[str, str], sources: Iterable[Any], calls: CallLog,
            shutdown: Shutdown | None = None, policy: RetryPolicy | None = None,
            unavailable: Mapping[str, str] | None = None) -> DeliverySummary:
    """Send every pending delivery (new ones and those left to retry).

    `unavailable`: systems this run left out after an error (system -> why): their deliveries
    wait, pending, for a run in which the system works; only a system without any credentials
    has its deliveries skipped."""
    summary = DeliverySummary()
    requeued = store.requeue_unconfirmed_deliveries(MAX_ATTEMPTS)
    if requeued:
        summary.notes.append(f"{requeued} delivery(ies) a stopped run left unconfirmed are sent again")
    if not store.open_deliveries():
        return summary
    clients = {s.system: s for s in sources}
    policy = dataclasses.replace(policy or RetryPolicy.from_env(env), shutdown=shutdown)
    webhooks = WebhookSender(env, calls, policy)
    tasks = _task_kinds()
    for kind in [*tasks, "webhook"]:
        for counter in (summary.done, summary.failed, summary.retry, summary.skipped, summary.requests):
            counter[kind] = 0
        if not store.open_deliveries(kind):
            continue
        system = tasks[kind][0] if kind in tasks else None
        if system is not None and unavailable and system in unavailable:
            summary.notes.append(f"{kind}: waiting, {system} failed in this run ({unavailable[system]})")
            continue
        if system is not None and system not in clients:
            summary.skipped[kind] += store.skip_deliveries(kind, f"no {system} credentials in the environment")
            summary.notes.append(f"{kind}: skipped, no {system} credentials")
            continue
        try:
            _send_kind(store, kind, tasks[kind][1] if kind in tasks else 1, clients.get(system or ""), webhooks,
                       summary, shutdown)
        except QuotaStop as stop:
            summary.stopped = f"{summary.stopped}; {stop}" if summary.stopped else str(stop)
            event(f"alert deliveries ({kind}) stopped: {stop}", logging.WARNING, step="deliver", kind=kind)
        except Interrupted:
            raise
        except HealthsyncError as exc:  # a credential refused: this kind waits, the other kinds go on
            summary.failed_kinds[kind] = str(exc)
            summary.failed_exit_codes[kind] = exc.exit_code
            event(f"alert deliveries ({kind}) failed: {exc}", logging.ERROR, step="deliver", kind=kind,
                  exit_code=exc.exit_code)
        event(f"delivered {kind}", step="deliver", kind=kind, done=summary.done[kind], failed=summary.failed[kind],
              retry=summary.retry[kind], skipped=summary.skipped[kind], requests=summary.requests[kind])
        if summary.interrupted:
            break
    for note in summary.notes:
        event(note, step="deliver")
    return summary


def _send_kind(store: Store, kind: str, size: int, client: Any, webhooks: WebhookSender, summary: DeliverySummary,
               shutdown: Shutdown | None) -> None:
    if kind == "webhook":
        _check_webhook_urls(store, webhooks, summary)
    tried: set[int] = set()  # a delivery that fails waits for the next run: its receiver is likely still down

    def take() -> list[dict[str, Any]]:
        batch = store.take_deliveries(kind, size, tried)
        tried.update(row["id"] for row in batch)
        return batch

    def send(batch: list[dict[str, Any]]) -> list[CreateResult]:
        try:
            results = _send(kind, batch, client, webhooks)
        except ApiError as exc:
            if isinstance(exc, AuthError) and exc.status != 403:  # the credential, not these deliveries: untouched
                raise
            results = refused(batch, exc)  # the whole request refused: one attempt for each delivery in it
            event(f"alert deliveries ({kind}): the request was refused: {exc}", logging.WARNING, step="deliver",
                  kind=kind, deliveries=len(batch))
        summary.requests[kind] += 1
        return results

    stopped = send_all(take, send, lambda batch, results: _settle(store, kind, batch, results, summary),
                       store.release_deliveries, shutdown)
    if stopped:
        summary.interrupted = f"{stopped}: alert deliveries stopped after the request in flight"


def refused(batch: list[dict[str, Any]], exc: ApiError) -> list[CreateResult]:
    """Every delivery of a request the API refused as a whole: not created, the API's reason, worth
    another try in a later run (a permission can be granted, an outage end) until MAX_ATTEMPTS."""
    return [CreateResult(str(row["id"]), False, error=str(exc), transient=True) for row in batch]


def _check_webhook_urls(store: Store, webhooks: WebhookSender, summary: DeliverySummary) -> None:
    """A variable that is not set skips its deliveries; one that holds no usable URL fails them."""
    for name in store.open_targets("webhook"):
        try:
            url = webhooks.url(name)
        except HealthsyncError as exc:
            summary.failed["webhook"] += store.skip_deliveries("webhook", str(exc), target=name, status="failed")
            summary.notes.append(f"webhook: {exc}")
            continue
        if url is None:
            summary.skipped["webhook"] += store.skip_deliveries("webhook", f"{name} is not set", target=name)
            summary.notes.append(f"webhook: skipped, {name} is not set")


def _send(kind: str, batch: list[dict[str, Any]], client: Any, webhooks: WebhookSender) -> list[CreateResult]:
    if kind != "webhook":  # a CRM's alert tasks
        return list(client.deliver_tasks([(str(row["id"]), json.loads(row["payload"])) for row in batch]))
    row = batch[0]
    return [webhooks.post(str(row["id"]), row["target"], json.loads(row["payload"]))]


def _settle(store: Store, kind: str, batch: list[dict[str, Any]], results: list[CreateResult],
            summary: DeliverySummary) -> None:
    by_key = {r.key: r for r in results}
    outcome: list[tuple[int, str, str | None, str | None]] = []
    counters = {"done": summary.done, "retry": summary.retry, "failed": summary.failed}
    for row in batch:
        result = by_key.get(str(row["id"]))
        status, why = verdict(row, result, unconfirmed="not in the answer: unconfirmed, sent again next run",
                              never="never confirmed")
        outcome.append((row["id"], status, why, result.created_id if status == "done" and result else None))
        counters[status][kind] += 1
    store.settle_deliveries(outcome)
