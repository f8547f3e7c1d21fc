"""Store history: trends, change over time, overrides with audit; the store schema."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest

from connector import pipeline
from connector.errors import StoreError
from connector.store import SCHEMA_VERSION, Store

INPUTS = "inputs:\n  a: {}\n  users: {}\n  flag: {type: text, values: [Red, Yellow, Green]}\n  why: {type: text}\n"
METRICS = "metrics:\n  a: {input: a}\n  users_change: {expr: 'pct_change(users, 90)'}\n"
LIN = "scheme: {type: linear, worst: 0, best: 100}"
HEALTH = f"""\
scores:
  health:
    trend: {{days: 30, flat_within: 2}}
    models:
      - name: only
        groups:
          usage:
            metrics:
              a: {{{LIN}}}
"""


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def test_store_is_wal_and_versioned(store):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION
    assert store.db["meta"].get("schema_version")["value"] == str(SCHEMA_VERSION)


def test_store_from_newer_healthsync_is_refused(tmp_path):
    path = tmp_path / "future.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this healthsync"):
        Store(path)


def test_unchanged_value_keeps_its_since_and_history_has_each_change(store):
    store.upsert_accounts([{"key": "k"}])
    (account,) = store.account_keys().values()
    assert store.set_values([(account, "a", 1)], "2026-01-01T00:00:00Z") == 1
    assert store.set_values([(account, "a", 1)], "2026-02-01T00:00:00Z") == 0
    assert store.set_values([(account, "a", 2)], "2026-03-01T00:00:00Z") == 1
    row = store.db["metric_values"].get(("a", account))
    assert (row["num"], row["since"], row["seen_at"]) == (2, "2026-03-01T00:00:00Z", "2026-03-01T00:00:00Z")
    assert [(r["since"], r["num"]) for r in store.db["metric_history"].rows] == [
        ("2026-01-01T00:00:00Z", 1), ("2026-03-01T00:00:00Z", 2)
    ]


def test_a_whole_column_written_in_bulk_is_stored_as_row_by_row(tmp_path, monkeypatch):
    """Past 10,000 new or changed values of a name, they are written by one statement (a JSON
    array, history copied in SQLite): the values, reasons, sinces and history are the same as
    row by row, through a first write, a write at the same moment, and a write that changes half."""
    import connector.store.values as values

    n = 12_000
    def writes(a: int, step: int) -> list[tuple]:  # numbers, text, N/A with and without a reason, -0.0, big
        return [(a, "n", [None, 1.0, 2 ** 53, -0.0, 3.25 + step][a % 5] if a % 2 or step == 0 else a * 1.5, "why" if a % 7 == 0 else None)
                for a in range(1, n + 1)] + [(a, "t", f"é {a % 3}" if a % 4 else None) for a in range(1, n + 1)]

    stores = {}
    for bulk in (True, False):
        if not bulk:
            monkeypatch.setattr(values, "_IN_BULK", 10 ** 9)
        with Store(tmp_path / f"{bulk}.db") as s:
            s.upsert_accounts([{"key": f"k{i}"} for i in range(n)])
            stores[bulk] = []
            for rows, now in ((writes(0, 0), "2026-01-01T00:00:00Z"), (writes(0, 0), "2026-01-01T00:00:00Z"),
                              (writes(0, 1), "2026-02-01T00:00:00Z")):
                stores[bulk].append((s.set_values(rows, now), s.conn.execute("SELECT * FROM metric_values ORDER BY 1, 2").fetchall(),
                                     s.conn.execute("SELECT * FROM metric_history ORDER BY 1, 2, 3").fetchall()))
    assert stores[True] == stores[False]
    got = [changed for changed, _current, _history in stores[True]]
    _changed, current, history = stores[True][-1]
    assert got[0] == 2 * n and got[1] == 0 and got[2] >= n // 2 and len(history) == 2 * n + got[2]
    assert {type(r[2]) for r in current if r[0] == "n"} == {float, type(None)}


def test_garbage_number_becomes_na_with_reason(store, mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=HEALTH)
    store.upsert_accounts([{"key": "k"}])
    (account,) = store.account_keys().values()
    store.set_values([(account, "a", "twelve")])
    _, results = pipeline.compute(store, mappings)
    assert np.isnan(results["health"].value[0])
    assert results["health"].passes[0].slots[0].reason[0] == "not a number: 'twelve'"


def test_trend_against_score_n_days_ago(store, mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=HEALTH)
    store.upsert_accounts([{"key": "k"}])
    (account,) = store.account_keys().values()
    store.set_values([(account, "a", 85)], "2026-01-01T00:00:00Z")
    pipeline.score(store, mappings, at("2026-01-01"))
    store.set_values([(account, "a", 78)], "2026-02-10T00:00:00Z")
    pipeline.score(store, mappings, at("2026-02-10"))
    row = store.score_of("health", account)
    assert (row["value"], row["trend"], row["trend_direction"]) == (78, -7, "Down")
    history = [(r["scored_at"][:10], r["value"]) for r in store.db["score_history"].rows]
    assert history == [("2026-01-01", 85), ("2026-02-10", 78)]


def test_unchanged_score_adds_no_history(store, mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=HEALTH)
    store.upsert_accounts([{"key": "k"}])
    store.set_values([(1, "a", 50)])
    assert pipeline.score(store, mappings, at("2026-01-01")).changed["health"] == 1
    assert pipeline.score(store, mappings, at("2026-01-02")).changed["health"] == 0


def test_change_over_time_metric_reads_history(store, mappings_from):
    health = HEALTH.replace(f"a: {{{LIN}}}", "users_change: {scheme: {type: linear, worst: -50, best: 50}}")
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=health)
    store.upsert_accounts([{"key": "k"}])
    store.set_values([(1, "users", 100)], "2026-01-01T00:00:00Z")
    store.set_values([(1, "users", 80)], "2026-04-01T00:00:00Z")
    frame, results = pipeline.compute(store, mappings, at("2026-04-15"))
    assert frame.column("users_change")[0] == pytest.approx(-20.0)
    assert results["health"].value[0] == 30


def test_cli_style_override_wins_until_it_expires_and_is_audited(store, mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=HEALTH)
    store.upsert_accounts([{"key": "k"}])
    store.set_values([(1, "a", 20)])
    override = store.set_override(1, "health", "status", "Green", "exec sponsor re-engaged", "2026-03-01T23:59:59Z", "cli", "maria", "2026-01-01T00:00:00Z")
    pipeline.score(store, mappings, at("2026-02-01"))
    row = store.score_of("health", 1)
    assert (row["computed"], row["value"], row["status_computed"], row["status"], row["override_id"]) == (20, 20, "Red", "Green", override)
    pipeline.score(store, mappings, at("2026-02-02"))  # the next computation keeps it
    assert store.score_of("health", 1)["status"] == "Green"
    pipeline.score(store, mappings, at("2026-03-02"))
    assert store.score_of("health", 1)["status"] == "Red"
    assert [a["action"] for a in store.audit(override)] == ["set", "expired"]


def test_score_override_sets_value_and_derived_labels(store, mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=HEALTH)
    store.upsert_accounts([{"key": "k"}])
    store.set_values([(1, "a", 20)])
    store.set_override(1, "health", "score", "75", "migration data gap", "2099-01-01T00:00:00Z", "cli", "ops")
    pipeline.score(store, mappings)
    row = store.score_of("health", 1)
    assert (row["computed"], row["value"], row["status"], row["grade"]) == (20, 75, "Green", "B")


def test_override_needs_a_reason(store):
    store.upsert_accounts([{"key": "k"}])
    with pytest.raises(sqlite3.IntegrityError):
        store.set_override(1, "health", "status", "Green", "  ", "2099-01-01T00:00:00Z", "cli", "ops")


def test_crm_override_inputs(store, mappings_from):
    health = HEALTH.replace("    models:", "    override: {status: flag, reason: why}\n    models:")
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=health)
    store.upsert_accounts([{"key": "with_reason"}, {"key": "no_reason"}])
    ids = store.account_keys()
    store.set_values([(ids["with_reason"], "a", 10), (ids["with_reason"], "flag", "Green"), (ids["with_reason"], "why", "renewal signed"),
                      (ids["no_reason"], "a", 10), (ids["no_reason"], "flag", "Green")])
    summary = pipeline.score(store, mappings)
    assert store.score_of("health", ids["with_reason"])["status"] == "Green"
    assert store.score_of("health", ids["no_reason"])["status"] == "Red"
    assert any("ignored" in w and "'why'" in w for w in summary.warnings)
    pipeline.score(store, mappings)  # same input again: no new override
    assert len(store.overrides(include_ended=True)) == 1
    store.set_values([(ids["with_reason"], "flag", None)])
    pipeline.score(store, mappings)  # cleared in the CRM: override ends, computed status returns
    assert store.score_of("health", ids["with_reason"])["status"] == "Red"
    assert store.overrides(include_ended=True)[0]["ended_reason"] == "cleared in CRM"
