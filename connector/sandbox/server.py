"""Local emulators of the Salesforce, HubSpot, Stripe and Zendesk REST APIs, over real HTTP.

`Sandbox(dataset)` runs four ThreadingHTTPServers on 127.0.0.1 (Salesforce behind TLS signed by
a throwaway trustme CA) serving a Dataset in each API's wire format, with optional fault
injection (`Faults`; `Sandbox.refuse` makes one route answer a whole-request error, as a CRM
does to a user without a permission), and a fifth that receives alert webhooks. One handler
class per API family, each with its route table; what alerts create is checked in activities.py.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import traceback
from bisect import bisect_left, bisect_right
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import trustme

from .activities import HookInbox, hs_create_tasks, sf_create
from .dataset import (
    HS_OUTPUTS,
    HS_OWNERS,
    HS_PROPERTIES,
    SEGMENTS,
    SF_FIELDS,
    STAGES,
    Dataset,
    Record,
    hs_time,
    sf_id,
    sf_time,
)

USERNAME = "demo@healthsync.sandbox"
PASSWORD = "sandbox-password"
SECURITY_TOKEN = "sandbox-token"
HUBSPOT_TOKEN = "pat-sandbox-0000"
STRIPE_KEY = "rk_test_sandbox"
ZENDESK_TOKEN = "sandbox-zendesk-token"
ORG_ID = "00D000000000001"
USER_ID = "005000000000001AAA"


@dataclass(frozen=True)
class Faults:
    """Per-request fault probabilities for data requests (logins are never faulted)."""

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    rate_drop: float = 0.0
    expire_session_after: int | None = None  # Salesforce: expire all sessions once, after N
    seed: int = 0
    drop_after_write: float = 0.0  # apply a write, then drop the connection unanswered
    rate_lock: float = 0.0  # Salesforce updates: per record, UNABLE_TO_LOCK_ROW (record unchanged)
    rate_concurrent: float = 0.0  # Salesforce data requests: 403 REQUEST_LIMIT_EXCEEDED ConcurrentPerOrgLongTxn


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list -> JSON, str -> text (with its Content-Type), None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    served: int = 0  # records returned, for Sandbox.served


_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(\.\d+)?)?)?"
                   r"(Z|[+-]\d\d:?\d\d)?", re.I)


def parse_time(text: str) -> float | None:
    """Epoch seconds of an ISO 8601 date or datetime (UTC unless it carries an offset)."""
    m = _TIME.fullmatch(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        ts = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                      tzinfo=UTC).timestamp() + float(frac or 0)
    except ValueError:
        return None
    if tz and tz.upper() != "Z":
        digits = tz[1:].replace(":", "")
        ts -= (1 if tz[0] == "+" else -1) * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return ts


Route = tuple[str, str, re.Pattern[str], str, str]


def _routes(*rows: tuple[str, str, str, str, str]) -> list[Route]:
    """Rows of (method, template counted in Sandbox.calls, path regex, handler method, flags);
    flags: "login" (no faults, no auth), "open" (no auth) or "write" (may drop after writing)."""
    return [(m, t, re.compile(p + "/?"), h, f) for m, t, p, h, f in rows]


def _hang_up(conn: socket.socket) -> None:
    try:
        socket.socket.shutdown(conn, socket.SHUT_RDWR)  # for TLS too: no close_notify
    except OSError:
        pass


class _Server(ThreadingHTTPServer):
    """One family's server; tracks open connections so that stop() can close idle ones."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, sandbox: Sandbox, handler: type[_Handler]) -> None:
        self.sandbox, self.stopping = sandbox, False
        self.connections: set[socket.socket] = set()
        super().__init__(("127.0.0.1", 0), handler)

    def server_bind(self) -> None:  # skips HTTPServer's reverse DNS lookup
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up are normal here; handler bugs are printed by dispatch()

    def track(self, conn: socket.socket, add: bool) -> None:
        with self.sandbox.lock:
            (self.connections.add if add else self.connections.discard)(conn)
            if add and self.stopping:
                _hang_up(conn)

    def close_connections(self) -> None:
        with self.sandbox.lock:
            self.stopping = True
            for conn in self.connections:
                _hang_up(conn)


class _Handler(BaseHTTPRequestHandler):
    """Shared plumbing: routing, counting, faults, auth and JSON replies over HTTP/1.1."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    wbufsize = 1 << 16  # headers and body leave in one write: no Nagle/delayed-ACK stalls
    disable_nagle_algorithm = True
    family = ""
    routes: list[Route] = []
    server: _Server
    sb: Sandbox
    ds: Dataset

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.sb, self.ds = self.server.sandbox, self.server.sandbox.dataset
        self.server.track(self.connection, True)

    def handle(self) -> None:
        if isinstance(self.connection, ssl.SSLSocket):
            try:  # in this connection's thread, not in the accept loop
                self.connection.do_handshake()
            except OSError:
                return
        super().handle()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self.dispatch(self.command)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def dispatch(self, method: str) -> None:
        sb, url = self.sb, urlsplit(self.path)
        self.params = parse_qs(url.query, keep_blank_values=True)
        self.body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        found = next(((r, m) for r in self.routes if r[0] == method
                      and (m := r[2].fullmatch(url.path))), None)
        if found is None:
            sb.count(sb.calls, (self.family, f"{method} {url.path}"))
            return self.send(*self.encode(self.not_found(method, url.path)))
        (_, template, _, name, flags), match = found
        sb.count(sb.calls, (self.family, f"{method} {template}"))
        fault = None if flags == "login" else sb.draw_fault(self.family)
        if fault == "drop":
            return self.drop()
        with sb.lock:
            if fault:
                reply = self.fault(fault)
            else:
                try:
                    reply = (None if flags in ("login", "open") else self.authenticate()) \
                        or (None if flags == "login" else self.refused(f"{method} {template}")) \
                        or getattr(self, name)(**match.groupdict())
                except Exception:  # a sandbox bug: show it, answer as a failing server would
                    traceback.print_exc()
                    reply = self.fault("5xx")
                if reply.status < 400:
                    sb.served[self.family] += reply.served
                    if flags not in ("login", "open"):
                        self.succeeded()
            encoded = self.encode(reply)  # inside the lock: a consistent snapshot
        if flags == "write" and not fault and reply.status < 400 and sb.draw_drop_after_write(
                self.family):
            return self.drop()
        self.send(*encoded)

    def encode(self, reply: Reply) -> tuple[int, dict[str, str], bytes]:
        headers = {**self.extra_headers(reply), **reply.headers}
        if isinstance(reply.body, dict | list):
            data = json.dumps(reply.body, ensure_ascii=False, separators=(",", ":")).encode()
            headers.setdefault("Content-Type", "application/json;charset=UTF-8")
        else:
            data = str(reply.body or "").encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        return reply.status, headers, data

    def send(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def drop(self) -> None:
        """Close the connection without answering: the client sees it dropped."""
        self.close_connection = True
        _hang_up(self.connection)

    def arg(self, name: str) -> str | None:
        values = self.params.get(name)
        return values[0] if values else None

    def json_body(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    def bearer(self) -> str:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def refused(self, route: str) -> Reply | None:
        """The whole-request error Sandbox.refuse set up for this route, if one is due."""
        due = self.sb.take_refusal(self.family, route)
        return None if due is None else self.error(*due)

    # Per-family hooks.
    def authenticate(self) -> Reply | None:
        return None

    def error(self, status: int, code: str, message: str) -> Reply:
        """A whole-request error in this API's format."""
        return Reply(status, message)

    def succeeded(self) -> None:
        pass

    def extra_headers(self, reply: Reply) -> dict[str, str]:
        return {}

    def fault(self, kind: str) -> Reply:
        raise NotImplementedError

    def not_found(self, method: str, path: str) -> Reply:
        raise NotImplementedError


# ----------------------------------------------------------------------------- Salesforce

_DATA = r"/services/data/v(?P<ver>\d+\.\d)"
_SF_FIELD = {f[0].lower(): f for f in SF_FIELDS}
_SOQL = re.compile(r"\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+(?P<object>\w+)(?:\s+WHERE\s+(?P<where>"
                   r".+?))?(?:\s+ORDER\s+BY\s+(?P<order>.+?))?(?:\s+LIMIT\s+(?P<limit>\d+))?\s*",
                   re.I | re.S)
_COND = re.compile(r"(AND\s+)?(\w+)\s*(>=|<=|!=|<>|=|>|<)\s*('(?:[^'\\]|\\.)*'|[\w:.+-]+)\s*",
                   re.I)
_ORDER = re.compile(r"(\w+)(?:\s+(ASC|DESC))?(?:\s+NULLS\s+(FIRST|LAST))?", re.I)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_TEXT = ("string", "url", "picklist", "textarea", "email", "phone", "multipicklist", "combobox")
_NUMBERS = ("double", "percent", "currency", "int")
_PICKLISTS = {"Customer_Segment__c": SEGMENTS, "Lifecycle_Stage__c": STAGES,
              "Health_Status__c": ["Green", "Yellow", "Red"],
              "Churn_Risk_Status__c": ["Low", "Medium", "High"]}
FieldSpec = tuple[str, str, str, bool, int]


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


def _sf_field(q: str, name: str, fields: dict[str, FieldSpec]) -> FieldSpec:
    spec = fields.get(name.lower())
    if spec is None:
        raise _soql_error(q, name, "INVALID_FIELD", f"No such column '{name}' on entity 'Account'"
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
    if kind in ("id", *_TEXT) and quoted:
        value = re.sub(r"\\(.)", r"\1", raw[1:-1])
        return value if kind == "id" else value.casefold()
    raise _soql_error(q, raw, "INVALID_QUERY_FILTER_OPERATOR", f"value of filter criterion for "
                      f"field '{name}' must be of type {kind} and should "
                      f"{'' if kind in ('id', *_TEXT) else 'not '}be enclosed in quotes")


def _predicate(q: str, fields: dict[str, FieldSpec], field_name: str, op: str,
               raw: str) -> Callable[[Record], bool]:
    spec = _sf_field(q, field_name, fields)
    name, fold = spec[0], spec[1] in _TEXT  # text compares case-insensitively, as in SOQL
    value, op = _literal(q, spec, raw), "!=" if op == "<>" else op
    if value is None and op not in ("=", "!="):
        raise _soql_error(q, raw, "MALFORMED_QUERY", "null can only be compared with = or !=")

    def get(r: Record) -> Any:
        v = r.get(name)
        return v.casefold() if fold and isinstance(v, str) else v
    if op in ("=", "!="):
        return (lambda r: get(r) == value) if op == "=" else (lambda r: get(r) != value)
    test = _OPS[op]
    return lambda r: (v := get(r)) is not None and test(v, value)


def run_soql(records: Any, q: str, include_deleted: bool,
             fields: dict[str, FieldSpec] = _SF_FIELD) -> tuple[list[str] | None, list[Record]]:
    """Run `SELECT f, ... | COUNT() FROM Account [WHERE a op v AND ...] [ORDER BY f [ASC|DESC]
    [NULLS FIRST|LAST], ...] [LIMIT n]`: (selected fields or None for COUNT(), the rows)."""
    m = _SOQL.fullmatch(q)
    if not m:
        raise SoqlError("MALFORMED_QUERY", f"\n{q.strip()}\n^\nERROR at Row:1:Column:1\n"
                                           "unexpected token: the query is not well formed")
    if m["object"].lower() != "account":
        raise _soql_error(q, m["object"], "INVALID_TYPE", f"sObject type '{m['object']}' is not "
                          "supported. If you are attempting to use a custom object, be sure to "
                          "append the '__c' after the entity name.")
    raw = [f.strip() for f in m["fields"].split(",")]
    table, fields = fields, None if [f.lower().replace(" ", "") for f in raw] == ["count()"] \
        else list(dict.fromkeys(_sf_field(q, f, fields)[0] for f in raw))
    predicates, where, pos = [], m["where"] or "", 0
    while pos < len(where):
        cond = _COND.match(where, pos)
        if not cond or bool(cond[1]) != bool(predicates):  # AND before all but the first
            token = where[pos:].split()[0]
            raise _soql_error(q, token, "MALFORMED_QUERY", f"unexpected token: '{token}' (the "
                              "sandbox supports conditions joined by AND)")
        predicates.append(_predicate(q, table, *cond.groups()[1:]))
        pos = cond.end()
    rows = [r for r in records if (include_deleted or not r["IsDeleted"])
            and all(p(r) for p in predicates)]
    for part in reversed(m["order"].split(",") if m["order"] else []):
        item = _ORDER.fullmatch(part.strip())
        if not item:
            raise _soql_error(q, part.strip(), "MALFORMED_QUERY", f"unexpected token: '{part}'")
        name, kind = _sf_field(q, item[1], table)[:2]
        desc = (item[2] or "").upper() == "DESC"
        nulls_last = (item[3] or ("LAST" if desc else "FIRST")).upper() == "LAST"
        flag, fold = nulls_last != desc, kind in _TEXT  # reverse=desc also moves the nulls

        def key(r: Record, name: str = name, fold: bool = fold, flag: bool = flag) -> Any:
            v = r.get(name)
            return (v is None) == flag, (v.casefold() if fold and isinstance(v, str) else v) \
                if v is not None else 0
        rows.sort(key=key, reverse=desc)
    return fields, rows[:int(m["limit"])] if m["limit"] else rows


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


class _Salesforce(_Handler):
    family = "salesforce"
    routes = _routes(
        ("POST", "/services/Soap/u/{version}", r"/services/Soap/u/(?P<ver>\d+\.\d)(?:/\w+)?",
         "soap_login", "login"),
        ("POST", "/services/oauth2/token", r"/services/oauth2/token", "jwt_login", "login"),
        ("GET", "/services/data/", r"/services/data", "versions", "open"),
        ("GET", "/limits", _DATA + r"/limits", "limits", ""),
        ("GET", "/sobjects/Account/describe", _DATA + r"/sobjects/Account/describe",
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
        status = 503 if kind == "429" else self.sb.pick([500, 502, 503])
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

    def describe(self, ver: str) -> Reply:
        fields = [{"name": name, "type": kind, "label": label, "updateable": writable,
                   "createable": writable, "nillable": writable and name != "Name",
                   "length": length, "custom": name.endswith("__c"), "filterable": True,
                   "sortable": kind != "textarea", "picklistValues": [
                       {"active": True, "defaultValue": False, "label": v, "value": v}
                       for v in (_PICKLISTS.get(name, []) if kind == "picklist" else [])]}
                  for name, kind, label, writable, length in self.sb.sf_fields.values()]
        return Reply(200, {"name": "Account", "label": "Account", "keyPrefix": "001",
                           "custom": False, "queryable": True, "updateable": True,
                           "fields": fields})

    def query(self, ver: str) -> Reply:
        return self.run(ver, include_deleted=False)

    def query_all(self, ver: str) -> Reply:
        return self.run(ver, include_deleted=True)

    def run(self, ver: str, include_deleted: bool) -> Reply:
        try:
            fields, rows = run_soql(self.ds.sf_accounts.values(), self.arg("q") or "",
                                    include_deleted, self.sb.sf_fields)
        except SoqlError as e:
            return Reply(400, _sf_errors(e.code, e.message))
        if fields is None:
            return Reply(200, {"totalSize": len(rows), "done": True, "records": []})
        size = re.search(r"batchSize\s*=\s*(\d+)", self.headers.get("Sforce-Query-Options", ""))
        batch = min(2000, max(200, int(size[1]))) if size else 2000
        return self.page(ver, {"rows": rows, "fields": fields, "batch": batch}, 0)

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
        body["records"] = [self.record(ver, r, cursor["fields"]) for r in rows[offset:end]]
        return Reply(200, body, served=len(body["records"]))

    @staticmethod
    def record(ver: str, r: Record, fields: list[str]) -> Record:
        url = f"/services/data/v{ver}/sobjects/Account/{r['Id']}"
        return {"attributes": {"type": "Account", "url": url}, **{f: r.get(f) for f in fields}}

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


# ----------------------------------------------------------------------------- HubSpot

_HS_DEFAULT = ["name", "domain", "createdate", "hs_lastmodifieddate", "hs_object_id"]
_HS_ALWAYS = ["hs_object_id", "createdate", "hs_lastmodifieddate"]
_HS_OPS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
_HS_FIELD_TYPES = {"string": ("text", "textarea"), "number": ("number",), "date": ("date",),
                   "datetime": ("date",), "enumeration": ("select", "radio", "checkbox"),
                   "bool": ("booleancheckbox",)}
_HS_NAME = re.compile(r"[a-z][a-z0-9_]{0,99}")
_HS_OUTPUT_GROUP = "healthsync"
PropertyTable = dict[str, Record]


def _hs_error(status: int, category: str, message: str, **extra: Any) -> Reply:
    return Reply(status, {"status": "error", "message": message,
                          "correlationId": secrets.token_hex(16), "category": category, **extra})


def _hs_group(name: str, label: str, display_order: int = -1) -> Record:
    return {"name": name, "label": label, "displayOrder": display_order, "archived": False}


def _hs_property(name: str, kind: str, field_type: str, label: str, group: str, *,
                 read_only: bool = False, hubspot_defined: bool = False,
                 options: list[Record] | None = None, description: str = "",
                 display_order: int = -1, created: str = "") -> Record:
    """A property definition as GET /crm/v3/properties/companies lists it."""
    return {"name": name, "label": label, "type": kind, "fieldType": field_type,
            "description": description, "groupName": group, "options": options or [],
            "displayOrder": display_order, "calculated": False, "externalOptions": False,
            "hasUniqueValue": name == "hs_object_id", "hidden": False, "formField": not read_only,
            "hubspotDefined": hubspot_defined, "createdAt": created, "updatedAt": created,
            "archived": False, "modificationMetadata": {
                "archivable": not hubspot_defined, "readOnlyDefinition": hubspot_defined,
                "readOnlyValue": read_only}}


def _hs_tables(outputs: bool) -> tuple[PropertyTable, PropertyTable]:
    """(property groups, company properties) by name, from dataset.HS_PROPERTIES."""
    created = hs_time(datetime(2020, 1, 6, tzinfo=UTC).timestamp())
    groups = {"companyinformation": _hs_group("companyinformation", "Company information", 0)}
    if outputs:
        groups[_HS_OUTPUT_GROUP] = _hs_group(_HS_OUTPUT_GROUP, "Healthsync", 1)
    props = {}
    for order, (name, kind, field_type, label, read_only) in enumerate(HS_PROPERTIES):
        if name in HS_OUTPUTS and not outputs:
            continue
        values = list(HS_OWNERS) if name == "hubspot_owner_id" else SEGMENTS
        options = [{"label": v, "value": v, "displayOrder": i, "hidden": False}
                   for i, v in enumerate(values)] if kind == "enumeration" else []
        props[name] = _hs_property(
            name, kind, field_type, label, _HS_OUTPUT_GROUP if name in HS_OUTPUTS
            else "companyinformation", read_only=read_only, options=options,
            hubspot_defined=name in _HS_DEFAULT, display_order=order, created=created)
    return groups, props


def _hs_view(company: Record, names: list[str], table: PropertyTable) -> Record:
    """A company as the API answers: requested properties that exist, null when unset."""
    props = company["properties"]
    out = {"id": company["id"], "properties": {n: props.get(n) for n in names if n in table},
           "createdAt": company["createdAt"], "updatedAt": company["updatedAt"],
           "archived": company["archived"]}
    if company["archived"]:
        out["archivedAt"] = company.get("archivedAt")
    return out


def _hs_time_value(text: str) -> float | None:
    """Epoch seconds of a HubSpot datetime input: epoch milliseconds or ISO 8601."""
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text) / 1000
    return parse_time(text)


def _hs_value(table: PropertyTable, name: str, raw: Any) -> Any:
    """A property value in comparable form: numbers as floats, datetimes as HubSpot ISO."""
    kind, text = table[name]["type"], None if raw in (None, "") else str(raw)
    if text is None or (kind == "datetime" and len(text) == 24 and text[-1] == "Z"):
        return text  # missing, or already in HubSpot's own datetime format
    if kind == "datetime":
        ts = _hs_time_value(text)
        if ts is None:
            raise ValueError(f"{text} is not a valid datetime for {name}")
        return hs_time(ts)
    return float(text) if kind == "number" else text.casefold()


def _hs_filter(table: PropertyTable, flt: Any) -> Callable[[Record], bool]:
    """A search filter (EQ, NEQ, GT, GTE, LT, LTE) as a predicate on companies."""
    name, op = flt["propertyName"], str(flt.get("operator")).upper()
    value, test = _hs_value(table, name, flt.get("value")), _OPS[_HS_OPS[op]]

    def check(c: Record) -> bool:
        actual = _hs_value(table, name, c["properties"].get(name))
        if actual is None or value is None:  # a missing value only equals a missing value
            return op == "NEQ" if (actual is None) != (value is None) else op == "EQ"
        return test(actual, value)
    return check


def _hs_store(prop: Record, value: Any) -> tuple[Any, str | None, str]:
    """(a written value as HubSpot stores it: a string, None, "") or (None, an error code, its
    message), checked against the property's type and options."""
    if value is None or value == "":
        return value, None, ""
    text = str(value).lower() if isinstance(value, bool) else str(int(value)) \
        if isinstance(value, float) and value.is_integer() else str(value)
    kind, name = prop["type"], prop["name"]
    if kind == "number" and not re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", text, re.I):
        return None, "INVALID_FLOAT", f"{text} is not a valid number for {name}"
    if kind == "enumeration":
        allowed = [o["value"] for o in prop["options"]]
        chosen = text.split(";") if prop["fieldType"] == "checkbox" else [text]
        if any(v not in allowed for v in chosen):
            return None, "INVALID_OPTION", f"{text} was not one of the allowed options: " \
                                           f"[{', '.join(allowed)}]"
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            return None, "INVALID_BOOLEAN", f"{text} is not a valid boolean for {name}"
        return text.lower(), None, ""
    if kind == "datetime":
        ts = _hs_time_value(text)
        return (None, "INVALID_LONG", f"{text} is neither epoch milliseconds nor an ISO 8601 "
                f"datetime") if ts is None else (hs_time(ts), None, "")
    if kind == "date":
        ts = _hs_time_value(text)
        if ts is None or ts % 86_400:
            return None, "INVALID_DATE", f"{text} is not a date at midnight UTC"
        return hs_time(ts)[:10], None, ""
    return text, None, ""


class _HubSpot(_Handler):
    family = "hubspot"
    routes = _routes(
        ("GET", "/crm/v3/properties/companies", r"/crm/v3/properties/companies", "properties", ""),
        ("POST", "/crm/v3/properties/companies", r"/crm/v3/properties/companies",
         "create_property", "write"),
        ("GET", "/crm/v3/properties/companies/groups", r"/crm/v3/properties/companies/groups",
         "groups", ""),
        ("POST", "/crm/v3/properties/companies/groups", r"/crm/v3/properties/companies/groups",
         "create_group", "write"),
        ("GET", "/crm/v3/properties/companies/{name}",
         r"/crm/v3/properties/companies/(?P<name>[^/]+)", "get_property", ""),
        ("GET", "/crm/v3/objects/companies", r"/crm/v3/objects/companies", "list_companies", ""),
        ("POST", "/crm/v3/objects/companies/search", r"/crm/v3/objects/companies/search",
         "search", ""),
        ("POST", "/crm/v3/objects/companies/batch/update",
         r"/crm/v3/objects/companies/batch/update", "batch_update", "write"),
        ("PATCH", "/crm/v3/objects/companies/{id}", r"/crm/v3/objects/companies/(?P<cid>\d+)",
         "update_company", "write"),
        ("POST", "/crm/v3/objects/tasks/batch/create", r"/crm/v3/objects/tasks/batch/create",
         "create_tasks", "write"),
    )

    def authenticate(self) -> Reply | None:
        if self.bearer() == HUBSPOT_TOKEN:
            return None
        return _hs_error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found. "
                         "This API supports OAuth 2.0 authentication and you can find more "
                         "details at https://developers.hubspot.com/docs/methods/auth/"
                         "oauth-overview")

    def error(self, status: int, code: str, message: str) -> Reply:
        return _hs_error(status, code, message)

    def extra_headers(self, reply: Reply) -> dict[str, str]:
        recent, total = self.sb.hubspot_rate()
        return {"X-HubSpot-RateLimit-Max": "190", "X-HubSpot-RateLimit-Interval-Milliseconds":
                "10000", "X-HubSpot-RateLimit-Remaining": "0" if reply.status == 429 else
                str(max(0, 190 - recent)), "X-HubSpot-RateLimit-Daily": "500000",
                "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, 500000 - total))}

    def fault(self, kind: str) -> Reply:
        if kind == "5xx":
            return _hs_error(self.sb.pick([500, 502, 503]), "INTERNAL_ERROR",
                             "internal error (sandbox fault)")
        reply = _hs_error(429, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.",
                          errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING",
                          groupName=f"publicapi:private-app:{HUBSPOT_TOKEN[-4:]}")
        if self.sb.pick([True, False]):  # HubSpot sends Retry-After only sometimes
            reply.headers["Retry-After"] = "1"
        return reply

    def not_found(self, method: str, path: str) -> Reply:
        return _hs_error(404, "OBJECT_NOT_FOUND", f"Unable to route {method} {path}")

    def properties(self) -> Reply:
        return Reply(200, {"results": list(self.sb.hs_properties.values())})

    def get_property(self, name: str) -> Reply:
        prop = self.sb.hs_properties.get(name)
        return Reply(200, prop) if prop else _hs_error(
            404, "OBJECT_NOT_FOUND", f"Unable to find property {name} for object type companies")

    def groups(self) -> Reply:
        return Reply(200, {"results": list(self.sb.hs_groups.values())})

    def create_group(self) -> Reply:
        body = self.json_body()
        body = body if isinstance(body, dict) else {}
        name, label, order = body.get("name"), body.get("label"), body.get("displayOrder", -1)
        problem = self.bad_name(name, "property group") or (
            "label is required" if not isinstance(label, str) or not label.strip() else
            "displayOrder must be an integer"
            if not isinstance(order, int) or isinstance(order, bool) else None)
        if problem:
            return _hs_error(400, "VALIDATION_ERROR", problem)
        if name in self.sb.hs_groups:
            return _hs_error(409, "CONFLICT", f"A property group named '{name}' already exists "
                             "for object type companies")
        self.sb.hs_groups[name] = group = _hs_group(name, label, order)
        return Reply(201, group)

    @staticmethod
    def bad_name(name: Any, what: str) -> str | None:
        if not isinstance(name, str) or not name:
            return f"name is required for a {what}"
        if not _HS_NAME.fullmatch(name):
            return f"Invalid {what} name '{name}': use lowercase letters, digits and " \
                   "underscores, starting with a letter"
        return None

    def property_problem(self, body: Record) -> str | None:
        """Why HubSpot would refuse to create this property (a VALIDATION_ERROR), or None."""
        kind, field_type, options = body.get("type"), body.get("fieldType"), body.get("options")
        if problem := self.bad_name(body.get("name"), "property"):
            return problem
        for key in ("label", "type", "fieldType", "groupName"):
            if not isinstance(body.get(key), str) or not body[key].strip():
                return f"{key} is required"
        if kind not in _HS_FIELD_TYPES:
            return f"Invalid property type '{kind}': use one of {', '.join(_HS_FIELD_TYPES)}"
        if field_type not in _HS_FIELD_TYPES[kind]:
            return f"fieldType '{field_type}' is not valid for a property of type '{kind}': " \
                   f"use {' or '.join(_HS_FIELD_TYPES[kind])}"
        if kind == "enumeration" and not (isinstance(options, list) and options and all(
                isinstance(o, dict) and isinstance(o.get("label"), str)
                and isinstance(o.get("value"), str) and o["value"] for o in options)):
            return "An enumeration property needs options, each with a label and a value"
        if body["groupName"] not in self.sb.hs_groups:
            return f"Property group '{body['groupName']}' does not exist for object type " \
                   "companies"
        return None

    def create_property(self) -> Reply:
        body = self.json_body()
        body = body if isinstance(body, dict) else {}
        name, kind, options = body.get("name"), body.get("type"), body.get("options") or []
        problem = self.property_problem(body)
        if problem:
            return _hs_error(400, "VALIDATION_ERROR", problem)
        if name in self.sb.hs_properties:
            return _hs_error(409, "CONFLICT", f"A property named '{name}' already exists for "
                             "object type companies")
        choices = [{"label": o["label"], "value": o["value"], "description": o.get(
            "description", ""), "displayOrder": o.get("displayOrder", i), "hidden": bool(
            o.get("hidden", False))} for i, o in enumerate(options)] if kind == "enumeration" \
            else []
        self.sb.hs_properties[name] = prop = _hs_property(
            name, kind, body["fieldType"], body["label"], body["groupName"], options=choices,
            description=str(body.get("description") or ""), created=hs_time(time.time()),
            display_order=body.get("displayOrder", -1) if isinstance(
                body.get("displayOrder"), int) else -1)
        return Reply(201, prop)

    @staticmethod
    def wanted(names: list[str]) -> list[str]:
        """Requested properties (plus the three always returned), or HubSpot's defaults."""
        names = [n.strip() for n in names if isinstance(n, str) and n.strip()]
        return list(dict.fromkeys(names + _HS_ALWAYS)) if names else _HS_DEFAULT

    def list_companies(self) -> Reply:
        try:
            limit, after = int(self.arg("limit") or 10), int(self.arg("after") or 0)
        except ValueError:
            return _hs_error(400, "VALIDATION_ERROR", "limit and after must be integers")
        if not 1 <= limit <= 100:
            return _hs_error(400, "VALIDATION_ERROR", f"limit must be 1..100, got {limit}")
        ids = self.sb.hubspot_ids((self.arg("archived") or "").lower() == "true")  # SDK: "True"
        start = bisect_left(ids, after)  # `after` is the id the next page starts at
        names = self.wanted([n for v in self.params.get("properties", []) for n in v.split(",")])
        table = self.sb.hs_properties
        body: Record = {"results": [_hs_view(self.ds.hs_companies[str(i)], names, table)
                                    for i in ids[start:start + limit]]}
        if start + limit < len(ids):
            token = str(ids[start + limit])
            query = [(k, v) for k, vs in self.params.items() if k != "after" for v in vs]
            body["paging"] = {"next": {"after": token, "link": self.sb.urls["hubspot"] +
                                       "/crm/v3/objects/companies?" +
                                       urlencode([*query, ("after", token)])}}
        return Reply(200, body, served=len(body["results"]))

    def search(self) -> Reply:
        body = self.json_body()
        try:
            groups, sorts = body.get("filterGroups") or [], body.get("sorts") or []
            limit, after = int(body.get("limit") or 10), int(body.get("after") or 0)
            if not 1 <= limit <= 200 or after < 0:
                raise ValueError("limit must be 1..200")
            table = self.sb.hs_properties
            matchers = [[_hs_filter(table, f) for f in g["filters"]] for g in groups]
            for s in sorts:
                _hs_value(table, s["propertyName"], None)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            return _hs_error(400, "VALIDATION_ERROR", f"Invalid search request: {e!r}")
        cap = self.sb.hubspot_search_cap
        if after >= cap:
            return _hs_error(400, "VALIDATION_ERROR", f"Search is limited to {cap} results per "
                             f"query; after={after} is beyond them. Narrow the filters (e.g. "
                             "hs_object_id GT the last id seen) and search again.")

        def build() -> list[Record]:
            found = [c for c in self.ds.hs_companies.values() if not c["archived"]
                     and (not matchers or any(all(m(c) for m in g) for g in matchers))]
            for s in reversed(sorts):
                name = s["propertyName"]
                found.sort(key=lambda c, name=name: (
                    (v := _hs_value(table, name, c["properties"].get(name))) is None, v or 0),
                    reverse=str(s.get("direction")).upper() == "DESCENDING")
            return found
        found = self.sb.cached("hubspot", json.dumps([groups, sorts], sort_keys=True), build)
        names = self.wanted(body.get("properties") or [])
        out: Record = {"total": len(found), "results": [_hs_view(c, names, table)
                                                        for c in found[after:after + limit]]}
        if after + limit < len(found):  # also past the cap: the next request then fails
            out["paging"] = {"next": {"after": str(after + limit)}}
        return Reply(200, out, served=len(out["results"]))

    def create_tasks(self) -> Reply:
        """Tasks batch create (alerts), associated with companies: activities.hs_create_tasks."""
        return Reply(*hs_create_tasks(self.ds, self.json_body()))

    def update_company(self, cid: str) -> Reply:
        """Update one company: 200 with it, 404 when missing, 400 with the property errors."""
        body = self.json_body()
        inputs = {"inputs": [{"id": cid, "properties": body.get("properties") if isinstance(body, dict)
                              else None}]}
        self.body = json.dumps(inputs).encode()
        reply = self.batch_update()
        if reply.status == 200:
            return Reply(200, reply.body["results"][0])
        error = reply.body["errors"][0]
        return _hs_error(404 if error["category"] == "OBJECT_NOT_FOUND" else 400, error["category"],
                         error["message"])

    def batch_update(self) -> Reply:
        """Per-input outcome: 200 if all applied, else 207 with the errors grouped."""
        body = self.json_body()
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
            return _hs_error(400, "VALIDATION_ERROR", "inputs must be a list of 1 to 100 items")
        ids = [str(i.get("id")) if isinstance(i, dict) else "" for i in inputs]
        if len(set(ids)) < len(ids):
            return _hs_error(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
        started = stamp = hs_time(time.time())
        results, errors = [], {}
        for cid, item in zip(ids, inputs, strict=True):
            company = self.ds.hs_companies.get(cid)
            props = item.get("properties") if isinstance(item, dict) else None
            if company is None or company["archived"]:
                errors.setdefault(("OBJECT_NOT_FOUND", "Could not get some COMPANY objects, they "
                                   "may be deleted or not exist. Check that ids are valid."),
                                  []).append(cid)
                continue
            stored, problems = {}, []
            for name, value in (props if isinstance(props, dict) else {}).items():
                prop = self.sb.hs_properties.get(name)
                if prop is None:
                    code, message = "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
                elif prop["modificationMetadata"]["readOnlyValue"]:
                    code, message = "READ_ONLY_VALUE", f"{name} is a read only property; its " \
                                                       "value cannot be set"
                else:
                    stored[name], code, message = _hs_store(prop, value)
                if code:
                    problems.append({"isValid": False, "message": message, "error": code,
                                     "name": name})
            if problems or not isinstance(props, dict):
                errors.setdefault(("VALIDATION_ERROR", "Property values were not valid: " +
                                   json.dumps(problems)), []).append(cid)
                continue
            company["properties"].update(stored, hs_lastmodifieddate=stamp)
            company["updatedAt"] = stamp
            results.append(_hs_view(company, [*stored, *_HS_ALWAYS], self.sb.hs_properties))
        self.sb.changed("hubspot")
        out: Record = {"status": "COMPLETE", "results": results, "startedAt": started,
                       "completedAt": hs_time(time.time())}
        if errors:
            out["numErrors"] = sum(len(v) for v in errors.values())
            out["errors"] = [{"status": "error", "category": cat, "message": msg,
                              "context": {"ids": cids}, "links": {}, "errors": []}
                             for (cat, msg), cids in errors.items()]
        return Reply(207 if errors else 200, out)


# ----------------------------------------------------------------------------- Stripe

_STRIPE = {"customers": "customer", "subscriptions": "subscription", "invoices": "invoice",
           "charges": "charge", "events": "event"}
_STATUSES = {"subscriptions": ["trialing", "active", "past_due", "canceled", "unpaid",
                               "incomplete", "incomplete_expired", "paused", "all", "ended"],
             "invoices": ["draft", "open", "paid", "uncollectible", "void"]}


def _stripe_error(status: int, message: str, kind: str = "invalid_request_error",
                  **extra: Any) -> Reply:
    return Reply(status, {"error": {"type": kind, "message": message, **extra}})


class _Stripe(_Handler):
    family = "stripe"
    routes = _routes(*[("GET", f"/v1/{kind}", rf"/v1/(?P<kind>{kind})", "list_objects", "")
                       for kind in _STRIPE])

    def authenticate(self) -> Reply | None:
        key = self.bearer()
        if key == STRIPE_KEY:
            return None
        return _stripe_error(401, f"Invalid API Key provided: {key[:4]}{'*' * (len(key) - 8)}"
                                  f"{key[-4:]}" if key else "You did not provide an API key. You "
                             "need to provide your API key in the Authorization header, using "
                             "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")

    def error(self, status: int, code: str, message: str) -> Reply:
        return _stripe_error(status, message, code=code)

    def extra_headers(self, reply: Reply) -> dict[str, str]:
        return {"Request-Id": "req_" + secrets.token_hex(7)}

    def fault(self, kind: str) -> Reply:
        if kind == "429":
            return _stripe_error(429, "Request rate limit exceeded. You can learn more about rate "
                                      "limits here https://stripe.com/docs/rate-limits.",
                                 code="rate_limit")
        return _stripe_error(self.sb.pick([500, 502, 503]), "Sandbox fault: an error occurred "
                             "with our connection to Stripe.", "api_error")

    def not_found(self, method: str, path: str) -> Reply:
        return _stripe_error(404, f"Unrecognized request URL ({method}: {path}).")

    def list_objects(self, kind: str) -> Reply:
        """Newest first; limit, starting_after/ending_before, created[gt|gte|lt|lte],
        customer=, status= (subscriptions, invoices), types[]=/type= (events)."""
        try:
            limit = int(self.arg("limit") or 10)
            bounds = {op: int(v) for op in ("gt", "gte", "lt", "lte")
                      if (v := self.arg(f"created[{op}]")) is not None}
        except ValueError as e:
            return _stripe_error(400, f"Invalid integer: {e}", code="parameter_invalid_integer")
        status, allowed = self.arg("status"), _STATUSES.get(kind)
        if not 1 <= limit <= 100 or status and allowed and status not in allowed:
            param = "limit" if not 1 <= limit <= 100 else "status"
            return _stripe_error(400, f"Invalid {param}: {self.arg(param)}", param=param)
        types = [v for k, vs in self.params.items() if re.fullmatch(r"types(\[\d*\])?|type", k)
                 for v in vs]
        rows, keys = self.sb.stripe_view(kind, status if allowed else None, self.arg("customer"),
                                        types)
        lo, hi = 0, len(rows)  # rows are oldest first, keys (created, id)
        lo = max([lo, *(bisect_left(keys, (bounds[op] + (op == "gt"),)) for op in ("gte", "gt")
                        if op in bounds)])
        hi = min([hi, *(bisect_left(keys, (bounds[op] + (op == "lte"),)) for op in ("lte", "lt")
                        if op in bounds)])
        after, before = self.arg("starting_after"), self.arg("ending_before")
        for param, oid in (("starting_after", after), ("ending_before", before)):
            if not oid:
                continue
            obj = next((e for e in self.ds.stripe_events if e["id"] == oid), None) \
                if kind == "events" else getattr(self.ds, f"stripe_{kind}").get(oid)
            if obj is None:
                return _stripe_error(400, f"No such {_STRIPE[kind]}: '{oid}'",
                                     code="resource_missing", param=param)
            if param == "starting_after":  # older than it
                hi = min(hi, bisect_left(keys, (obj["created"], obj["id"])))
            else:
                lo = max(lo, bisect_right(keys, (obj["created"], obj["id"])))
        if before and not after:  # the page just newer than ending_before
            start, end, has_more = lo, min(hi, lo + limit), lo + limit < hi
        else:
            start, end, has_more = max(lo, hi - limit), hi, hi - limit > lo
        data = rows[start:end][::-1]
        return Reply(200, {"object": "list", "data": data, "has_more": has_more,
                           "url": f"/v1/{kind}"}, served=len(data))


# ----------------------------------------------------------------------------- Zendesk

def _zd_cursor(key: tuple[int, int]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def _zd_position(cursor: str) -> tuple[int, int] | None:
    try:
        ts, oid = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        return int(ts), int(oid)
    except ValueError:
        return None


def _zd_invalid(description: str) -> Reply:
    return Reply(400, {"error": "InvalidValue", "description": description})


class _Zendesk(_Handler):
    family = "zendesk"
    routes = _routes(
        ("GET", "/api/v2/incremental/tickets/cursor.json",
         r"/api/v2/incremental/tickets/cursor\.json", "ticket_export", ""),
        ("GET", "/api/v2/incremental/organizations.json",
         r"/api/v2/incremental/organizations\.json", "organization_export", ""),
        ("GET", "/api/v2/satisfaction_ratings.json", r"/api/v2/satisfaction_ratings\.json",
         "satisfaction_ratings", ""),
        ("GET", "/api/v2/users/me.json", r"/api/v2/users/me\.json", "me", ""),
    )

    def authenticate(self) -> Reply | None:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        try:
            user = base64.b64decode(token, validate=True).decode() if scheme == "Basic" else ""
        except ValueError:
            user = ""
        if user == f"{USERNAME}/token:{ZENDESK_TOKEN}":
            return None
        return Reply(401, {"error": "Couldn't authenticate you"})

    def error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, {"error": code, "description": message})

    def me(self) -> Reply:
        """The authenticated user (the credential check)."""
        return Reply(200, {"user": {"id": 9_000_001, "url": f"{self.sb.urls['zendesk']}/api/v2/users/9000001.json",
                                    "name": "healthsync integration", "email": USERNAME, "role": "admin",
                                    "active": True, "verified": True}})

    def fault(self, kind: str) -> Reply:
        if kind == "5xx":
            return Reply(self.sb.pick([500, 502, 503]), {
                "error": "ServiceUnavailable", "description": "Sandbox fault: please try again"})
        headers = {"Retry-After": self.sb.pick(["0", "1"])}
        if self.sb.pick([True, False]):  # Zendesk's 429 body is not always JSON
            return Reply(429, "Too Many Requests", headers)
        return Reply(429, {"error": "APIRateLimitExceeded", "description":
                           "Number of allowed API requests per minute exceeded"}, headers)

    def not_found(self, method: str, path: str) -> Reply:
        return Reply(404, {"error": "InvalidEndpoint", "description": "Not found"})

    def start_time(self) -> int | Reply:
        try:
            start = int(self.arg("start_time") or "")
        except ValueError:
            return _zd_invalid("start_time is required, in unix seconds")
        if start > time.time():
            return _zd_invalid("Start time can not be in the future")
        if start > time.time() - 60:
            return _zd_invalid("Start time must be more than one minute ago")
        return start

    def per_page(self, most: int, name: str = "per_page") -> int:
        value = self.arg(name) or ""
        return min(most, max(1, int(value))) if value.isdigit() else most

    def ticket_export(self) -> Reply:
        """Cursor-based incremental export: a cursor is a (generated_timestamp, id) position,
        so a saved after_cursor later returns the tickets changed since."""
        rows, keys = self.sb.zendesk_view("tickets")
        cursor = self.arg("cursor")
        if cursor is not None:
            position = _zd_position(cursor)
            if position is None:
                return _zd_invalid("Invalid cursor")
        else:
            start = self.start_time()
            if isinstance(start, Reply):
                return start
            position = (start, -1)
        lo = bisect_right(keys, position)
        page = rows[lo:lo + self.per_page(1000)]
        url = f"{self.sb.urls['zendesk']}/api/v2/incremental/tickets/cursor.json?cursor="
        after = _zd_cursor(keys[lo + len(page) - 1] if page else position)
        before = _zd_cursor((keys[lo][0], keys[lo][1] - 1)) if page else None
        return Reply(200, {"tickets": page, "after_url": url + after, "after_cursor": after,
                           "before_url": before and url + before, "before_cursor": before,
                           "end_of_stream": lo + len(page) >= len(rows)}, served=len(page))

    def organization_export(self) -> Reply:
        """Time-based export: start_time inclusive, so page edges repeat (as in Zendesk)."""
        start = self.start_time()
        if isinstance(start, Reply):
            return start
        rows, keys = self.sb.zendesk_view("organizations")
        lo, size = bisect_left(keys, (start,)), self.per_page(1000)
        page = rows[lo:lo + size]
        end = keys[lo + len(page) - 1][0] if page else start
        return Reply(200, {"organizations": page, "next_page": f"{self.sb.urls['zendesk']}/api/"
                           f"v2/incremental/organizations.json?start_time={end}", "end_time": end,
                           "count": len(page), "end_of_stream": len(page) < size},
                     served=len(page))

    def satisfaction_ratings(self) -> Reply:
        ratings, ids = self.sb.zendesk_view("ratings")
        after = self.arg("page[after]")
        position = _zd_position(after) if after else (0, 0)
        since, until = self.arg("start_time") or "0", self.arg("end_time") or str(2**62)
        if position is None or not (since.isdigit() and until.isdigit()):
            return _zd_invalid("Invalid page[after], start_time or end_time")
        size, page, i = self.per_page(100, "page[size]"), [], bisect_right(ids, position[1])
        while i < len(ratings) and len(page) <= size:  # one extra tells whether there is more
            if int(since) <= ratings[i]["_ts"] <= int(until):
                page.append({k: v for k, v in ratings[i].items() if k != "_ts"})
            i += 1
        more, page = len(page) > size, page[:size]
        cursor = _zd_cursor((0, page[-1]["id"])) if page else after
        query = [(k, v[0]) for k, v in self.params.items() if k != "page[after]"]
        link = f"{self.sb.urls['zendesk']}/api/v2/satisfaction_ratings.json?" + urlencode(
            [*query, ("page[after]", cursor or "")])
        return Reply(200, {"satisfaction_ratings": page, "meta": {
            "has_more": more, "after_cursor": cursor, "before_cursor": None},
            "links": {"next": link if more else None, "prev": None}}, served=len(page))


# ----------------------------------------------------------------------------- webhooks

class _Hooks(_Handler):
    """Webhook receiver for alerts: POST /hooks/<name> records JSON bodies (Sandbox.hooks)."""

    family = "hooks"
    routes = _routes(("POST", "/hooks/{name}", r"/hooks/(?P<name>[\w-]+)", "receive", "open"))

    def fault(self, kind: str) -> Reply:
        return Reply(503 if kind == "429" else 500, "internal error (sandbox fault)")

    def not_found(self, method: str, path: str) -> Reply:
        return Reply(404, "no_service")

    def receive(self, name: str) -> Reply:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "x-healthsync-delivery")}
        return Reply(*self.sb.hook_inbox.receive(name, self.body, headers))


# ----------------------------------------------------------------------------- the sandbox

_FAMILIES: dict[str, type[_Handler]] = {"salesforce": _Salesforce, "hubspot": _HubSpot,
                                        "stripe": _Stripe, "zendesk": _Zendesk, "hooks": _Hooks}


class Sandbox:
    """The four API servers around one Dataset; `with Sandbox(ds) as sb:` starts and stops.

    hubspot_outputs=False: an account where healthsync's HubSpot output properties and their
    "healthsync" group were never created (the companies' values for them are dropped).
    salesforce_missing: Account fields this org lacks (absent from describe, SOQL and writes);
    salesforce_types: field -> describe type overrides (writes are checked against them);
    salesforce_lengths: text field -> length overrides (a longer value fails STRING_TOO_LONG)."""

    def __init__(self, dataset: Dataset, faults: Faults | None = None,
                 daily_api_limit: int = 100_000, hubspot_search_cap: int = 10_000,
                 hubspot_outputs: bool = True, salesforce_missing: tuple[str, ...] = (),
                 salesforce_types: dict[str, str] | None = None,
                 salesforce_lengths: dict[str, int] | None = None) -> None:
        known = {f[0].lower() for f in SF_FIELDS}
        types = {k.lower(): v for k, v in (salesforce_types or {}).items()}
        lengths = {k.lower(): v for k, v in (salesforce_lengths or {}).items()}
        missing = {n.lower() for n in salesforce_missing}
        if unknown := [n for n in (*salesforce_missing, *(salesforce_types or {}),
                                   *(salesforce_lengths or {})) if n.lower() not in known]:
            raise ValueError(f"not Account fields: {', '.join(unknown)}")
        self.sf_fields: dict[str, FieldSpec] = {}  # lowercase name -> spec, in describe order
        for name, kind, label, writable, length in SF_FIELDS:
            if name.lower() not in missing:
                kind = types.get(name.lower(), kind)
                length = lengths.get(name.lower(), length or 255)
                self.sf_fields[name.lower()] = (name, kind, label, writable, length
                                                if kind in (*_TEXT, "id", "reference") else 0)
        self.hs_groups, self.hs_properties = _hs_tables(hubspot_outputs)
        if not hubspot_outputs:
            for company in dataset.hs_companies.values():
                for name in HS_OUTPUTS:
                    company["properties"].pop(name, None)
        self.bulk_jobs: dict[str, BulkJob] = {}
        self.hook_inbox = HookInbox()  # alert webhooks received, and failures set up (fail_hook)
        self.bulk_batches, self._bulk_count = 0, 0
        self.dataset, self.faults = dataset, faults or Faults()
        self.daily_api_limit, self.hubspot_search_cap = daily_api_limit, hubspot_search_cap
        self.lock = threading.RLock()  # every handler runs under it: requests see whole states
        self.calls: Counter[tuple[str, str]] = Counter()
        self.served: Counter[str] = Counter()
        self.faulted: Counter[tuple[str, str]] = Counter()
        self.urls: dict[str, str] = {}
        self.ca_file = ""
        self.sessions: set[str] = set()
        self.sf_usage = 0
        self.cursors: OrderedDict[str, Record] = OrderedDict()
        self._cursor_count, self._sf_ok, self._expired = 0, 0, False
        self._fault_source: Faults | None = None
        self._rng = random.Random(0)
        self._writes: Counter[str] = Counter()
        self._cache: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
        self._hs_recent: deque[float] = deque()
        self._hs_total = 0
        self._servers: list[tuple[_Server, threading.Thread]] = []
        self._tmp = ""
        self.refusals: dict[tuple[str, str], list[Any]] = {}  # (family, route) -> [status, code, message, times]

    def start(self) -> Sandbox:
        if self._servers:
            return self
        self._tmp = tempfile.mkdtemp(prefix="healthsync-sandbox-")
        ca = trustme.CA()
        self.ca_file, cert_file = (os.path.join(self._tmp, n) for n in ("ca.pem", "server.pem"))
        ca.cert_pem.write_to_path(self.ca_file)
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            cert_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file)
        for family, handler in _FAMILIES.items():
            server = _Server(self, handler)
            if family == "salesforce":
                server.socket = context.wrap_socket(server.socket, server_side=True,
                                                    do_handshake_on_connect=False)
            scheme = "https" if family == "salesforce" else "http"
            self.urls[family] = f"{scheme}://127.0.0.1:{server.server_address[1]}"
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"sandbox-{family}", daemon=True)
            thread.start()
            self._servers.append((server, thread))
        return self

    def stop(self) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.close_connections()  # idle keep-alive connections: their threads end
            server.server_close()  # and are joined here
            thread.join(timeout=5)
        self._servers.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The environment variables a client needs to talk to this sandbox."""
        return {"SALESFORCE_LOGIN_URL": self.urls["salesforce"], "SALESFORCE_DOMAIN": "login",
                "SALESFORCE_USERNAME": USERNAME, "SALESFORCE_PASSWORD": PASSWORD,
                "SALESFORCE_SECURITY_TOKEN": SECURITY_TOKEN, "HEALTHSYNC_CA_BUNDLE": self.ca_file,
                "HUBSPOT_ACCESS_TOKEN": HUBSPOT_TOKEN, "HUBSPOT_BASE_URL": self.urls["hubspot"],
                "STRIPE_API_KEY": STRIPE_KEY, "STRIPE_API_BASE": self.urls["stripe"],
                "ZENDESK_URL": self.urls["zendesk"], "ZENDESK_EMAIL": USERNAME,
                "ZENDESK_API_TOKEN": ZENDESK_TOKEN,
                "HEALTHSYNC_SLACK_WEBHOOK": f"{self.urls['hooks']}/hooks/slack",
                "HEALTHSYNC_ALERT_WEBHOOK": f"{self.urls['hooks']}/hooks/alerts"}

    @property
    def hooks(self) -> dict[str, list[Record]]:
        """Webhook name -> the messages received ({"body", "headers"}), in order."""
        return self.hook_inbox.received

    def refuse(self, family: str, route: str, status: int, code: str, message: str,
               times: int | None = None) -> None:
        """Answer requests to one route (as Sandbox.calls names it: "POST /composite/sobjects",
        "POST /crm/v3/objects/tasks/batch/create") with a whole-request error in the family's
        format, `times` times or until `allow`; authentication is checked first."""
        with self.lock:
            self.refusals[(family, route)] = [status, code, message, times]

    def allow(self, family: str, route: str) -> None:
        """Stop refusing a route."""
        with self.lock:
            self.refusals.pop((family, route), None)

    def take_refusal(self, family: str, route: str) -> tuple[int, str, str] | None:
        with self.lock:
            due = self.refusals.get((family, route))
            if due is None:
                return None
            if due[3] is not None:
                due[3] -= 1
                if due[3] <= 0:
                    del self.refusals[(family, route)]
            self.faulted[(family, "refused")] += 1
            return due[0], due[1], due[2]

    def fail_hook(self, name: str, times: int, status: int = 500) -> None:
        """Answer the next `times` POSTs to /hooks/<name> with `status` (500: retried; 404: refused)."""
        with self.lock:
            self.hook_inbox.fail(name, times, status)

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.served.clear()
            self.faulted.clear()

    def mutate(self, fraction: float = 0.01, seed: int = 0) -> dict[str, list[str]]:
        """Dataset.mutate under the sandbox lock."""
        with self.lock:
            return self.dataset.mutate(fraction, seed)

    def expire_sessions(self) -> None:
        """Invalidate every Salesforce session issued so far."""
        with self.lock:
            self.sessions.clear()

    # State shared by the handlers.
    def count(self, counter: Counter[Any], key: Any) -> None:
        with self.lock:
            counter[key] += 1

    def _current_faults(self) -> Faults:
        if self.faults is not self._fault_source:  # replaced: start its own random sequence
            self._fault_source, self._rng = self.faults, random.Random(self.faults.seed)
            self._sf_ok, self._expired = 0, False
        return self.faults

    def draw_fault(self, family: str) -> str | None:
        with self.lock:
            f, r = self._current_faults(), self._rng.random()
            kind = "drop" if r < f.rate_drop else "429" if r < f.rate_drop + f.rate_429 else \
                "5xx" if r < f.rate_drop + f.rate_429 + f.rate_5xx else None
            if kind:
                self.faulted[(family, kind)] += 1
            return kind

    def draw_drop_after_write(self, family: str) -> bool:
        with self.lock:
            f = self._current_faults()
            drop = f.drop_after_write > 0 and self._rng.random() < f.drop_after_write
            self.faulted[(family, "drop")] += drop
            return drop

    def pick(self, options: list[Any]) -> Any:
        with self.lock:
            return self._rng.choice(options)

    def sf_request_ok(self) -> None:
        """Count a successful Salesforce data request; expire sessions once after N of them."""
        with self.lock:
            f = self._current_faults()
            if f.expire_session_after is not None and not self._expired:
                self._sf_ok += 1
                if self._sf_ok >= f.expire_session_after:
                    self.sessions.clear()
                    self._expired = True
                    self.faulted[("salesforce", "session")] += 1

    def draw_concurrent(self) -> bool:
        """Faults.rate_concurrent: whether one Salesforce data request hits the concurrency limit."""
        with self.lock:
            f = self._current_faults()
            if f.rate_concurrent <= 0 or self._rng.random() >= f.rate_concurrent:
                return False
            self.faulted[("salesforce", "concurrent")] += 1
            return True

    def draw_lock(self) -> bool:
        """Faults.rate_lock: whether one Salesforce record update fails UNABLE_TO_LOCK_ROW."""
        with self.lock:
            f = self._current_faults()
            if f.rate_lock <= 0 or self._rng.random() >= f.rate_lock:
                return False
            self.faulted[("salesforce", "lock")] += 1
            return True

    def new_bulk_id(self) -> str:
        with self.lock:
            self._bulk_count += 1
            return sf_id("750", self._bulk_count)

    def new_session(self) -> str:
        with self.lock:
            self.sessions.add(sid := f"{ORG_ID}!AQ{secrets.token_hex(24)}")
            return sid

    def new_cursor(self, cursor: Record) -> str:
        with self.lock:
            self._cursor_count += 1
            self.cursors[locator := f"01gSANDBOX{self._cursor_count}"] = cursor
            while len(self.cursors) > 50:
                self.cursors.popitem(last=False)
            return locator

    def hubspot_rate(self) -> tuple[int, int]:
        """(HubSpot requests in the last 10 s, in total), this one included."""
        with self.lock:
            now = time.monotonic()
            self._hs_recent.append(now)
            while self._hs_recent[0] < now - 10:
                self._hs_recent.popleft()
            self._hs_total += 1
            return len(self._hs_recent), self._hs_total

    def changed(self, family: str) -> None:
        with self.lock:
            self._writes[family] += 1

    def cached(self, family: str, key: Any, build: Callable[[], Any]) -> Any:
        """build(), memoised until the dataset is mutated or the family written to."""
        with self.lock:
            stamp = (self.dataset.version, self._writes[family])
            hit = self._cache.get((family, key))
            if hit is None or hit[0] != stamp:
                self._cache[(family, key)] = hit = (stamp, build())
                while len(self._cache) > 32:
                    self._cache.popitem(last=False)
            self._cache.move_to_end((family, key))
            return hit[1]

    def hubspot_ids(self, archived: bool) -> list[int]:
        return self.cached("hubspot-ids", archived, lambda: sorted(
            int(k) for k, c in self.dataset.hs_companies.items() if c["archived"] == archived))

    def stripe_view(self, kind: str, status: str | None, customer: str | None,
                    types: list[str]) -> tuple[list[Record], list[tuple[int, str]]]:
        """(objects, their (created, id) keys) oldest first, for one list's filters."""
        if kind == "events":  # only the last 30 days, as Stripe keeps them
            rows = sorted((e for e in self.dataset.stripe_events if e["created"] >= time.time()
                           - 30 * 86_400 and (not types or any(e["type"] == t or t.endswith("*")
                                              and e["type"].startswith(t[:-1]) for t in types))),
                          key=lambda e: (e["created"], e["id"]))
            return rows, [(e["created"], e["id"]) for e in rows]

        def build() -> tuple[list[Record], list[tuple[int, str]], dict[str, list[Record]]]:
            rows = getattr(self.dataset, f"stripe_{kind}").values()
            if kind == "subscriptions" and status in (None, "ended"):  # default: not canceled
                ended = ("canceled", "incomplete_expired")
                rows = [o for o in rows if (o["status"] in ended) == (status == "ended")]
            elif status not in (None, "all"):
                rows = [o for o in rows if o["status"] == status]
            rows = sorted(rows, key=lambda o: (o["created"], o["id"]))
            by_customer: dict[str, list[Record]] = {}
            for o in rows:
                by_customer.setdefault(o.get("customer") or "", []).append(o)
            return rows, [(o["created"], o["id"]) for o in rows], by_customer
        rows, keys, by_customer = self.cached("stripe", (kind, status), build)
        if customer is not None:
            rows = by_customer.get(customer, [])
            keys = [(o["created"], o["id"]) for o in rows]
        return rows, keys

    def zendesk_view(self, kind: str) -> tuple[list[Record], list[Any]]:
        """Tickets by (generated_timestamp, id), organizations by (updated_at, id), ratings by
        id (each carrying its time as "_ts"): (rows, sort keys)."""
        ds = self.dataset

        def build() -> tuple[list[Record], list[Any]]:
            if kind == "tickets":
                rows = sorted(ds.zd_tickets.values(), key=lambda t: (t["generated_timestamp"],
                                                                     t["id"]))
                return rows, [(t["generated_timestamp"], t["id"]) for t in rows]
            if kind == "organizations":
                keyed = sorted((int(datetime.fromisoformat(o["updated_at"]).timestamp()),
                                o["id"], o) for o in ds.zd_organizations.values())
                return [o for *_, o in keyed], [(ts, oid) for ts, oid, _ in keyed]
            ratings = sorted(({"url": f"{t['url'].split('/tickets/')[0]}/satisfaction_ratings/"
                                      f"{r['id']}.json", "id": r["id"], "score": r["score"],
                               "ticket_id": t["id"], "organization_id": t["organization_id"],
                               "comment": r.get("comment"), "created_at": t["updated_at"],
                               "updated_at": t["updated_at"], "_ts": t["generated_timestamp"]}
                              for t in ds.zd_tickets.values() if t["status"] != "deleted"
                              and (r := t["satisfaction_rating"])["score"] in ("good", "bad")),
                             key=lambda r: r["id"])
            return ratings, [r["id"] for r in ratings]
        return self.cached("zendesk", kind, build)
