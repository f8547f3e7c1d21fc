"""The Salesforce emulation: SOAP and JWT logins, versions, limits, Account, Opportunity and Case
describe, SOQL `query` / `queryAll` on those three (a small interpreter: fields, AND-ed
comparisons, ORDER BY, LIMIT) with query-locator paging, sObject Rows and Collections updates
of Accounts with per-record errors, Task creation for alerts (activities.sf_create), and Bulk
API 2.0 ingest jobs (update on Account).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from .activities import sf_create
from .credentials import (
    ORG_ID,
    PASSWORD,
    SECURITY_TOKEN,
    USER_ID,
    USERNAME,
)
from .dataset import (
    SEGMENTS,
    SF_FIELDS,
    STAGES,
    Record,
    sf_time,
)
from .http import OPS, Handler, Reply, parse_time, route_table

_DATA = r"/services/data/v(?P<ver>\d+\.\d)"
_SOQL = re.compile(r"\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)(?:\s+WHERE\s+(?P<where>"
                   r".+?))?(?:\s+ORDER\s+BY\s+(?P<order>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*",
                   re.I | re.S)
_COND = re.compile(r"(AND\s+)?(\w+)\s*(>=|<=|!=|<>|=|>|<)\s*('(?:[^'\\]|\\.)*'|[\w:.+-]+)\s*",
                   re.I)
_ORDER = re.compile(r"(\w+)(?:\s+(ASC|DESC))?(?:\s+NULLS\s+(FIRST|LAST))?", re.I)
_TEXT = ("string", "url", "picklist", "textarea", "email", "phone", "multipicklist", "combobox")
_NUMBERS = ("double", "percent", "currency", "int")
_PICKLISTS = {"Customer_Segment__c": SEGMENTS, "Lifecycle_Stage__c": STAGES,
              "Health_Status__c": ["Green", "Yellow", "Red"],
              "Churn_Risk_Status__c": ["Low", "Medium", "High"]}
FieldSpec = tuple[str, str, str, bool, int]

# Opportunity and Case as the sandbox org describes them: name, type, label, updateable, length.
OPPORTUNITY_FIELDS: list[FieldSpec] = [
    ("Id", "id", "Opportunity ID", False, 18),
    ("IsDeleted", "boolean", "Deleted", False, 0),
    ("AccountId", "reference", "Account ID", True, 18),
    ("Name", "string", "Name", True, 120),
    ("Type", "picklist", "Opportunity Type", True, 255),
    ("StageName", "picklist", "Stage", True, 255),
    ("Amount", "currency", "Amount", True, 0),
    ("CloseDate", "date", "Close Date", True, 0),
    ("IsClosed", "boolean", "Closed", False, 0),
    ("IsWon", "boolean", "Won", False, 0),
    ("CreatedDate", "datetime", "Created Date", False, 0),
    ("LastModifiedDate", "datetime", "Last Modified Date", False, 0),
    ("SystemModstamp", "datetime", "System Modstamp", False, 0),
]
CASE_FIELDS: list[FieldSpec] = [
    ("Id", "id", "Case ID", False, 18),
    ("IsDeleted", "boolean", "Deleted", False, 0),
    ("AccountId", "reference", "Account ID", True, 18),
    ("Subject", "string", "Subject", True, 255),
    ("Status", "picklist", "Status", True, 255),
    ("Priority", "picklist", "Priority", True, 255),
    ("IsEscalated", "boolean", "Escalated", True, 0),
    ("IsClosed", "boolean", "Closed", False, 0),
    ("CreatedDate", "datetime", "Created Date", False, 0),
    ("ClosedDate", "datetime", "Closed Date", False, 0),
    ("LastModifiedDate", "datetime", "Last Modified Date", False, 0),
    ("SystemModstamp", "datetime", "System Modstamp", False, 0),
]
_OBJECT_PICKLISTS = {
    "Opportunity": {"Type": ["Renewal", "New Business", "Existing Business - Upgrade"],
                    "StageName": ["Closed Won", "Closed Lost", "Negotiation/Review",
                                  "Prospecting"]},
    "Case": {"Status": ["New", "Working", "Escalated", "Closed"],
             "Priority": ["Critical", "High", "Medium", "Low"]},
}
_KEY_PREFIX = {"Account": "001", "Opportunity": "006", "Case": "500"}


def _table(specs: list[FieldSpec]) -> dict[str, FieldSpec]:
    return {f[0].lower(): f for f in specs}


@dataclass(frozen=True)
class SObject:
    """One queryable object of the org: its API name, records, fields (lowercase -> spec)."""

    name: str
    records: Iterable[Record]
    fields: dict[str, FieldSpec]


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _soql_error(q: str, token: str, code: str, detail: str) -> SoqlError:
    """Salesforce's layout: the query line, a caret under the token, Row:Column, the detail."""
    found = re.search(rf"(?<![\w.]){re.escape(token)}(?!\w)", q, re.I)
    at = found.start() if found else 0
    row, col = q.count("\n", 0, at) + 1, at - (q.rfind("\n", 0, at) + 1) + 1
    return SoqlError(code, f"\n{q.split(chr(10))[row - 1]}\n{' ' * (col - 1)}^\n"
                           f"ERROR at Row:{row}:Column:{col}\n{detail}")


def _sf_field(q: str, name: str, fields: dict[str, FieldSpec],
              entity: str = "Account") -> FieldSpec:
    spec = fields.get(name.lower())
    if spec is None:
        raise _soql_error(q, name, "INVALID_FIELD", f"No such column '{name}' on entity "
                          f"'{entity}'"
                          ". If you are attempting to use a custom field, be sure to append the "
                          "'__c' after the custom field name. Please reference your WSDL or the "
                          "describe call for the appropriate names.")
    return spec


def _literal(q: str, spec: FieldSpec, raw: str) -> Any:
    """A WHERE value in the stored form of its field (datetimes as Salesforce strings)."""
    name, kind, quoted = spec[0], spec[1], raw.startswith("'")
    if raw.lower() == "null":
        return None
    if kind == "datetime" and not quoted and "T" in raw and (ts := parse_time(raw)) is not None:
        return sf_time(ts)
    if kind == "date" and not quoted and re.fullmatch(r"\d{4}-\d\d-\d\d", raw):
        return raw
    if kind in _NUMBERS and not quoted and re.fullmatch(r"-?\d+(\.\d+)?", raw):
        return float(raw)
    if kind == "boolean" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if kind in ("id", "reference", *_TEXT) and quoted:
        value = re.sub(r"\\(.)", r"\1", raw[1:-1])
        return value if kind in ("id", "reference") else value.casefold()
    raise _soql_error(q, raw, "INVALID_QUERY_FILTER_OPERATOR", f"value of filter criterion for "
                      f"field '{name}' must be of type {kind} and should "
                      f"{'' if kind in ('id', 'reference', *_TEXT) else 'not '}be enclosed in "
                      "quotes")


def _predicate(q: str, fields: dict[str, FieldSpec], entity: str, field_name: str, op: str,
               raw: str) -> Callable[[Record], bool]:
    spec = _sf_field(q, field_name, fields, entity)
    name, fold = spec[0], spec[1] in _TEXT  # text compares case-insensitively, as in SOQL
    value, op = _literal(q, spec, raw), "!=" if op == "<>" else op
    if value is None and op not in ("=", "!="):
        raise _soql_error(q, raw, "MALFORMED_QUERY", "null can only be compared with = or !=")

    def get(r: Record) -> Any:
        v = r.get(name)
        return v.casefold() if fold and isinstance(v, str) else v
    if op in ("=", "!="):
        return (lambda r: get(r) == value) if op == "=" else (lambda r: get(r) != value)
    test = OPS[op]
    return lambda r: (v := get(r)) is not None and test(v, value)


def run_soql(objects: dict[str, SObject], q: str, include_deleted: bool
             ) -> tuple[SObject, list[str] | None, list[Record]]:
    """Run `SELECT f, ... | COUNT() FROM <object> [WHERE a op v AND ...] [ORDER BY f [ASC|DESC]
    [NULLS FIRST|LAST], ...] [LIMIT n]` on one of `objects` (by lowercase name): (the object,
    its selected fields or None for COUNT(), the rows)."""
    m = _SOQL.fullmatch(q)
    if not m:
        raise SoqlError("MALFORMED_QUERY", f"\n{q.strip()}\n^\nERROR at Row:1:Column:1\n"
                                           "unexpected token: the query is not well formed")
    sobject = objects.get(m["object"].lower())
    if sobject is None:
        raise _soql_error(q, m["object"], "INVALID_TYPE", f"sObject type '{m['object']}' is not "
                          "supported. If you are attempting to use a custom object, be sure to "
                          "append the '__c' after the entity name.")
    raw = [f.strip() for f in m["fields"].split(",")]
    table, entity = sobject.fields, sobject.name
    fields = None if [f.lower().replace(" ", "") for f in raw] == ["count()"] \
        else list(dict.fromkeys(_sf_field(q, f, table, entity)[0] for f in raw))
    predicates, where, pos = [], m["where"] or "", 0
    while pos < len(where):
        cond = _COND.match(where, pos)
        if not cond or bool(cond[1]) != bool(predicates):  # AND before all but the first
            token = where[pos:].split()[0]
            raise _soql_error(q, token, "MALFORMED_QUERY", f"unexpected token: '{token}' (the "
                              "sandbox supports conditions joined by AND)")
        predicates.append(_predicate(q, table, entity, *cond.groups()[1:]))
        pos = cond.end()
    rows = [r for r in sobject.records if (include_deleted or not r.get("IsDeleted"))
            and all(p(r) for p in predicates)]
    for part in reversed(m["order"].split(",") if m["order"] else []):
        item = _ORDER.fullmatch(part.strip())
        if not item:
            raise _soql_error(q, part.strip(), "MALFORMED_QUERY", f"unexpected token: '{part}'")
        name, kind = _sf_field(q, item[1], table, entity)[:2]
        desc = (item[2] or "").upper() == "DESC"
        nulls_last = (item[3] or ("LAST" if desc else "FIRST")).upper() == "LAST"
        flag, fold = nulls_last != desc, kind in _TEXT  # reverse=desc also moves the nulls

        def key(r: Record, name: str = name, fold: bool = fold, flag: bool = flag) -> Any:
            v = r.get(name)
            return (v is None) == flag, (v.casefold() if fold and isinstance(v, str) else v) \
                if v is not None else 0
        rows.sort(key=key, reverse=desc)
    return sobject, fields, rows[:int(m["limit"])] if m["limit"] else rows


def org_fields(missing: tuple[str, ...] = (), types: dict[str, str] | None = None,
               lengths: dict[str, int] | None = None) -> dict[str, FieldSpec]:
    """The org's Account fields (lowercase name -> spec, in describe order): SF_FIELDS without
    `missing`, with `types` and `lengths` overriding describe's type and text length."""
    known = {f[0].lower() for f in SF_FIELDS}
    kinds = {k.lower(): v for k, v in (types or {}).items()}
    sizes = {k.lower(): v for k, v in (lengths or {}).items()}
    absent = {n.lower() for n in missing}
    if unknown := [n for n in (*missing, *(types or {}), *(lengths or {}))
                   if n.lower() not in known]:
        raise ValueError(f"not Account fields: {', '.join(unknown)}")
    fields: dict[str, FieldSpec] = {}
    for name, kind, label, writable, length in SF_FIELDS:
        if name.lower() not in absent:
            kind = kinds.get(name.lower(), kind)
            length = sizes.get(name.lower(), length or 255)
            fields[name.lower()] = (name, kind, label, writable, length
                                    if kind in (*_TEXT, "id", "reference") else 0)
    return fields


def _sf_errors(code: str, message: str) -> list[Record]:
    return [{"message": message, "errorCode": code}]


def _coerce(spec: FieldSpec, value: Any) -> tuple[Any, Record | None]:
    """(the value as stored, None) or (None, a per-record error) for a written field."""
    name, kind, label, _, length = spec
    bad = {"statusCode": "INVALID_TYPE_ON_FIELD_IN_RECORD", "fields": [name],
           "message": f"{label}: value not of required type: {value}"}
    if value is None:
        return None, None
    if kind in _NUMBERS:
        try:
            number = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or kind == "int" and not number.is_integer():
            return None, bad
        return (int(number) if kind == "int" else number), None
    if kind in ("datetime", "date"):
        ts = parse_time(value) if isinstance(value, str) else None
        return (None, bad) if ts is None else (sf_time(ts) if kind == "datetime" else value[:10],
                                               None)
    if kind == "boolean" or isinstance(value, dict | list):
        return (value, None) if isinstance(value, bool) else (None, bad)
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if len(text) > length:
        return None, {"statusCode": "STRING_TOO_LONG", "fields": [name], "message":
                      f"{label}: data value too large: {text[:40]}... (max length={length})"}
    return text, None


# Bulk API 2.0 ingest: job states, CSV dialects, results.
_DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^",
               "BACKQUOTE": "`"}
_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
_FINISHED = ("JobComplete", "Failed", "Aborted")


@dataclass
class BulkJob:
    """One Bulk API 2.0 ingest job: its public job info and what happened to its rows."""

    info: Record
    data: str | None = None  # the uploaded CSV, once
    header: list[str] = field(default_factory=list)
    successes: list[list[str]] = field(default_factory=list)  # [sf__Id, sf__Created, *row]
    failures: list[list[str]] = field(default_factory=list)  # [sf__Id, sf__Error, *row]
    unprocessed: list[list[str]] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.info["state"]

    def rows(self) -> tuple[list[str], list[list[str]]]:
        """(header, data rows) of the uploaded CSV, read leniently; blank lines skipped."""
        if not self.data:
            return [], []
        reader = csv.reader(io.StringIO(self.data, newline=""),
                            delimiter=_DELIMITERS[self.info["columnDelimiter"]])
        rows = [r for r in reader if r]
        return (rows[0], rows[1:]) if rows else ([], [])


def _from_csv(spec: FieldSpec, text: str) -> Any:
    """A CSV cell as the value written: #N/A is null, booleans are words, the rest text."""
    if text == "#N/A":
        return None
    if spec[1] == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _bulk_error(error: Record) -> str:
    """A per-record error as Bulk API results write it: CODE:message:fields --."""
    fields = " ".join(error.get("fields") or [])
    return f"{error['statusCode']}:{error['message']}:{fields + ' ' if fields else ''}--"


def _csv_text(delimiter: str, prefix: list[str], header: list[str],
              rows: list[list[str]]) -> str:
    """Results CSV: quoted sf__ columns, then the uploaded header, then every value quoted."""
    out = io.StringIO()
    out.write(delimiter.join(f'"{p}"' for p in prefix) + (delimiter if prefix and header else ""))
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow(header)
    csv.writer(out, delimiter=delimiter, lineterminator="\n",
               quoting=csv.QUOTE_ALL).writerows(rows)
    return out.getvalue()


class Salesforce(Handler):
    family = "salesforce"
    routes = route_table(
        ("POST", "/services/Soap/u/{version}", r"/services/Soap/u/(?P<ver>\d+\.\d)(?:/\w+)?",
         "soap_login", "login"),
        ("POST", "/services/oauth2/token", r"/services/oauth2/token", "jwt_login", "login"),
        ("GET", "/services/data/", r"/services/data", "versions", "open"),
        ("GET", "/limits", _DATA + r"/limits", "limits", ""),
        ("GET", "/sobjects/Account/describe", _DATA + r"/sobjects/Account/describe",
         "describe", ""),
        ("GET", "/sobjects/Opportunity/describe",
         _DATA + r"/sobjects/(?P<sobject>Opportunity)/describe", "describe", ""),
        ("GET", "/sobjects/Case/describe", _DATA + r"/sobjects/(?P<sobject>Case)/describe",
         "describe", ""),
        ("GET", "/query", _DATA + r"/query", "query", ""),
        ("GET", "/queryAll", _DATA + r"/queryAll", "query_all", ""),
        ("GET", "/query/{locator}", _DATA + r"/query(?:All)?/(?P<locator>01g\w+)-(?P<offset>\d+)",
         "query_more", ""),
        ("PATCH", "/composite/sobjects", _DATA + r"/composite/sobjects", "update", "write"),
        ("POST", "/composite/sobjects", _DATA + r"/composite/sobjects", "create", "write"),
        ("GET", "/sobjects/Account/{id}", _DATA + r"/sobjects/Account/(?P<rid>\w{15,18})",
         "get_account", ""),
        ("PATCH", "/sobjects/Account/{id}", _DATA + r"/sobjects/Account/(?P<rid>\w{15,18})",
         "patch_account", "write"),
        ("POST", "/jobs/ingest", _DATA + r"/jobs/ingest", "bulk_create", "write"),
        ("GET", "/jobs/ingest", _DATA + r"/jobs/ingest", "bulk_list", ""),
        ("PUT", "/jobs/ingest/{id}/batches", _DATA + r"/jobs/ingest/(?P<job>\w+)/batches",
         "bulk_upload", "write"),
        ("PATCH", "/jobs/ingest/{id}", _DATA + r"/jobs/ingest/(?P<job>\w+)", "bulk_state",
         "write"),
        ("GET", "/jobs/ingest/{id}", _DATA + r"/jobs/ingest/(?P<job>\w+)", "bulk_info", ""),
        ("DELETE", "/jobs/ingest/{id}", _DATA + r"/jobs/ingest/(?P<job>\w+)", "bulk_delete",
         "write"),
        ("GET", "/jobs/ingest/{id}/{results}", _DATA + r"/jobs/ingest/(?P<job>\w+)/"
         r"(?P<kind>successfulResults|failedResults|unprocessedrecords)", "bulk_results", ""),
    )

    def authenticate(self) -> Reply | None:
        if self.bearer() not in self.sb.sessions:
            return Reply(401, _sf_errors("INVALID_SESSION_ID", "Session expired or invalid"))
        self.sb.sf_usage += 1
        if self.sb.sf_usage > self.sb.daily_api_limit:
            return Reply(403, _sf_errors("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))
        if self.sb.draw_concurrent():  # too many long requests in the org at once: clears by itself
            return Reply(403, _sf_errors("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."))
        return None

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, _sf_errors(code, message))

    def succeeded(self) -> None:
        self.sb.sf_request_ok()

    def extra_headers(self, reply: Reply) -> dict[str, str]:
        return {"Sforce-Limit-Info": f"api-usage={self.sb.sf_usage}/{self.sb.daily_api_limit}"}

    def fault(self, kind: str) -> Reply:  # Salesforce has no 429: a "429" draw is a 503
        status = 503 if kind == "429" else self.sb.pick([500, 502, 503], "salesforce")
        if status == 500:
            return Reply(500, _sf_errors("UNKNOWN_EXCEPTION", "An unexpected error occurred. "
                                         "Please include this ErrorId if you contact support: "
                                         "1234567-89 (sandbox fault)"))
        return Reply(status, _sf_errors("SERVER_UNAVAILABLE", "Server temporarily unavailable "
                                        "(sandbox fault)"), {"Retry-After": "0"})

    def not_found(self, method: str, path: str) -> Reply:
        return Reply(404, _sf_errors("NOT_FOUND", "The requested resource does not exist"))

    def soap_login(self, ver: str) -> Reply:
        text = self.body.decode("utf-8", "replace")
        user, password = (html.unescape(m[1]) if (m := re.search(
            rf"<(?:[\w-]+:)?{tag}\b[^>]*>(.*?)</(?:[\w-]+:)?{tag}>", text, re.S)) else None
            for tag in ("username", "password"))
        xml = {"Content-Type": "text/xml;charset=UTF-8"}
        if user != USERNAME or password != PASSWORD + SECURITY_TOKEN:
            return Reply(500, _SOAP_FAULT, xml)
        return Reply(200, _SOAP_OK.format(base=self.sb.urls["salesforce"], ver=ver, org=ORG_ID,
                                          user=USERNAME, sid=self.sb.new_session()), xml)

    def jwt_login(self) -> Reply:
        """OAuth 2.0 JWT bearer flow; any well-formed JWT whose `sub` is the user passes."""
        form = {k: v[0] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Reply(400, {"error": "unsupported_grant_type",
                               "error_description": "grant type not supported"})
        try:
            payload = form.get("assertion", "").split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            subject = claims.get("sub") if isinstance(claims, dict) else None
        except (IndexError, ValueError):
            subject = None
        if subject != USERNAME:
            return Reply(400, {"error": "invalid_grant", "error_description": "invalid assertion"})
        base = self.sb.urls["salesforce"]
        return Reply(200, {"access_token": self.sb.new_session(), "instance_url": base,
                           "id": f"{base}/id/{ORG_ID}AAA/{USER_ID}",
                           "token_type": "Bearer", "issued_at": str(int(time.time() * 1000)),
                           "signature": base64.b64encode(secrets.token_bytes(32)).decode()})

    def versions(self) -> Reply:
        return Reply(200, [{"label": label, "url": f"/services/data/v{v}", "version": v}
                           for v, label in (("58.0", "Summer '23"), ("59.0", "Winter '24"),
                                            ("60.0", "Spring '24"))])

    def limits(self, ver: str) -> Reply:
        left = max(0, self.sb.daily_api_limit - self.sb.sf_usage)
        return Reply(200, {"DailyApiRequests": {"Max": self.sb.daily_api_limit, "Remaining": left},
                           "DailyBulkApiBatches": {"Max": 15000, "Remaining":
                                                   max(0, 15000 - self.sb.bulk_batches)}})

    def sobjects(self) -> dict[str, SObject]:
        """What SOQL and describe serve, by lowercase name: the org's Accounts (with its field
        overrides), Opportunities and Cases (the dataset's; none if it has no such collection)."""
        ds = self.ds
        return {"account": SObject("Account", ds.sf_accounts.values(), self.sb.sf_fields),
                "opportunity": SObject("Opportunity", getattr(
                    ds, "sf_opportunities", {}).values(), _table(OPPORTUNITY_FIELDS)),
                "case": SObject("Case", getattr(ds, "sf_cases", {}).values(),
                                _table(CASE_FIELDS))}

    def describe(self, ver: str, sobject: str = "Account") -> Reply:
        picklists = _OBJECT_PICKLISTS.get(sobject, _PICKLISTS)
        fields = [{"name": name, "type": kind, "label": label, "updateable": writable,
                   "createable": writable, "nillable": writable and name not in (
                       "Name", "StageName", "CloseDate", "Status"),
                   "length": length, "custom": name.endswith("__c"), "filterable": True,
                   "sortable": kind != "textarea", "picklistValues": [
                       {"active": True, "defaultValue": False, "label": v, "value": v}
                       for v in (picklists.get(name, []) if kind == "picklist" else [])]}
                  for name, kind, label, writable, length in
                  self.sobjects()[sobject.lower()].fields.values()]
        return Reply(200, {"name": sobject, "label": sobject, "keyPrefix": _KEY_PREFIX[sobject],
                           "custom": False, "queryable": True, "updateable": True,
                           "fields": fields})

    def query(self, ver: str) -> Reply:
        return self.run(ver, include_deleted=False)

    def query_all(self, ver: str) -> Reply:
        return self.run(ver, include_deleted=True)

    def run(self, ver: str, include_deleted: bool) -> Reply:
        try:
            sobject, fields, rows = run_soql(self.sobjects(), self.arg("q") or "",
                                             include_deleted)
        except SoqlError as e:
            return Reply(400, _sf_errors(e.code, e.message))
        if fields is None:
            return Reply(200, {"totalSize": len(rows), "done": True, "records": []})
        size = re.search(r"batchSize\s*=\s*(\d+)", self.headers.get("Sforce-Query-Options", ""))
        batch = min(2000, max(200, int(size[1]))) if size else 2000
        return self.page(ver, {"rows": rows, "fields": fields, "batch": batch,
                               "object": sobject.name}, 0)

    def query_more(self, ver: str, locator: str, offset: str) -> Reply:
        cursor = self.sb.cursors.get(locator)
        if cursor is None or int(offset) > len(cursor["rows"]):
            return Reply(400, _sf_errors("INVALID_QUERY_LOCATOR", "invalid query locator"))
        self.sb.cursors.move_to_end(locator)
        return self.page(ver, cursor, int(offset), locator)

    def page(self, ver: str, cursor: Record, offset: int, locator: str | None = None) -> Reply:
        rows, end = cursor["rows"], offset + cursor["batch"]
        body: Record = {"totalSize": len(rows), "done": end >= len(rows)}
        if not body["done"]:
            locator = locator or self.sb.new_cursor(cursor)
            body["nextRecordsUrl"] = f"/services/data/v{ver}/query/{locator}-{end}"
        body["records"] = [self.record(ver, r, cursor["fields"], cursor.get("object", "Account"))
                           for r in rows[offset:end]]
        return Reply(200, body, served=len(body["records"]))

    @staticmethod
    def record(ver: str, r: Record, fields: list[str], sobject: str = "Account") -> Record:
        url = f"/services/data/v{ver}/sobjects/{sobject}/{r['Id']}"
        return {"attributes": {"type": sobject, "url": url}, **{f: r.get(f) for f in fields}}

    def get_account(self, ver: str, rid: str) -> Reply:
        acc = self.ds.sf_accounts.get(rid)
        if acc is None or acc["IsDeleted"]:
            return Reply(404, _sf_errors("ENTITY_IS_DELETED", "entity is deleted") if acc else
                         _sf_errors("NOT_FOUND", "The requested resource does not exist"))
        return Reply(200, self.record(ver, acc, [f[0] for f in self.sb.sf_fields.values()]),
                     served=1)

    def patch_account(self, ver: str, rid: str) -> Reply:
        """Update one record (sObject Rows): 204, or 400/404 with the errors as a list."""
        body = self.json_body()
        if not isinstance(body, dict):
            return Reply(400, _sf_errors("JSON_PARSER_ERROR", "Expected a JSON object of fields"))
        rid, changes, errors = self.check({**body, "id": rid})
        errors = errors or self.locked(rid)
        if errors:
            status = 404 if errors[0]["statusCode"] in ("NOT_FOUND", "ENTITY_IS_DELETED") else 400
            return Reply(status, [{"errorCode": e["statusCode"], "message": e["message"],
                                   "fields": e.get("fields", [])} for e in errors])
        stamp = sf_time(time.time())
        self.ds.sf_accounts[rid].update(changes, LastModifiedDate=stamp, SystemModstamp=stamp)
        return Reply(204)

    def check(self, record: Any) -> tuple[Any, Record, list[Record]]:
        """(id, changes, errors) for one record of an update."""
        rid = (record.get("id") or record.get("Id")) if isinstance(record, dict) else None
        acc = self.ds.sf_accounts.get(rid) if isinstance(rid, str) else None
        if acc is None or acc["IsDeleted"]:
            return rid, {}, [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted",
                              "fields": []} if acc else {
                "statusCode": "NOT_FOUND", "message": "The requested resource does not exist",
                "fields": []}]
        changes, errors = {}, []
        for key, value in record.items():
            spec = self.sb.sf_fields.get(key.lower())
            if key.lower() in ("attributes", "id"):
                continue
            if spec is None or not spec[3]:
                errors.append({"statusCode": "INVALID_FIELD_FOR_INSERT_UPDATE", "fields": [key],
                               "message": f"Unable to create/update fields: {key}. Please check "
                                          "the security settings of this field and verify that "
                                          "it is read/write for your profile or permission set."})
                continue
            changes[spec[0]], error = _coerce(spec, value)
            errors += [error] if error else []
        return rid, changes, errors

    def update(self, ver: str) -> Reply:
        """sObject Collections update: per-record results, allOrNone rolls everything back."""
        body = self.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return Reply(400, _sf_errors("JSON_PARSER_ERROR", "Expected {\"allOrNone\": bool, "
                                                              "\"records\": [...]}"))
        if len(body["records"]) > 200:
            return Reply(400, _sf_errors("EXCEEDED_ID_LIMIT", "EXCEEDED_ID_LIMIT: record limit "
                                         "reached. cannot submit more than 200 records into this "
                                         "call"))
        checked = [(rid, changes, errors or self.locked(rid))
                   for rid, changes, errors in map(self.check, body["records"])]
        rollback = body.get("allOrNone") is True and any(errors for _, _, errors in checked)
        stamp, results = sf_time(time.time()), []
        for rid, changes, errors in checked:
            if not errors and rollback:
                errors = [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "fields": [],
                           "message": "Record rolled back because not all records were valid and "
                                      "the request was using AllOrNone header"}]
            elif not errors:
                self.ds.sf_accounts[rid].update(changes, LastModifiedDate=stamp,
                                                SystemModstamp=stamp)
            results.append({"id": rid, "success": not errors, "errors": errors})
        return Reply(200, results)

    def create(self, ver: str) -> Reply:
        """sObject Collections create (Tasks, for alerts): activities.sf_create."""
        return Reply(*sf_create(self.ds, self.json_body(), USER_ID))

    def locked(self, rid: str) -> list[Record]:
        """The Faults.rate_lock draw for one otherwise valid record: [] or its lock error."""
        if not self.sb.draw_lock():
            return []
        return [{"statusCode": "UNABLE_TO_LOCK_ROW", "fields": [], "message": "unable to obtain "
                 f"exclusive access to this record or 1 records: {rid}"}]

    # Bulk API 2.0 ingest (update on Account). Processing advances one step per job-info GET:
    # UploadComplete -> InProgress (nothing applied) -> JobComplete or Failed (all applied).
    def bulk_job(self, job: str) -> BulkJob | Reply:
        found = self.sb.bulk_jobs.get(job)
        return found or Reply(404, _sf_errors("NOT_FOUND", "The requested resource does not "
                                                           "exist"))

    @staticmethod
    def bulk_view(job: BulkJob, counts: bool) -> Record:
        """Job info as create/PATCH (counts=False) or GET (counts=True) answer it."""
        info = dict(job.info)
        if counts:
            done = len(job.successes) + len(job.failures)
            info.update(numberRecordsProcessed=done, numberRecordsFailed=len(job.failures),
                        retries=0, totalProcessingTime=3 * done, apiActiveProcessingTime=2 * done,
                        apexProcessingTime=0)
        else:
            info.pop("errorMessage", None)
        return info

    def bulk_create(self, ver: str) -> Reply:
        body = self.json_body()
        if not isinstance(body, dict):
            return Reply(400, _sf_errors("JSON_PARSER_ERROR", "The request body must be a JSON "
                                                              "object describing the job"))
        obj, operation = str(body.get("object") or ""), body.get("operation")
        line_ending = body.get("lineEnding") or "LF"
        delimiter = body.get("columnDelimiter") or "COMMA"
        checks = [(operation not in _OPERATIONS, f"Invalid operation: {operation}"),
                  (obj.lower() != "account", f"Unable to find object: {obj}"),
                  (operation != "update", f"The sandbox emulates update jobs only: {operation}"),
                  (body.get("contentType", "CSV") != "CSV",
                   f"Invalid contentType: {body.get('contentType')}"),
                  (line_ending not in ("LF", "CRLF"), f"Invalid lineEnding: {line_ending}"),
                  (delimiter not in _DELIMITERS, f"Invalid columnDelimiter: {delimiter}")]
        if problem := next((message for failed, message in checks if failed), None):
            return Reply(400, _sf_errors("INVALIDJOB", f"InvalidJob : {problem}"))
        jid, now = self.sb.new_bulk_id(), sf_time(time.time())
        job = BulkJob({"id": jid, "operation": operation, "object": "Account",
                       "createdById": USER_ID, "createdDate": now, "systemModstamp": now,
                       "state": "Open", "concurrencyMode": "Parallel", "contentType": "CSV",
                       "apiVersion": float(ver), "jobType": "V2Ingest",
                       "contentUrl": f"services/data/v{ver}/jobs/ingest/{jid}/batches",
                       "lineEnding": line_ending, "columnDelimiter": delimiter})
        self.sb.bulk_jobs[jid] = job
        return Reply(200, self.bulk_view(job, counts=False))

    def bulk_list(self, ver: str) -> Reply:
        return Reply(200, {"done": True, "nextRecordsUrl": None, "records": [
            self.bulk_view(job, counts=False) for job in self.sb.bulk_jobs.values()]})

    def bulk_upload(self, ver: str, job: str) -> Reply:
        found = self.bulk_job(job)
        if isinstance(found, Reply):
            return found
        if found.state != "Open":
            return Reply(400, _sf_errors("INVALIDJOBSTATE", f"Job {job} is {found.state}: data "
                                         "can only be uploaded to an Open job"))
        if found.data is not None:
            return Reply(400, _sf_errors("BULK_API_ERROR", f"Found multiple contents for job: "
                                         f"<{job}>, please 'Close' / 'Abort' / 'Delete' the "
                                         "current Job then create a new Job and make sure you "
                                         "only do 'PUT' once on a given Job."))
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return Reply(400, _sf_errors("ClientInputError", "The job data must be UTF-8 text"))
        if not text.strip():
            return Reply(400, _sf_errors("ClientInputError", "The job data is empty"))
        found.data = text
        return Reply(201)

    def bulk_state(self, ver: str, job: str) -> Reply:
        found = self.bulk_job(job)
        if isinstance(found, Reply):
            return found
        body = self.json_body()
        state = body.get("state") if isinstance(body, dict) else None
        if state == "UploadComplete" and found.state == "Open" or state == "Aborted" \
                and found.state in ("Open", "UploadComplete", "InProgress"):
            found.info.update(state=state, systemModstamp=sf_time(time.time()))
            return Reply(200, self.bulk_view(found, counts=False))
        if state == "Aborted":
            done = "Completed" if found.state == "JobComplete" else found.state
            message = f"Aborting already {done} Job not allowed"
        elif state == "UploadComplete":
            message = f"Job {job} is {found.state}: only an Open job can be closed"
        else:
            message = f"Invalid state: {state!r} (expected UploadComplete or Aborted)"
        return Reply(400, _sf_errors("INVALIDJOBSTATE", message))

    def bulk_delete(self, ver: str, job: str) -> Reply:
        found = self.bulk_job(job)
        if isinstance(found, Reply):
            return found
        if found.state not in ("UploadComplete", *_FINISHED):
            return Reply(400, _sf_errors("INVALIDJOBSTATE", f"Job {job} is {found.state}: only "
                                         "UploadComplete, JobComplete, Aborted or Failed jobs "
                                         "can be deleted"))
        del self.sb.bulk_jobs[job]
        return Reply(204)

    def bulk_info(self, ver: str, job: str) -> Reply:
        found = self.bulk_job(job)
        if isinstance(found, Reply):
            return found
        if found.state == "UploadComplete":
            found.info.update(state="InProgress", systemModstamp=sf_time(time.time()))
        elif found.state == "InProgress":
            self.bulk_process(found)
        return Reply(200, self.bulk_view(found, counts=True))

    def bulk_problem(self, job: BulkJob) -> str | None:
        """Why the whole job fails (its errorMessage), or None."""
        text, ending = job.data or "", job.info["lineEnding"]
        if not text:
            return "InvalidBatch : No data was uploaded for this job"
        mismatch = "\r\n" in text if ending == "LF" else re.search(r"(?<!\r)\n", text)
        if mismatch:
            return f"ClientInputError : LineEnding is invalid on user data. Current LineEnding " \
                   f"setting is {ending}"
        header, rows = job.rows()
        for column in header:
            if column.lower() not in self.sb.sf_fields:
                return f"InvalidBatch : Field name not found : {column}"
        seen = Counter(c.lower() for c in header)
        if (twice := next((c for c in header if seen[c.lower()] > 1), None)) is not None:
            return f"InvalidBatch : Duplicate field name: {twice}"
        bad = next((n for n, r in enumerate(rows, 2) if len(r) != len(header)), None)
        if bad is not None:
            return f"ClientInputError : Row {bad} has a different number of columns than the " \
                   "header row"
        return None

    def bulk_process(self, job: BulkJob) -> None:
        """Apply every row (update semantics: empty cell = unchanged, #N/A = null)."""
        job.header, rows = job.rows()
        problem = self.bulk_problem(job)
        stamp = sf_time(time.time())
        if problem:
            job.info.update(state="Failed", errorMessage=problem, systemModstamp=stamp)
            job.unprocessed = rows
            return
        for row in rows:
            cells = dict(zip((c.lower() for c in job.header), row, strict=True))
            rid = cells.pop("id", "")
            record = {self.sb.sf_fields[c][0]: _from_csv(self.sb.sf_fields[c], v)
                      for c, v in cells.items() if v != ""}
            if not rid:
                errors = [{"statusCode": "MISSING_ARGUMENT", "fields": [],
                           "message": "Id not specified in an update call"}]
            else:
                rid, changes, errors = self.check({"Id": rid, **record})
                errors = errors or self.locked(rid)
            if errors:
                job.failures.append([rid or "", _bulk_error(errors[0]), *row])
                continue
            self.ds.sf_accounts[rid].update(changes, LastModifiedDate=stamp, SystemModstamp=stamp)
            job.successes.append([rid, "false", *row])
        self.sb.bulk_batches += max(1, math.ceil(len(rows) / 10_000))
        job.info.update(state="JobComplete", systemModstamp=stamp)

    def bulk_results(self, ver: str, job: str, kind: str) -> Reply:
        found = self.bulk_job(job)
        if isinstance(found, Reply):
            return found
        if found.state not in _FINISHED:
            return Reply(400, _sf_errors("INVALIDJOBSTATE", f"Job {job} is {found.state}: "
                                         "results are available once it is JobComplete, Failed "
                                         "or Aborted"))
        header, unprocessed = found.rows() if found.state == "Aborted" else (
            found.header, found.unprocessed)  # an aborted job never processed a row
        prefix, rows = {"successfulResults": (["sf__Id", "sf__Created"], found.successes),
                        "failedResults": (["sf__Id", "sf__Error"], found.failures),
                        "unprocessedrecords": ([], unprocessed)}[kind]
        text = _csv_text(_DELIMITERS[found.info["columnDelimiter"]], prefix, header, rows)
        return Reply(200, text, {"Content-Type": "text/csv"}, served=len(rows))


_SOAP_OK = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope \
xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" \
xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>\
<metadataServerUrl>{base}/services/Soap/m/{ver}/{org}</metadataServerUrl>\
<passwordExpired>false</passwordExpired><sandbox>true</sandbox>\
<serverUrl>{base}/services/Soap/u/{ver}/{org}</serverUrl><sessionId>{sid}</sessionId>\
<userId>005000000000001AAA</userId><userInfo><organizationId>{org}AAA</organizationId>\
<userName>{user}</userName></userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"""
_SOAP_FAULT = """<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope \
xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" \
xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\
<soapenv:Body><soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: \
Invalid username, password, security token; or user locked out.</faultstring><detail>\
<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>\
<sf:exceptionMessage>Invalid username, password, security token; or user locked out.\
</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"""
