"""A deterministic, messy sample of accounts and their metric values (no HTTP).

Scoring tests use it to fill a store directly. Same seed, same data: tests can name accounts and expect
exact numbers. Messy on purpose: unicode names, missing segments, N/A metrics,
stale CSM ratings, garbage values, and a 120-day-old history for trends.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from connector.scoring.frame import iso
from connector.store import Store

SEGMENTS = ["SMB", "SMB", "SMB", "Mid-Market", "Mid-Market", "Enterprise", None]
STAGES = ["Onboarding", "Adoption", "Adoption", "Maturity", "Maturity", "Renewal"]
STATUSES = ["active"] * 8 + ["trialing", "past_due", "canceled"]
NAMES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent", "Wonka",
         "Müller & Söhne", "Café Olé", "Zürich Systems", "東京 Data", "Ångström Labs", "Łódź Logistics"]


def sample_accounts(count: int, seed: int = 7) -> list[dict[str, object]]:
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        base = NAMES[i % len(NAMES)]
        out.append({"key": f"acct-{i + 1:05d}", "name": f"{base} {i // len(NAMES) + 1}", "domain": f"{base.lower().split()[0]}{i}.example.com" if rnd.random() > 0.05 else None})
    return out


def sample_values(account_ids: list[int], seed: int = 7) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """(values 120 days ago, values now) as (account_id, name, value[, na_reason]) rows."""
    rnd = random.Random(seed)
    old: list[tuple[object, ...]] = []
    now: list[tuple[object, ...]] = []
    for account_id in account_ids:
        segment = rnd.choice(SEGMENTS)
        stage = rnd.choice(STAGES)
        seats = {"SMB": rnd.randint(3, 25), "Mid-Market": rnd.randint(25, 200), "Enterprise": rnd.randint(200, 2000)}.get(segment or "", rnd.randint(5, 50))
        health = rnd.random()  # a hidden "true health" that makes the metrics agree with each other
        active = round(seats * min(1.0, max(0.02, rnd.gauss(0.25 + 0.7 * health, 0.12))))
        active_before = round(active * rnd.uniform(0.7, 1.5 - 0.4 * health))
        rows: list[tuple[object, ...]] = [
            (account_id, "segment", segment),
            (account_id, "lifecycle_stage", stage),
            (account_id, "seats", seats),
            (account_id, "active_users_30d", active),
            (account_id, "license_utilization", round(100.0 * active / seats, 1)),
            (account_id, "open_tickets", max(0, round(rnd.gauss((1 - health) * seats * 0.15, 1.5)))),
            (account_id, "urgent_tickets", 1 if rnd.random() > 0.6 + 0.4 * health else 0),
            (account_id, "tickets_30d", rnd.randint(0, 12)),
            (account_id, "csat_90d", round(min(100, max(20, rnd.gauss(60 + 35 * health, 8))), 1) if rnd.random() > 0.2 else None),
            (account_id, "subscription_status", rnd.choice(STATUSES) if health < 0.3 else "active"),
            (account_id, "past_due_invoices", 1 if health < 0.2 and rnd.random() > 0.5 else 0),
            (account_id, "failed_payments_30d", rnd.choice([0, 0, 0, 1, 2, 3]) if health < 0.35 else 0),
            (account_id, "days_past_due", rnd.choice([0, 10, 35, 60]) if health < 0.2 else 0),
            (account_id, "mrr", round(seats * rnd.uniform(20, 60), 2)),
            (account_id, "mrr_change_90d", round(rnd.gauss(10 * (health - 0.4), 5), 1)),
            (account_id, "nps", round(rnd.gauss(-40 + 90 * health, 15)) if rnd.random() > 0.3 else None),
            (account_id, "days_to_renewal", rnd.randint(5, 365)),
            (account_id, "renewal_date", None),
            (account_id, "stripe_customer_id", f"cus_{account_id:08d}" if rnd.random() > 0.1 else None),
        ]
        rating = max(1, min(5, round(1 + 4 * health + rnd.gauss(0, 0.6))))
        if rnd.random() < 0.15:  # a rating nobody refreshed since before the history starts
            old.append((account_id, "csm_rating", rating))
        else:
            now.append((account_id, "csm_rating", rating))
        if rnd.random() < 0.03:  # garbage from a source: text where a number belongs
            rows[5] = (account_id, "open_tickets", "n/a")
        old.append((account_id, "active_users_30d", active_before))
        old.append((account_id, "segment", segment))
        now.extend(rows)
    return old, now


def seed(store: Store, count: int, now: datetime, seed_value: int = 7) -> list[int]:
    """Fill a store with `count` sample accounts; history starts 120 days before `now`."""
    accounts = sample_accounts(count, seed_value)
    store.upsert_accounts(accounts, iso(now - timedelta(days=120)))
    keys = store.account_keys()
    ids = [keys[str(a["key"])] for a in accounts]
    old, current = sample_values(ids, seed_value)
    store.set_values(old, iso(now - timedelta(days=120)))
    store.set_values(current, iso(now - timedelta(days=1)))
    store.link((("salesforce", "Account", f"001SAMPLE{i:09d}", i, "sample") for i in ids), iso(now))
    return ids
