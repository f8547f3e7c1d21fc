"""The rescore's column-wise path gives exactly what the per-account path gives: every catalogue
metric with a `Past` (and the two computed from CRM inputs), at many dates, over the sandbox pulled
over HTTP plus records made to trip every branch (tiered prices, two currencies, unparseable dates,
Cases closed later, invoices paid later, unknown statuses). Values and N/A reasons must be equal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from conftest import REPO

from connector.backtest.history import _Builder
from connector.config.mappings import load_mappings
from connector.identity import match
from connector.pipeline import pull
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

NOW = datetime(2026, 11, 20, 6, tzinfo=UTC)
T = int(NOW.timestamp())
DAY = 86400


def _odd_records(store: Store) -> None:
    """Records no sandbox account has, attached to matched customers, organizations and Accounts."""
    customer = next(iter(store.linked("stripe", "customers")))
    org = next(iter(store.linked("zendesk", "organizations")))
    account = next(iter(store.linked("salesforce", "Account")))
    other, third = list(store.linked("stripe", "customers"))[1:3]
    item = lambda amount, currency, interval="month", **price: {  # noqa: E731
        "quantity": 2, "price": {"unit_amount": amount, "currency": currency,
                                 "recurring": {"interval": interval} if interval else None, **price}}
    subs = [
        {"id": "sub_tiered", "customer": customer, "status": "active", "created": T - 200 * DAY,
         "items": {"data": [item(None, "usd")]}},
        {"id": "sub_eur", "customer": third, "status": "active", "created": T - 150 * DAY,
         "items": {"data": [item(1999, "eur", "year"), item(500, "usd")]}},
        {"id": "sub_once", "customer": other, "status": "past_due", "created": T - 20 * DAY,
         "items": {"data": [item(300, "jpy", None)]}},
        {"id": "sub_trial", "customer": other, "status": "active", "created": T - 40 * DAY, "trial_end": T - 10 * DAY,
         "items": {"data": [item(700, "eur", "week")]}},
        {"id": "sub_odd", "customer": other, "status": "mystery", "created": "yesterday", "items": {"data": []}},
        {"id": "sub_gone", "customer": other, "status": "canceled", "created": T - 400 * DAY,
         "canceled_at": T - 30 * DAY, "ended_at": T - 30 * DAY, "items": {"data": [item(900, "usd")]}},
    ]
    store.put_records("stripe", "subscriptions", [(s["id"], s, None, False) for s in subs])
    invoices = [
        {"id": "in_paid_later", "customer": other, "status": "paid", "created": T - 60 * DAY, "due_date": T - 45 * DAY,
         "status_transitions": {"paid_at": T - 5 * DAY}},
        {"id": "in_bad", "customer": other, "status": "uncollectible", "created": T - 90 * DAY, "due_date": "soon",
         "status_transitions": {"marked_uncollectible_at": T - 2 * DAY}},
    ]
    store.put_records("stripe", "invoices", [(i["id"], i, None, False) for i in invoices])
    store.put_records("stripe", "charges", [("ch_x", {"id": "ch_x", "customer": other, "status": "failed",
                                                      "created": T - 3 * DAY}, None, False)])
    tickets = [
        {"id": 9_000_001, "organization_id": int(org) if org.isdigit() else org, "status": "solved",
         "priority": "urgent", "created_at": "not a date", "updated_at": "2026-11-01T00:00:00Z", "satisfaction": "good"},
        {"id": 9_000_002, "organization_id": int(org) if org.isdigit() else org, "status": "closed", "priority": None,
         "created_at": "2026-09-01T00:00:00Z", "updated_at": None, "satisfaction": "bad"},
    ]
    store.put_records("zendesk", "tickets", [(str(t["id"]), t, None, False) for t in tickets])
    cases = [
        {"Id": "500X1", "AccountId": account, "CreatedDate": None, "IsClosed": False, "Priority": " Critical ",
         "Status": "Escalated", "IsEscalated": False},
        {"Id": "500X2", "AccountId": account, "CreatedDate": "2026-10-01T00:00:00.000+0000", "IsClosed": True,
         "ClosedDate": "2026-11-10T00:00:00.000+0000", "Priority": "High", "Status": "Escalated", "IsEscalated": True},
    ]
    store.put_records("salesforce", "Case", [(c["Id"], c, None, False) for c in cases])


@pytest.fixture(scope="module")
def builder(tmp_path_factory):
    mappings = load_mappings(REPO / "mappings")
    db = tmp_path_factory.mktemp("past") / "s.db"
    with Sandbox(build_dataset(accounts=400, seed=11, now=NOW)) as sb, Store(db) as store:
        pull(store, mappings, sb.unpaced_env(), now=NOW)
        _odd_records(store)
        match(store, mappings)
        yield _Builder(store, mappings, store.account_ids(), __import__("connector.metrics").metrics.gather(store))


def _equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype == object or b.dtype == object:
        return np.array([x == y or (x != x and y != y) for x, y in zip(a.tolist(), b.tolist(), strict=True)])
    return (a == b) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize("days_ago", [0, 3, 29, 45, 91, 180, 420])
def test_every_columnar_metric_equals_the_per_account_path(builder, days_ago):
    at = NOW - timedelta(days=days_ago)
    keys = [k for k in builder.known if builder.columnar(k)]
    assert {"mrr", "mrr_change_90d", "subscription_status", "csat_90d", "open_cases", "days_past_due",
            "license_utilization", "days_to_renewal"} <= set(keys)
    inputs = {name: builder.input(name, at) for name in builder.mappings.inputs}
    fast = {k: builder._columnar(k, at, inputs) for k in keys}
    slow = builder.per_account(keys, at, inputs)
    for k in keys:
        same_values, same_reasons = _equal(fast[k].values, slow[k].values), _equal(fast[k].na_reason, slow[k].na_reason)
        rows = np.flatnonzero(~(same_values & same_reasons))[:3]
        assert same_values.all() and same_reasons.all(), (
            k, [(fast[k].values[i], slow[k].values[i], fast[k].na_reason[i], slow[k].na_reason[i]) for i in rows])
        assert fast[k].values.dtype == slow[k].values.dtype


def test_the_odd_records_reach_their_branches(builder):
    at = NOW
    inputs = {name: builder.input(name, at) for name in builder.mappings.inputs}
    reasons = {k: set(builder._columnar(k, at, inputs).na_reason.tolist()) for k in ("mrr", "mrr_change_90d")}
    assert any("without unit amount" in str(r) for r in reasons["mrr"])
    assert any("several currencies" in str(r) for r in reasons["mrr"])
    assert "no MRR 90 days ago" in reasons["mrr_change_90d"]


def test_the_live_measure_equals_its_per_account_path(builder, tmp_path):
    """`measure` computes every column-wise catalogue metric for all accounts at once; the stored
    values, N/A reasons and summary are what the account-by-account path stores."""
    from connector.metrics import measure

    stored = {}
    for per_account in (False, True):
        db = tmp_path / f"m{per_account}.db"
        builder.store.conn.execute(f"VACUUM INTO '{db}'")
        with Store(db) as store:
            summary = measure(store, builder.mappings, NOW, per_account=per_account)
            rows = store.conn.execute("SELECT name, account_id, num, text, na_reason FROM metric_values "
                                      "ORDER BY name, account_id").fetchall()
        stored[per_account] = (rows, summary.not_available, summary.totals, summary.values)
    fast, slow = stored[False], stored[True]
    usage = [r for r in fast[0] if r[0] == "seat_utilization" and r[2] is not None]
    assert len(usage) > 100  # the sandbox's usage reaches the column-wise path
    assert [r for r in fast[0] if r not in set(slow[0])][:5] == []
    assert fast == slow


@pytest.mark.parametrize("names", [
    ["seat_utilization", "usage_change", "key_events", "days_since_active"],  # usage alone: nothing moves by inputs
    ["days_to_renewal", "key_events", "active_users_30d"],  # a CRM metric (moves at midnight) and an input
])
def test_a_measure_of_column_wise_names_alone_reads_the_inputs_a_column_at_a_time(builder, tmp_path, names):
    """A measure of names that are all column-wise (a preview of the usage source, the daily pass
    of the CRM metrics) gathers nothing and takes the inputs a column at a time: the same values,
    reasons, summary and next moves as the account-by-account path."""
    from connector.metrics import measure

    stored = {}
    for per_account in (False, True):
        db = tmp_path / f"n{per_account}.db"
        builder.store.conn.execute(f"VACUUM INTO '{db}'")
        with Store(db) as store:
            store.conn.execute("DELETE FROM metric_values")  # what the builder measured
            summary = measure(store, builder.mappings, NOW, per_account=per_account, names=names)
            rows = store.conn.execute("SELECT name, account_id, num, text, na_reason FROM metric_values "
                                      "ORDER BY name, account_id").fetchall()
        stored[per_account] = (rows, summary.not_available, summary.values, summary.inputs_move)
    fast, slow = stored[False], stored[True]
    assert {r[0] for r in fast[0]} == set(names) and fast[2] == len(names) * len(builder.ids)
    assert sum(r[2] is not None for r in fast[0]) > 100
    assert ("days_to_renewal" in names) == (fast[3] is not None)  # the CRM metric's next move is found
    assert fast == slow


def test_every_table_made_into_arrays_in_chunks_is_the_same(builder, monkeypatch):
    """Rows tables (tickets, invoices, ...) and many-rows tables (usage series) alike, joined from
    chunks of 7 rows: the arrays of one chunk."""
    from connector import columns

    whole, _linked = columns.load_tables(builder.store, builder.ids)
    monkeypatch.setattr(columns._Chunked, "CHUNK", 7)
    chunked, _linked = columns.load_tables(builder.store, builder.ids)
    assert len(whole["usage"]["rows"].account) > 100
    assert set(chunked) == set(whole) and len(whole) >= 3
    several = 0
    for system, tables in whole.items():
        for name, rows in tables.tables.items():
            several += len(rows.account) > 7  # more than one chunk
            assert np.array_equal(rows.account, chunked[system][name].account), (system, name)
            for column, values in rows.columns.items():
                made = chunked[system][name][column]
                assert made.dtype.kind == values.dtype.kind, (system, name, column)
                if values.dtype.kind == "f":
                    assert np.array_equal(values, made, equal_nan=True), (system, name, column)
                else:
                    assert values.tolist() == made.tolist(), (system, name, column)
    assert several >= 4


def test_a_many_rows_table_repeats_a_records_one_value_over_its_rows(monkeypatch):
    """A record's column given as one value (a float, None: NaN) or as a list, mixed within a
    chunk and across chunks, for float and text columns: the same arrays as every row listed."""
    from connector import columns
    from connector.sources.base import Table

    table = Table("series", {"at": float, "n": float, "has": float, "label": str}, rows=lambda rec: [],
                  columns_of=lambda rec: rec)
    records = [
        [[1.0, 2.0], [5.0, None], 1.0, ["a", None]],
        [[3.0], None, 0.0, "b"],  # no n: NaN on its row
        [[], [1.0], 1.0, []],  # no rows: nothing
        [[4.0, 5.0, 6.0], 7.0, 1.0, None],  # one n for its three rows
        [[7.0], [8.0], 1.0, ["c"]],
    ]
    at = [3, 1, 4, 0, 2]
    listed = {"at": [1, 2, 3, 4, 5, 6, 7], "n": [5, np.nan, np.nan, 7, 7, 7, 8], "has": [1, 1, 0, 1, 1, 1, 1],
              "label": ["a", "", "b", "", "", "", "c"]}
    accounts = [3, 3, 1, 0, 0, 0, 2]
    for chunk in (2, 100):
        monkeypatch.setattr(columns._Many, "CHUNK", chunk)
        many = columns._Many(table)
        for position, rec in zip(at, records, strict=True):
            many.add(position, rec)
        made = many.records()
        assert made.account.tolist() == accounts, chunk
        for name, expected in listed.items():
            if name == "label":
                assert made[name].tolist() == expected, chunk
            else:
                assert np.array_equal(made[name], np.array(expected, dtype=float), equal_nan=True), (chunk, name)
    empty = columns._Many(table).records()
    assert len(empty.account) == 0 and set(empty.columns) == set(table.columns)


def test_a_chunk_of_listed_values_only_is_read_straight_and_an_na_among_them_is_nan():
    from connector.columns import _one_column

    sizes = np.array([2, 1, 0, 3])
    plain = _one_column(float, [[1.0, 2.5], [3.0], [], [4.0, 5.0, 6.0]], sizes)
    assert plain.dtype == np.float64 and plain.tolist() == [1.0, 2.5, 3.0, 4.0, 5.0, 6.0]
    with_na = _one_column(float, [[1.0, None], [3.0], [], [None, 5.0, 6.0]], sizes)
    assert np.array_equal(with_na, [1.0, np.nan, 3.0, np.nan, 5.0, 6.0], equal_nan=True)
    # a record whose list is longer than its rows (a stored series edited by hand) is not cut to fit:
    # its values stay its own, and the array is longer than the rows, as the list path makes it
    ragged = _one_column(float, [[1.0, 2.0, 3.0], [9.0], [], [4.0, 5.0, 6.0]], sizes)
    assert ragged.tolist() == [1.0, 2.0, 3.0, 9.0, 4.0, 5.0, 6.0]
