"""Alerts end to end over the sandbox's HTTP: baseline, fire exactly once per transition, deliver, de-duplicate."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from click.testing import CliRunner
from conftest import REPO

from connector.cli import cli
from connector.config.mappings import load_mappings
from connector.pipeline import pull, run, score
from connector.store import Store
from sandbox.dataset import build_dataset, sf_time
from sandbox.server import Sandbox

MAPPINGS = load_mappings(REPO / "mappings")


def env_of(sb: Sandbox) -> dict[str, str]:
    return {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01",
            "HEALTHSYNC_RETRY_ATTEMPTS": "2"}


def statuses(store: Store) -> dict[int, str | None]:
    return {r["account_id"]: r["status"] for r in store.current_scores("health")}


def make_unhappy(sb: Sandbox, store: Store, count: int) -> list[str]:
    """Salesforce accounts that are Green now: their CSM rates them 1 and nobody logs in any more."""
    green = {aid for aid, status in statuses(store).items() if status == "Green"}
    chosen = [rid for rid, aid in sorted(store.linked("salesforce", "Account").items())
              if aid in green and not sb.dataset.sf_accounts[rid]["IsDeleted"]][:count]
    with sb.lock:
        for rid in chosen:
            account = sb.dataset.sf_accounts[rid]
            account.update(CSM_Rating__c=1.0, Active_Users_30d__c=0.0, NPS__c=-90.0)
            account["SystemModstamp"] = account["LastModifiedDate"] = sf_time(time.time() + 1)
    return chosen


def fired(store: Store, alert: str, after: int = 0) -> dict[int, dict]:
    return {r["account_id"]: r for r in store.fired_alerts(10_000) if r["alert"] == alert and r["id"] > after}


def test_alerts_fire_once_per_transition_and_their_tasks_and_webhooks_arrive(tmp_path):
    dataset = build_dataset(accounts=400, seed=31, now=datetime.now(UTC))
    db = tmp_path / "alerts.db"
    with Sandbox(dataset) as sb, Store(db) as store:
        env = env_of(sb)
        first = run(store, MAPPINGS, env)  # run 1: the baseline, nothing sent
        assert first.exit_code == 0 and first.alerts.fired() == {} and first.alerts.first == [
            "health_turned_red", "health_dropped_fast", "invoice_late"]
        assert first.alerts.baseline["health_turned_red"] > 0  # accounts already Red are old news
        # what the alerts read and saved is let go before the push: the run's frame, the states
        assert first.scored.frame is None and first.alerts.states == [] and first.alerts.saved
        assert len(store.alert_state("health_turned_red")) == len(store.account_ids()) - first.alerts.unknown["health_turned_red"]
        assert dataset.sf_tasks == {} and dataset.hs_tasks == {} and sb.hooks == {}
        before = statuses(store)
        time.sleep(1.1)  # score history keeps a score's row per second: the drop is seen against run 1's row

        chosen = make_unhappy(sb, store, 25)
        pull(store, MAPPINGS, env)
        score(store, MAPPINGS)
        now = statuses(store)
        turned_red = {aid for aid, status in now.items() if status == "Red" and before.get(aid) != "Red"}
        assert len(turned_red) >= 5 and turned_red <= set(chosen_ids(store, chosen))

        # plan shows them before anything is sent, and records nothing
        shown = CliRunner().invoke(cli, ["--db", str(db), "--mappings", str(REPO / "mappings"), "plan", "--json"],
                                   env=env)
        assert shown.exit_code == 0, shown.output
        planned = json.loads(shown.output)["alerts"]
        assert {a["account"]["id"] for a in planned if a["alert"] == "health_turned_red"} == turned_red
        assert store.fired_alerts() == [] and dataset.sf_tasks == {} and sb.hooks == {}
        text = CliRunner().invoke(cli, ["--db", str(db), "--mappings", str(REPO / "mappings"), "plan"], env=env).output
        assert f"health_turned_red {len(turned_red)}" in text and "(shown, not recorded" in text
        dry = run(store, MAPPINGS, env, dry_run=True)  # a dry run shows them too, and records and sends nothing
        assert dry.alerts.fired()["health_turned_red"] == len(turned_red) and not dry.alerts.saved
        assert store.fired_alerts() == [] and dataset.sf_tasks == {} and sb.hooks == {} and dry.delivered is None

        # run 2 fires exactly those; the Slack hook fails 3 times: 2 attempts this run, so one message waits
        sb.fail_hook("slack", 3)
        second = run(store, MAPPINGS, env)
        assert second.exit_code == 0
        red = fired(store, "health_turned_red")
        assert set(red) == turned_red and second.alerts.fired()["health_turned_red"] == len(turned_red)
        sf_ids = {aid: rid for rid, aid in store.linked("salesforce", "Account").items()}
        tasks = {t["WhatId"]: t for t in dataset.sf_tasks.values()}
        assert set(tasks) == {sf_ids[aid] for aid in turned_red}  # one Task per alert, on the right Account
        for aid in turned_red:
            task, account = tasks[sf_ids[aid]], dataset.sf_accounts[sf_ids[aid]]
            assert task["OwnerId"] == account["OwnerId"] and task["Priority"] == "High"
            assert task["Subject"].startswith(f"Health is Red: {account['Name'].strip()}")
            [done] = [d for d in red[aid]["deliveries"] if d["kind"] == "salesforce_task"]
            assert (done["status"], done["external_id"]) == ("done", task["Id"])
        assert second.delivered.retry["webhook"] == 1 and second.delivered.done["webhook"] == len(turned_red) - 1
        calls = second.pulled.calls.as_dict()  # one request per batch of tasks, one POST per message
        assert calls["salesforce"]["POST composite/sobjects"] == 1 and calls["hubspot"][
            "POST /crm/v3/objects/tasks/batch/create"] == 1
        assert calls["webhook"] == {"POST HEALTHSYNC_SLACK_WEBHOOK": len(turned_red) + 2}  # + 2 answered 500

        dropped = fired(store, "health_dropped_fast")
        hs_ids = {aid: cid for cid, aid in store.linked("hubspot", "companies").items()}
        made = {t["associations"]["companies"][0]: t for t in dataset.hs_tasks.values()}
        linked = {aid for aid in dropped if aid in hs_ids and not dataset.hs_companies[hs_ids[aid]]["archived"]}
        assert set(made) == {hs_ids[aid] for aid in linked} and linked
        # Green (70+) to Red (< 40) is a drop of 30+ points: each of those also dropped; nobody else changed
        assert turned_red <= set(dropped) <= set(chosen_ids(store, chosen))
        for aid in linked:
            company = dataset.hs_companies[hs_ids[aid]]
            assert made[hs_ids[aid]]["properties"].get("hubspot_owner_id") == company["properties"]["hubspot_owner_id"]

        # run 3, nothing changed: nothing fires again; the message that waited is sent, once
        tasks_before, alerts_before = len(dataset.sf_tasks) + len(dataset.hs_tasks), len(store.fired_alerts(10_000))
        third = run(store, MAPPINGS, env)
        assert third.exit_code == 0 and third.alerts.fired() == {}
        assert len(store.fired_alerts(10_000)) == alerts_before
        assert len(dataset.sf_tasks) + len(dataset.hs_tasks) == tasks_before
        bodies = [m["body"]["text"] for m in sb.hooks["slack"]]
        assert len(bodies) == len(set(bodies)) == len(turned_red)  # every Red account announced exactly once
        assert sb.calls[("hooks", "POST /hooks/{name}")] == len(turned_red) + 3
        keys = [m["headers"]["X-Healthsync-Delivery"] for m in sb.hooks["slack"]]
        assert len(set(keys)) == len(keys)

        # the webhook URLs are secrets: named by their variable, never stored
        stored = json.dumps([list(r) for t in ("alerts", "alert_deliveries", "runs")
                             for r in store.conn.execute(f"SELECT * FROM {t}")])
        assert sb.urls["hooks"] not in stored and "HEALTHSYNC_SLACK_WEBHOOK" in stored

        listed = CliRunner().invoke(cli, ["--db", str(db), "--mappings", str(REPO / "mappings"), "alerts", "--json"])
        rows = json.loads(listed.output)
        assert {r["account"]["id"] for r in rows if r["alert"] == "health_turned_red"} == turned_red
        assert all(d["status"] in ("done", "skipped") for r in rows for d in r["deliveries"])


def chosen_ids(store: Store, chosen: list[str]) -> list[int]:
    links = store.linked("salesforce", "Account")
    return [links[rid] for rid in chosen]
