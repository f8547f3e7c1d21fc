"""Zendesk: organizations and tickets through the incremental export APIs.

Facts this module relies on (Zendesk developer docs):
* tickets come from the cursor-based incremental export (up to 1,000 a page);
  the time-based one returns duplicates at page edges. Its `after_cursor` at
  end_of_stream is where the next pull starts: only changed tickets come back;
* organizations have only a time-based export: pages overlap, so records are
  upserted by id and duplicates are harmless;
* `start_time` must be at least a minute in the past;
* incremental exports allow about 10 requests a minute: healthsync paces itself
  (ZENDESK_EXPORT_PER_MINUTE, 0 = no pacing) and still honours Retry-After on a
  429, whose body may not be JSON;
* each ticket carries its satisfaction_rating, so CSAT needs no extra requests;
* 401 (wrong email or token) and 403 (the user may not use the API or export)
  are AuthError, exit 2, naming the ZENDESK_* variables; the credential check
  is `GET /api/v2/users/me.json`, which answers an anonymous user (id null)
  rather than 401 to a request it could not authenticate.
"""

from __future__ import annotations

import collections
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from ...errors import Problem
from ...http import (
    ApiError,
    AuthError,
    Retryable,
    SettingsError,
    ca_bundle,
    checked_url,
    counted_session,
    is_dropped,
    retry_after_seconds,
    setting,
)
from ..base import Page, PullStats, Read, SourceSetup, Stream

if TYPE_CHECKING:
    from ...config.mappings import Mappings

SYSTEM = "zendesk"
TICKET_FIELDS = ("id", "organization_id", "status", "priority", "created_at", "updated_at")
VARIABLES = ("ZENDESK_URL", "ZENDESK_EMAIL", "ZENDESK_API_TOKEN")
ORG_FIELDS = ("id", "name", "external_id", "domain_names", "created_at", "updated_at", "deleted_at")


def endpoint_of(method: str, url: str) -> str:
    path = re.sub(r"/\d+", "/{id}", urlsplit(url).path)
    return f"{method} {path}"


class ZendeskSource:
    CREDENTIALS = "ZENDESK_URL, ZENDESK_EMAIL and ZENDESK_API_TOKEN"  # what to set when they are missing
    system = SYSTEM
    STREAMS = (
        Stream("organizations", "organizations", "GET /api/v2/incremental/organizations.json", key="id",
               cursor_field="end_time", paginator="next_page"),
        Stream("tickets", "tickets", "GET /api/v2/incremental/tickets/cursor.json", key="id",
               cursor_field="after_cursor", paginator="after_cursor"),
    )

    def __init__(self, ctx: SourceSetup, base_url: str, email: str, token: str, per_minute: float, start_time: int):
        self.ctx = ctx
        self.field_types: dict[str, dict[str, Any]] = {}  # not a CRM: no output fields to describe
        self.base_url = base_url
        self.session = counted_session(ctx.calls, SYSTEM, endpoint_of, ca_bundle(ctx.env))
        self.session.auth = (f"{email}/token", token)
        self.session.headers["Accept"] = "application/json"
        self.per_minute = per_minute
        self.start_time = start_time
        self._sent: collections.deque[float] = collections.deque()

    @classmethod
    def from_env(cls, ctx: SourceSetup) -> ZendeskSource | None:
        env = ctx.env
        url, email = setting(env, "ZENDESK_URL"), setting(env, "ZENDESK_EMAIL")
        token = setting(env, "ZENDESK_API_TOKEN", secret=True)
        if not (url or email or token):
            return None
        if not (url and email and token):
            raise SettingsError("Zendesk settings are incomplete: give ZENDESK_URL, ZENDESK_EMAIL and ZENDESK_API_TOKEN")
        try:
            per_minute = float(env.get("ZENDESK_EXPORT_PER_MINUTE", "10"))
            start = int(env.get("ZENDESK_START_TIME", "0"))
        except ValueError as exc:
            raise SettingsError(f"Zendesk pacing/start setting is not a number: {exc}") from None
        return cls(ctx, checked_url("ZENDESK_URL", url), email, token, per_minute, start)

    def check(self, mappings: Mappings) -> list[Problem]:
        return []

    # ------------------------------------------------------------ plumbing

    def _pace(self) -> None:
        """At most `per_minute` export requests in any 60 seconds."""
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        while self._sent and now - self._sent[0] >= 60:
            self._sent.popleft()
        if len(self._sent) >= self.per_minute:
            self.ctx.policy.pause(60 - (now - self._sent[0]))
        self._sent.append(time.monotonic())

    def get(self, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            self._pace()
            response = self.session.get(url, params=params, timeout=120)
            if response.status_code == 429 or response.status_code >= 500:
                kind = "429" if response.status_code == 429 else "5xx"
                raise Retryable(f"HTTP {response.status_code}", retry_after_seconds(response.headers.get("Retry-After")), kind)
            if response.status_code in (401, 403):
                raise AuthError(SYSTEM, endpoint_of("GET", url), _error_text(response), response.status_code,
                                VARIABLES)
            if response.status_code >= 400:
                raise ApiError(SYSTEM, endpoint_of("GET", url), _error_text(response), response.status_code)
            try:
                body = response.json()
            except ValueError:
                raise Retryable("a response that is not JSON", kind="garbage") from None
            if not isinstance(body, dict):
                raise ApiError(SYSTEM, endpoint_of("GET", url), "unexpected response shape")
            return body

        return self.ctx.policy.call(SYSTEM, endpoint_of("GET", url), attempt, self._classify, self.ctx.calls)

    def _classify(self, exc: BaseException) -> BaseException | None:
        if is_dropped(exc) or isinstance(exc, requests.Timeout):
            return Retryable(f"connection dropped ({type(exc).__name__})", kind="drop")
        return None

    def ping(self) -> None:
        """One cheap authenticated request (the API user); AuthError (exit 2) when it is refused."""
        url = f"{self.base_url}/api/v2/users/me.json"
        body = self.get(url)
        user = body.get("user") if isinstance(body.get("user"), dict) else {}
        if user.get("id") is None:  # Zendesk answers an anonymous user to credentials it does not know
            raise AuthError(SYSTEM, endpoint_of("GET", url), "the request was answered as an anonymous user",
                            variables=VARIABLES)

    # ------------------------------------------------------------ pull

    def streams(self, mappings: Mappings) -> list[Stream]:
        return list(self.STREAMS)

    def read(self, stream: Stream, mappings: Mappings, at: Read) -> Iterator[Page]:
        if stream.name == "organizations":
            return self._organizations(at.cursor)
        return self._tickets(at.cursor)

    def finish(self, stats: PullStats) -> None:
        pass

    def _organizations(self, since: str | None) -> Iterator[Page]:
        url: str | None = f"{self.base_url}/api/v2/incremental/organizations.json"
        params: dict[str, Any] | None = {"start_time": _start(int(since) if since else self.start_time)}
        while url:
            body = self.get(url, params)
            orgs = body.get("organizations") or []
            rows = [(str(o["id"]), {k: o.get(k) for k in ORG_FIELDS}, o.get("updated_at"), bool(o.get("deleted_at")))
                    for o in orgs]
            end_time = body.get("end_time")
            yield Page(rows, str(end_time) if end_time else None, counted_as="organizations")  # empty: "0 organizations"
            if body.get("end_of_stream") or not body.get("next_page") or not orgs:
                return
            url, params = body["next_page"], None

    def _tickets(self, cursor: str | None) -> Iterator[Page]:
        url = f"{self.base_url}/api/v2/incremental/tickets/cursor.json"
        params: dict[str, Any] = {"per_page": 1000}
        params.update({"cursor": cursor} if cursor else {"start_time": _start(self.start_time)})
        while True:
            body = self.get(url, params)
            tickets = body.get("tickets") or []
            rows = [(str(t["id"]), _ticket(t), t.get("updated_at"), t.get("status") == "deleted") for t in tickets]
            after = body.get("after_cursor")
            yield Page(rows, after or None, counted_as="tickets")  # an empty page still counts: "0 tickets"
            if body.get("end_of_stream") or not after:
                return
            params = {"per_page": 1000, "cursor": after}


def _start(start_time: int) -> int:
    """Zendesk refuses a start_time less than a minute in the past (or in the future)."""
    return min(start_time, int(time.time()) - 61)


def _ticket(t: dict[str, Any]) -> dict[str, Any]:
    out = {k: t.get(k) for k in TICKET_FIELDS}
    rating = t.get("satisfaction_rating")
    out["satisfaction"] = rating.get("score") if isinstance(rating, dict) else None
    return out


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        return str(body.get("description") or body.get("error") or body)[:300]
    return str(body)[:300]
