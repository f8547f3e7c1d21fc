"""Point-in-time rescore and the backtest on records put straight into the store: no leakage, the
assumptions shown, the outcomes found by their rules, and clear errors (exit 2) for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_identity_metrics import DAY, seed

from connector.backtest.evaluate import BacktestError, backtest
from connector.backtest.history import rebuild, schedule
from connector.backtest.outcomes import events_of
from connector.config.mappings import load_mappings
from connector.errors import ConfigError
from connector.identity import match
from connector.metrics import gather, measure
from connector.store import Store

NOW = datetime(2026, 11, 1, 12, tzinfo=UTC)
T = int(NOW.timestamp())
OUTCOMES = """
outcomes:
  churn:
    label: Churned
    any:
      - stripe_cancellation: {reasons: [cancellation_requested]}
"""


def _mappings(tmp_path: Path, outcomes: str = OUTCOMES, carry: bool = False):
    target = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", target, dirs_exist_ok=True)
    (target / "outcomes.yaml").write_text(outcomes)
    inputs = target / "inputs.yaml"
    if not carry:
        inputs.write_text(inputs.read_text().replace("    carry_back: true", "    carry_back: false"))
    return load_mappings(target)


def _ticket(i: int, created: str, updated: str, status: str = "open", priority: str = "urgent") -> tuple:
    return (str(i), {"id": i, "organization_id": 70, "status": status, "priority": priority, "created_at": created,
                     "updated_at": updated, "satisfaction": None}, None, False)


def _pulled(store, mappings) -> None:
    seed(store)
    store.put_records("zendesk", "tickets", [
        _ticket(1, "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z", status="solved", priority="low"),
        _ticket(2, "2026-08-01T00:00:00Z", "2026-10-20T00:00:00Z", status="solved"),  # open on Sept 1st
    ])
    store.put_records("stripe", "subscriptions", [
        ("sub_1", {"id": "sub_1", "customer": "cus_explicit", "status": "canceled", "created": T - 300 * DAY,
                   "canceled_at": T - 20 * DAY, "ended_at": T - 20 * DAY,
                   "cancellation_details": {"reason": "cancellation_requested"},
                   "items": {"data": [{"quantity": 1, "price": {"unit_amount": 10000, "currency": "usd",
                                                               "recurring": {"interval": "month"}}}]}}, None, False),
    ])
    match(store, mappings)
    measure(store, mappings, NOW)


def test_a_past_date_sees_only_what_was_known_then(store, tmp_path):
    mappings = _mappings(tmp_path)
    _pulled(store, mappings)
    at = datetime(2026, 9, 1, tzinfo=UTC)
    acme = store.account_keys()["salesforce:001000000000000001"]
    i = int(np.flatnonzero(store.account_ids() == acme)[0])
    before = rebuild(store, mappings, [at])
    metrics = before.metrics[at]
    assert metrics["urgent_tickets"][i] == 1.0  # ticket 2 was still open on Sept 1st
    assert metrics["mrr"][i] == 100.0  # the subscription ran until Oct 12th
    assert np.isnan(metrics["csm_rating"][i])  # a CRM field healthsync first read today: no past value

    # an outcome-correlated record dated after T changes nothing at T
    store.put_records("zendesk", "tickets", [_ticket(3, "2026-09-15T00:00:00Z", "2026-09-15T00:00:00Z")])
    store.put_records("stripe", "charges", [("ch_9", {"id": "ch_9", "customer": "cus_explicit", "status": "failed",
                                                      "created": int(at.timestamp()) + 3 * 86400}, None, False)])
    after = rebuild(store, mappings, [at])
    for name, values in before.metrics[at].items():
        assert np.array_equal(values, after.metrics[at][name], equal_nan=True), name
    for score, s in before.scores[at].items():
        assert np.array_equal(s.value, after.scores[at][score].value, equal_nan=True), score
        assert s.status.tolist() == after.scores[at][score].status.tolist()
    # ... while a rescore at a later date does see it
    later = datetime(2026, 9, 20, tzinfo=UTC)
    assert rebuild(store, mappings, [later]).metrics[later]["urgent_tickets"][i] == 2.0


def test_a_carried_back_input_is_used_and_said(store, tmp_path):
    mappings = _mappings(tmp_path, carry=True)
    _pulled(store, mappings)
    at = datetime(2026, 9, 1, tzinfo=UTC)
    rebuilt = rebuild(store, mappings, [at])
    assert any("segment is carried back" in a for a in rebuilt.assumptions)
    acme = store.account_keys()["salesforce:001000000000000001"]
    i = int(np.flatnonzero(store.account_ids() == acme)[0])
    assert rebuilt.scores[at]["health"].model[i] == "smb"  # today's segment picks the model


def test_outcomes_come_from_the_source_rules(store, tmp_path):
    mappings = _mappings(tmp_path)
    _pulled(store, mappings)
    events = events_of(mappings.outcomes["churn"], gather(store))
    acme = store.account_keys()["salesforce:001000000000000001"]
    assert list(events.by_account) == [acme]
    when, what = events.by_account[acme][0]
    assert when == datetime.fromtimestamp(T - 20 * DAY, UTC) and "cancellation_requested" in what


def test_bad_outcomes_are_named_at_their_line(tmp_path):
    bad = OUTCOMES.replace("stripe_cancellation", "stripe_cancelation")
    with pytest.raises(ConfigError) as err:
        _mappings(tmp_path, bad)
    text = str(err.value.problems[0].render())
    assert "outcomes.yaml:6" in text and "unknown outcome rule 'stripe_cancelation'" in text
    with pytest.raises(ConfigError) as err:
        _mappings(tmp_path, OUTCOMES.replace("[cancellation_requested]", "[too_expensive]"))
    assert "too_expensive" in err.value.problems[0].render()


def test_a_horizon_longer_than_the_history_and_no_outcomes_are_exit_2(store, tmp_path):
    mappings = _mappings(tmp_path)
    _pulled(store, mappings)
    data = gather(store)
    dates = schedule(NOW - timedelta(days=28), NOW, timedelta(days=7))
    rebuilt = rebuild(store, mappings, dates, data)
    events = events_of(mappings.outcomes["churn"], data)
    with pytest.raises(BacktestError, match="a 90-day horizon needs a snapshot at least 90 days before"):
        backtest(rebuilt, mappings, "health", events, 90, NOW, {})
    nothing = events_of(mappings.outcomes["churn"], {})
    with pytest.raises(BacktestError, match="no account has the outcome 'churn'"):
        backtest(rebuilt, mappings, "health", nothing, 7, NOW, {})
    assert BacktestError.exit_code == 2


def test_the_commands_rescore_then_backtest_read_only(tmp_path):
    mappings = _mappings(tmp_path)
    db = tmp_path / "bt.db"
    with Store(db) as store:
        _pulled(store, mappings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "connector", "--db", str(db), "--mappings", str(mappings.root),
                               *args], capture_output=True, text=True, timeout=120)

    done = cli("rescore", "--from", "2026-05-01", "--to", "2026-10-30", "--every", "2w", "--json")
    assert done.returncode == 0, done.stderr
    series = json.loads(done.stdout)
    assert series["dates"][0] == "2026-05-01" and len(series["dates"]) == 14
    assert series["mappings_version"] == mappings.version
    before = db.read_bytes()
    judged = cli("backtest", "--horizon", "30", "--json")
    assert judged.returncode == 0, judged.stderr
    result = json.loads(judged.stdout)
    assert result["accounts_with_outcome"] == 1 and result["snapshots"][0] == "2026-05-01"
    assert "churned" in result["discrimination"]["thin"]  # one churner: too thin to judge, and said so
    assert db.read_bytes() == before  # a backtest only reads
    missing = cli("backtest", "--outcome", "renewal")
    assert missing.returncode == 2 and "no outcome named 'renewal'" in missing.stderr


def test_a_stored_series_reads_back_as_it_was_built(store, tmp_path):
    from connector.backtest.history import load
    mappings = _mappings(tmp_path)
    _pulled(store, mappings)
    dates = schedule(datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC), timedelta(days=14))
    built = rebuild(store, mappings, dates)
    store.save_series(mappings.version, "2026-06-01T00:00:00Z", "2026-10-01T00:00:00Z", 14, built.rows(),
                      built.assumptions)
    back = load(store, mappings, store.latest_series(mappings.version))
    assert back.dates == built.dates and back.assumptions == built.assumptions
    assert np.array_equal(back.ids, built.ids)
    for at in dates:
        for name, s in built.scores[at].items():
            other = back.scores[at][name]
            assert np.array_equal(s.value, other.value, equal_nan=True) and other.value.dtype == np.float64
            assert s.status.tolist() == other.status.tolist() and s.model.tolist() == other.model.tolist()
            assert [d or None for d in s.drivers.tolist()] == other.drivers.tolist()
            for g in s.groups:
                assert np.array_equal(s.groups[g], other.groups[g], equal_nan=True)
        for m, v in built.metrics[at].items():  # float32 only where that loses nothing
            assert np.array_equal(v, back.metrics[at][m], equal_nan=True) and back.metrics[at][m].dtype == np.float64, m


def test_rescore_keeps_the_outcome_events_backtest_reuses_until_a_record_changes(store, tmp_path):
    from connector.backtest.outcomes import EventsLater, encoded
    mappings = _mappings(tmp_path)
    _pulled(store, mappings)
    with EventsLater(store, mappings, ["churn"], reuse=False) as later:  # found in a forked process
        assert not later.reused
        store.save_events(later.fingerprint, encoded(later.found()))
        found = later.events(mappings.outcomes["churn"])
    assert found is not None and found.by_account == events_of(mappings.outcomes["churn"], gather(store)).by_account
    with EventsLater(store, mappings, ["churn"]) as again:
        assert again.reused and again.pool is None  # nothing is read again
        assert again.events(mappings.outcomes["churn"]).by_account == found.by_account
    store.put_records("stripe", "subscriptions", [("sub_2", {"id": "sub_2", "customer": "cus_explicit", "status": "active",
                                                             "created": T - 10 * DAY}, None, False)])
    with EventsLater(store, mappings, ["churn"]) as changed:
        assert not changed.reused and changed.events(mappings.outcomes["churn"]).by_account == {}  # a plan change now
    other = _mappings(tmp_path / "other", OUTCOMES.replace("[cancellation_requested]", "[payment_failed]"))
    assert EventsLater(store, other, []).fingerprint != EventsLater(store, mappings, []).fingerprint
