"""The sandbox: local emulators of the Salesforce, HubSpot, Stripe and Zendesk REST APIs, over real HTTP.

`Sandbox(dataset)` runs four ThreadingHTTPServers on 127.0.0.1 (Salesforce behind TLS signed by
a throwaway trustme CA) serving a Dataset in each API's wire format, with optional fault
injection (`Faults`; `Sandbox.refuse` makes one route answer a whole-request error, as a CRM
does to a user without a permission), and a fifth that receives alert webhooks. `Sandbox` holds
the state the handlers share (sessions, cursors, bulk jobs, counts, the fault draws); each API
family is one handler class with its route table in its own module (salesforce.py, hubspot.py,
stripe.py, zendesk.py, hooks.py) on http.py's server and handler base; what alerts create is
checked in activities.py.
"""

from __future__ import annotations

import random
import secrets
import shutil
import tempfile
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .activities import HookInbox
from .credentials import (
    HUBSPOT_TOKEN,
    ORG_ID,
    PASSWORD,
    SECURITY_TOKEN,
    STRIPE_KEY,
    USERNAME,
    ZENDESK_TOKEN,
)
from .dataset import HS_OUTPUTS, Dataset, Record, sf_id
from .hooks import Hooks
from .http import Handler, Server, tls_context
from .hubspot import HubSpot, hs_tables
from .salesforce import BulkJob, Salesforce, org_fields
from .stripe import Stripe
from .usage import usage_rows, write_duckdb
from .zendesk import Zendesk

_Salesforce = Salesforce  # the name tests patch (e.g. _Salesforce.update)


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


_FAMILIES: dict[str, type[Handler]] = {"salesforce": Salesforce, "hubspot": HubSpot,
                                        "stripe": Stripe, "zendesk": Zendesk, "hooks": Hooks}


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
        self.sf_fields = org_fields(salesforce_missing, salesforce_types, salesforce_lengths)
        self.hs_groups, self.hs_properties = hs_tables(hubspot_outputs)
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
        self._rngs: dict[str, random.Random] = {}
        self._writes: Counter[str] = Counter()
        self._cache: OrderedDict[Any, tuple[Any, Any]] = OrderedDict()
        self._hs_recent: deque[float] = deque()
        self._hs_total = 0
        self._servers: list[tuple[Server, threading.Thread]] = []
        self._tmp = ""
        self.refusals: dict[tuple[str, str], list[Any]] = {}  # (family, route) -> [status, code, message, times]

    def start(self) -> Sandbox:
        if self._servers:
            return self
        self._tmp = tempfile.mkdtemp(prefix="healthsync-sandbox-")
        self.ca_file, context = tls_context(self._tmp)
        self.usage_db = Path(self._tmp) / "usage.duckdb"  # product usage: the mappings' sources/usage.yaml
        write_duckdb(self.usage_db, usage_rows(self.dataset))
        for family, handler in _FAMILIES.items():
            server = Server(self, handler)
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
                "USAGE_DATABASE_URL": f"duckdb:///{self.usage_db}?access_mode=READ_ONLY",
                "HEALTHSYNC_SLACK_WEBHOOK": f"{self.urls['hooks']}/hooks/slack",
                "HEALTHSYNC_ALERT_WEBHOOK": f"{self.urls['hooks']}/hooks/alerts"}

    def unpaced_env(self) -> dict[str, str]:
        """`env()` without the export pacing a real Zendesk needs (the sandbox answers at once):
        what `demo` and `sandbox` run with."""
        return {**self.env(), "ZENDESK_EXPORT_PER_MINUTE": "0"}

    def describe(self) -> str:
        """One line: each emulated API and its address."""
        return ", ".join(f"{family} {url}" for family, url in self.urls.items() if family != "hooks")

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
        if self.faults is not self._fault_source:  # replaced: start its own random sequences
            self._fault_source, self._rngs = self.faults, {}
            self._sf_ok, self._expired = 0, False
        return self.faults

    def _rng(self, family: str) -> random.Random:
        """One random sequence per API family: faults land on the same requests whether the
        systems are pulled one after another or at once."""
        self._current_faults()
        if family not in self._rngs:
            self._rngs[family] = random.Random(f"{self.faults.seed}:{family}")
        return self._rngs[family]

    def draw_fault(self, family: str) -> str | None:
        with self.lock:
            f, r = self._current_faults(), self._rng(family).random()
            kind = "drop" if r < f.rate_drop else "429" if r < f.rate_drop + f.rate_429 else \
                "5xx" if r < f.rate_drop + f.rate_429 + f.rate_5xx else None
            if kind:
                self.faulted[(family, kind)] += 1
            return kind

    def draw_drop_after_write(self, family: str) -> bool:
        with self.lock:
            f = self._current_faults()
            drop = f.drop_after_write > 0 and self._rng(family).random() < f.drop_after_write
            self.faulted[(family, "drop")] += drop
            return drop

    def pick(self, options: list[Any], family: str = "any") -> Any:
        with self.lock:
            return self._rng(family).choice(options)

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
        return self._draw("rate_concurrent", "concurrent")

    def draw_lock(self) -> bool:
        """Faults.rate_lock: whether one Salesforce record update fails UNABLE_TO_LOCK_ROW."""
        return self._draw("rate_lock", "lock")

    def _draw(self, rate: str, fault: str) -> bool:
        """One draw of a Salesforce fault with the probability `Faults.<rate>`, counted when it hits."""
        with self.lock:
            probability = getattr(self._current_faults(), rate)
            if probability <= 0 or self._rng("salesforce").random() >= probability:
                return False
            self.faulted[("salesforce", fault)] += 1
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
