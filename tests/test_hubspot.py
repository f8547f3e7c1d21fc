"""HubSpot client against the sandbox over real HTTP (the SDK uses urllib3: `responses` cannot mock it)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import NOW, REPO

from connector.config.mappings import load_mappings
from connector.errors import ConfigError
from connector.pipeline import pull
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Faults, Sandbox

MAPPINGS = load_mappings(REPO / "mappings")


def env_of(sb: Sandbox, **extra: str) -> dict[str, str]:
    keep = ("HUBSPOT_ACCESS_TOKEN", "HUBSPOT_BASE_URL")
    return {**{k: v for k, v in sb.env().items() if k in keep}, "HEALTHSYNC_RETRY_BASE": "0.01", **extra}


@pytest.fixture(scope="module")
def dataset():
    return build_dataset(accounts=600, seed=21, now=NOW)


def live_ids(dataset) -> set[str]:
    return {c["id"] for c in dataset.hs_companies.values() if not c["archived"]}


def test_first_pull_lists_every_company_and_the_archived_ones(dataset, tmp_path):
    with Sandbox(dataset) as sb, Store(tmp_path / "a.db") as store:
        summary = pull(store, MAPPINGS, env_of(sb), now=NOW, only=["hubspot"])
        stored = dict(store.records("hubspot", "companies"))
        archived = {rid for rid, _ in store.records("hubspot", "companies", include_deleted=True)} - set(stored)
    assert set(stored) == live_ids(dataset)
    assert archived == {c["id"] for c in dataset.hs_companies.values() if c["archived"]} and archived
    calls = summary.calls.as_dict()["hubspot"]
    assert calls["GET /crm/v3/objects/companies"] == -(-len(live_ids(dataset)) // 100)  # 100 a page
    one = next(iter(stored.values()))
    assert {"customer_segment", "csm_rating", "health_score", "domain"} <= set(one)  # inputs and outputs


def test_archived_companies_are_listed_on_a_full_pull_then_once_a_day(dataset, tmp_path):
    """The archived list has no modified filter (it lists every archived company again): read on a
    full pull, then when HUBSPOT_ARCHIVED_EVERY_HOURS (24) have passed since its last listing."""
    archived_list = "GET /crm/v3/objects/companies (archived)"
    with Sandbox(dataset) as sb, Store(tmp_path / "arch.db") as store:
        first = pull(store, MAPPINGS, env_of(sb), now=NOW, only=["hubspot"])
        assert first.calls.as_dict()["hubspot"][archived_list] >= 1
        gone = sorted(live_ids(dataset))[0]
        sb.dataset.hs_companies[gone]["archived"] = True  # archived in HubSpot after the first pull
        sb.dataset.version += 1
        hour = pull(store, MAPPINGS, env_of(sb), now=NOW + timedelta(hours=1), only=["hubspot"])
        assert archived_list not in hour.calls.as_dict()["hubspot"]
        assert gone in dict(store.records("hubspot", "companies"))  # not known archived yet
        day = pull(store, MAPPINGS, env_of(sb), now=NOW + timedelta(hours=24), only=["hubspot"])
        assert day.calls.as_dict()["hubspot"][archived_list] >= 1
        assert gone not in dict(store.records("hubspot", "companies"))  # stored as deleted
        every = pull(store, MAPPINGS, env_of(sb, HUBSPOT_ARCHIVED_EVERY_HOURS="0"),
                     now=NOW + timedelta(hours=25), only=["hubspot"])
        assert every.calls.as_dict()["hubspot"][archived_list] >= 1
    sb.dataset.hs_companies[gone]["archived"] = False  # the module's dataset, as it was


def test_incremental_search_never_pages_into_the_result_cap(dataset, tmp_path):
    """More changed companies than one search may page through: windows by hs_object_id instead."""
    with Sandbox(dataset, hubspot_search_cap=250) as sb, Store(tmp_path / "b.db") as store:
        pull(store, MAPPINGS, env_of(sb), now=NOW, only=["hubspot"])
        changed = set(sb.mutate(fraction=0.6, seed=4)["hs_companies"])
        stamp_before = store.conn.execute("SELECT max(pulled_at) FROM records").fetchone()[0]
        later = NOW + timedelta(hours=1)  # a distinct pulled_at for this pull's records
        summary = pull(store, MAPPINGS, env_of(sb), now=later, only=["hubspot"])
        fetched = {r[0] for r in store.conn.execute(
            "SELECT id FROM records WHERE system = 'hubspot' AND deleted = 0 AND pulled_at > ?", (stamp_before,))}
    assert len(changed) > 250 and changed <= fetched
    searches = summary.calls.as_dict()["hubspot"]["POST /crm/v3/objects/companies/search"]
    assert searches == -(-len(fetched) // 200) or searches == -(-len(fetched) // 200) + 1


def test_companies_sharing_one_timestamp_do_not_loop(tmp_path):
    dataset = build_dataset(accounts=600, seed=21, now=NOW)
    stamp = "2026-10-01T00:00:00.000Z"
    for company in dataset.hs_companies.values():  # a bulk import: every company, one timestamp
        company["properties"]["hs_lastmodifieddate"] = stamp
        company["updatedAt"] = stamp
    with Sandbox(dataset) as sb, Store(tmp_path / "c.db") as store:
        from connector.store import utcnow

        with store.transaction():
            store.set_cursor("hubspot", "companies", '{"since": "2026-10-01T00:00:00Z", "after_id": 0}', utcnow())
        summary = pull(store, MAPPINGS, env_of(sb), now=NOW, only=["hubspot"])
    searches = summary.calls.as_dict()["hubspot"]["POST /crm/v3/objects/companies/search"]
    live = len(live_ids(dataset))
    assert summary.systems["hubspot"].records["companies"] == live > 400
    assert searches == live // 200 + 1


def test_429s_are_retried_with_the_rate_limit_headers(dataset, tmp_path):
    with Sandbox(dataset, faults=Faults(rate_429=0.3, seed=2)) as sb, Store(tmp_path / "d.db") as store:
        summary = pull(store, MAPPINGS, env_of(sb), now=NOW, only=["hubspot"])
        assert {rid for rid, _ in store.records("hubspot", "companies")} == live_ids(dataset)
        injected = sb.faulted[("hubspot", "429")]
    assert injected > 0 and summary.calls.retries[("hubspot", "429")] == injected


def test_a_missing_property_and_a_bad_token_are_clear(dataset, tmp_path, write_mappings):
    text = (REPO / "mappings" / "inputs.yaml").read_text().replace("hubspot: csm_rating", "hubspot: csm_score")
    root = tmp_path / "m"
    root.mkdir()
    (root / "inputs.yaml").write_text(text)
    for name in ("metrics.yaml",):
        (root / name).write_text((REPO / "mappings" / name).read_text())
    (root / "scores").mkdir()
    for path in (REPO / "mappings" / "scores").iterdir():
        (root / "scores" / path.name).write_text(path.read_text())
    with Sandbox(dataset) as sb, Store(tmp_path / "e.db") as store:
        with pytest.raises(ConfigError) as caught:
            pull(store, load_mappings(root), env_of(sb), now=NOW, only=["hubspot"])
        bad = pull(store, MAPPINGS, {**env_of(sb), "HUBSPOT_ACCESS_TOKEN": "pat-wrong-token"}, now=NOW,
                   only=["hubspot"]).failed["hubspot"]  # a rejected credential (AuthError, exit 2)
    [problem] = caught.value.problems
    assert problem.key == "inputs.csm_rating.hubspot" and "csm_score does not exist" in problem.message
    assert "HTTP 401" in bad and "check HUBSPOT_ACCESS_TOKEN" in bad and "pat-wrong-token" not in bad
