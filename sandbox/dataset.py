"""A deterministic, deliberately messy dataset in the native JSON shapes of the Salesforce,
HubSpot, Stripe and Zendesk APIs, served by the local API sandbox (server.py).

Same arguments, same data. A hidden per-account "health" (0..1) makes the systems agree:
healthy accounts use their seats, file few tickets, rate them well and pay on time.

Outcomes (renewal opportunities, cases, HubSpot deals, Stripe cancellation details) follow the
same hidden health: unhealthy accounts lose their renewals. They are drawn in a second pass from
a random stream of their own, so every other record is exactly what it was before they existed.
A few "watermelons" look green (CSM rating 4 or 5) but are red inside: their renewals are lost
at the low-health rate.
"""

from __future__ import annotations

import copy
import gc
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Record = dict[str, Any]
DAY = 86_400.0
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Salesforce Account fields: name, type, label, updateable, length (0 = not a text field).
SF_FIELDS: list[tuple[str, str, str, bool, int]] = [
    ("Id", "id", "Account ID", False, 18),
    ("Name", "string", "Account Name", True, 255),
    ("Website", "url", "Website", True, 255),
    ("OwnerId", "reference", "Owner ID", True, 18),
    ("Customer_Segment__c", "picklist", "Customer Segment", True, 255),
    ("Lifecycle_Stage__c", "picklist", "Lifecycle Stage", True, 255),
    ("CSM_Rating__c", "double", "CSM Rating", True, 0),
    ("Seats_Purchased__c", "double", "Seats Purchased", True, 0),
    ("Active_Users_30d__c", "double", "Active Users (30 days)", True, 0),
    ("NPS__c", "double", "NPS", True, 0),
    ("Renewal_Date__c", "date", "Renewal Date", True, 0),
    ("Stripe_Customer_Id__c", "string", "Stripe Customer Id", True, 255),
    ("IsDeleted", "boolean", "Deleted", False, 0),
    ("CreatedDate", "datetime", "Created Date", False, 0),
    ("LastModifiedDate", "datetime", "Last Modified Date", False, 0),
    ("SystemModstamp", "datetime", "System Modstamp", False, 0),
    ("Health_Score__c", "double", "Health Score", True, 0),
    ("Health_Grade__c", "string", "Health Grade", True, 10),
    ("Health_Status__c", "picklist", "Health Status", True, 255),
    ("Health_Trend__c", "string", "Health Trend", True, 40),
    ("Health_Usage__c", "double", "Health: Usage", True, 0),
    ("Health_Support__c", "double", "Health: Support", True, 0),
    ("Health_Billing__c", "double", "Health: Billing", True, 0),
    ("Health_Relationship__c", "double", "Health: Relationship", True, 0),
    ("Health_Scored_At__c", "datetime", "Health Scored At", True, 0),
    ("Health_Drivers__c", "textarea", "Health Drivers", True, 1000),
    ("Health_Coverage__c", "percent", "Health Coverage", True, 0),
    ("Churn_Risk_Score__c", "double", "Churn Risk Score", True, 0),
    ("Churn_Risk_Status__c", "picklist", "Churn Risk Status", True, 255),
    ("Churn_Risk_Triggers__c", "textarea", "Churn Risk Triggers", True, 1000),
]
SF_OUTPUTS = [f[0] for f in SF_FIELDS if f[0].startswith(("Health_", "Churn_Risk_"))]

# HubSpot company properties: name, type, fieldType, label, read-only value.
HS_PROPERTIES: list[tuple[str, str, str, str, bool]] = [
    ("name", "string", "text", "Name", False),
    ("domain", "string", "text", "Company Domain Name", False),
    ("customer_segment", "enumeration", "select", "Customer segment", False),
    ("csm_rating", "number", "number", "CSM rating", False),
    ("salesforce_account_id", "string", "text", "Salesforce account ID", False),
    ("hubspot_owner_id", "enumeration", "select", "Company owner", False),
    ("hs_object_id", "number", "number", "Record ID", True),
    ("createdate", "datetime", "date", "Create Date", True),
    ("hs_lastmodifieddate", "datetime", "date", "Last Modified Date", True),
    ("health_score", "number", "number", "Health score", False),
    ("health_grade", "string", "text", "Health grade", False),
    ("health_status", "string", "text", "Health status", False),
    ("health_trend", "string", "text", "Health trend", False),
    ("health_usage", "number", "number", "Health: usage", False),
    ("health_support", "number", "number", "Health: support", False),
    ("health_billing", "number", "number", "Health: billing", False),
    ("health_relationship", "number", "number", "Health: relationship", False),
    ("health_drivers", "string", "textarea", "Health drivers", False),
    ("health_coverage", "number", "number", "Health coverage", False),
    ("churn_risk_score", "number", "number", "Churn risk score", False),
    ("churn_risk_status", "string", "text", "Churn risk status", False),
    ("churn_risk_triggers", "string", "textarea", "Churn risk triggers", False),
]
HS_OUTPUTS = [p[0] for p in HS_PROPERTIES if p[0].startswith(("health_", "churn_risk_"))]
# HubSpot owners (GET /crm/v3/owners shape): company owners, assigned by company id
HS_OWNERS = {oid: {"id": oid, "email": f"csm{n}@healthsync.sandbox", "firstName": "CSM", "lastName": str(n),
                   "userId": 9_100_000 + n, "archived": False} for n, oid in enumerate(
    ("71000001", "71000002", "71000003", "71000004"), start=1)}

SEGMENTS = ["SMB", "Mid-Market", "Enterprise"]
STAGES = ["Onboarding", "Adoption", "Maturity", "Renewal"]
SEGMENT_POOL = ["SMB"] * 9 + ["Mid-Market"] * 6 + ["Enterprise"] * 3 + [None] * 2
STAGE_POOL = ["Onboarding", "Adoption", "Adoption", "Maturity", "Maturity", "Renewal", None]
SEATS = {"SMB": (3, 25), "Mid-Market": (25, 200), "Enterprise": (200, 2000), None: (5, 50)}
SEAT_CENTS = {"SMB": 1500, "Mid-Market": 3500, "Enterprise": 6000, None: 2500}  # per month
CURRENCIES = ["usd"] * 15 + ["eur"] * 3 + ["gbp"] * 2
INTERVALS = [("month", 1)] * 12 + [("year", 1)] * 5 + [("month", 3)] * 2 + [("week", 1)]
NAMES = [("Acme", "acme"), ("Globex", "globex"), ("Initech", "initech"), ("Umbrella", "umbrella"),
         ("Hooli", "hooli"), ("Vandelay", "vandelay"), ("Soylent", "soylent"), ("Wonka", "wonka"),
         ("Müller & Söhne", "mueller-soehne"), ("Café Olé", "cafe-ole"),
         ("東京 Data", "tokyo-data"), ("Zürich Systems", "zuerich-systems"),
         ("Ångström Labs", "angstrom-labs"), ("Łódź Logistics", "lodz-logistics"),
         ("São Paulo Têxtil", "sp-textil"), ("Dvořák Audio", "dvorak-audio"),
         ("Øresund Energi", "oresund-energi"), ("Straße & Co", "strasse")]
SUFFIXES = ["", "", "", " Inc.", " GmbH", " Ltd", " S.A.", " 株式会社"]
TLDS = ["com", "com", "com", "io", "de", "co.uk", "fr", "jp"]
WEBSITES = ["https://www.{d}/", "{d}", "HTTP://{D}", "www.{d}", "https://{d}", "http://www.{d}/en/"]
FREE_MAIL = ["gmail.com", "gmail.com", "yahoo.com", "outlook.com"]
SUBJECTS = ["Cannot log in", "Export to CSV fails", "Billing question", "SSO setup",
            "Feature request", "Données manquantes", "API rate limits", "Dashboard is slow",
            "请帮助: sync error", "Invoice address change", "Urgent: outage?",
            "Permissions for new users"]
FAILURES = [("card_declined", "Your card was declined."),
            ("insufficient_funds", "Your card has insufficient funds."),
            ("expired_card", "Your card has expired.")]
ZD_HOST = "https://healthsync-sandbox.zendesk.com"


_DATES: dict[int, str] = {}  # day number -> "YYYY-MM-DDT"
_HMS: list[str] = []  # second of the day -> "HH:MM:SS" (formatting is the build's hot spot)
_MS = [f".{ms:03d}" for ms in range(1000)]


def _day(day: int) -> str:
    if not _HMS:
        _HMS.extend(f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60)
                    for s in range(60))
    return _DATES.setdefault(day, time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400)))


def sf_time(ts: float) -> str:
    """Salesforce datetime: 2026-10-31T12:34:56.000+0000."""
    s, ms = divmod(round(ts * 1000), 1000)
    day, t = divmod(s, 86_400)
    return f"{_DATES.get(day) or _day(day)}{_HMS[t]}{_MS[ms]}+0000"


def hs_time(ts: float) -> str:
    """HubSpot datetime: 2026-10-31T12:34:56.789Z."""
    s, ms = divmod(round(ts * 1000), 1000)
    day, t = divmod(s, 86_400)
    return f"{_DATES.get(day) or _day(day)}{_HMS[t]}{_MS[ms]}Z"


def zd_time(ts: float) -> str:
    """Zendesk datetime: 2026-10-31T12:34:56Z."""
    day, t = divmod(int(ts), 86_400)
    return f"{_DATES.get(day) or _day(day)}{_HMS[t]}Z"


def sf_id(prefix: str, n: int) -> str:
    """An 18-character Salesforce Id: 15 case-sensitive characters + their case checksum.

    The variable part is lowercase hex, so Ids sort in creation order and only the first
    5-character chunk (prefix + "Hs") has capitals for the checksum to encode."""
    head = prefix + "Hs"
    bits = sum(1 << j for j, c in enumerate(head) if c.isupper())
    return f"{head}{n:010x}{'ABCDEFGHIJKLMNOPQRSTUVWXYZ012345'[bits]}AA"


SF_OWNERS = tuple(sf_id("005", n) for n in range(1, 5))  # the CSMs owning accounts, by account number
SF_INACTIVE_USER = sf_id("005", 9)


def _token(rnd: random.Random, n: int = 14) -> str:
    return "".join(rnd.choices(B62, k=n))


SF_STAGES = ("Closed Won", "Closed Lost", "Negotiation/Review", "Prospecting")
HS_STAGES = ("closedwon", "closedlost", "contractsent", "appointmentscheduled")


def _p_lost(h: float) -> float:
    """Chance a renewal is lost at health h: ~0.63 below 0.2, ~0.27 at 0.3-0.45, ~0.04 above 0.6."""
    z = (h - 0.34) / 0.07
    return 0.03 + 0.65 / (1.0 + math.exp(z if z < 50.0 else 50.0))


@dataclass
class Dataset:
    """Every object per API, keyed by id in insertion order, as the API returns it."""

    now: datetime
    sf_accounts: dict[str, Record] = field(default_factory=dict)
    hs_companies: dict[str, Record] = field(default_factory=dict)
    stripe_customers: dict[str, Record] = field(default_factory=dict)
    stripe_subscriptions: dict[str, Record] = field(default_factory=dict)
    stripe_invoices: dict[str, Record] = field(default_factory=dict)
    stripe_charges: dict[str, Record] = field(default_factory=dict)
    zd_organizations: dict[str, Record] = field(default_factory=dict)
    zd_tickets: dict[str, Record] = field(default_factory=dict)
    stripe_events: list[Record] = field(default_factory=list)
    sf_users: dict[str, Record] = field(default_factory=dict)  # Salesforce User id -> {Id, Name, IsActive}
    sf_tasks: dict[str, Record] = field(default_factory=dict)  # created through composite/sobjects
    hs_tasks: dict[str, Record] = field(default_factory=dict)  # created through tasks batch/create
    sf_opportunities: dict[str, Record] = field(default_factory=dict)  # renewals, new business, upgrades
    sf_cases: dict[str, Record] = field(default_factory=dict)
    hs_deals: dict[str, Record] = field(default_factory=dict)  # for linked and HubSpot-only companies
    watermelons: set[str] = field(default_factory=set)  # SF Account ids: rated 4-5, renewals lost
    # the health each account was drawn with: SF Account id, or "hubspot:<company id>" for a
    # HubSpot-only company (watermelons keep theirs here; their outcomes are drawn at <= 0.2)
    hidden_health: dict[str, float] = field(default_factory=dict)
    version: int = field(default=0, compare=False)  # bumped by mutate(); servers cache on it
    clock: float = field(default=0.0, compare=False, repr=False)

    def tick(self) -> float:
        """A whole-second wall-clock time, strictly later than any earlier tick."""
        self.clock = max(float(math.ceil(time.time())), self.clock + 1.0)
        return self.clock

    def mutate(self, fraction: float = 0.01, seed: int = 0) -> dict[str, list[str]]:
        """Change a business field on round(fraction * n) records per system, stamped now, and
        close round(fraction * n) of the open opportunities (returned as "sf_opportunities")."""
        rnd = random.Random(seed)
        t = self.tick()
        changed: dict[str, list[str]] = {"sf_accounts": [], "hs_companies": [], "stripe": [],
                                         "zd_tickets": [], "sf_opportunities": []}

        def pick(records: dict[str, Record], ok: Any) -> list[str]:
            ids = [k for k, r in records.items() if ok(r)]
            return rnd.sample(ids, min(round(fraction * len(records)), len(ids)))

        for aid in pick(self.sf_accounts, lambda r: not r["IsDeleted"]):
            acc = self.sf_accounts[aid]
            acc["CSM_Rating__c"] = float(rnd.choice([r for r in range(1, 6)
                                                     if r != acc["CSM_Rating__c"]]))
            acc["LastModifiedDate"] = acc["SystemModstamp"] = sf_time(t)
            changed["sf_accounts"].append(aid)
        for cid in pick(self.hs_companies, lambda c: not c["archived"]):
            company = self.hs_companies[cid]
            props = company["properties"]
            props["csm_rating"] = str(rnd.choice([r for r in range(1, 6)
                                                  if str(r) != props["csm_rating"]]))
            props["hs_lastmodifieddate"] = company["updatedAt"] = hs_time(t)
            changed["hs_companies"].append(cid)
        subs: dict[str, Record] = {}
        for sub in self.stripe_subscriptions.values():
            if sub["status"] != "canceled":
                subs.setdefault(sub["customer"], sub)
        invoices: dict[str, Record] = {}
        for inv in self.stripe_invoices.values():
            invoices.setdefault(inv["customer"], inv)  # the latest one
        for cus in pick(self.stripe_customers, lambda c: True):
            sub, inv = subs.get(cus), invoices.get(cus)
            if sub is not None:
                item = sub["items"]["data"][0]
                previous = {"items": copy.deepcopy(sub["items"])}
                item["quantity"] = max(1, item["quantity"] + rnd.choice([-3, -1, 1, 2, 5]))
                self._event(rnd, t, "customer.subscription.updated", sub, previous)
            elif inv is not None and inv["status"] in ("open", "draft"):
                previous = {"status": inv["status"]}
                inv["status"], inv["amount_paid"], inv["amount_remaining"] = \
                    "paid", inv["amount_due"], 0
                self._event(rnd, t, "invoice.paid", inv, previous)
            else:
                obj = self.stripe_customers[cus]
                previous = {"email": obj["email"]}
                domain = (obj["email"] or "@example.com").split("@")[1]
                obj["email"] = f"finance+{_token(rnd, 4).lower()}@{domain}"
                self._event(rnd, t, "customer.updated", obj, previous)
            changed["stripe"].append(self.stripe_events[-1]["data"]["object"]["id"])
        for tid in pick(self.zd_tickets, lambda r: r["status"] not in ("deleted", "closed")):
            ticket = self.zd_tickets[tid]
            ticket["status"] = "open" if ticket["status"] == "solved" else rnd.choice(
                [s for s in ("open", "pending", "solved") if s != ticket["status"]])
            ticket["updated_at"], ticket["generated_timestamp"] = zd_time(t), int(t)
            changed["zd_tickets"].append(tid)
        changed["sf_opportunities"] = self._close_opportunities(fraction, seed, t)
        self.version += 1
        return changed

    def _close_opportunities(self, fraction: float, seed: int, t: float) -> list[str]:
        """Close round(fraction * open) open opportunities at t, won or lost by the account's
        health; a random stream of its own, so the other mutations draw what they always drew."""
        rnd = random.Random(f"outcomes-mutate-{seed}")
        open_ids = [k for k, o in self.sf_opportunities.items()
                    if not o["IsClosed"] and not o["IsDeleted"]]
        picked = rnd.sample(open_ids, min(round(fraction * len(open_ids)), len(open_ids)))
        stamp, day = sf_time(t), zd_time(t)[:10]
        for oid in picked:
            opp = self.sf_opportunities[oid]
            h = self.hidden_health.get(opp["AccountId"], 0.5)
            won = rnd.random() >= _p_lost(min(h, 0.125) if opp["AccountId"] in self.watermelons
                                          else h)
            opp.update(StageName="Closed Won" if won else "Closed Lost", IsClosed=True,
                       IsWon=won, CloseDate=day, LastModifiedDate=stamp, SystemModstamp=stamp)
        return picked

    def _event(self, rnd: random.Random, t: float, kind: str, obj: Record,
               previous: Record) -> None:
        self.stripe_events.append({
            "id": f"evt_{len(self.stripe_events) + 1:08x}{_token(rnd, 16)}", "object": "event",
            "api_version": "2024-06-20", "created": int(t), "livemode": False,
            "pending_webhooks": 0, "request": {"id": None, "idempotency_key": None}, "type": kind,
            "data": {"object": copy.deepcopy(obj), "previous_attributes": previous}})


def build_dataset(accounts: int = 2000, seed: int = 7, now: datetime | None = None) -> Dataset:
    """Build the dataset; pass `now` for data that is identical run after run."""
    now = now or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    collecting = gc.isenabled()
    gc.disable()  # a million fresh dicts: cyclic GC passes would only slow the build down
    try:
        return _Builder(seed, now).build(accounts)
    finally:
        if collecting:
            gc.enable()


class _Random(random.Random):
    """random.Random with cheaper choice/randint (the build makes millions of draws)."""

    def choice(self, seq: Any) -> Any:
        return seq[int(self.random() * len(seq))]

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))


class _Builder:
    """Generates every system's records account by account, so they share a hidden health."""

    def __init__(self, seed: int, now: datetime) -> None:
        self.seed = seed
        self.rnd = _Random(seed)
        self.company_account: dict[str, str] = {}  # HubSpot company id -> its SF Account id
        self.customer_health: dict[str, float] = {}  # Stripe customer id -> hidden health
        self.now = now.timestamp()
        self.ds = Dataset(now=now, clock=float(math.ceil(self.now)))
        self.hs_next = 18_000_000_001
        self.org_next = 360_000_100_001
        self.ticket_next = 1001
        self.prices: dict[tuple[str, str, int, int], Record] = {}
        self.salt, self.seq = self.rnd.getrandbits(56), 0

    def ident(self, prefix: str) -> str:
        """A unique, random-looking id (a bijective hash of a counter, so no collisions)."""
        self.seq += 1
        return f"{prefix}{(self.seq * 0x9E3779B97F4A7C15 ^ self.salt) & 0xFFFFFFFFFFFFFF:014x}"

    def when(self) -> tuple[float, float]:
        """(created, modified): created within 400 days, modified before now - 1 day."""
        created = self.now - self.rnd.uniform(2 * DAY, 400 * DAY)
        return created, created + self.rnd.random() * (self.now - DAY - 1 - created)

    def build(self, n: int) -> Dataset:
        rnd = self.rnd
        sf_run = range(n // 3, n // 3 + min(200, n // 10))  # a bulk data load: one modstamp
        hs_run = range(n // 4, n // 4 + min(500, n // 5))  # a bulk import: one lastmodified
        cus_run = range(n // 2, n // 2 + min(150, n // 10))  # a billing migration: one created
        domain = ""
        self.users()
        for i in range(n):
            health = rnd.random()
            base, stem = NAMES[i % len(NAMES)]
            k = i // len(NAMES) + 1
            name = f"{base} {k}{rnd.choice(SUFFIXES)}"
            if rnd.random() < 0.02:
                name = f" {name.upper()} " if rnd.random() < 0.5 else name + "  "
            if i % 97 != 50:  # otherwise: the previous account's domain, a matching conflict
                domain = f"{stem}{k}.{rnd.choice(TLDS)}"
            acc = self.account(i, name, domain, health, i in sf_run)
            self.ds.hidden_health[acc["Id"]] = health
            seats = int(acc["Seats_Purchased__c"])
            hid = self.company(name, domain, acc, health, i in hs_run) if rnd.random() < 0.6 \
                else None
            if rnd.random() < 0.1:
                self.company(f"{base} Partners {k}", f"{stem}-partners{k}.net", None,
                             rnd.random(), False)
            if rnd.random() < 0.85:
                cus = self.customer(name, domain, acc, health, seats, i in cus_run, hid)
                if rnd.random() < 0.7:
                    acc["Stripe_Customer_Id__c"] = cus
            if rnd.random() < 0.05:
                self.customer(f"{base} Direct {k}", f"{stem}-direct{k}.com", None, rnd.random(),
                              rnd.randint(1, 20), False, None)
            if rnd.random() < 0.8:
                self.organization(name, domain, acc, health)
            if rnd.random() < 0.05:
                self.organization(f"{base} Support {k}", f"{stem}-support{k}.org", None,
                                  rnd.random())
        self.bulk_close()
        _Outcomes(self).build()
        return self.ds

    def account(self, i: int, name: str, domain: str, h: float, in_run: bool) -> Record:
        rnd = self.rnd
        segment = rnd.choice(SEGMENT_POOL)
        lo, hi = SEATS[segment]
        seats = 0 if rnd.random() < 0.01 else rnd.randint(lo, hi)
        active: float | None = round(seats * min(1.0, max(0.02, rnd.gauss(0.25 + 0.7 * h, 0.12))))
        if rnd.random() < 0.02:
            active = seats * rnd.randint(2, 4) + 1  # garbage from a broken usage feed
        elif rnd.random() < 0.07:
            active = None
        label, _, tld = domain.partition(".")
        website = None if rnd.random() < 0.05 else rnd.choice(WEBSITES).format(
            d=domain, D=label.capitalize() + "." + tld.upper())
        created, modified = self.when()
        if in_run:
            modified = self.now - 1.25 * DAY
        csm = None if rnd.random() < 0.15 else float(
            min(5, max(1, round(1 + 4 * h + rnd.gauss(0, 0.8)))))
        nps = None if rnd.random() < 0.3 else float(
            min(100, max(-100, round(rnd.gauss(-40 + 90 * h, 15)))))
        renewal = None if rnd.random() < 0.1 else \
            zd_time(self.now + rnd.uniform(-20, 365) * DAY)[:10]
        acc = {"Id": sf_id("001", i + 1), "Name": name, "Website": website,
               "Customer_Segment__c": segment, "Lifecycle_Stage__c": rnd.choice(STAGE_POOL),
               "CSM_Rating__c": csm, "Seats_Purchased__c": float(seats),
               "Active_Users_30d__c": None if active is None else float(active), "NPS__c": nps,
               "Renewal_Date__c": renewal, "Stripe_Customer_Id__c": None,
               "IsDeleted": i % 100 == 37, "CreatedDate": sf_time(created),
               "LastModifiedDate": sf_time(modified), "OwnerId": SF_OWNERS[i % len(SF_OWNERS)]}
        acc["SystemModstamp"] = acc["LastModifiedDate"]
        acc.update(dict.fromkeys(SF_OUTPUTS))
        self.ds.sf_accounts[acc["Id"]] = acc
        return acc

    def users(self) -> None:
        """The org's users: the CSMs who own accounts, and one who left (inactive, owns nothing)."""
        for n, uid in enumerate((*SF_OWNERS, SF_INACTIVE_USER), start=1):
            self.ds.sf_users[uid] = {"Id": uid, "Name": f"CSM {n}", "IsActive": uid != SF_INACTIVE_USER}

    def company(self, name: str, domain: str, acc: Record | None, h: float, in_run: bool) -> str:
        rnd = self.rnd
        hid = str(self.hs_next)
        self.hs_next += rnd.randint(1, 40)
        created, modified = self.when()
        if in_run:
            modified = self.now - 1.5 * DAY
        roll = rnd.random()
        domain = "www." + domain if roll < 0.05 else domain.upper() if roll < 0.08 else domain
        csm = None if rnd.random() < 0.2 else "" if rnd.random() < 0.03 else str(
            min(5, max(1, round(1 + 4 * h + rnd.gauss(0, 1)))))
        props: Record = {
            "name": name.strip(), "domain": None if rnd.random() < 0.04 else domain,
            "customer_segment": acc["Customer_Segment__c"] if acc else rnd.choice(SEGMENT_POOL),
            "csm_rating": csm, "salesforce_account_id": acc["Id"] if acc and roll < 0.5 else None,
            "hs_object_id": hid, "createdate": hs_time(created),
            "hs_lastmodifieddate": hs_time(modified),
            "hubspot_owner_id": None if int(hid) % 5 == 0 else list(HS_OWNERS)[int(hid) % len(HS_OWNERS)]}
        props.update(dict.fromkeys(HS_OUTPUTS))
        company = {"id": hid, "properties": props, "createdAt": props["createdate"],
                   "updatedAt": props["hs_lastmodifieddate"],
                   "archived": len(self.ds.hs_companies) % 100 == 13}
        if company["archived"]:
            company["archivedAt"] = company["updatedAt"]
        self.ds.hs_companies[hid] = company
        if acc is None:
            self.ds.hidden_health[f"hubspot:{hid}"] = h
        else:
            self.company_account[hid] = acc["Id"]
        return hid

    def customer(self, name: str, domain: str, acc: Record | None, h: float, seats: int,
                 in_run: bool, hid: str | None) -> str:
        rnd = self.rnd
        cid = self.ident("cus_")
        created = self.now - 200 * DAY if in_run else self.when()[0]
        roll = rnd.random()
        email = (None if roll < 0.03 else f"{domain.split('.')[0]}.billing@{rnd.choice(FREE_MAIL)}"
                 if roll < 0.11 else f"{rnd.choice(['billing', 'ap', 'finance'])}@{domain}")
        metadata = {}
        if acc and rnd.random() < 0.3:
            metadata["salesforce_account_id"] = acc["Id"]
        if rnd.random() < 0.15 and hid:
            metadata["hubspot_company_id"] = hid
        currency = rnd.choice(CURRENCIES)
        self.ds.stripe_customers[cid] = {
            "id": cid, "object": "customer", "created": int(created), "email": email,
            "name": None if rnd.random() < 0.02 else name.strip(), "description": None,
            "currency": currency, "delinquent": h < 0.2, "livemode": False, "metadata": metadata}
        self.customer_health[cid] = h
        self.billing(cid, created, h, seats, currency,
                     SEAT_CENTS[acc["Customer_Segment__c"] if acc else None])
        return cid

    def price(self, currency: str, interval: str, count: int, cents: int) -> Record:
        key = (currency, interval, count, cents)
        if key not in self.prices:
            amount = cents * count if interval == "month" else cents * 10 if interval == "year" \
                else max(1, cents // 4)
            self.prices[key] = {
                "id": self.ident("price_"),
                "object": "price", "currency": currency, "unit_amount": amount,
                "recurring": {"interval": interval, "interval_count": count}}
        return self.prices[key]

    def subscription(self, cus: str, created: float, status: str, quantity: int,
                     prices: list[Record], canceled_at: float | None = None) -> Record:
        sid = self.ident("sub_")
        items = [{"id": self.ident("si_"), "object": "subscription_item",
                  "quantity": quantity if n == 0 else self.rnd.randint(1, 5), "price": p}
                 for n, p in enumerate(prices)]
        sub = {"id": sid, "object": "subscription", "customer": cus, "status": status,
               "created": int(created), "canceled_at": None if canceled_at is None
               else int(canceled_at), "ended_at": None if canceled_at is None
               else int(canceled_at), "cancel_at_period_end": False,
               "currency": prices[0]["currency"], "metadata": {},
               "items": {"object": "list", "data": items, "has_more": False, "total_count":
                         len(items), "url": f"/v1/subscription_items?subscription={sid}"}}
        self.ds.stripe_subscriptions[sid] = sub
        return sub

    def billing(self, cus: str, created: float, h: float, seats: int, currency: str,
                cents: int) -> None:
        rnd, now = self.rnd, self.now
        interval, count = rnd.choice(INTERVALS)
        plan = [self.price(currency, interval, count, cents)]
        if rnd.random() < 0.2:
            plan.append(self.price(currency, interval, count, 500))  # an add-on
        quantity = 0 if rnd.random() < 0.01 else max(1, seats + (rnd.randint(-3, 3)
                                                                 if rnd.random() < 0.1 else 0))
        start = min(created + rnd.uniform(0, 20) * DAY, now - rnd.uniform(1.5, 3) * DAY)
        if rnd.random() < 0.2 and start < now - 40 * DAY:  # a plan change: old sub canceled
            ended = rnd.uniform(max(start + DAY, now - 200 * DAY), now - 20 * DAY)
            old = [self.price(currency, interval, count, int(cents * rnd.choice([0.6, 1.5])))]
            self.subscription(cus, start, "canceled",
                              max(1, round(quantity * rnd.uniform(0.5, 1.5))), old, ended)
            start = ended + rnd.uniform(0, 3) * DAY
        if h < 0.3:
            status = rnd.choice(["past_due", "unpaid", "canceled", "active", "incomplete",
                                 "past_due", "active"])
        else:
            status = "trialing" if now - start < 14 * DAY else "past_due" \
                if rnd.random() < 0.02 else "active"
        canceled = rnd.uniform(start + 0.5 * DAY, now - DAY) if status == "canceled" else None
        main = self.subscription(cus, start, status, quantity, plan, canceled)
        if h > 0.6 and rnd.random() < 0.08:  # an expansion in the last 80 days
            self.subscription(cus, now - rnd.uniform(2, 80) * DAY, "active",
                              max(1, seats // 5), plan[:1])
        monthly = sum(it["quantity"] * it["price"]["unit_amount"] for it in main["items"]["data"])
        for k in range(rnd.randint(1, 4)):
            at = now - (k * 30 + rnd.uniform(1.5, 4)) * DAY
            if at < created:
                break
            if k == 0:
                status = rnd.choice(["open", "open", "uncollectible", "paid"]) if h < 0.25 else \
                    "draft" if rnd.random() < 0.05 else "open" if rnd.random() < 0.1 else "paid"
            else:
                status = rnd.choice(["paid", "uncollectible", "open"]) if h < 0.2 else \
                    "void" if rnd.random() < 0.02 else "paid"
            self.invoice(cus, main["id"], at, status, monthly, currency, h)

    def invoice(self, cus: str, sub: str, at: float, status: str, amount: int, currency: str,
                h: float) -> None:
        rnd = self.rnd
        iid = self.ident("in_")
        send = rnd.random() < 0.4
        remaining = amount if status in ("draft", "open", "uncollectible") else 0
        self.ds.stripe_invoices[iid] = {
            "id": iid, "object": "invoice", "customer": cus, "subscription": sub,
            "status": status, "collection_method": "send_invoice" if send
            else "charge_automatically", "due_date": int(at + 30 * DAY) if send else None,
            "amount_due": amount, "amount_paid": 0 if status == "void" else amount - remaining,
            "amount_remaining": remaining, "currency": currency, "created": int(at)}
        if status == "paid" and not send:
            self.charge(cus, iid, at + 3600, amount, currency, None)
        if h < 0.35 and status in ("open", "uncollectible") and rnd.random() < 0.7:
            for _ in range(rnd.randint(1, 3)):
                self.charge(cus, iid, self.now - rnd.uniform(1.5, 30) * DAY, amount, currency,
                            rnd.choice(FAILURES))

    def charge(self, cus: str, inv: str, at: float, amount: int, currency: str,
               failure: tuple[str, str] | None) -> None:
        cid = self.ident("ch_")
        self.ds.stripe_charges[cid] = {
            "id": cid, "object": "charge", "customer": cus, "invoice": inv,
            "status": "failed" if failure else "succeeded", "paid": failure is None,
            "amount": amount, "currency": currency, "created": int(at),
            "failure_code": failure and failure[0], "failure_message": failure and failure[1]}

    def organization(self, name: str, domain: str, acc: Record | None, h: float) -> None:
        rnd = self.rnd
        oid = self.org_next
        self.org_next += rnd.randint(1, 9)
        created, modified = self.when()
        roll = rnd.random()
        domains = [] if roll < 0.05 else [domain.upper()] if roll < 0.08 else \
            [domain, domain.split(".")[0] + ".net"] if roll < 0.15 else [domain]
        self.ds.zd_organizations[str(oid)] = {
            "id": oid, "url": f"{ZD_HOST}/api/v2/organizations/{oid}.json",
            "name": name if rnd.random() < 0.9 else name.strip() + " (Support)",
            "external_id": acc["Id"] if acc and rnd.random() < 0.4 else None,
            "domain_names": domains, "details": None, "tags": [],
            "created_at": zd_time(created), "updated_at": zd_time(modified)}
        mean = 1 + 4 * (1 - h)
        for _ in range(min(40, int(rnd.expovariate(1 / mean) + 0.5))):
            self.ticket(None if rnd.random() < 0.03 else oid, h)

    def ticket(self, org: int | None, h: float) -> None:
        rnd = self.rnd
        tid = self.ticket_next
        self.ticket_next += 1
        age = min(400.0, 2 + rnd.expovariate(1 / 60))
        created = self.now - age * DAY
        updated = min(created + rnd.random() * min(age, 25) * DAY, self.now - DAY - 1)
        if age < 20 and rnd.random() < 0.3 + 0.6 * (1 - h):
            status = rnd.choice(["new", "open", "open", "pending", "hold"])
        else:
            status = "closed" if age > 20 and rnd.random() < 0.7 else "solved"
        roll = rnd.random()
        priority = "urgent" if roll < 0.02 + 0.15 * (1 - h) else "high" if roll < 0.3 else \
            "normal" if roll < 0.75 else "low" if roll < 0.9 else None
        rating: Record = {"score": "unoffered"}
        if status in ("solved", "closed") and rnd.random() < 0.7:
            rating = {"score": "offered"} if rnd.random() < 0.3 else {
                "id": 900_000_000 + tid, "score": "good" if rnd.random() < 0.35 + 0.6 * h
                else "bad", "comment": None}
        self.ds.zd_tickets[str(tid)] = {
            "id": tid, "url": f"{ZD_HOST}/api/v2/tickets/{tid}.json", "organization_id": org,
            "status": "deleted" if tid % 200 == 77 else status, "priority": priority,
            "subject": rnd.choice(SUBJECTS), "created_at": zd_time(created),
            "updated_at": zd_time(updated), "generated_timestamp": int(updated),
            "satisfaction_rating": rating}

    def bulk_close(self) -> None:
        """A trigger that closed a batch of old tickets at one moment: one shared timestamp."""
        stamp = self.now - 1.5 * DAY
        tickets = list(self.ds.zd_tickets.values())
        start = len(tickets) // 3
        for ticket in tickets[start:start + min(200, len(tickets) // 10)]:
            if ticket["status"] == "solved":
                ticket["status"] = "closed"
                ticket["updated_at"], ticket["generated_timestamp"] = zd_time(stamp), int(stamp)


Renewal = tuple[int, str, float]  # (close day: days since the epoch, "won" | "lost" | "open", amount)
FEEDBACK_UNHAPPY = ["too_expensive", "too_expensive", "missing_features", "switched_service",
                    "switched_service", "unused", None]
FEEDBACK_OTHER = [None, None, None, "too_expensive", "missing_features", "switched_service",
                  "unused"]
# A renewal opportunity is opened this many days before the renewal date, as CRMs' renewal
# automation does (366 would open one for every upcoming renewal: ~0.4 more opportunities per
# account, some 3 % more build time).
RENEWAL_LEAD_DAYS = 180
_HMS_SF: list[str] = []  # "HH:MM:SS.000+0000" by second of the day, filled on first use
_HMS_HS: list[str] = []  # "HH:MM:SS.000Z"
_OPP_HEAD, _OPP_TAIL = sf_id("006", 0)[:5], sf_id("006", 0)[15:]
_CASE_HEAD, _CASE_TAIL = sf_id("500", 0)[:5], sf_id("500", 0)[15:]
_BIT40 = 1 << 40  # hex(n | _BIT40)[3:] == f"{n:010x}" for n < 16 ** 10


class _Outcomes:
    """The second pass: what became of each account, drawn from the hidden health with a random
    stream of its own, so the main stream and every record built from it stay as they were.

    Close dates are whole days; every created/modified time falls on a day up to today - 2, so
    before now - 1 day like every other record's. Like the first pass, this one is written for
    speed: randint/choice/expovariate are inlined with the same arithmetic as _Random's."""

    def __init__(self, b: _Builder) -> None:
        self.b, self.ds = b, b.ds
        self.today = int(b.now) // 86_400
        self.rnd = _Random(f"outcomes-{b.seed}")
        self.opp_next = self.case_next = 0
        self.deal_next = 24_000_000_001
        self.midnight: dict[str, int] = {}  # "YYYY-MM-DD" -> its day
        for day in range(self.today - 800, self.today + 800):  # every day a record can fall on
            _day(day)
        self.day10 = {day: _DATES[day][:10] for day in range(self.today - 800, self.today + 800)}
        self.year = {day: _DATES[day][:4] for day in self.day10}
        if not _HMS_SF:
            _HMS_SF.extend([t + ".000+0000" for t in _HMS])
            _HMS_HS.extend([t + ".000Z" for t in _HMS])

    def build(self) -> None:
        ds, r, health = self.ds, self.rnd.random, self.ds.hidden_health
        low = self.watermelons()
        # 15 % of the linked companies' sales teams keep their deals in HubSpot (the others
        # work in Salesforce only): those mirror their account's renewals
        mirrored = {hid: aid for hid, aid in self.b.company_account.items() if r() < 0.15}
        keep = set(mirrored.values())
        renewals_of: dict[str, list[Renewal]] = {}
        for aid, acc in ds.sf_accounts.items():
            renewals = self.account(acc, low.get(aid) or health[aid])
            if aid in keep:
                renewals_of[aid] = renewals
        for hid, company in ds.hs_companies.items():
            aid = mirrored.get(hid)
            if aid is not None:
                renewals = renewals_of[aid]
                self.deals(company, low.get(aid) or health[aid], renewals,
                           renewals[-1][2] * 100 if renewals else 100_000.0, True)
            elif hid not in self.b.company_account:  # HubSpot-only: its own contract and dates
                h = health[f"hubspot:{hid}"]
                segment = company["properties"]["customer_segment"]
                lo, hi = SEATS[segment]
                base = (lo + int(r() * (hi - lo + 1))) * SEAT_CENTS[segment] * 12
                self.deals(company, h, self.renewals(None, h, base, False), base, False)
        self.cancellations()

    def watermelons(self) -> dict[str, float]:
        """~6 % of live accounts rated 4-5 whose health is low (or, short of those, middling):
        their outcomes are drawn at a low health, which this returns by account id."""
        ds, rnd, health = self.ds, self.rnd, self.ds.hidden_health
        target = round(0.06 * sum(not a["IsDeleted"] for a in ds.sf_accounts.values()))
        rated = [a["Id"] for a in ds.sf_accounts.values()
                 if not a["IsDeleted"] and (a["CSM_Rating__c"] or 0) >= 4]
        low = sorted((i for i in rated if health[i] < 0.3), key=health.__getitem__)[:target]
        mid = [i for i in rated if 0.3 <= health[i] < 0.6]
        picked = low + rnd.sample(mid, min(len(mid), target - len(low)))
        ds.watermelons = set(picked)
        return {aid: min(health[aid], 0.05 + 0.15 * rnd.random()) for aid in picked}

    def renewals(self, date: str | None, h: float, base: float, sf: bool) -> list[Renewal]:
        """One renewal a year back from the renewal date while within 400 days, oldest first,
        and the upcoming one (open) if it is at most RENEWAL_LEAD_DAYS away; without a renewal
        date, an SF account's past renewals fall on a random anniversary and none is open.
        base: the yearly contract value in cents."""
        r, today = self.rnd.random, self.today
        if date is not None:
            day = self.midnight.get(date)
            if day is None:
                day = self.midnight[date] = int(datetime.fromisoformat(date).replace(
                    tzinfo=UTC).timestamp()) // 86_400
        elif sf:
            day = today - 2 - int(r() * 364)
        else:
            day = today - 20 + int(r() * 386)
        out: list[Renewal] = []
        p_lost = _p_lost(h + 0.17 * (r() - 0.5))  # noise: sd ~0.05
        while day >= today - 400:
            if day < today:
                out.append((day, "lost" if r() < p_lost else "won",
                            int(base * (0.9 + 0.2 * r())) / 100))
            elif day - today < RENEWAL_LEAD_DAYS and (date is not None or not sf):
                out.append((day, "open", int(base * (0.9 + 0.2 * r())) / 100))
            day -= 365
        out.reverse()
        return out

    def extra(self, roll: float, h: float, base: float) -> tuple[bool, int, str, float]:
        """Noise, now and then (roll: a draw): an upgrade (likelier when healthy) or new
        business, as (upgrade?, close day, state, amount), closing within the last 398 days or
        the next 120. The caller skips the call when roll >= 0.04 + 0.06 * h (no extra)."""
        r, today = self.rnd.random, self.today
        upgrade = roll < 0.02 + 0.06 * h
        day = today - 398 + int(r() * 519)
        state = "open" if day >= today else "won" if r() < (
            0.35 + 0.55 * h if upgrade else 0.5) else "lost"
        return upgrade, day, state, int(base * (0.3 if upgrade else 0.8) * (0.3 + r())) / 100

    def account(self, acc: Record, h: float) -> list[Renewal]:
        """An SF account's renewals and any extra deal as Opportunities, and its Cases (both
        deleted with the account); returns the renewals. An opportunity is created 20-120 days
        before its close (or within the last 90 days) and last modified by the close."""
        r, today, day10, dates, hms = self.rnd.random, self.today, self.day10, _DATES, _HMS_SF
        name, aid, deleted = acc["Name"].strip(), acc["Id"], acc["IsDeleted"]
        base = (acc["Seats_Purchased__c"] or 1.0) * SEAT_CENTS[acc["Customer_Segment__c"]] * 12
        renewals = self.renewals(acc["Renewal_Date__c"], h, base, True)
        year = self.year
        rows = [(f"{name} - Renewal {year[day]}", "Renewal", day, state, amount)
                for day, state, amount in renewals]
        roll = r()
        if roll < 0.04 + 0.06 * h:
            upgrade, day, state, amount = self.extra(roll, h, base)
            rows.append((f"{name} - Upgrade", "Existing Business - Upgrade", day, state, amount)
                        if upgrade else (f"{name} - New Business", "New Business", day, state,
                                         amount))
        opps, last, n = self.ds.sf_opportunities, today - 2, self.opp_next
        for title, kind, day, state, amount in rows:
            cday, mday, cs, ms, stage = self.timeline(day, state, last, SF_STAGES, 90)
            n += 1
            oid = f"{_OPP_HEAD}{hex(n | _BIT40)[3:]}{_OPP_TAIL}"  # sf_id("006", n), faster
            modified = dates[mday] + hms[ms]
            opps[oid] = {
                "Id": oid, "AccountId": aid, "Name": title, "Type": kind, "StageName": stage,
                "IsClosed": state != "open", "IsWon": state == "won", "CloseDate": day10[day],
                "Amount": amount, "CreatedDate": dates[cday] + hms[cs],
                "LastModifiedDate": modified, "SystemModstamp": modified, "IsDeleted": deleted}
        self.opp_next = n
        # Cases: unhealthy accounts open more, more of them escalated and high priority
        u = 1.0 - h
        u2 = u * u
        count = int(-math.log(1.0 - r()) * (0.2 + 0.8 * u2) + 0.5)  # expovariate, mean .2 + .8u²
        if count:
            cases, n = self.ds.sf_cases, self.case_next
            for _ in range(count if count < 25 else 25):
                n += 1
                cid = f"{_CASE_HEAD}{hex(n | _BIT40)[3:]}{_CASE_TAIL}"
                cday = last - int(398 * r())  # within the last 400 days
                escalated = r() < 0.03 + 0.35 * u2
                roll = r()
                priority = "High" if roll < 0.05 + 0.45 * u2 else "Medium" \
                    if roll < 0.6 + 0.2 * u2 else "Low"
                if today - cday < 45 and r() < 0.2 + 0.5 * u:
                    status = "Escalated" if escalated else "New" if r() < 0.3 else "Working"
                    mday = cday + int(r() * (last + 1 - cday))
                else:
                    status = "Closed"
                    mday = cday + int(r() * 30)
                    if mday > last:
                        mday = last
                cs, ms = int(86_400 * r()), int(86_400 * r())
                if mday == cday and ms < cs:
                    cs, ms = ms, cs
                stamp = dates[mday] + hms[ms]
                cases[cid] = {
                    "Id": cid, "AccountId": aid, "Subject": SUBJECTS[int(r() * len(SUBJECTS))],
                    "Status": status, "Priority": priority, "IsEscalated": escalated,
                    "IsClosed": status == "Closed", "CreatedDate": dates[cday] + hms[cs],
                    "ClosedDate": stamp if status == "Closed" else None,
                    "LastModifiedDate": stamp, "SystemModstamp": stamp, "IsDeleted": deleted}
            self.case_next = n
        return renewals

    def deals(self, company: Record, h: float, renewals: list[Renewal], base: float,
              mirrored: bool) -> None:
        """The company's renewals as deals (a linked company's mirror its account's
        opportunities, closed a few days apart), plus an expansion or new business now and
        then; timed like opportunities."""
        r, today, hid, dates, hms = self.rnd.random, self.today, company["id"], _DATES, _HMS_HS
        name, last = company["properties"]["name"], today - 2
        rows = []
        for day, state, amount in renewals:
            if mirrored and state != "open":
                day += int(r() * 7) - 3
                day = last if day > last else today - 400 if day < today - 400 else day
            rows.append((f"{name} - Renewal {self.year[day]}", "existingbusiness", day, state,
                         amount))
        roll = r()
        if roll < 0.04 + 0.06 * h:
            upgrade, day, state, amount = self.extra(roll, h, base)
            rows.append((f"{name} - Expansion", "existingbusiness", day, state, amount) if upgrade
                        else (f"{name} - New Business", "newbusiness", day, state, amount))
        deals, n = self.ds.hs_deals, self.deal_next
        for title, kind, day, state, amount in rows:
            cday, mday, cs, ms, stage = self.timeline(day, state, last, HS_STAGES, 60)
            did = str(n)
            n += 1 + int(9 * r())
            created, modified = dates[cday] + hms[cs], dates[mday] + hms[ms]
            deals[did] = {
                "id": did, "properties": {
                    "dealname": title, "dealstage": stage, "pipeline": "default",
                    "closedate": dates[day] + "00:00:00.000Z", "amount": f"{amount:.2f}",
                    "dealtype": kind, "hs_is_closed_won": "true" if state == "won" else "false",
                    "hs_is_closed": "false" if state == "open" else "true",
                    "createdate": created, "hs_lastmodifieddate": modified, "hs_object_id": did},
                "createdAt": created, "updatedAt": modified, "archived": False,
                "associations": {"companies": {"results": [{"id": hid, "type": "deal_to_company"}]}}}
        self.deal_next = n

    def timeline(self, day: int, state: str, last: int, stages: tuple[str, str, str, str],
                 soon: int) -> tuple[int, int, int, int, str]:
        """(created day, modified day, created second, modified second, stage) of an opportunity or
        deal closing on `day`: created 20-120 days before (never after `last`), modified at the close
        or, while open, any day since; stages are (won, lost, open and closing within `soon` days,
        open later)."""
        r = self.rnd.random
        cday = day - 20 - int(100 * r())
        if cday > last:
            cday = last - int(88 * r())
        if state == "open":
            mday = cday + int(r() * (last + 1 - cday))
            stage = stages[2] if day - self.today < soon else stages[3]
        else:
            mday = day + int(2 * r())
            mday = cday if mday < cday else last if mday > last else mday
            stage = stages[0] if state == "won" else stages[1]
        cs, ms = int(86_400 * r()), int(86_400 * r())
        if mday == cday and ms < cs:
            cs, ms = ms, cs
        return cday, mday, cs, ms, stage

    def cancellations(self) -> None:
        """Stripe's cancellation_details on every subscription: unhealthy customers mostly asked
        to cancel (and said why); others' cancellations more often followed failed payments."""
        r, health = self.rnd.random, self.b.customer_health
        for sub in self.ds.stripe_subscriptions.values():
            reason = feedback = None
            if sub["status"] == "canceled":
                unhappy = health[sub["customer"]] < 0.3
                if r() < (0.85 if unhappy else 0.4):
                    reason = "cancellation_requested"
                    pool = FEEDBACK_UNHAPPY if unhappy else FEEDBACK_OTHER
                    feedback = pool[int(r() * len(pool))]
                else:
                    reason = "payment_failed"
            sub["cancellation_details"] = {"reason": reason, "feedback": feedback, "comment": None}
