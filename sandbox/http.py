"""What every emulated API shares: a threaded HTTP/1.1 server on 127.0.0.1 (TLS through a
throwaway trustme CA for Salesforce), and the handler base that routes a request, counts it in
Sandbox.calls, draws the injected faults (Faults), checks auth and refusals, and encodes the reply.

Each API family (salesforce.py, hubspot.py, stripe.py, zendesk.py, hooks.py) subclasses
Handler with its route table and its error, fault and not-found formats.
"""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import ssl
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import trustme

if TYPE_CHECKING:
    from .dataset import Dataset
    from .server import Sandbox


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


# The comparisons of SOQL's WHERE and HubSpot's search filters.
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


Route = tuple[str, str, re.Pattern[str], str, str]


def route_table(*rows: tuple[str, str, str, str, str]) -> list[Route]:
    """Rows of (method, template counted in Sandbox.calls, path regex, handler method, flags);
    flags: "login" (no faults, no auth), "open" (no auth) or "write" (may drop after writing)."""
    return [(m, t, re.compile(p + "/?"), h, f) for m, t, p, h, f in rows]


def hang_up(conn: socket.socket) -> None:
    try:
        socket.socket.shutdown(conn, socket.SHUT_RDWR)  # for TLS too: no close_notify
    except OSError:
        pass


def tls_context(directory: str) -> tuple[str, ssl.SSLContext]:
    """A throwaway CA (trustme) and a server context for 127.0.0.1 / localhost signed by it:
    (the CA's PEM file, written in `directory`, which clients trust; the context)."""
    ca = trustme.CA()
    ca_file, cert_file = (os.path.join(directory, n) for n in ("ca.pem", "server.pem"))
    ca.cert_pem.write_to_path(ca_file)
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        cert_file)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file)
    return ca_file, context


class Server(ThreadingHTTPServer):
    """One family's server; tracks open connections so that stop() can close idle ones."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, sandbox: Sandbox, handler: type[Handler]) -> None:
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
                hang_up(conn)

    def close_connections(self) -> None:
        with self.sandbox.lock:
            self.stopping = True
            for conn in self.connections:
                hang_up(conn)


class Handler(BaseHTTPRequestHandler):
    """Shared plumbing: routing, counting, faults, auth and JSON replies over HTTP/1.1."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    wbufsize = 1 << 16  # headers and body leave in one write: no Nagle/delayed-ACK stalls
    disable_nagle_algorithm = True
    family = ""
    routes: list[Route] = []
    server: Server
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
        hang_up(self.connection)

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
