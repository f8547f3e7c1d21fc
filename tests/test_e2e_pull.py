"""End to end over real HTTP: the official clients against the local sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import NO_OUTCOMES, NOW

from connector.config.mappings import load_mappings
from connector.pipeline import pull, score
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Faults, Sandbox

MAPPINGS = load_mappings(NO_OUTCOMES)


def env_of(sb: Sandbox) -> dict[str, str]:
    return {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01",
            "HEALTHSYNC_RETRY_ATTEMPTS": "15"}


def content(store: Store) -> dict[str, list[tuple]]:
    """Everything a pull leaves in the store, minus when it happened."""
    queries = {
        "records": "SELECT system, object, id, data, modified, deleted FROM records ORDER BY 1, 2, 3",
        "accounts": "SELECT id, key, name, domain, deleted_at IS NULL FROM accounts ORDER BY id",
        "links": "SELECT system, object, external_id, account_id, matched_by FROM account_links ORDER BY 1, 2, 3",
        "issues": "SELECT * FROM match_issues ORDER BY 1, 2, 3",
        "values": "SELECT name, account_id, num, text, na_reason FROM metric_values ORDER BY 1, 2",
        "cursors": "SELECT system, stream, value FROM cursors ORDER BY 1, 2",
    }
    return {name: store.conn.execute(sql).fetchall() for name, sql in queries.items()}


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(accounts=2000, seed=7, now=datetime(2026, 11, 1, tzinfo=UTC))


def test_a_pull_through_faults_leaves_exactly_what_a_clean_pull_leaves(dataset, tmp_path):
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with Sandbox(dataset) as sb, Store(tmp_path / "clean.db") as clean:
        clean_summary = pull(clean, MAPPINGS, env_of(sb), now=now)
        expected = content(clean)
    faults = Faults(rate_429=0.10, rate_5xx=0.02, rate_drop=0.02, expire_session_after=1, seed=5)
    with Sandbox(dataset, faults=faults) as sb, Store(tmp_path / "faulty.db") as faulty:
        summary = pull(faulty, MAPPINGS, env_of(sb), now=now)
        injected = dict(sb.faulted)
        assert content(faulty) == expected
    assert injected[("salesforce", "session")] == 1
    for kind in ("429", "5xx", "drop"):
        assert sum(n for (_s, k), n in injected.items() if k == kind) > 0, kind
    assert sum(summary.calls.retries.values()) >= sum(injected.values()) - 1  # the expiry renews, not retries
    assert summary.calls.total() > clean_summary.calls.total()
    assert len(expected["records"]) > 10_000 and len(expected["values"]) > 30_000  # not a trivial pull


def test_an_incremental_pull_fetches_only_what_changed(tmp_path):
    dataset = build_dataset(accounts=2000, seed=8, now=NOW)
    with Sandbox(dataset) as sb, Store(tmp_path / "inc.db") as store:
        env = env_of(sb)
        first = pull(store, MAPPINGS, env, now=NOW)
        cursor = store.cursor("salesforce", "Account")
        hs_since = json.loads(store.cursor("hubspot", "companies"))["since"]
        changed = sb.mutate(fraction=0.01, seed=3)
        second = pull(store, MAPPINGS, env, now=NOW + timedelta(hours=1))
        stamp = store.conn.execute("SELECT max(pulled_at) FROM records").fetchone()[0]
        refetched = {(s, o): {r[0] for r in store.conn.execute(
            "SELECT id FROM records WHERE system = ? AND object = ? AND pulled_at = ?", (s, o, stamp))}
            for s, o in (("salesforce", "Account"), ("hubspot", "companies"), ("zendesk", "tickets"))}
    assert len(changed["sf_accounts"]) == 20 and len(changed["hs_companies"]) == round(0.01 * len(dataset.hs_companies))
    assert len(changed["zd_tickets"]) == round(0.01 * len(dataset.zd_tickets)) and changed["stripe"]
    # Salesforce: the changed accounts, plus any saved within the 5-minute overlap before the cursor
    from connector.sources.salesforce.client import _parse_sf_time

    edge = _parse_sf_time(cursor).timestamp() - 300
    overlap = {a["Id"] for a in dataset.sf_accounts.values()
               if a["Id"] not in changed["sf_accounts"] and _parse_sf_time(a["SystemModstamp"]).timestamp() >= edge}
    assert refetched[("salesforce", "Account")] == set(changed["sf_accounts"]) | overlap
    assert len(overlap) <= 2
    assert set(changed["hs_companies"]) <= refetched[("hubspot", "companies")]
    archived = {c["id"] for c in dataset.hs_companies.values() if c["archived"]}
    hs_edge = datetime.fromisoformat(hs_since.replace("Z", "+00:00")).timestamp() - 300
    hs_overlap = {c["id"] for c in dataset.hs_companies.values() if c["id"] not in changed["hs_companies"]
                  and datetime.fromisoformat(c["properties"]["hs_lastmodifieddate"].replace("Z", "+00:00")).timestamp() >= hs_edge}
    assert refetched[("hubspot", "companies")] - archived == set(changed["hs_companies"]) | (hs_overlap - archived)
    assert len(hs_overlap) <= 2
    assert refetched[("zendesk", "tickets")] == {str(t) for t in changed["zd_tickets"]}
    calls = second.calls.as_dict()
    assert calls["salesforce"] == {"POST login (SOAP)": 1, "GET sobjects/Account/describe": 1, "GET queryAll": 1}
    assert calls["hubspot"]["POST /crm/v3/objects/companies/search"] == 1
    assert calls["zendesk"] == {"GET /api/v2/incremental/organizations.json": 1,
                                "GET /api/v2/incremental/tickets/cursor.json": 1}
    assert calls["stripe"] == {"GET /v1/events": 1}
    assert second.systems["stripe"].records["events"] == len(changed["stripe"])
    assert second.calls.total() < first.calls.total() / 5


def test_scores_come_out_of_pulled_data(dataset, tmp_path):
    now = datetime(2026, 11, 1, tzinfo=UTC)
    with Sandbox(dataset) as sb, Store(tmp_path / "s.db") as store:
        pulled = pull(store, MAPPINGS, env_of(sb), now=now)
        scored = score(store, MAPPINGS, now)
        rows = store.current_scores("health")
    assert scored.accounts == sum(pulled.match.accounts.values())
    assert scored.scored["health"] + scored.no_verdict["health"] > 0.9 * scored.accounts  # a verdict, or "too thin"
    assert scored.scored["health"] > 0.7 * scored.accounts
    assert {r["status"] for r in rows if r["value"] is not None} >= {"Red", "Yellow", "Green"}
    groups = json.loads(next(r for r in rows if r["value"] is not None)["groups"])
    assert set(groups) >= {"usage", "support", "billing", "relationship"}
    assert pulled.match.unmatched and pulled.match.conflicts  # the sample is messy on purpose


def test_salesforce_jwt_bearer_login_against_the_sandbox(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "server.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    dataset = build_dataset(accounts=150, seed=4, now=datetime(2026, 11, 1, tzinfo=UTC))
    with Sandbox(dataset) as sb, Store(tmp_path / "jwt.db") as store:
        base = sb.env()
        env = {"SALESFORCE_USERNAME": base["SALESFORCE_USERNAME"], "SALESFORCE_CLIENT_ID": "3MVG9-sandbox",
               "SALESFORCE_PRIVATE_KEY_FILE": str(key_file), "SALESFORCE_LOGIN_URL": base["SALESFORCE_LOGIN_URL"],
               "HEALTHSYNC_CA_BUNDLE": base["HEALTHSYNC_CA_BUNDLE"]}
        summary = pull(store, MAPPINGS, env, only=["salesforce"])
        live = sum(1 for _ in store.records("salesforce", "Account"))
    assert summary.calls.as_dict()["salesforce"]["POST login (OAuth)"] == 1
    assert live == sum(1 for a in dataset.sf_accounts.values() if not a["IsDeleted"])
