"""The catalogue's time windows count calendar days (connector/sources/days.py): "the last 30 days"
start at midnight 30 days before today, "days since" and "days past due" count midnights, an
invoice is past due from the day after its due date. So values move only at midnights (of the
zone of the moment measured), and hourly runs between two midnights write nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from conftest import REPO

from connector.catalogue import CRM_MOVES, catalogue
from connector.config.mappings import load_mappings
from connector.metrics import calculator
from connector.sources import registry
from connector.sources.base import AccountData
from connector.sources.days import (
    days_between,
    midnight_after,
    midnights_after_of,
    ordinals_of,
    today_ordinal,
    window_start,
)

BERLIN = ZoneInfo("Europe/Berlin")
ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), BERLIN]


def _at(text: str, zone=UTC) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def _t(text: str) -> int:
    return int(_at(text).timestamp())


def test_windows_start_at_a_midnight_and_count_calendar_days():
    now = _at("2026-12-02T15:00:00")
    assert window_start(now, 30) == _at("2026-11-02T00:00:00").timestamp()
    assert window_start(now, 0) == _at("2026-12-02T00:00:00").timestamp()
    assert days_between(_t("2026-11-30T23:59:00"), now) == 2.0
    assert days_between(_t("2026-12-02T00:00:00"), now) == 0.0
    # in Berlin, 23:30 UTC on 1 December is already 2 December
    berlin = _at("2026-12-02T08:00:00", BERLIN)
    assert days_between(_t("2026-12-01T23:30:00"), berlin) == 0.0
    assert window_start(berlin, 1) == _at("2026-12-01T00:00:00", BERLIN).timestamp()
    # across the change to summer time the day before has 23 hours, and the window still starts at midnight
    spring = _at("2026-03-30T12:00:00", BERLIN)
    assert window_start(spring, 1) == _at("2026-03-29T00:00:00", BERLIN).timestamp()
    assert window_start(spring, 0) - window_start(spring, 1) == 23 * 3600


def test_leaving_and_entering_moments_are_midnights():
    zone = UTC
    ten = _t("2026-11-02T10:00:00")
    mid = _t("2026-11-02T00:00:00")
    assert midnight_after(ten, 30, zone, strictly=True) == _t("2026-12-03T00:00:00")
    assert midnight_after(mid, 30, zone, strictly=True) == _t("2026-12-03T00:00:00")
    assert midnight_after(ten, 30, zone, strictly=False) == _t("2026-12-03T00:00:00")
    assert midnight_after(mid, 30, zone, strictly=False) == _t("2026-12-02T00:00:00")
    assert midnight_after(ten, 0, BERLIN, strictly=True) == _at("2026-11-03T00:00:00", BERLIN).timestamp()


@pytest.mark.parametrize("zone", ZONES, ids=str)
def test_the_column_forms_give_what_the_record_forms_give(zone):
    rnd = np.random.default_rng(4)
    base = _t("2026-01-01T00:00:00")
    stamps = np.concatenate([base + rnd.integers(0, 400 * 86400, 3000).astype(float),
                             base + 86400.0 * np.arange(0, 400, 7), [np.nan]])  # midnights UTC, and N/A
    now = datetime(2026, 10, 25, 1, 30, tzinfo=UTC).astimezone(zone)  # Berlin's last Sunday of October
    days = today_ordinal(now) - ordinals_of(stamps, zone)
    for strictly in (True, False):
        wise = midnights_after_of(stamps, 30, zone, strictly=strictly)
        each = [midnight_after(s, 30, zone, strictly=strictly) if s == s else None for s in stamps.tolist()]
        assert [None if w != w else w for w in wise.tolist()] == each
    assert [None if d != d else d for d in days.tolist()] == [
        days_between(s, now) if s == s else None for s in stamps.tolist()]


def _account() -> AccountData:
    """One account of every source with records at odd hours: tickets, Cases, failed charges, an
    open invoice due in the afternoon, subscriptions, usage rows."""
    t = _t("2026-11-02T10:17:00")
    iso = lambda s: datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    tickets = [{"id": i, "status": "solved", "priority": "normal", "created_at": iso(t + i * 37_000),
                "updated_at": iso(t + i * 41_000), "satisfaction": "good" if i % 3 else "bad"} for i in range(12)]
    cases = [{"Id": f"500{i}", "CreatedDate": iso(t + i * 53_000).replace("Z", ".000+0000"), "IsClosed": True}
             for i in range(8)]
    charges = [{"id": f"ch{i}", "status": "failed", "created": t + i * 47_000} for i in range(8)]
    invoices = [{"id": "in1", "status": "open", "due_date": _t("2026-12-01T15:00:00"), "created": t}]
    subs = [{"id": "sub1", "status": "active", "created": t - 80 * 86400 + 5_000,
             "items": {"data": [{"quantity": 1, "price": {"unit_amount": 1000, "currency": "usd",
                                                            "recurring": {"interval": "month"}}}]}},
            {"id": "sub2", "status": "canceled", "created": t - 200 * 86400, "ended_at": t - 60 * 86400 + 9_000,
             "canceled_at": t - 60 * 86400 + 9_000,
             "items": {"data": [{"quantity": 1, "price": {"unit_amount": 500, "currency": "usd",
                                                           "recurring": {"interval": "month"}}}]}}]
    stamps = [float(t - 120 * 86400 + i * 30_011) for i in range(400)]
    series = [{"at": stamps, "values": {"events": [float(i % 7) for i in range(400)],
                                        "active_users": [float(i % 5) for i in range(400)]}}]
    return AccountData(
        linked={"zendesk": ["1"], "salesforce": ["001A"], "stripe": ["cus1"], "usage": ["u1"]},
        records={("zendesk", "tickets"): tickets, ("salesforce", "Case"): cases, ("stripe", "charges"): charges,
                 ("stripe", "invoices"): invoices, ("stripe", "subscriptions"): subs, ("usage", "series"): series})


@pytest.mark.parametrize("zone", [UTC, BERLIN], ids=str)
def test_time_alone_moves_a_value_only_at_a_midnight(zone):
    """Every hour through three weeks: a catalogue value differs from the hour before only when a
    midnight of the zone lies between them; and `moves` names a midnight (or a usage row's own
    timestamp, when the row counts from)."""
    acct, known = _account(), catalogue()
    keys = [k for k, m in known.items() if m.system in acct.linked]
    start = datetime(2026, 11, 24, 0, 30, tzinfo=UTC).astimezone(zone)
    before, moved, changes = None, 0, 0
    rows = set(acct.records[("usage", "series")][0]["at"])
    for hour in range(21 * 24):
        now = start + timedelta(hours=hour)
        compute = calculator(known, now)
        values = {k: compute(k, acct, {}) for k in keys}
        if before is not None:
            crossed = now.date() != (now - timedelta(hours=1)).date()
            differ = {k for k in keys if values[k] != before[k]}
            assert crossed or not differ, f"{sorted(differ)} moved at {now} without a midnight"
            changes += len(differ)
        before = values
        for plugin in registry.plugins():
            if plugin.system in acct.linked and plugin.catalogue:
                until = plugin.moves(acct, now)
                if until is not None:
                    local = datetime.fromtimestamp(until, zone)
                    assert (local.hour, local.minute, local.second) == (0, 0, 0) or until in rows, (plugin.system, local)
                    moved += 1
    assert changes > 20 and moved > 100


def test_an_invoice_is_past_due_from_the_day_after_its_due_date():
    acct, known = _account(), catalogue()
    due = lambda at: calculator(known, _at(at))("days_past_due", acct, {})[0]  # noqa: E731
    past = lambda at: calculator(known, _at(at))("past_due_invoices", acct, {})[0]  # noqa: E731
    assert (past("2026-12-01T16:00:00"), due("2026-12-01T23:59:59")) == (0.0, 0.0)
    assert (past("2026-12-02T00:00:00"), due("2026-12-02T00:00:00"), due("2026-12-02T23:00:00")) == (1.0, 1.0, 1.0)
    assert due("2026-12-05T08:00:00") == 4.0


def test_hourly_runs_through_a_day_write_nothing_once_the_first_writes_are_read_back(tmp_path):
    """Runs an hour apart between two midnights over the sandbox (whose tickets, charges and
    invoices are stamped at any hour): once the first run's own writes are read back, every run
    stands and sends no write; past midnight the windows move, and the values with them."""
    from connector.pipeline import run
    from connector.store import Store
    from sandbox.dataset import build_dataset
    from sandbox.server import Sandbox

    mappings = load_mappings(REPO / "mappings")
    base = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0) - timedelta(days=151)
    with Sandbox(build_dataset(accounts=150, seed=8, now=base)) as sb, Store(tmp_path / "h.db") as store:
        env = sb.unpaced_env()
        runs = [run(store, mappings, env, now=base + timedelta(hours=i)) for i in range(6)]
        for later in runs[2:]:
            assert later.scored.standing is not None, later.scored
            assert later.pushed is not None and not any(later.pushed.written.values())
        next_day = run(store, mappings, env, now=base + timedelta(hours=23, minutes=30))
        assert next_day.pulled.measure.changed > 0 and next_day.scored.standing is None


def test_a_day_that_midnight_starts_twice_starts_at_the_second():
    """St John's, 7 November 2010: clocks went back from 00:01 to 23:01 of the 6th, so 00:00 of the
    7th came twice with the 6th in between; a count of days goes up at the second 00:00."""
    from connector.sources.days import midnight, next_midnight

    zone = ZoneInfo("America/St_Johns")
    start = midnight(datetime(2010, 11, 7).date(), zone)
    assert start == _at("2010-11-07T03:30:00").timestamp()  # 00:00 at -03:30, the second time
    late = datetime(2010, 11, 7, 3, 0, tzinfo=UTC).astimezone(zone)  # 23:30 of the 6th, after the change
    assert late.date().isoformat() == "2010-11-06" and next_midnight(late) == start
    assert days_between(_t("2010-11-06T15:00:00"), late) == 0.0
    # elsewhere nothing moves: Berlin's autumn change is at 03:00, São Paulo's spring one skipped 00:00
    assert midnight(datetime(2026, 10, 25).date(), BERLIN) == _at("2026-10-25T00:00:00", BERLIN).timestamp()
    assert midnight(datetime(2018, 11, 4).date(), ZoneInfo("America/Sao_Paulo")) == _at("2018-11-04T03:00:00").timestamp()


def test_a_naive_now_is_utc_in_the_column_forms_too(monkeypatch):
    """The record forms take a naive moment as UTC; the column forms did so only where the machine's
    own zone is UTC (now.timestamp() of a naive datetime reads the machine's zone)."""
    import time as clock

    monkeypatch.setenv("TZ", "America/New_York")
    clock.tzset()
    try:
        now = datetime(2026, 12, 1, 22, 0)  # naive: 22:00 UTC
        stamps = np.array([float(_t("2026-12-01T10:00:00")), float(_t("2026-11-30T23:00:00"))])
        assert [days_between(float(s), now) for s in stamps] == [0.0, 1.0]
        assert (today_ordinal(now) - ordinals_of(stamps, None)).tolist() == [0.0, 1.0]
    finally:
        monkeypatch.delenv("TZ")
        clock.tzset()


def test_days_to_renewal_moves_at_the_zones_midnight():
    """days_to_renewal counts from now's date in now's zone, and says it moves at that zone's midnight."""
    now = datetime(2026, 12, 1, 22, 30, tzinfo=UTC).astimezone(BERLIN)  # 23:30 in Berlin
    inputs = {"renewal_date": ("2026-12-10", None)}
    assert catalogue()["days_to_renewal"].compute(AccountData(), inputs, now)[0] == 9.0
    moves = CRM_MOVES["days_to_renewal"](inputs, now)
    assert moves == _at("2026-12-01T23:00:00").timestamp()  # Berlin's midnight, not UTC's
    assert catalogue()["days_to_renewal"].compute(AccountData(), inputs, datetime.fromtimestamp(moves, BERLIN))[0] == 8.0
