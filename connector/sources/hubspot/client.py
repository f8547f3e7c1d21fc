"""HubSpot: companies (and deals, when the mappings need them) through the CRM API, incrementally,
inside the rate limits.

Facts this module relies on (HubSpot developer docs, hubspot-api-client):
* list pages hold at most 100 objects, search pages at most 200, and one search
  query stops at 10,000 results: the incremental pull therefore never pages a
  search with `after` — each request is a fresh query for hs_object_id greater
  than the last one seen, sorted by hs_object_id ascending, so it can neither
  hit the cap nor loop on many records sharing one timestamp;
* search does not return archived companies: those come from the list endpoint
  with archived=true, which has no modified filter and so lists every archived
  record again: it is read on a full pull and then once every
  HUBSPOT_ARCHIVED_EVERY_HOURS (24 by default; 0: on every pull), the time of the
  last listing kept in the stream's cursor;
* deals are read the same way, only when the mappings need them (Mappings.reads):
  the list takes `associations=companies`, but search results carry no
  associations, so the changed deals' companies come from the v4 associations
  batch read (POST /crm/v4/associations/deals/companies/batch/read, at most
  1,000 ids a request; a deal without a company is in its errors, not its
  results). A deal's company is its primary one (type deal_to_company, v4
  typeId 5), else the first listed;
* every property value is a string on the wire; a string property holds at
  most 65,536 characters (the properties API reports no length), so text
  outputs are cut to that;
* 401 (token revoked or wrong) and 403 (the private app lacks a scope) are
  AuthError, exit 2, naming HUBSPOT_ACCESS_TOKEN;
* rate limits are announced in X-HubSpot-RateLimit-* headers; a 429 carries a
  JSON body with policyName, and not always Retry-After;
* the SDK talks through urllib3 (so `responses` cannot mock it) and its own
  retry skips POST: it is switched off, and healthsync's policy retries;
* tasks (alerts) are created with batch create, 100 a request, each associated
  with its company (HUBSPOT_DEFINED type 192, task to company) and carrying an
  objectWriteTraceId that the answer's results and errors echo, so each result
  is matched to its input whatever order they come in; hs_timestamp is the due date.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any

import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsApiException
from hubspot.crm.companies.exceptions import ApiException as CompaniesApiException
from hubspot.crm.deals.exceptions import ApiException as DealsApiException
from hubspot.crm.objects.tasks.exceptions import ApiException as TasksApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

from ...errors import Problem
from ...http import (
    ApiError,
    AuthError,
    QuotaStop,
    Retryable,
    SettingsError,
    ca_bundle,
    checked_url,
    is_dropped,
    retry_after_seconds,
    setting,
)
from ...outbox import CreateResult, WriteResult
from ...times import moment_of, parse_iso
from ..base import Page, PullStats, Read, SourceSetup, Stream
from ..crm import FieldWords, fields_to_read, guard_outputs, merge_updates, missing_fields

if TYPE_CHECKING:
    from ...config.mappings import Mappings

log = logging.getLogger("healthsync")
SYSTEM = "hubspot"
DEFAULT_BASE_URL = "https://api.hubapi.com"
BASE_PROPERTIES = ["name", "domain", "hs_object_id", "hs_lastmodifieddate", "salesforce_account_id",
                   "hubspot_owner_id"]  # the owner: alert tasks are assigned to them
DEAL_PROPERTIES = ["dealname", "dealstage", "pipeline", "closedate", "amount", "dealtype", "hs_is_closed_won",
                   "hs_is_closed", "hs_lastmodifieddate", "createdate"]
ON_DEMAND = ("deals",)  # objects read only when the mappings need them (Mappings.reads)
PRIMARY_DEAL_TO_COMPANY = ("deal_to_company", 5)  # the primary company: v3 association type, v4 typeId
ASSOCIATION_BATCH = 1000  # ids per v4 associations batch read
LIST_LIMIT = 100
SEARCH_LIMIT = 200
BATCH_SIZE = 100
STRING_LENGTH = 65_536  # the most characters a string property value may hold
VARIABLES = ("HUBSPOT_ACCESS_TOKEN",)
TASK_TO_COMPANY = 192  # HubSpot's association type id for task -> company
TASK_PROPERTIES = {"hs_task_subject", "hs_task_body", "hs_timestamp", "hs_task_priority", "hs_task_status",
                   "hs_task_type", "hubspot_owner_id"}
WORDS = FieldWords(
    "the company property {field} does not exist in this HubSpot account",
    "check the property's internal name in Settings > Properties > Company properties",
    "output properties missing in HubSpot: {fields}",
    "healthsync setup creates them",
)


class HubSpotSource:
    CREDENTIALS = "HUBSPOT_ACCESS_TOKEN"  # what to set, for the message when it is missing
    system = SYSTEM
    STREAMS = (
        Stream("companies", "companies",
               "GET /crm/v3/objects/companies (a full pull), else POST /crm/v3/objects/companies/search; "
               "then GET /crm/v3/objects/companies?archived=true", key="id",
               cursor_field="hs_lastmodifieddate", stamps=("hs_lastmodifieddate", "updatedAt"),
               paginator="paging.next.after (list); hs_object_id > last id (search)"),
        Stream("deals", "deals",
               "GET /crm/v3/objects/deals?associations=companies (a full pull), else POST /crm/v3/objects/deals/search "
               "and POST /crm/v4/associations/deals/companies/batch/read; then GET /crm/v3/objects/deals?archived=true",
               key="id", cursor_field="hs_lastmodifieddate", stamps=("hs_lastmodifieddate", "updatedAt"),
               paginator="paging.next.after (list); hs_object_id > last id (search)"),
    )

    def __init__(self, ctx: SourceSetup, token: str, base_url: str, daily_reserve: int, overlap: timedelta,
                 archived_every: timedelta = timedelta(hours=24)):
        self.ctx = ctx
        self.daily_reserve = daily_reserve
        self.overlap = overlap
        self.archived_every = archived_every
        verify = ca_bundle(ctx.env)
        self.client = HubSpot(
            access_token=token,
            host=base_url,
            retry=urllib3.Retry(total=0, redirect=0, raise_on_status=False),
            **({"ssl_ca_cert": verify} if isinstance(verify, str) else {}),
        )
        self.limits: dict[str, int] = {}
        self.field_types: dict[str, dict[str, Any]] = {}  # company property -> {type, length}, after check()

    @classmethod
    def from_env(cls, ctx: SourceSetup) -> HubSpotSource | None:
        token = setting(ctx.env, "HUBSPOT_ACCESS_TOKEN", secret=True)
        if not token:
            return None
        base = checked_url("HUBSPOT_BASE_URL", setting(ctx.env, "HUBSPOT_BASE_URL") or DEFAULT_BASE_URL)
        try:
            reserve = int(ctx.env.get("HUBSPOT_DAILY_RESERVE", "1000"))
            overlap = timedelta(seconds=float(ctx.env.get("HUBSPOT_OVERLAP_SECONDS", "300")))
            archived_every = timedelta(hours=float(ctx.env.get("HUBSPOT_ARCHIVED_EVERY_HOURS", "24")))
        except ValueError as exc:
            raise SettingsError(f"HubSpot reserve/overlap/archived setting is not a number: {exc}") from None
        if archived_every < timedelta(0):
            raise SettingsError("HUBSPOT_ARCHIVED_EVERY_HOURS must be 0 (every pull) or more")
        return cls(ctx, token, base, reserve, overlap, archived_every)

    # ------------------------------------------------------------ plumbing

    def call(self, endpoint: str, fn: Callable[[], Any]) -> Any:
        """One counted, retried request; returns the decoded JSON body."""

        def attempt() -> Any:
            self._respect_limits()
            self.ctx.calls.count(SYSTEM, endpoint)
            response = fn()
            self._observe(response.headers)
            return json.loads(response.data or b"null")

        return self.ctx.policy.call(SYSTEM, endpoint, attempt, self._classify, self.ctx.calls)

    def _observe(self, headers: Any) -> None:
        for name in ("Max", "Remaining", "Interval-Milliseconds", "Daily", "Daily-Remaining"):
            value = headers.get(f"X-HubSpot-RateLimit-{name}")
            if value is not None and str(value).lstrip("-").isdigit():
                self.limits[name] = int(value)

    def _respect_limits(self) -> None:
        daily_left = self.limits.get("Daily-Remaining")
        if daily_left is not None and daily_left <= self.daily_reserve:
            raise QuotaStop(
                SYSTEM, f"{daily_left:,} requests left of the daily limit, at the reserve of "
                f"{self.daily_reserve:,} (HUBSPOT_DAILY_RESERVE); stopping cleanly, the next run resumes",
            )
        if self.limits.get("Remaining") == 0:  # the rolling window is spent: wait it out, not into a 429
            self.ctx.policy.pause(self.limits.get("Interval-Milliseconds", 10_000) / 1000)
            self.limits.pop("Remaining")

    def _classify(self, exc: BaseException) -> BaseException | None:
        if isinstance(exc, QuotaStop):
            return exc
        if is_dropped(exc):
            return Retryable(f"connection dropped ({type(exc).__name__})", kind="drop")
        if isinstance(exc, (CompaniesApiException, DealsApiException, AssociationsApiException, PropertiesApiException,
                            TasksApiException)):
            status = int(exc.status or 0)
            headers = exc.headers or {}
            body = _json_or_text(exc.body)
            message = body.get("message", "") if isinstance(body, dict) else str(body)[:300]
            if status == 0:
                return Retryable(f"network error: {exc.reason}", kind="drop")
            if status == 429:
                if isinstance(body, dict) and body.get("policyName") == "DAILY":
                    return QuotaStop(SYSTEM, f"the daily API limit is exhausted ({message})")
                after = retry_after_seconds(headers.get("Retry-After"))
                if after is None:
                    interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")
                    after = int(interval) / 1000 if interval and str(interval).isdigit() else 1.0
                return Retryable(f"HTTP 429 {message}", after, kind="429")
            if status >= 500:
                return Retryable(f"HTTP {status} {message}", retry_after_seconds(headers.get("Retry-After")), kind="5xx")
            category = body.get("category", "") if isinstance(body, dict) else ""
            if status in (401, 403):
                what = "the token is wrong, expired or revoked" if status == 401 else \
                    "the private app lacks a scope this call needs"
                return AuthError(SYSTEM, "request", f"{category} {message}".strip() + f" ({what})", status,
                                 VARIABLES)
            return ApiError(SYSTEM, "request", f"{category} {message}".strip(), status)
        return None

    def ping(self) -> None:
        """One cheap authenticated request (one company); AuthError (exit 2) when the token is refused."""
        self.call("GET /crm/v3/objects/companies", lambda: self.client.crm.companies.basic_api.get_page_with_http_info(
            limit=1, archived=False, _preload_content=False))

    # ------------------------------------------------------------ properties

    def check(self, mappings: Mappings) -> list[Problem]:
        described = self.describe_properties()
        self.field_types = {name: field_type(p) for name, p in described.items()}
        return missing_fields(mappings, SYSTEM, set(self.field_types), WORDS)

    def describe_properties(self) -> dict[str, dict[str, Any]]:
        """Company property name -> its definition (type, options, read-only flags)."""
        body = self.call("GET /crm/v3/properties/companies", lambda: self.client.crm.properties.core_api.get_all_with_http_info(
            object_type="companies", _preload_content=False))
        return {p["name"]: p for p in body.get("results", [])}

    def property_groups(self) -> set[str]:
        body = self.call("GET /crm/v3/properties/companies/groups", lambda: self.client.crm.properties.groups_api.get_all_with_http_info(
            object_type="companies", _preload_content=False))
        return {g["name"] for g in body.get("results", [])}

    def create_group(self, name: str, label: str) -> None:
        self.call("POST /crm/v3/properties/companies/groups", lambda: self.client.crm.properties.groups_api.create_with_http_info(
            object_type="companies", property_group_create={"name": name, "label": label}, _preload_content=False))

    def create_property(self, body: dict[str, Any]) -> None:
        self.call("POST /crm/v3/properties/companies", lambda: self.client.crm.properties.core_api.create_with_http_info(
            object_type="companies", property_create=body, _preload_content=False))

    # ------------------------------------------------------------ pull

    def properties(self, mappings: Mappings) -> list[str]:
        return fields_to_read(mappings, SYSTEM, BASE_PROPERTIES)

    def streams(self, mappings: Mappings) -> list[Stream]:
        """Companies; deals only when the mappings need them (no requests otherwise)."""
        return [s for s in self.STREAMS if s.obj not in ON_DEMAND or mappings.reads(SYSTEM, s.obj)]

    def read(self, stream: Stream, mappings: Mappings, at: Read) -> Iterator[Page]:
        """One CRM object: the list on a full pull, else searches on hs_lastmodifieddate from the
        cursor; then its archived records (deleted). The cursor is capped at the run's start."""
        obj = stream.obj
        props = self.properties(mappings) if obj == "companies" else DEAL_PROPERTIES
        store = _company if obj == "companies" else _deal
        cap = parse_iso(at.run_started)
        listed: str | None = None  # when the archived records were last listed
        if at.cursor is None:
            pages = self._list(obj, props, archived=False)
            since, after_id = None, 0
        else:
            saved = json.loads(at.cursor)
            since, after_id = saved["since"], int(saved.get("after_id", 0))
            listed = saved.get("archived_listed")
            pages = self._search(obj, props, since, after_id)
            if obj == "deals":
                pages = self._with_companies(pages)
        newest = parse_iso(since) if since else None
        for results in pages:
            rows = [(r["id"], store(r), r["properties"].get("hs_lastmodifieddate"), False) for r in results]
            for r in results:
                stamp = _hs_time(r["properties"].get("hs_lastmodifieddate") or r.get("updatedAt"))
                if stamp and (newest is None or stamp > newest):
                    newest = stamp
            # mid-stream progress: the same lower bound, past the last id seen
            progress = json.dumps({"since": since, "after_id": int(results[-1]["id"]),
                                   **({"archived_listed": listed} if listed else {})}) if since else None
            yield Page(rows, progress)
        if listed is None or cap - parse_iso(listed) >= self.archived_every:
            for results in self._list(obj, props, archived=True):
                rows = [(r["id"], store(r), r["properties"].get("hs_lastmodifieddate"), True) for r in results]
                yield Page(rows, counted_as=f"{obj} (archived)")
            listed = at.run_started
        else:
            log.info("hubspot %s: archived records last listed at %s; listed again %s hours after that "
                     "(HUBSPOT_ARCHIVED_EVERY_HOURS)", obj, listed, f"{self.archived_every.total_seconds() / 3600:g}")
        done = min(newest, cap) if newest else cap
        yield Page([], json.dumps({"since": done.astimezone(UTC).isoformat().replace("+00:00", "Z"), "after_id": 0,
                                   "archived_listed": listed}))

    def finish(self, stats: PullStats) -> None:
        if "Daily-Remaining" in self.limits:
            stats.notes.append(f"{self.limits['Daily-Remaining']:,} requests left today")

    def _list(self, obj: str, props: list[str], archived: bool) -> Iterator[list[dict[str, Any]]]:
        after: str | None = None
        endpoint = f"GET /crm/v3/objects/{obj}" + (" (archived)" if archived else "")
        api = getattr(self.client.crm, obj).basic_api
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_LIMIT, "properties": props, "archived": archived, "_preload_content": False}
            if obj == "deals":
                kwargs["associations"] = ["companies"]
            if after:
                kwargs["after"] = after
            body = self.call(endpoint, lambda kw=kwargs: api.get_page_with_http_info(**kw))
            if body.get("results"):
                yield body["results"]
            after = (body.get("paging") or {}).get("next", {}).get("after")
            if not after:
                return

    def _search(self, obj: str, props: list[str], since: str, after_id: int) -> Iterator[list[dict[str, Any]]]:
        lower = parse_iso(since) - self.overlap
        lower_ms = str(int(lower.timestamp() * 1000))
        api = getattr(self.client.crm, obj).search_api
        while True:
            request = {
                "filterGroups": [{"filters": [
                    {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": lower_ms},
                    {"propertyName": "hs_object_id", "operator": "GT", "value": str(after_id)},
                ]}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": props,
                "limit": SEARCH_LIMIT,
            }
            body = self.call(f"POST /crm/v3/objects/{obj}/search", lambda r=request: api.do_search_with_http_info(
                public_object_search_request=r, _preload_content=False))
            results = body.get("results") or []
            if results:
                yield results
                after_id = int(results[-1]["id"])
            if len(results) < SEARCH_LIMIT:
                return

    def _with_companies(self, pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
        """Search pages of deals, gathered up to ASSOCIATION_BATCH at a time, with their companies
        (one v4 batch read each) in the list's shape: one page per batch read."""
        batch: list[dict[str, Any]] = []
        for results in pages:
            batch += results
            if len(batch) >= ASSOCIATION_BATCH:
                yield self._associate(batch[:ASSOCIATION_BATCH])
                batch = batch[ASSOCIATION_BATCH:]
        if batch:
            yield self._associate(batch)

    def _associate(self, deals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"inputs": [{"id": str(d["id"])} for d in deals]}
        api = self.client.crm.associations.v4.batch_api
        answer = self.call("POST /crm/v4/associations/deals/companies/batch/read", lambda: api.get_page_with_http_info(
            from_object_type="deals", to_object_type="companies", batch_input_public_fetch_associations_batch_request=body,
            _preload_content=False))
        found: dict[str, list[dict[str, Any]]] = {}
        for result in answer.get("results") or []:
            found[str((result.get("from") or {}).get("id"))] = [
                {"id": str(to.get("toObjectId")),
                 "type": PRIMARY_DEAL_TO_COMPANY[0] if any(t.get("typeId") == PRIMARY_DEAL_TO_COMPANY[1]
                                                           for t in to.get("associationTypes") or [])
                 else "deal_to_company_unlabeled"}
                for to in result.get("to") or []]
        return [{**d, "associations": {"companies": {"results": found[str(d["id"])]}}} if found.get(str(d["id"]))
                else d for d in deals]  # a deal without a company is in the answer's errors

    # ------------------------------------------------------------ write

    def write(self, updates: list[tuple[str, dict[str, Any]]], allowed: set[str]) -> list[WriteResult]:
        """One batch update of at most 100 companies; a 207 answer is parsed per record."""
        guard_outputs(updates, allowed, SYSTEM)
        updates = merge_updates(updates)
        if len(updates) > BATCH_SIZE:
            raise ValueError(f"a HubSpot batch holds at most {BATCH_SIZE} records")
        body = {"inputs": [{"id": rid, "properties": {k: "" if v is None else str(v) for k, v in fields.items()}}
                           for rid, fields in updates]}
        answer = self.call("POST /crm/v3/objects/companies/batch/update", lambda: self.client.crm.companies.batch_api.update_with_http_info(
            batch_input_simple_public_object_batch_input=body, _preload_content=False))
        done = {str(r.get("id")) for r in answer.get("results") or []}
        failed: dict[str, WriteResult] = {}
        for error in answer.get("errors") or []:
            category = str(error.get("category", "ERROR"))
            for rid in (error.get("context") or {}).get("ids") or []:
                failed[str(rid)] = WriteResult(str(rid), False, f"{category}: {error.get('message', '')}",
                                               transient=category in ("RATE_LIMITS", "RATE_LIMIT"))
        results = [WriteResult(rid, True) for rid, _f in updates if rid in done]
        return results + [failed[rid] for rid, _f in updates if rid in failed and rid not in done]


    def deliver_tasks(self, batch: list[tuple[str, dict[str, Any]]]) -> list[CreateResult]:
        """Alert tasks as the alerts step stored them ({"properties", "company"} each)."""
        return self.create_tasks([(key, payload["properties"], payload["company"]) for key, payload in batch])

    def create_tasks(self, tasks: list[tuple[str, dict[str, str], str]]) -> list[CreateResult]:
        """One batch create of at most 100 tasks, (key, properties, company id) each, every task
        associated with its company; one result per task the answer mentions."""
        if len(tasks) > BATCH_SIZE:
            raise ValueError(f"a HubSpot batch holds at most {BATCH_SIZE} records")
        for key, properties, _company_id in tasks:
            foreign = sorted(set(properties) - TASK_PROPERTIES)
            if foreign:
                raise ValueError(f"refusing to create a task with {', '.join(foreign)} (delivery {key})")
        body = {"inputs": [
            {"objectWriteTraceId": key, "properties": properties, "associations": [
                {"to": {"id": company_id},
                 "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": TASK_TO_COMPANY}]}]}
            for key, properties, company_id in tasks]}
        answer = self.call("POST /crm/v3/objects/tasks/batch/create", lambda: self.client.crm.objects.tasks.batch_api.create_with_http_info(
            batch_input_simple_public_object_batch_input_for_create=body, _preload_content=False))
        results: dict[str, CreateResult] = {}
        for created in answer.get("results") or []:
            key = str(created.get("objectWriteTraceId") or "")
            if key:
                results[key] = CreateResult(key, True, str(created.get("id")))
        for error in answer.get("errors") or []:
            category = str(error.get("category", "ERROR"))
            for key in (error.get("context") or {}).get("objectWriteTraceId") or []:
                results.setdefault(str(key), CreateResult(str(key), False, error=f"{category}: {error.get('message', '')}",
                                                          transient=category in ("RATE_LIMITS", "RATE_LIMIT")))
        return [results[key] for key, _p, _c in tasks if key in results]  # the rest: unconfirmed


def field_type(prop: dict[str, Any]) -> dict[str, Any]:
    """{type, length} of one property definition; string properties hold at most STRING_LENGTH."""
    kind = str(prop.get("type") or "string")
    return {"type": kind, "length": STRING_LENGTH} if kind == "string" else {"type": kind}


def _company(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["id"], "archived": bool(c.get("archived")), **(c.get("properties") or {})}


def _deal(d: dict[str, Any]) -> dict[str, Any]:
    """A deal as stored: its id, its properties (strings, as on the wire), its company's id or None."""
    return {"id": d["id"], "archived": bool(d.get("archived")), **(d.get("properties") or {}),
            "company_id": _company_of(d)}


def _company_of(deal: dict[str, Any]) -> str | None:
    """The deal's primary company (association type deal_to_company), else the first associated."""
    listed = ((deal.get("associations") or {}).get("companies") or {}).get("results") or []
    ids = [(str(a.get("id")), a.get("type")) for a in listed if a.get("id") is not None]
    primary = next((rid for rid, kind in ids if kind == PRIMARY_DEAL_TO_COMPANY[0]), None)
    return primary or (ids[0][0] if ids else None)


_hs_time = moment_of  # epoch milliseconds or ISO-8601


def _json_or_text(body: Any) -> Any:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        return json.loads(body) if body else {}
    except (TypeError, ValueError):
        return body or ""
