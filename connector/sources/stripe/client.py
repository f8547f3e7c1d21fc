"""Stripe: customers, subscriptions, unpaid invoices and recent charges, then events.

Facts this module relies on (Stripe API docs, stripe-python):
* list endpoints return at most 100 objects a page, newest first, with
  `has_more` and `starting_after` paging; lists filter by `created` only;
* `GET /v1/subscriptions` leaves canceled subscriptions out unless status=all;
* what changed since the last pull comes from `GET /v1/events`, which only
  reaches back 30 days: an older cursor means a full re-backfill;
* stripe-python makes no retries of a plain 429 and its objects are not dicts:
  healthsync asks for raw JSON and retries with its own policy;
* a restricted key with read access to customers, subscriptions, invoices,
  charges and events is enough: nothing is ever written to Stripe. A key
  refused (401) or lacking a permission (403) is AuthError, exit 2, naming
  STRIPE_API_KEY; the credential check is one `GET /v1/customers?limit=1`
  (a restricted key for healthsync may well have no balance access).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import stripe

from ...errors import Problem
from ...http import (
    ApiError,
    AuthError,
    Retryable,
    checked_url,
    counted_session,
    retry_after_seconds,
    setting,
)
from ...times import iso, parse_iso
from ..base import Page, PullStats, Read, SourceSetup, Stream

if TYPE_CHECKING:
    from ...config.mappings import Mappings

SYSTEM = "stripe"
DEFAULT_BASE_URL = "https://api.stripe.com"
PAGE = 100
VARIABLES = ("STRIPE_API_KEY",)
EVENTS_REACH = timedelta(days=29)  # Stripe keeps 30 days of events; a day of margin
CHARGES_WINDOW = timedelta(days=35)  # failed payments are counted over 30 days
EVENT_TYPES = [
    "customer.created", "customer.updated", "customer.deleted",
    "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
    "customer.subscription.paused", "customer.subscription.resumed",
    "invoice.created", "invoice.updated", "invoice.finalized", "invoice.paid", "invoice.payment_failed",
    "invoice.marked_uncollectible", "invoice.voided", "invoice.overdue",
    "charge.failed", "charge.succeeded",
]
OBJECTS = {"customer": "customers", "subscription": "subscriptions", "invoice": "invoices", "charge": "charges"}


class StripeSource:
    CREDENTIALS = "STRIPE_API_KEY"  # what to set, for the message when it is missing
    system = SYSTEM
    STREAMS = (
        Stream("events", "customers",  # every page with records names its object; "customers" is the matched one
               "GET /v1/events (a first pull, or one older than 30 days: GET /v1/customers, /v1/subscriptions, "
               "/v1/invoices, /v1/charges)", key="id", cursor_field="created", paginator="starting_after"),
    )

    def __init__(self, ctx: SourceSetup, api_key: str, base_url: str):
        self.ctx = ctx
        self.field_types: dict[str, dict[str, Any]] = {}  # not a CRM: no output fields to describe
        session = counted_session(ctx.calls, SYSTEM, lambda method, url: f"{method} {urlsplit(url).path}")
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base_url},
            http_client=stripe.RequestsClient(session=session),
            max_network_retries=0,
        )

    @classmethod
    def from_env(cls, ctx: SourceSetup) -> StripeSource | None:
        key = setting(ctx.env, "STRIPE_API_KEY", secret=True)
        if not key:
            return None
        base = checked_url("STRIPE_API_BASE", setting(ctx.env, "STRIPE_API_BASE") or DEFAULT_BASE_URL)
        return cls(ctx, key, base)

    def check(self, mappings: Mappings) -> list[Problem]:
        return []  # Stripe's objects are fixed; the key's permissions show on the first list

    # ------------------------------------------------------------ plumbing

    def _classify(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, stripe.APIConnectionError):
            return Retryable(f"connection failed ({exc.user_message or type(exc).__name__})", kind="drop")
        if isinstance(exc, stripe.StripeError):
            status = exc.http_status or 0
            after = retry_after_seconds((exc.headers or {}).get("Retry-After"))
            message = exc.user_message or str(exc)
            if status == 429 or isinstance(exc, stripe.RateLimitError):
                return Retryable(f"HTTP 429 {message}", after, kind="429")
            if status >= 500:
                return Retryable(f"HTTP {status} {message}", after, kind="5xx")
            if isinstance(exc, stripe.PermissionError) or status == 403:
                hint = " — a restricted key needs read access to customers, subscriptions, invoices, charges, events"
                return AuthError(SYSTEM, "request", f"{message}{hint}", status, VARIABLES)
            if isinstance(exc, stripe.AuthenticationError) or status == 401:
                return AuthError(SYSTEM, "request", message, status, VARIABLES)
            return ApiError(SYSTEM, "request", message, status)
        return None

    def ping(self) -> None:
        """One cheap authenticated request (one customer); AuthError (exit 2) when the key is refused."""
        self.ctx.policy.call(SYSTEM, "GET /v1/customers", lambda: self.client.raw_request(
            "get", "/v1/customers", limit=1).data, self._classify, self.ctx.calls)

    def list(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        """Every page of one list, newest first, each page as plain dicts."""
        params = {"limit": PAGE, **params}
        while True:
            page = self.ctx.policy.call(
                SYSTEM, f"GET {path}",
                lambda p=dict(params): self.client.raw_request("get", path, **p).data,
                self._classify, self.ctx.calls,
            )
            data = page.get("data") or []
            if data:
                yield data
            if not page.get("has_more") or not data:
                return
            params["starting_after"] = data[-1]["id"]

    # ------------------------------------------------------------ pull

    def streams(self, mappings: Mappings) -> list[Stream]:
        return list(self.STREAMS)

    def read(self, stream: Stream, mappings: Mappings, at: Read) -> Iterator[Page]:
        now = parse_iso(at.run_started)
        cursor = at.cursor
        if cursor is not None and datetime.fromtimestamp(int(cursor), UTC) < now - EVENTS_REACH:
            at.stats.notes.append("last pull is older than Stripe's 30 days of events: full re-backfill")
            at.stats.full[stream.name] = True
            cursor = None
        if cursor is None:
            yield from self._backfill(now)
        else:
            yield from self._replay(int(cursor), at.stats)

    def finish(self, stats: PullStats) -> None:
        pass

    def _backfill(self, now: datetime) -> Iterator[Page]:
        # the newest event before the backfill: replaying from it later cannot miss a change
        latest = next(self.list("/v1/events", {"limit": 1, "types": EVENT_TYPES}), [])
        mark = int(latest[0]["created"]) if latest else int(now.timestamp())
        lists = [
            ("customers", "/v1/customers", {}),
            ("subscriptions", "/v1/subscriptions", {"status": "all"}),
            ("invoices", "/v1/invoices", {"status": "open"}),
            ("invoices", "/v1/invoices", {"status": "uncollectible"}),
            ("charges", "/v1/charges", {"created": {"gte": int((now - CHARGES_WINDOW).timestamp())}}),
        ]
        for obj, path, params in lists:
            for data in self.list(path, params):
                yield Page([_row(o) for o in data], obj=obj)
        yield Page([], str(mark))  # the cursor moves once every list is committed

    def _replay(self, since: int, stats: PullStats) -> Iterator[Page]:
        events: list[dict[str, Any]] = []
        for data in self.list("/v1/events", {"created": {"gte": since}, "types": EVENT_TYPES}):
            events += data
        events.sort(key=lambda e: (e["created"], e["id"]))  # oldest first: the last snapshot wins
        latest: dict[str, dict[str, tuple[str, dict[str, Any], str | None, bool]]] = {k: {} for k in OBJECTS.values()}
        for event in events:
            obj = event.get("data", {}).get("object") or {}
            kind = OBJECTS.get(obj.get("object", ""))
            if kind and obj.get("id"):
                latest[kind][obj["id"]] = _row(obj, event["type"] == "customer.deleted")
        newest = max([since, *(int(e["created"]) for e in events)])
        kinds = [k for k, rows in latest.items() if rows]
        for kind in kinds:  # the cursor moves with the last kind's commit, not before
            yield Page(list(latest[kind].values()), str(newest) if kind == kinds[-1] else None, obj=kind)
        if not kinds:
            yield Page([], str(newest))
        stats.add("events", len(events))  # the events themselves are not stored: counted here, once read


def _row(obj: dict[str, Any], deleted: bool = False) -> tuple[str, dict[str, Any], str | None, bool]:
    created = obj.get("created")
    stamp = iso(datetime.fromtimestamp(created, UTC)) if isinstance(created, int) else None
    return obj["id"], obj, stamp, deleted or bool(obj.get("deleted"))
