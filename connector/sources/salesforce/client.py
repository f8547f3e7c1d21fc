"""Salesforce: login flows, describe checks, incremental SOQL paging, API-usage reserve.

Facts this module relies on (Salesforce REST API docs, simple-salesforce):
* a query returns at most 2,000 records a page and a `nextRecordsUrl` until done;
  `queryAll` also returns deleted records (IsDeleted = true);
* SystemModstamp changes on every save, including system changes: the right
  incremental key; an inclusive lower bound with a small overlap, ordered
  ascending, never checkpointed past the run's start. Every object read (Account
  always; Opportunity and Case only when the mappings need them) is one such
  stream, with its own cursor;
* describe of an object the user cannot read answers 404 NOT_FOUND (or 403):
  for Opportunity and Case that is a problem of the check, naming what needs it;
* every response carries `Sforce-Limit-Info: api-usage=USED/MAX` (the org's
  rolling 24-hour request count); 403 REQUEST_LIMIT_EXCEEDED with the message
  "TotalRequests Limit exceeded." means the daily quota is spent: stop. Any
  other REQUEST_LIMIT_EXCEEDED ("ConcurrentPerOrgLongTxn Limit exceeded.": too
  many long requests at once, or the concurrent API/Bulk limits) clears by
  itself and is retried with backoff like a 429;
* a 401 that cannot be renewed, a failed login and any other 403 (API not
  enabled for the user, no access to the object) are AuthError, exit 2, naming
  the SALESFORCE_* variables of the login flow in use;
* describe gives each field's `type` and, for text, its `length` in characters:
  text outputs are cut to it (writeback), so a record never fails STRING_TOO_LONG;
* 401 INVALID_SESSION_ID: simple-salesforce logs in again when it holds the
  credentials (password or JWT flows); a bare access token cannot be renewed;
* writes: sObject Collections update takes at most 200 records, with one result
  per record in request order (allOrNone=false keeps the good ones); the same
  resource with POST creates records (alert Tasks: WhatId the Account, OwnerId a
  User; Status and Priority are picklists), answering {id, success, errors} each;
* Bulk API 2.0 ingest (for large pushes): create a job, upload one CSV (header
  row, `Id` first; an empty cell leaves a field alone, `#N/A` sets it to null),
  close it with state UploadComplete, poll until JobComplete / Failed /
  Aborted, then read successfulResults (sf__Id) and failedResults (sf__Id,
  sf__Error "CODE:message:fields"); rows in neither are unprocessedrecords.
"""

from __future__ import annotations

import csv
import email.utils
import io
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from simple_salesforce import Salesforce
from simple_salesforce import exceptions as sfx

from ...errors import Problem
from ...http import (
    ApiError,
    AuthError,
    QuotaStop,
    Retryable,
    Session,
    SettingsError,
    ca_bundle,
    checked_url,
    is_dropped,
    retry_after_seconds,
    setting,
)
from ...outbox import CreateResult, WriteResult
from ...times import parse_iso
from ..base import Page, PullStats, Read, SourceSetup, Stream
from ..crm import FieldWords, fields_to_read, guard_outputs, merge_updates, missing_fields

if TYPE_CHECKING:
    from ...config.mappings import Mappings

SYSTEM = "salesforce"
API_VERSION = "59.0"
ACCOUNT_BASE_FIELDS = ["Id", "IsDeleted", "SystemModstamp", "Name", "Website", "OwnerId"]  # OwnerId: alert tasks
WORDS = FieldWords(
    "the field {field} does not exist on Salesforce Account (or this user cannot see it)",
    "check the API name in Setup > Object Manager > Account > Fields, and field-level security",
    "output fields missing on Salesforce Account: {fields}",
    "deploy the output fields (healthsync setup prints what is missing)",
)
COLLECTION_SIZE = 200
ON_DEMAND = {  # objects read only when the mappings need them (Mappings.reads), and their fields
    "Opportunity": ["Id", "AccountId", "Type", "StageName", "IsClosed", "IsWon", "CloseDate", "Amount",
                    "CreatedDate", "SystemModstamp", "IsDeleted"],
    "Case": ["Id", "AccountId", "Status", "Priority", "IsEscalated", "IsClosed", "CreatedDate", "ClosedDate",
             "SystemModstamp", "IsDeleted"],
}
TASK_FIELDS = {"Subject", "Description", "ActivityDate", "Priority", "Status", "WhatId", "OwnerId"}
BULK_MAX_BYTES = 100_000_000  # Bulk API 2.0 takes up to 150 MB a job upload; stay well under
BULK_NULL = "#N/A"
TRANSIENT_CODES = {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG", "QUERY_TIMEOUT"}
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
DAILY_LIMIT_MESSAGE = "TotalRequests Limit exceeded"  # the one REQUEST_LIMIT_EXCEEDED that means stop
TEXT_TYPES = {"string", "textarea", "picklist", "multipicklist", "combobox", "url", "email", "phone",
              "encryptedstring"}  # describe types whose `length` bounds a written value
VARIABLES = {  # login flow -> the settings to check when Salesforce refuses it
    "token": ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN"),
    "password": ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_DOMAIN"),
    "jwt": ("SALESFORCE_USERNAME", "SALESFORCE_CLIENT_ID", "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_DOMAIN"),
}


def endpoint_of(method: str, url: str) -> str:
    """A stable endpoint name for call counting: no ids, no query strings."""
    path = urlsplit(url).path
    if "/services/Soap/" in path:
        return "POST login (SOAP)"
    if path.endswith("/oauth2/token"):
        return "POST login (OAuth)"
    tail = re.sub(r"^/services/data/v[\d.]+/?", "", path)
    tail = re.sub(r"^(query|queryAll)/[^/]+$", r"\1 (next page)", tail)
    tail = re.sub(r"/(?=[a-zA-Z]*\d)[a-zA-Z0-9]{15,18}(?=/|$)", "/{id}", tail)  # record and job ids
    return f"{method} {tail.rstrip('/') or '/'}"


class _LoginSession(Session):
    """Sends simple-salesforce's login requests to SALESFORCE_LOGIN_URL when one is set.

    simple-salesforce builds login URLs as https://{domain}.salesforce.com; a
    proxy, a test harness or the local sandbox needs another host.
    """

    def __init__(self, login_from: str | None, login_to: str | None):
        super().__init__()
        self.login_from, self.login_to = login_from, login_to

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.login_from and self.login_to and isinstance(url, str) and url.startswith(self.login_from):
            url = self.login_to + url[len(self.login_from):]
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class BulkSettings:
    """When and how Bulk API 2.0 replaces sObject Collections for a push."""

    threshold: int = 10_000  # more open changes than this: Bulk API 2.0 jobs
    job_records: int = 100_000  # records per job (and per push batch) at most
    poll_seconds: float = 2.0  # first wait between job status checks; grows by half to 30 s
    timeout_seconds: float = 1800.0  # a job still running after this is left to finish on its own

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BulkSettings:
        names = {"threshold": "SALESFORCE_BULK_THRESHOLD", "job_records": "SALESFORCE_BULK_JOB_RECORDS",
                 "poll_seconds": "SALESFORCE_BULK_POLL_SECONDS", "timeout_seconds": "SALESFORCE_BULK_TIMEOUT_SECONDS"}
        values: dict[str, Any] = {}
        for key, name in names.items():
            raw = env.get(name)
            if raw is None:
                continue
            try:
                values[key] = int(raw) if key in ("threshold", "job_records") else float(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a number") from None
            if values[key] < (1 if key == "job_records" else 0):
                raise SettingsError(f"{name}={raw!r} must be positive")
        return cls(**values)


class SalesforceSource:
    CREDENTIALS = ("SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, SALESFORCE_USERNAME + SALESFORCE_PASSWORD "
                   "(+ SALESFORCE_SECURITY_TOKEN), or SALESFORCE_CLIENT_ID + SALESFORCE_PRIVATE_KEY_FILE")
    system = SYSTEM
    STREAMS = tuple(  # one SOQL object each: queryAll ordered by SystemModstamp, Id
        Stream(obj, obj, f"GET /services/data/v{API_VERSION}/queryAll", key="Id",
               cursor_field="SystemModstamp", paginator="nextRecordsUrl",
               stamps=("SystemModstamp", "LastModifiedDate"))
        for obj in ("Account", *ON_DEMAND)
    )

    def __init__(self, ctx: SourceSetup, credentials: dict[str, str], reserve_percent: float, overlap: timedelta,
                 bulk: BulkSettings | None = None):
        self.ctx = ctx
        self.bulk = bulk or BulkSettings()
        self.credentials = credentials
        self.reserve_percent = reserve_percent
        self.overlap = overlap
        self.usage: tuple[int, int] | None = None  # (used, max) from the last response
        self.field_types: dict[str, dict[str, Any]] = {}  # Account field -> {type, length}, after check()
        self._last_headers: Mapping[str, str] = {}
        self._client: Salesforce | None = None
        env = ctx.env
        domain = credentials.get("domain", "login")
        login_to = setting(env, "SALESFORCE_LOGIN_URL")
        self.session = _LoginSession(
            f"https://{domain}.salesforce.com" if login_to else None,
            checked_url("SALESFORCE_LOGIN_URL", login_to) if login_to else None,
        )
        self.session.verify = ca_bundle(env)
        self.session.hooks["response"].append(self._observe)

    # ------------------------------------------------------------ settings

    @classmethod
    def from_env(cls, ctx: SourceSetup) -> SalesforceSource | None:
        env = ctx.env
        get = lambda name, secret=False: setting(env, name, secret=secret)  # noqa: E731
        creds: dict[str, str] = {}
        instance_url, token = get("SALESFORCE_INSTANCE_URL"), get("SALESFORCE_ACCESS_TOKEN", True)
        username, password = get("SALESFORCE_USERNAME"), get("SALESFORCE_PASSWORD", True)
        client_id, key_file = get("SALESFORCE_CLIENT_ID"), env.get("SALESFORCE_PRIVATE_KEY_FILE")
        domain = get("SALESFORCE_DOMAIN") or "login"
        if instance_url and token:
            creds = {"mode": "token", "instance_url": checked_url("SALESFORCE_INSTANCE_URL", instance_url), "token": token}
        elif username and password:
            creds = {"mode": "password", "username": username, "password": password,
                     "security_token": get("SALESFORCE_SECURITY_TOKEN", True) or "", "domain": domain}
        elif username and client_id and key_file:
            creds = {"mode": "jwt", "username": username, "client_id": client_id, "key_file": key_file, "domain": domain}
        elif instance_url or token or username or password or client_id:
            raise SettingsError(
                "Salesforce settings are incomplete: give SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, "
                "or SALESFORCE_USERNAME + SALESFORCE_PASSWORD (+ SALESFORCE_SECURITY_TOKEN), "
                "or SALESFORCE_USERNAME + SALESFORCE_CLIENT_ID + SALESFORCE_PRIVATE_KEY_FILE"
            )
        else:
            return None
        try:
            reserve = float(env.get("SALESFORCE_API_RESERVE_PERCENT", "10"))
            overlap = timedelta(seconds=float(env.get("SALESFORCE_OVERLAP_SECONDS", "300")))
        except ValueError as exc:
            raise SettingsError(f"Salesforce reserve/overlap setting is not a number: {exc}") from None
        if not 0 <= reserve < 100:
            raise SettingsError(f"SALESFORCE_API_RESERVE_PERCENT={reserve:g} must be between 0 and 100")
        return cls(ctx, creds, reserve, overlap, BulkSettings.from_env(env))

    # ------------------------------------------------------------ plumbing

    def _observe(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.ctx.calls.count(SYSTEM, endpoint_of(response.request.method or "GET", response.request.url or ""))
        self._last_headers = response.headers
        match = _USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.usage = (int(match[1]), int(match[2]))

    @property
    def client(self) -> Salesforce:
        if self._client is None:
            self._client = self.ctx.policy.call(SYSTEM, "login", self._login, self._classify, self.ctx.calls)
        return self._client

    def _login(self) -> Salesforce:
        c = self.credentials
        common: dict[str, Any] = {"session": self.session, "version": API_VERSION}
        if c["mode"] == "token":
            return Salesforce(instance_url=c["instance_url"], session_id=c["token"], **common)
        if c["mode"] == "password":
            return Salesforce(username=c["username"], password=c["password"], security_token=c["security_token"],
                              domain=c["domain"], **common)
        return Salesforce(username=c["username"], consumer_key=c["client_id"], privatekey_file=c["key_file"],
                          domain=c["domain"], **common)

    def _check_reserve(self) -> None:
        if self.usage is None:
            return
        used, limit = self.usage
        if limit and used >= limit * (1 - self.reserve_percent / 100):
            raise QuotaStop(
                SYSTEM,
                f"API usage {used:,}/{limit:,} has reached the reserve of {self.reserve_percent:g}% of the "
                "daily limit (SALESFORCE_API_RESERVE_PERCENT); stopping cleanly, the next run resumes",
            )

    def call(self, endpoint: str, fn: Any) -> Any:
        def guarded() -> Any:
            self._check_reserve()
            return fn()

        return self.ctx.policy.call(SYSTEM, endpoint, guarded, self._classify, self.ctx.calls)

    @property
    def variables(self) -> tuple[str, ...]:
        """The settings of the login flow in use: what to check when Salesforce refuses it."""
        return VARIABLES[self.credentials["mode"]]

    def _classify(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, (QuotaStop, SettingsError)):
            return exc
        if is_dropped(exc):
            return Retryable(f"connection dropped ({type(exc).__name__})", kind="drop")
        if isinstance(exc, sfx.SalesforceAuthenticationFailed):
            return AuthError(SYSTEM, "login", str(exc), exc.status, self.variables)  # "Authentication failed (code: ...)"
        if isinstance(exc, sfx.SalesforceError):
            code, message = _error_of(exc.content)
            where = exc.resource_name or "request"
            if isinstance(exc, sfx.SalesforceExpiredSession):
                hint = (" — an access token cannot be renewed; give SALESFORCE_USERNAME/PASSWORD or JWT "
                        "settings so healthsync can log in again") if self.credentials["mode"] == "token" else ""
                return AuthError(SYSTEM, where, f"{code}: {message}{hint}", exc.status, self.variables)
            if code == "REQUEST_LIMIT_EXCEEDED" and DAILY_LIMIT_MESSAGE.casefold() in message.casefold():
                return QuotaStop(SYSTEM, f"the org's daily API request limit is exhausted ({message})")
            if code == "REQUEST_LIMIT_EXCEEDED":  # a concurrency limit: it clears as other requests finish
                after = retry_after_seconds(self._last_headers.get("Retry-After"))
                return Retryable(f"HTTP {exc.status} {code}: {message or 'a concurrent request limit'}", after,
                                 kind="concurrency")
            if exc.status >= 500 or exc.status == 429 or code in ("SERVER_UNAVAILABLE", "UNABLE_TO_LOCK_ROW"):
                after = retry_after_seconds(self._last_headers.get("Retry-After"))
                return Retryable(f"HTTP {exc.status} {code}", after, kind=str(exc.status))
            if exc.status == 403:
                return AuthError(SYSTEM, where, f"{code}: {message.rstrip('.')} — the integration user lacks a permission "
                                 "(API Enabled, or access to this object)", exc.status, self.variables)
            return ApiError(SYSTEM, where, f"{code}: {message}", exc.status)
        return None

    def ping(self) -> None:
        """One cheap authenticated request (log in if needed, GET limits); AuthError (exit 2) when the
        credentials are rejected, naming the SALESFORCE_* variables to check."""
        self.call("GET limits", lambda: self.client.restful("limits", method="GET"))

    # ------------------------------------------------------------ describe

    def describe(self, sobject: str) -> dict[str, dict[str, Any]]:
        result = self.call(f"describe {sobject}", lambda: getattr(self.client, sobject).describe())
        return {f["name"]: f for f in result["fields"]}

    def check(self, mappings: Mappings) -> list[Problem]:
        """The mapped Account fields; then Opportunity and Case, described only when they are read."""
        fields = self.describe("Account")
        self.field_types = {name: field_type(f) for name, f in fields.items()}
        problems = missing_fields(mappings, SYSTEM, set(fields), WORDS)
        for obj in ON_DEMAND:
            if mappings.reads(SYSTEM, obj):
                problems += self._check_object(obj, mappings)
        return problems

    def _check_object(self, obj: str, mappings: Mappings) -> list[Problem]:
        """An on-demand object: the user can describe it, and sees every field healthsync reads."""
        path, who = _needed_by(mappings, obj)
        try:
            described = self.describe(obj)
        except ApiError as exc:  # 404 NOT_FOUND: not visible to this user; 403: no access (401 is raised)
            if exc.status not in (403, 404):
                raise
            cause = exc.__cause__
            code, message = _error_of(cause.content) if isinstance(cause, sfx.SalesforceError) else ("", str(exc))
            return [mappings.located.problem(
                path, f"the Salesforce integration user cannot read {obj} ({who} needs it): describe {obj} "
                      f"answered HTTP {exc.status} {code}: {message}",
                hint=f"give the user Read on {obj} (its profile or a permission set), with field-level "
                     f"access to {', '.join(ON_DEMAND[obj])}")]
        hidden = [f for f in ON_DEMAND[obj] if f not in described]
        if hidden:
            return [mappings.located.problem(
                path, f"fields of Salesforce {obj} that {who} needs are not visible to the integration user: "
                      f"{', '.join(hidden)}",
                hint=f"grant field-level security (Read) on them: Setup > Object Manager > {obj} > Fields")]
        return []

    # ------------------------------------------------------------ pull

    def account_fields(self, mappings: Mappings) -> list[str]:
        return fields_to_read(mappings, SYSTEM, ACCOUNT_BASE_FIELDS)

    def fields_of(self, obj: str, mappings: Mappings) -> list[str]:
        return self.account_fields(mappings) if obj == "Account" else list(ON_DEMAND[obj])

    def streams(self, mappings: Mappings) -> list[Stream]:
        """Account; Opportunity and Case only when the mappings need them (no requests otherwise)."""
        return [s for s in self.STREAMS if s.obj not in ON_DEMAND or mappings.reads(SYSTEM, s.obj)]

    def read(self, stream: Stream, mappings: Mappings, at: Read) -> Iterator[Page]:
        """One SOQL object from its cursor: queryAll (deleted records too), ordered by SystemModstamp,
        Id, from the cursor less the overlap; each page's cursor is its newest stamp, and the last
        page's at least the query's moment (its Date) less the overlap; capped at the run's start."""
        obj = stream.obj
        soql = f"SELECT {', '.join(self.fields_of(obj, mappings))} FROM {obj}"
        if at.cursor:
            lower = _parse_sf_time(at.cursor) - self.overlap
            soql += f" WHERE SystemModstamp >= {lower.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        soql += " ORDER BY SystemModstamp ASC, Id ASC"
        cap = _parse_iso(at.run_started)
        asked: datetime | None = None
        for records, last in self._pages(soql):
            asked = asked or _server_time(self._last_headers)  # when the query ran, by Salesforce's clock
            rows = [(r["Id"], _clean(r), r.get("SystemModstamp"), bool(r.get("IsDeleted"))) for r in records]
            newest = max((_parse_sf_time(r["SystemModstamp"]) for r in records if r.get("SystemModstamp")), default=None)
            if last and asked is not None:
                # the whole object read: what was saved by the time the query ran, less the overlap, is
                # in; so the next pull need not read again records it read here that nothing saved since
                # (a push's records, read back once, not at every later pull too)
                floor = max([asked - self.overlap, *([_parse_sf_time(at.cursor)] if at.cursor else [])])
                newest = floor if newest is None else max(newest, floor)
            cursor = _sf_time(min(newest, cap)) if newest is not None else None
            yield Page(rows, cursor, counted_as=obj)  # an empty page still counts: "0 Account"

    def finish(self, stats: PullStats) -> None:
        if self.usage:
            stats.notes.append(f"API usage {self.usage[0]:,}/{self.usage[1]:,} of the org's daily limit")

    def _pages(self, soql: str) -> Iterator[tuple[list[dict[str, Any]], bool]]:
        """(a page's records, whether it is the last) of a query."""
        page = self.call("queryAll", lambda: self.client.query(soql, include_deleted=True))
        while True:
            last = bool(page.get("done", True) or not page.get("nextRecordsUrl"))
            yield page["records"], last
            if last:
                return
            url = page["nextRecordsUrl"]
            page = self.call("queryAll (next page)", lambda u=url: self.client.query_more(u, identifier_is_url=True))


    # ------------------------------------------------------------ write

    def write(self, updates: list[tuple[str, dict[str, Any]]], allowed: set[str]) -> list[WriteResult]:
        """One sObject Collections update of at most 200 Accounts, allOrNone=false."""
        guard_outputs(updates, allowed, SYSTEM)
        updates = merge_updates(updates)
        if len(updates) > COLLECTION_SIZE:
            raise ValueError(f"a Salesforce collection holds at most {COLLECTION_SIZE} records")
        body = {"allOrNone": False, "records": [
            {"attributes": {"type": "Account"}, "id": rid, **fields} for rid, fields in updates]}
        answer = self.call("PATCH composite/sobjects", lambda: self.client.restful(
            "composite/sobjects", method="PATCH", json=body))
        results: list[WriteResult] = []
        for (rid, _fields), item in zip(updates, answer if isinstance(answer, list) else [], strict=False):
            if item.get("success"):
                results.append(WriteResult(rid, True))
                continue
            errors = item.get("errors") or [{}]
            code = str(errors[0].get("statusCode", "ERROR"))
            text = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors)
            results.append(WriteResult(rid, False, text, transient=code in TRANSIENT_CODES))
        return results  # records missing from the answer are unconfirmed: the caller re-checks them

    def deliver_tasks(self, batch: list[tuple[str, dict[str, Any]]]) -> list[CreateResult]:
        """Alert tasks as the alerts step stored them (Task fields each)."""
        return self.create_tasks(batch)

    def create_tasks(self, tasks: list[tuple[str, dict[str, Any]]]) -> list[CreateResult]:
        """One sObject Collections create of at most 200 Tasks, allOrNone=false; (key, fields) in,
        one result per task out, in order. Only Task fields an alert sets are ever sent."""
        if len(tasks) > COLLECTION_SIZE:
            raise ValueError(f"a Salesforce collection holds at most {COLLECTION_SIZE} records")
        for key, fields in tasks:
            foreign = sorted(set(fields) - TASK_FIELDS)
            if foreign:
                raise ValueError(f"refusing to create a Task with {', '.join(foreign)} (delivery {key})")
        body = {"allOrNone": False, "records": [{"attributes": {"type": "Task"}, **fields} for _key, fields in tasks]}
        answer = self.call("POST composite/sobjects", lambda: self.client.restful(
            "composite/sobjects", method="POST", json=body))
        results: list[CreateResult] = []
        for (key, _fields), item in zip(tasks, answer if isinstance(answer, list) else [], strict=False):
            if item.get("success"):
                results.append(CreateResult(key, True, str(item.get("id"))))
                continue
            errors = item.get("errors") or [{}]
            code = str(errors[0].get("statusCode", "ERROR"))
            text = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors)
            results.append(CreateResult(key, False, error=text, transient=code in TRANSIENT_CODES))
        return results  # tasks missing from the answer are unconfirmed: the caller decides

    # ------------------------------------------------------------ Bulk API 2.0

    def write_bulk(self, updates: list[tuple[str, dict[str, Any]]], allowed: set[str],
                   journal: Callable[[str | None], None] | None = None) -> list[WriteResult]:
        """Bulk API 2.0 update jobs for a large push; one result per record that the job reported.

        `journal(job_id)` is told of each job before its data is uploaded and
        `journal(None)` once its results are read, so that a crashed run's job
        can be found and aborted (`abort_job`) if it was never closed.
        """
        guard_outputs(updates, allowed, SYSTEM)
        results: list[WriteResult] = []
        for chunk, data in _bulk_chunks(merge_updates(updates)):
            results += self._bulk_job(chunk, data, journal or (lambda _job: None))
        return results

    def _bulk_job(self, updates: list[tuple[str, dict[str, Any]]], data: bytes,
                  journal: Callable[[str | None], None]) -> list[WriteResult]:
        job = self.call("POST jobs/ingest", lambda: self.client.restful("jobs/ingest", method="POST", json={
            "object": "Account", "operation": "update", "contentType": "CSV", "lineEnding": "LF",
            "columnDelimiter": "COMMA"}))
        job_id = str(job["id"])
        journal(job_id)
        path = f"jobs/ingest/{job_id}"
        try:
            self.call("PUT jobs/ingest/{id}/batches", lambda: self._raw("PUT", f"{path}/batches", data=data,
                                                                         headers={"Content-Type": "text/csv"}))
            self._close(job_id)
        except ApiError as exc:  # the job never started: nothing was written
            self.abort_job(job_id)
            journal(None)
            return _all_unconfirmed(updates, f"Bulk API job {job_id} could not be started: {exc}")
        except BaseException:
            self.abort_job(job_id)  # best effort; a quota stop or crash leaves the records to the next run
            journal(None)
            raise
        info = self._wait_for(job_id)
        state = info.get("state")
        if state not in ("JobComplete", "Failed", "Aborted"):
            return _all_unconfirmed(updates, f"Bulk API job {job_id} still {state} after "
                                    f"{self.bulk.timeout_seconds:g} s (SALESFORCE_BULK_TIMEOUT_SECONDS)")
        done = set(self._results(path, "successfulResults"))
        failed = self._results(path, "failedResults")
        journal(None)
        results: list[WriteResult] = []
        for rid, _fields in updates:
            key = next((k for k in (rid, rid[:15]) if k in done or k in failed), None)
            if key in done:
                results.append(WriteResult(rid, True))
            elif key in failed:
                code, _, rest = failed[key].partition(":")
                message = rest.rsplit(":", 1)[0] if rest.count(":") else rest
                results.append(WriteResult(rid, False, f"{code}: {message}".strip(), transient=code in TRANSIENT_CODES))
            elif state != "JobComplete":
                detail = info.get("errorMessage") or state
                results.append(WriteResult(rid, False, f"Bulk API job {job_id} {state}: {detail}",
                                           transient=state == "Aborted"))
        return results  # records in neither list are unprocessed: unconfirmed, checked again

    def _close(self, job_id: str) -> None:
        """UploadComplete; when a retry finds the job already closed (the first answer was lost), fine."""
        try:
            self.call("PATCH jobs/ingest/{id}", lambda: self.client.restful(
                f"jobs/ingest/{job_id}", method="PATCH", json={"state": "UploadComplete"}))
        except ApiError:
            info = self.call("GET jobs/ingest/{id}", lambda: self.client.restful(f"jobs/ingest/{job_id}", method="GET"))
            if info.get("state") in (None, "Open", "Aborted"):
                raise

    def _wait_for(self, job_id: str) -> dict[str, Any]:
        wait, deadline = self.bulk.poll_seconds, time.monotonic() + self.bulk.timeout_seconds
        while True:
            info: dict[str, Any] = self.call("GET jobs/ingest/{id}", lambda: self.client.restful(
                f"jobs/ingest/{job_id}", method="GET"))
            if info.get("state") in ("JobComplete", "Failed", "Aborted") or time.monotonic() + wait > deadline:
                return info
            time.sleep(wait)
            wait = min(30.0, max(wait * 1.5, 0.01))

    def _results(self, path: str, kind: str) -> dict[str, str]:
        """sf__Id -> sf__Error ("" where there is none) of each row of a job's results. Only those two
        cells of a row are kept: the rows repeat every field uploaded, and 100,000 of them read as
        dicts held about 150 MB."""
        response = self.call(f"GET jobs/ingest/{{id}}/{kind}", lambda: self._raw("GET", f"{path}/{kind}"))
        rows = csv.reader(io.StringIO(response.content.decode("utf-8-sig")))
        header = next(rows, [])
        if "sf__Id" not in header:
            return {}
        at_id = header.index("sf__Id")
        at_error = header.index("sf__Error") if "sf__Error" in header else len(header)
        return {(row[at_id] if at_id < len(row) else ""): (row[at_error] if at_error < len(row) else "") for row in rows}

    def _raw(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A REST call whose body is not JSON (CSV upload and results), with simple-salesforce's
        session handling (re-login on INVALID_SESSION_ID, SalesforceError on failure)."""
        client = self.client
        return client._call_salesforce(method, client.base_url + path, name=path, **kwargs)

    def abort_job(self, job_id: str) -> bool:
        """Abort a job that was never closed (a crashed run's); closed jobs finish on their own."""
        try:
            info = self.call("GET jobs/ingest/{id}", lambda: self.client.restful(f"jobs/ingest/{job_id}", method="GET"))
            if info.get("state") != "Open":
                return False
            self.call("PATCH jobs/ingest/{id}", lambda: self.client.restful(
                f"jobs/ingest/{job_id}", method="PATCH", json={"state": "Aborted"}))
            return True
        except (ApiError, Retryable):
            return False


def field_type(described: Mapping[str, Any]) -> dict[str, Any]:
    """{type, length} of one describe entry; the length only where it bounds a text value."""
    kind = str(described.get("type") or "string")
    try:
        length = int(described.get("length") or 0)
    except (TypeError, ValueError):
        length = 0
    return {"type": kind, "length": length} if length > 0 and kind in TEXT_TYPES else {"type": kind}


def _bulk_value(value: Any) -> str:
    if value is None or value == "":
        return BULK_NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _bulk_csv(updates: list[tuple[str, dict[str, Any]]]) -> str:
    """Id first, then every field any record changes; a record that leaves a field alone has an empty cell."""
    columns = sorted({f for _rid, fields in updates for f in fields})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["Id", *columns])
    for rid, fields in updates:
        writer.writerow([rid, *(_bulk_value(fields[c]) if c in fields else "" for c in columns)])
    return out.getvalue()


def _bulk_chunks(updates: list[tuple[str, dict[str, Any]]]
                 ) -> Iterator[tuple[list[tuple[str, dict[str, Any]]], bytes]]:
    """(records, their CSV) per job, split so that no upload exceeds BULK_MAX_BYTES."""
    if not updates:
        return
    data = _bulk_csv(updates).encode("utf-8")
    if len(data) <= BULK_MAX_BYTES or len(updates) == 1:
        yield updates, data
        return
    half = len(updates) // 2
    yield from _bulk_chunks(updates[:half])
    yield from _bulk_chunks(updates[half:])


def _all_unconfirmed(updates: list[tuple[str, dict[str, Any]]], why: str) -> list[WriteResult]:
    return [WriteResult(rid, False, why, transient=True) for rid, _fields in updates]


def _error_of(content: Any) -> tuple[str, str]:
    """(errorCode, message) of a Salesforce error body: a list of {errorCode, message}."""
    try:
        body = content if isinstance(content, (list, dict)) else json.loads(content)
        first = body[0] if isinstance(body, list) else body
        return str(first.get("errorCode", "ERROR")), str(first.get("message", "")).strip()
    except (ValueError, TypeError, IndexError, KeyError, AttributeError):
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        return "ERROR", text[:300]


def _needed_by(mappings: Mappings, obj: str) -> tuple[tuple[str, ...], str]:
    """(the mappings key, its name) of the first outcome or catalogue metric that reads `obj`
    (the catalogue is imported here: it imports the registry, which imports this module)."""
    from ...catalogue import catalogue

    for name, outcome in mappings.outcomes.items():
        if (SYSTEM, obj) in outcome.objects():
            return ("outcomes", name), f"outcome '{name}'"
    known = catalogue()
    for name, definition in mappings.metrics.items():
        metric = known.get(definition.catalogue or "")
        if metric is not None and metric.system == SYSTEM and obj in metric.objects:
            return ("metrics", name), f"metric '{name}'"
    return ("metrics",), "the mappings"


def _clean(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "attributes"}


def _server_time(headers: Mapping[str, str]) -> datetime | None:
    """A response's Date header (whole seconds, UTC), or None without a readable one."""
    try:
        stamp = email.utils.parsedate_to_datetime(headers.get("Date", ""))
    except (TypeError, ValueError, IndexError):
        return None
    return stamp.astimezone(UTC) if stamp.tzinfo is not None else None


def _parse_sf_time(value: str) -> datetime:
    """Salesforce datetimes look like 2026-10-31T12:34:56.000+0000."""
    return datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z") if "." in value \
        else datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")


def _sf_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _parse_iso(value: str) -> datetime:
    return parse_iso(value)
