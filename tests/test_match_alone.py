"""Usage keys are matched alone: when only they changed since the last match, only they are
attached again (connector/identity.py `_attach_alone`), and the store is left exactly as a full
match leaves it: accounts, links, match issues, what the measure and the plan take up again, and
the summary."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from conftest import REPO

from connector import identity
from connector.config.mappings import load_mappings
from connector.identity import match
from connector.pipeline import pull
from connector.sources import registry
from connector.sources.sync import _matched
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

MAPPINGS = load_mappings(REPO / "mappings")
NOW = datetime.now(UTC).replace(microsecond=0)
TABLES = {
    "accounts": "SELECT key, name, domain, deleted_at IS NULL FROM accounts ORDER BY key",
    "links": "SELECT system, object, external_id, account_id, matched_by FROM account_links ORDER BY 1, 2, 3",
    "issues": "SELECT * FROM match_issues ORDER BY 1, 2, 3",
    "measure": "SELECT account_id FROM measure_accounts ORDER BY 1",
    "plan": "SELECT * FROM plan_queue ORDER BY 1, 2, 3",
}


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    path = tmp_path_factory.mktemp("alone") / "s.db"
    dataset = build_dataset(accounts=150, seed=3, now=NOW)
    with Sandbox(dataset) as sb, Store(path) as store:
        pull(store, MAPPINGS, sb.unpaced_env(), NOW)
        assert store.linked("usage", "keys")  # the sandbox's usage keys are matched
    return path


def _key(kind: str, key: str, deleted: bool = False) -> tuple[str, dict, None, bool]:
    return f"{kind}:{key}", {"id": f"{kind}:{key}", "kind": kind, "key": key}, None, deleted


def _changes(store: Store) -> list[tuple[str, dict, None, bool]]:
    """New usage keys of every kind (by Salesforce, HubSpot and Stripe id, by an account's domain,
    by a domain no account has, by a domain two accounts share if one is) and a stored one deleted."""
    sf = sorted(store.linked("salesforce", "Account"))
    hs = sorted(store.linked("hubspot", "companies"))
    cus = sorted(store.linked("stripe", "customers"))
    domains = [d for (d,) in store.conn.execute("SELECT domain FROM accounts WHERE domain IS NOT NULL ORDER BY key")]
    shared = [d for (d,) in store.conn.execute(
        "SELECT domain FROM accounts WHERE domain IS NOT NULL GROUP BY domain HAVING count(*) > 1")]
    stored = sorted(store.linked("usage", "keys"))
    rows = [_key("salesforce", sf[0]), _key("salesforce", "001NOSUCHACCOUNT0"), _key("hubspot", hs[-1]),
            _key("stripe", cus[0]), _key("domain", f"https://www.{domains[0]}/pricing".replace("https://www.", "")),
            _key("domain", "nobody-has-this.example"), _key("domain", "gmail.com"), *(_key("domain", d) for d in shared[:1])]
    gone = store.records_by_id("usage", "keys", stored[:1])[stored[0]]
    rows.append((stored[0], gone, None, True))
    return rows


def _state(store: Store, summary: identity.MatchSummary) -> dict:
    return {**{name: store.conn.execute(sql).fetchall() for name, sql in TABLES.items()},
            "summary": dataclasses.asdict(summary), "due": store.match_due(MAPPINGS.state())}


def _store_changes(store: Store, rows: list, others: bool = False) -> None:
    plugin = registry.plugin("usage")
    store.put_records("usage", "keys", rows, matched=_matched(plugin, "keys", MAPPINGS), alone=True)
    if others:  # a Salesforce Account renamed: what matching reads of it changed
        rid, rec = next(iter(store.records("salesforce", "Account")))
        store.put_records("salesforce", "Account", [(rid, {**rec, "Name": "Renamed Inc"}, None, False)],
                          matched=_matched(registry.plugin("salesforce"), "Account", MAPPINGS))


@pytest.mark.parametrize("others", [False, True])
def test_usage_keys_changed_alone_are_attached_alone_to_the_full_match_result(pulled, tmp_path, monkeypatch, others):
    results = {}
    for way in ("alone", "full"):
        path = tmp_path / f"{way}.db"
        with Store(pulled) as source:
            source.conn.execute(f"VACUUM INTO '{path}'")
        with Store(path) as store:
            rows = _changes(store)
            before = store.records_by_id("usage", "keys", [r[0] for r in rows])
            changed = sorted(r[0] for r in rows if r[3] or before.get(r[0]) != r[1])  # an existing key stays out
            _store_changes(store, rows, others)
            queued = store.match_queued(MAPPINGS.state())
            assert (queued is None) == others  # a change of another record: the full match
            if way == "alone" and not others:
                assert queued == {("usage", "keys"): changed} and len(changed) >= 7
                with monkeypatch.context() as patched:  # the full match's save is not reached
                    patched.setattr(identity, "_save", lambda *a: pytest.fail("the full match ran"))
                    summary = match(store, MAPPINGS)
            else:
                summary = match(store, MAPPINGS, full=way == "full")
            assert store.match_queued(MAPPINGS.state()) is None
            results[way] = _state(store, summary)
    alone, full = results["alone"], results["full"]
    assert alone["due"] is False
    for name in (*TABLES, "summary"):
        assert alone[name] == full[name], name
    kinds = {r[3] for r in full["issues"] if r[0] == "usage"}
    assert "unmatched" in kinds  # the unknown account, the unknown domain, free mail
    assert len({r[2] for r in full["links"] if r[0] == "usage"}) > 5


def test_an_unchanged_usage_key_stored_again_queues_nothing(pulled, tmp_path):
    path = tmp_path / "again.db"
    with Store(pulled) as source:
        source.conn.execute(f"VACUUM INTO '{path}'")
    with Store(path) as store:
        stored = sorted(store.linked("usage", "keys"))[:3]
        again = [(rid, rec, None, False) for rid, rec in store.records_by_id("usage", "keys", stored).items()]
        _store_changes(store, again)
        assert store.match_queued(MAPPINGS.state()) is None
        assert store.match_due(MAPPINGS.state()) is False
