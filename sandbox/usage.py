"""Product usage for the sandbox's accounts, consistent with their hidden health: a healthy account
uses its seats and the key features; an unhealthy one less and less; a watermelon (rated 4-5 by
its CSM, renewals lost) lets usage fall over its last 150 days while its rating stays high.

Every 10 days, one row per account with usage (about 90 % of them): the people active in those
10 days, key-feature events and all events. Salesforce accounts are keyed by their Account id;
HubSpot-only companies by their domain. Drawn from a random stream of their own, so no other
sandbox record changes. `write_duckdb` puts them in a DuckDB file (tables usage_by_account and
usage_by_domain): what the shipped mappings' `sources/usage.yaml` reads in the demo.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import Dataset

PERIOD_DAYS = 10  # a divisor of 30 and 90: every 30-day window holds 3 rows, whatever the day
PERIODS = 21  # 210 days: the 90-day change and 26 weekly rescore snapshots have rows behind them


def usage_rows(ds: Dataset, seed: int = 7) -> dict[str, dict[str, list[Any]]]:
    """table -> column -> values."""
    rnd = random.Random(f"usage-{seed}")
    last = ds.now.date() - timedelta(days=1)
    days = [last - timedelta(days=PERIOD_DAYS * k) for k in range(PERIODS)][::-1]
    tables: dict[str, dict[str, list[Any]]] = {
        "usage_by_account": {"account_id": [], "day": [], "active_users": [], "key_events": [], "events": []},
        "usage_by_domain": {"domain": [], "day": [], "active_users": [], "key_events": [], "events": []}}
    accounts = [(a["Id"], "usage_by_account", "account_id", float(a.get("Seats_Purchased__c") or 0))
                for a in ds.sf_accounts.values() if not a["IsDeleted"]]
    accounts += [(f"hubspot:{hid}", "usage_by_domain", "domain", 25.0)
                 for hid, c in ds.hs_companies.items()
                 if f"hubspot:{hid}" in ds.hidden_health and (c.get("properties") or {}).get("domain")]
    for key, table, column, seats in accounts:
        if rnd.random() < 0.1:
            continue  # no product usage recorded for this account
        h = ds.hidden_health.get(key, 0.5)
        melon = key in ds.watermelons
        base = min(1.0, max(0.02, rnd.gauss(0.2 + 0.75 * (0.75 if melon else h), 0.1)))
        seats = seats or 10.0
        name = key if table == "usage_by_account" else \
            str(ds.hs_companies[key.split(":", 1)[1]]["properties"]["domain"]).lower()
        for day in days:
            ago = (last - day).days
            trend = 1.0
            if melon and ago < 150:
                trend = 0.25 + 0.75 * ago / 150  # falling to a quarter of what it was
            elif h < 0.35:
                trend = 0.5 + 0.5 * ago / (PERIOD_DAYS * PERIODS)  # a slow slide, all along
            share = max(0.0, base * trend * rnd.uniform(0.85, 1.15))
            active = round(seats * share)
            key_events = int(active * rnd.uniform(2, 6) * (0.4 + h))
            events = key_events * 4 + int(active * rnd.uniform(5, 15))
            tables[table][column].append(name)
            tables[table]["day"].append(day.isoformat())
            tables[table]["active_users"].append(active)
            tables[table]["key_events"].append(key_events)
            tables[table]["events"].append(events)
    return tables


def write_duckdb(path: Path, tables: dict[str, dict[str, list[Any]]]) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    try:
        for name, columns in tables.items():
            key = next(iter(columns))
            arrays = {c: np.array(v, dtype=str if c in (key, "day") else np.int64) for c, v in columns.items()}  # noqa: F841
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT CAST({key} AS VARCHAR) AS {key}, "
                        "CAST(CAST(day AS VARCHAR) AS DATE) AS day, active_users, key_events, events FROM arrays")
    finally:
        con.close()
