"""The measure step measures again only the accounts whose values may have changed: a record of
theirs stored, a link changed, a metric moving with time alone, never measured. It must leave
exactly what measuring every account leaves, through changes in every source, tickets moving
between organizations, re-linked records and time passing (an hour, days, past the 30- and
90-day windows)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.identity import match
from connector.metrics import measure
from connector.pipeline import pull
from connector.sources.base import AccountData
from connector.sources.registry import plugins
from connector.store import Store
from sandbox.dataset import build_dataset, sf_time, zd_time
from sandbox.server import Sandbox

MAPPINGS = load_mappings(REPO / "mappings")
# the sandbox stamps its changes with the wall clock: every run here is before it, so each pull reads them;
# at 21:30 UTC, so that an hour later is the same day and three hours later the next (the sandbox's usage
# rows are stamped at midnight: every account's usage moves then)
BASE = datetime.now(UTC).replace(hour=21, minute=30, second=0, microsecond=0) - timedelta(days=151)


def _values(conn: sqlite3.Connection) -> list[tuple]:
    return conn.execute("SELECT name, account_id, num, text, na_reason FROM metric_values "
                        "ORDER BY name, account_id").fetchall()


def _matching(conn: sqlite3.Connection) -> tuple[list[tuple], ...]:
    return (conn.execute("SELECT system, object, external_id, account_id, matched_by FROM account_links "
                         "ORDER BY 1, 2, 3").fetchall(),
            conn.execute("SELECT id, key, name, domain, deleted_at IS NULL FROM accounts ORDER BY id").fetchall(),
            conn.execute("SELECT * FROM match_issues ORDER BY 1, 2, 3").fetchall())


def _as_full(store: Store, now: datetime, matched: object = None) -> None:
    """A full match and a full measure of a copy change nothing, and leave the same links and values."""
    with store.preview() as copy:
        again_matched = match(copy, MAPPINGS, full=True)
        if matched is not None:
            assert again_matched == matched  # a skipped match summarizes what is stored
        assert _matching(copy.conn) == _matching(store.conn)
        again = measure(copy, MAPPINGS, now, full=True)
        assert again.full and again.measured == again.accounts
        assert again.changed == 0, "a full measure found values the incremental one left stale"
        assert _values(copy.conn) == _values(store.conn)
        assert again.totals == store.measured_totals()


def _move_ticket(sb: Sandbox, store: Store) -> tuple[str, str, str]:
    """Move an open ticket to another organization, each matched to another account: both accounts'
    open tickets change (a measure of only the account it went to leaves the other stale)."""
    ds, linked = sb.dataset, store.linked("zendesk", "organizations")
    with sb.lock:
        ticket = next(t for t in ds.zd_tickets.values()
                      if str(t.get("organization_id")) in linked and t["status"] == "open")
        before = str(ticket["organization_id"])
        other = next(o for o in ds.zd_organizations if o in linked and linked[o] != linked[before])
        t = ds.tick()
        ticket["organization_id"] = int(other)
        ticket["updated_at"], ticket["generated_timestamp"] = zd_time(t), int(t)
        ds.version += 1
    return str(ticket["id"]), before, other


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(accounts=300, seed=23, now=BASE)


def test_an_incremental_measure_leaves_what_a_full_one_does(dataset, tmp_path):
    steps = [  # (time since the first run, change the sandbox first)
        (timedelta(hours=1), False), (timedelta(hours=2), True), (timedelta(days=1), True),
        (timedelta(days=3, hours=5), True), (timedelta(days=34), False), (timedelta(days=95), True),
        (timedelta(days=126), False),
    ]
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        env = sb.unpaced_env()
        first = pull(store, MAPPINGS, env, now=BASE)
        assert first.measure.full and first.measure.measured == first.measure.accounts > 250
        _as_full(store, BASE)
        seen = []
        for i, (later, change) in enumerate(steps):
            if change:
                sb.mutate(fraction=0.05, seed=i)
                ticket, was, now_in = _move_ticket(sb, store)
            summary = pull(store, MAPPINGS, env, now=BASE + later)
            m = summary.measure
            if later <= timedelta(hours=2):
                assert not m.full, f"step {i}: measured everything ({m.measured} of {m.accounts})"
            seen.append((later, change, m.measured, m.full))
            if change:
                assert store.records_by_id("zendesk", "tickets", [ticket])[ticket]["organization_id"] == int(now_in)
            _as_full(store, BASE + later, summary.match)
        assert store.queued() == 0
    hour, changed, day, *_rest = seen
    assert hour[2] < first.measure.accounts / 10  # an hour later, unchanged: only those whose values moved
    assert hour[2] < changed[2] < first.measure.accounts / 2  # 5 % of the records changed
    assert day[3]  # a day later every account's days since active moved: all are measured, column-wise


def _cases(n: int = 40) -> list[AccountData]:
    """Accounts with Salesforce Cases (the shipped mappings pull none): created from 0 to 60 days
    before the base moment, and after it."""
    import random

    rnd = random.Random(3)
    out = []
    for a in range(n):
        cases = [{"CreatedDate": (BASE + timedelta(seconds=rnd.uniform(-60, 5) * 86400)).isoformat(),
                  "IsClosed": rnd.random() < 0.5, "Priority": rnd.choice(["High", "Low"])}
                 for _ in range(rnd.randint(0, 5))]
        out.append(AccountData(linked={"salesforce": [f"001{a}"]}, records={("salesforce", "Case"): cases}))
    return out


def test_at_midnight_the_metrics_from_crm_inputs_are_measured_for_every_account_alone(dataset, tmp_path):
    """Days to renewal go down at midnight for every account with a renewal date: then those are
    measured for all, and the other metrics only for the accounts otherwise due (usage, whose
    sandbox rows are stamped at midnight, is left out here: it would move every account then)."""
    with Sandbox(dataset) as sb, Store(tmp_path / "mid.db") as store:
        env = sb.unpaced_env()
        pull(store, MAPPINGS, env, now=BASE, skip=["usage"])
        midnight = float(store.meta("measure.inputs_move"))
        assert midnight == (BASE + timedelta(days=1)).replace(hour=0, minute=30).timestamp() - 1800
        later = BASE + timedelta(hours=3)
        with store.preview() as before:
            renewal = dict(before.conn.execute(
                "SELECT account_id, num FROM metric_values WHERE name = 'days_to_renewal' AND num IS NOT NULL"))
        m = pull(store, MAPPINGS, env, now=later, skip=["usage"]).measure
        assert not m.full and m.measured < m.accounts / 2
        assert float(store.meta("measure.inputs_move")) == midnight + 86400
        after = dict(store.conn.execute(
            "SELECT account_id, num FROM metric_values WHERE name = 'days_to_renewal' AND num IS NOT NULL"))
        assert len(renewal) > 100 and after == {a: v - 1 for a, v in renewal.items()}  # every one, a day less
        _as_full(store, later)


@pytest.mark.parametrize("plugin", [p for p in plugins() if p.catalogue], ids=lambda p: p.system)
def test_a_source_s_metrics_hold_still_until_its_moves_says(plugin, dataset, tmp_path):
    """Each metric of a source gives the same value at every moment from now until the moment its
    `moves` names (sampled, and just before it), for every account of the sandbox."""
    from connector.catalogue import catalogue
    from connector.metrics import calculator, gather, inputs_of

    if plugin.system == "salesforce":
        accounts = _cases()
    else:
        with Sandbox(dataset) as sb, Store(tmp_path / "m.db") as store:
            pull(store, MAPPINGS, sb.unpaced_env(), now=BASE)
            accounts = list(gather(store).values())[:150]
    known = catalogue()
    keys = [k for k, m in known.items() if m.system == plugin.system]
    checked = moving = 0
    for offset in (timedelta(0), timedelta(days=20), timedelta(days=100)):
        now = BASE + offset
        compute = calculator(known, now)
        for acct in accounts:
            if not acct.linked.get(plugin.system):
                continue
            inputs = inputs_of(MAPPINGS)(acct)
            until = plugin.moves(acct, now)
            assert until is None or until >= now.timestamp()
            horizon = (until - now.timestamp()) if until is not None else 400 * 86400.0
            moving += until is not None
            probes = [horizon * f for f in (0.1, 0.37, 0.5, 0.81, 0.999)] + [max(horizon - 1, 0)]
            for key in keys:
                expected = compute(key, acct, inputs)
                for probe in probes:
                    at = now + timedelta(seconds=probe)
                    got = calculator(known, at)(key, acct, inputs)
                    assert got == expected, f"{key} moved at {at} before {plugin.system}'s moves said ({until})"
                    checked += 1
    assert checked > 100 and moving > 10


def test_usage_moves_column_wise_as_account_by_account(dataset, tmp_path):
    """The full measure takes usage's `moves` column-wise (`Past.moves`): the same moments."""
    from connector.columns import Columnwise
    from connector.metrics import gather
    from connector.sources import registry

    plugin = registry.plugin("usage")
    with Sandbox(dataset) as sb, Store(tmp_path / "u.db") as store:
        pull(store, MAPPINGS, sb.unpaced_env(), now=BASE)
        ids = store.account_ids()
        data = gather(store)
        tables, _linked = Columnwise(store, ids).tables()
    for offset in (timedelta(0), timedelta(days=9, hours=7), timedelta(days=200)):
        at = BASE + offset
        wise = plugin.past.moves(tables["usage"], at).tolist()
        each = [plugin.moves(data.get(a, AccountData()), at) for a in ids.tolist()]
        assert [None if w != w else w for w in wise] == each
        assert sum(e is not None for e in each) > len(ids) / 2 or offset.days == 200


def test_a_ticket_moved_to_another_organization_measures_both_accounts_again(tmp_path):
    """Store level: the queue keeps the parent a record had and the one it has."""
    with Store(tmp_path / "q.db") as store:
        store.conn.execute("INSERT INTO meta VALUES ('measure.state', '{}')")
        now = "2026-11-02T00:00:00Z"
        store.upsert_accounts([{"key": "a"}, {"key": "b"}], now)
        ids = store.account_keys()
        store.replace_links([("zendesk", "organizations", "1", ids["a"], "domain a"),
                             ("zendesk", "organizations", "2", ids["b"], "domain b")], now)
        store.measured([(ids["a"], None, None), (ids["b"], None, None)], "{}", now, None, everything=True)
        assert store.changed_accounts(0, []) == set()
        store.put_records("zendesk", "tickets", [("t1", {"organization_id": 1}, None, False)], now, via="organization_id")
        belongs = [("zendesk", "tickets", "organizations")]
        assert store.changed_accounts(0, belongs) == {ids["a"]}
        store.measured([], "{}", now, None, everything=False)
        store.put_records("zendesk", "tickets", [("t1", {"organization_id": 2}, None, False)], now, via="organization_id")
        assert store.changed_accounts(0, belongs) == {ids["a"], ids["b"]}
        assert [r for r, _d in store.records_of_parents("zendesk", "tickets", "organization_id", ["2"])] == ["t1"]
        assert store.records_of_parents("zendesk", "tickets", "organization_id", ["1"]) == []
        store.measured([(ids["a"], 100.0, None)], "{}", now, None, everything=False)
        assert store.changed_accounts(99.0, belongs) == set()
        assert store.changed_accounts(100.0, belongs) == {ids["a"]}  # its values move with time by then
        store.replace_links([("zendesk", "organizations", "1", ids["b"], "domain b"),
                             ("zendesk", "organizations", "2", ids["b"], "domain b")], now)
        assert store.changed_accounts(0, belongs) == {ids["a"], ids["b"]}  # re-linked: the old and the new
    with closing(sqlite3.connect(tmp_path / "q.db")) as conn:
        assert conn.execute("SELECT count(*) FROM measure_accounts").fetchone()[0] == 2


def test_the_match_is_skipped_until_what_it_reads_changes(dataset, tmp_path):
    """A CRM field no matching rule reads (a CSM rating) changes nothing to match; a domain does."""
    with Sandbox(dataset) as sb, Store(tmp_path / "d.db") as store:
        env = sb.unpaced_env()
        pull(store, MAPPINGS, env, now=BASE)
        assert not store.match_due(MAPPINGS.state())
        with sb.lock:  # a rating: no matching rule reads it
            acc = next(a for a in sb.dataset.sf_accounts.values() if not a["IsDeleted"])
            acc["CSM_Rating__c"] = 5.0 if acc["CSM_Rating__c"] != 5.0 else 4.0
            acc["SystemModstamp"] = acc["LastModifiedDate"] = sf_time(sb.dataset.tick())
            sb.dataset.version += 1
        pull(store, MAPPINGS, env, now=BASE + timedelta(hours=1))
        assert store.meta("match.stale") is None
        with sb.lock:  # its website: the account's domain, which Stripe and Zendesk records match by
            acc["Website"] = "https://renamed-for-a-test.example.org"
            acc["SystemModstamp"] = acc["LastModifiedDate"] = sf_time(sb.dataset.tick())
            sb.dataset.version += 1
        before = store.linked("salesforce", "Account")
        summary = pull(store, MAPPINGS, env, now=BASE + timedelta(hours=2))
        assert store.meta("match.stale") is None  # matched again, and cleared
        account = before[acc["Id"]]
        domain = store.conn.execute("SELECT domain FROM accounts WHERE id = ?", (account,)).fetchone()[0]
        assert domain == "renamed-for-a-test.example.org"
        _as_full(store, BASE + timedelta(hours=2), summary.match)


def test_without_a_measure_state_nothing_is_queued(tmp_path):
    """A new store's first pull writes no queue: its first measure measures everything anyway."""
    with Store(tmp_path / "n.db") as store:
        store.put_records("zendesk", "tickets", [("t1", {"organization_id": 1}, None, False)], via="organization_id")
        assert store.queued() == 0


def test_an_account_data_without_records_never_moves():
    for plugin in plugins():
        if plugin.catalogue:
            assert plugin.moves(AccountData(), BASE) is None, plugin.system


def _planned_in_full(store: Store) -> int:
    """Changes a plan of every record would still find (after a run that pushed everything: none)."""
    from connector.writeback import plan

    with store.preview() as copy:
        found = plan(copy, MAPPINGS, full=True)
        assert found.full
        return sum(found.changes.values())


def test_an_incremental_plan_leaves_nothing_a_full_one_would_find(dataset, tmp_path):
    """Runs pull to push: each plan compares only the CRM records whose scores, links or fields
    changed, and after each push a plan of every record finds nothing left to write, through
    changes in the sources, a human overwriting an output field, and time moving scores."""
    from connector.pipeline import run

    with Sandbox(dataset) as sb, Store(tmp_path / "p.db") as store:
        env = sb.unpaced_env()
        first = run(store, MAPPINGS, env, now=BASE)
        assert first.planned.full and sum(first.planned.changes.values()) > 200
        assert _planned_in_full(store) == 0
        compared = []
        for i, later in enumerate((timedelta(hours=1), timedelta(hours=2), timedelta(days=2), timedelta(days=40))):
            if i:
                sb.mutate(fraction=0.05, seed=40 + i)
            if i == 1:  # a CSM types over the connector's field in Salesforce
                with sb.lock:
                    acc = next(a for a in sb.dataset.sf_accounts.values() if a.get("Health_Score__c") is not None)
                    acc["Health_Score__c"] = 1.0
                    acc["SystemModstamp"] = acc["LastModifiedDate"] = sf_time(sb.dataset.tick())
                    sb.dataset.version += 1
            result = run(store, MAPPINGS, env, now=BASE + later)
            assert not result.planned.full
            compared.append(sum(result.planned.compared.values()))
            if i == 1:
                assert result.planned.drift["salesforce"] >= 1  # the typed-over field is written back
            assert not any(result.pushed.failed.values())
            assert _planned_in_full(store) == 0, f"step {i}: a full plan found changes the incremental one missed"
        assert store.conn.execute("SELECT count(*) FROM plan_queue").fetchone()[0] == 0
    records = sum(first.planned.compared.values())
    assert compared[0] < records / 5  # an hour later: only what the own writes, read back, and time touched


def test_the_run_benchmark_runs_and_prints_each_step():
    """benchmarks/run_bench.py (docs/sources.md) on a small sandbox: four runs, each step timed,
    the later ones incremental."""
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_bench.py"), "60"],
                          capture_output=True, text=True, timeout=300, check=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    out = done.stdout
    for label in ("full first run", "unchanged run, an hour later", "run after 1 % changes",
                  "unchanged run again, an hour later (the steady state)"):
        assert label in out, out
    assert out.count("(incremental)") >= 2, out  # three runs in three hours: at most one crosses midnight
    assert "plan " in out and "alerts " in out and "write requests" in out, out
    steps = [line.split(": ", 1)[1] for line in out.splitlines() if "peak RSS by step:" in line]
    assert len(steps) == 4, out
    for step in ("pull", "match", "measure", "score", "plan", "alerts"):
        assert f"{step} " in steps[0], steps[0]  # each step's peak, sampled while it ran
    assert "push " in steps[0], steps[0]  # the first run writes its scores back


def test_a_full_measure_in_batches_of_accounts_leaves_what_one_read_of_everything_does(dataset, tmp_path, monkeypatch):
    import connector.metrics as metrics

    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        pull(store, MAPPINGS, sb.unpaced_env(), now=BASE)
        whole = measure(store, MAPPINGS, BASE + timedelta(hours=5), full=True, per_account=True)
        expected = _values(store.conn)
        with store.preview() as copy:
            monkeypatch.setattr(metrics, "GATHER_BATCH", 7)  # 300 accounts: 43 batches, read by id and by parent
            batched = measure(copy, MAPPINGS, BASE + timedelta(hours=5), full=True, per_account=True)
            assert batched.full and batched.measured == whole.measured > 250
            assert batched.changed == 0 and batched.not_available == whole.not_available
            assert _values(copy.conn) == expected
            assert copy.measured_totals() == store.measured_totals()
            assert sum(1 for _ in copy.conn.execute("SELECT 1 FROM metric_values WHERE num IS NOT NULL")) > 1000
