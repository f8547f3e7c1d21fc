"""Alert evaluation: each condition kind, fired once per transition, re-armed, baselined, recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from test_alerts_config import BASE

from connector.alerts import evaluate, plan_alerts
from connector.scoring.frame import iso

T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
KEYS = ["acme", "globex", "initech"]


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


@pytest.fixture
def accounts(store):
    store.upsert_accounts({"key": k, "name": k.title()} for k in KEYS)
    return store.account_keys()


def put_scores(store, accounts, at, rows, score="health"):
    """rows: key -> (value, status[, model, groups]); every other account is left unscored (N/A)."""
    out = []
    for key, aid in sorted(accounts.items(), key=lambda kv: kv[1]):
        value, status, model, groups = None, None, None, {}
        if key in rows:
            value, status, *rest = rows[key]
            model, groups = (rest + ["smb", {}][len(rest):])[:2]
        out.append((aid, model, "v1", value, value, status, status, None, None, None, None, 1.0, None,
                    "Support 22 (-18)" if value is not None else None, json.dumps(groups), None))
    store.write_scores(score, out, iso(at))


def run_alerts(store, mappings, at, save=True):
    return plan_alerts(store, mappings, at, run_id=None, save=save)


def fired(plan):
    return sorted((f.alert.name, f.account_key) for f in plan.firings)


RED = """
alerts:
  - name: red
    when: {status_becomes: Red}
    actions: [{webhook: {url_env: SLACK_URL, format: slack}}]
"""


def test_status_becomes_red_fires_once_per_transition_and_re_arms(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=RED)
    put_scores(store, accounts, day(0), {"acme": (30, "Red"), "globex": (80, "Green"), "initech": (55, "Yellow")})
    first = run_alerts(store, mappings, day(0))
    assert fired(first) == [] and first.baseline == {"red": 1} and first.first == ["red"]  # acme: old news

    put_scores(store, accounts, day(1), {"acme": (31, "Red"), "globex": (35, "Red"), "initech": (55, "Yellow")})
    second = run_alerts(store, mappings, day(1))
    assert fired(second) == [("red", "globex")]
    detail = second.firings[0].detail
    assert detail["status"] == {"before": "Green", "after": "Red"} and detail["score"]["before"] == 80
    assert detail["score"]["after"] == 35

    third = run_alerts(store, mappings, day(2))  # nothing changed: de-duplicated
    assert fired(third) == [] and third.holding == {"red": 2}

    put_scores(store, accounts, day(3), {"acme": (31, "Red"), "globex": (45, "Yellow"), "initech": (55, "Yellow")})
    fourth = run_alerts(store, mappings, day(3))
    assert fired(fourth) == [] and fourth.rearmed == {"red": 1}

    put_scores(store, accounts, day(4), {"acme": (31, "Red"), "globex": (20, "Red"), "initech": (55, "Yellow")})
    assert fired(run_alerts(store, mappings, day(4))) == [("red", "globex")]  # red again after recovering
    assert [r["account_key"] for r in store.fired_alerts()] == ["globex", "globex"]


def test_on_first_run_fire_fires_for_accounts_already_meeting_the_condition(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=RED + "    on_first_run: fire\n")
    put_scores(store, accounts, day(0), {"acme": (30, "Red"), "globex": (80, "Green")})
    first = run_alerts(store, mappings, day(0))
    assert fired(first) == [("red", "acme")] and first.firings[0].detail["first_run"] is True
    assert fired(run_alerts(store, mappings, day(1))) == []


def test_an_unknown_condition_neither_fires_nor_re_arms(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=RED)
    put_scores(store, accounts, day(0), {"acme": (80, "Green")})
    run_alerts(store, mappings, day(0))
    put_scores(store, accounts, day(1), {"acme": (30, "Red")})
    assert fired(run_alerts(store, mappings, day(1))) == [("red", "acme")]
    put_scores(store, accounts, day(2), {})  # acme cannot be scored (N/A): not "no longer Red"
    gap = run_alerts(store, mappings, day(2))
    assert gap.rearmed == {"red": 0} and gap.unknown == {"red": 3}  # all three accounts N/A now
    put_scores(store, accounts, day(3), {"acme": (28, "Red")})
    assert fired(run_alerts(store, mappings, day(3))) == []  # still the same episode


def test_an_account_first_seen_after_the_baseline_fires_when_it_is_red(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=RED)
    put_scores(store, accounts, day(0), {"acme": (80, "Green")})
    run_alerts(store, mappings, day(0))
    put_scores(store, accounts, day(1), {"acme": (80, "Green"), "initech": (12, "Red")})  # a new customer, in trouble
    assert fired(run_alerts(store, mappings, day(1))) == [("red", "initech")]


def test_editing_the_condition_takes_a_new_baseline(store, accounts, mappings_from, write_mappings):
    put_scores(store, accounts, day(0), {"acme": (55, "Yellow"), "globex": (80, "Green")})
    run_alerts(store, mappings_from(base=BASE, alerts=RED), day(0))
    yellow = mappings_from(base=BASE, alerts=RED.replace("status_becomes: Red", "status_becomes: Yellow"))
    edited = run_alerts(store, yellow, day(1))
    assert fired(edited) == [] and edited.restarted == ["red"] and edited.baseline == {"red": 1}
    put_scores(store, accounts, day(2), {"acme": (55, "Yellow"), "globex": (60, "Yellow")})
    assert fired(run_alerts(store, yellow, day(2))) == [("red", "globex")]


def test_the_models_filter_leaves_other_segments_out(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=RED + "    models: [smb]\n")
    put_scores(store, accounts, day(0), {"acme": (80, "Green", "smb"), "globex": (80, "Green", "rest")})
    run_alerts(store, mappings, day(0))
    put_scores(store, accounts, day(1), {"acme": (20, "Red", "smb"), "globex": (20, "Red", "rest")})
    assert fired(run_alerts(store, mappings, day(1))) == [("red", "acme")]


DROP = """
alerts:
  - name: drop
    when: {drops_by: 15, within_days: 30}
    actions: [{webhook: {url_env: ALERTS_URL, text: "{account} -{drop} in {days} days: {previous} -> {score}"}}]
"""


def test_a_drop_of_n_points_within_m_days_is_measured_from_the_highest_score_in_the_window(
        store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=DROP)
    put_scores(store, accounts, day(0), {"acme": (80, "Green"), "globex": (80, "Green")})
    run_alerts(store, mappings, day(0))
    put_scores(store, accounts, day(10), {"acme": (70, "Green"), "globex": (72, "Green")})
    assert fired(run_alerts(store, mappings, day(10))) == []  # 10 and 8 points: not yet
    put_scores(store, accounts, day(20), {"acme": (62, "Yellow"), "globex": (70, "Green")})
    plan = run_alerts(store, mappings, day(20))
    assert fired(plan) == [("drop", "acme")]  # 80 -> 62 within 30 days; globex only 10
    assert plan.firings[0].detail["drop"] == {"points": 18.0, "within_days": 30, "peak": 80.0,
                                              "peak_since": iso(day(0))}
    assert plan.firings[0].deliveries[0].payload["text"] == "Acme -18 in 30 days: 80 -> 62"
    assert fired(run_alerts(store, mappings, day(25))) == []  # still down: no second alert
    later = run_alerts(store, mappings, day(45))  # the 80 left the window: 70 -> 62 is 8 points
    assert later.rearmed == {"drop": 1}


TRIGGER = """
alerts:
  - name: late
    when: {trigger_fires: invoice_late}
    actions: [{webhook: {url_env: ALERTS_URL}}]
"""


def test_trigger_fires_reads_the_trigger_expression_over_the_stored_metrics(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=TRIGGER)
    ids = accounts
    store.put_records("salesforce", "Account", [("001ACME", {"Id": "001ACME"}, None, False)])
    store.link([("salesforce", "Account", "001ACME", ids["acme"], "id")])
    every = {"acme": (0, "Low"), "globex": (0, "Low"), "initech": (0, "Low")}
    store.set_values([(ids["acme"], "days_past_due", 0), (ids["globex"], "days_past_due", 5)], now=iso(day(0)))
    put_scores(store, accounts, day(0), every, score="churn_risk")
    first = run_alerts(store, mappings, day(0))
    assert first.unknown == {"late": 1}  # initech has no billing data: N/A, not "not late"
    store.set_values([(ids["acme"], "days_past_due", 34), (ids["globex"], "days_past_due", 12)], now=iso(day(1)))
    put_scores(store, accounts, day(1), {**every, "acme": (40, "High")}, score="churn_risk")
    plan = run_alerts(store, mappings, day(1))
    assert fired(plan) == [("late", "acme")]
    trigger = plan.firings[0].detail["trigger"]
    assert trigger == {"name": "invoice_late", "label": "invoice_late", "when": "days_past_due >= 30",
                       "inputs": {"days_past_due": 34.0}}
    body = plan.firings[0].deliveries[0].payload
    [recorded] = store.fired_alerts()
    assert body["alert"] == "late" and body["detail"]["trigger"] == trigger and body["alert_id"] == recorded["id"]
    assert body["account"] == {"id": ids["acme"], "key": "acme", "name": "Acme", "salesforce_id": "001ACME"}
    assert json.loads(recorded["deliveries"][0]["payload"]) == body  # what is sent is what was recorded
    assert fired(run_alerts(store, mappings, day(2))) == []


SUB = """
alerts:
  - name: support_low
    when: {sub_score_below: {group: support, below: 30}}
    actions: [{webhook: {url_env: ALERTS_URL, text: "{group} {sub_score} < {below}"}}]
"""


def test_a_sub_score_below_its_threshold_fires_with_its_before_and_after(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=SUB)
    put_scores(store, accounts, day(0), {"acme": (60, "Yellow", "smb", {"support": 41.5}),
                                          "globex": (60, "Yellow", "smb", {"support": None})})
    run_alerts(store, mappings, day(0))
    put_scores(store, accounts, day(1), {"acme": (50, "Yellow", "smb", {"support": 24.0}),
                                          "globex": (50, "Yellow", "smb", {"support": None})})
    plan = run_alerts(store, mappings, day(1))
    assert fired(plan) == [("support_low", "acme")] and plan.unknown == {"support_low": 2}  # globex's N/A, initech unscored
    assert plan.firings[0].detail["sub_score"] == {"group": "support", "below": 30.0, "before": 41.5, "after": 24.0}
    assert plan.firings[0].deliveries[0].payload["text"] == "support 24 < 30"


def test_plan_shows_alerts_without_recording_them(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts=RED)
    put_scores(store, accounts, day(0), {"acme": (80, "Green")})
    run_alerts(store, mappings, day(0))
    put_scores(store, accounts, day(1), {"acme": (30, "Red")})
    tables = ("alerts", "alert_deliveries", "alert_state", "alert_rules")

    def rows():
        return {t: store.conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}

    before = rows()
    shown = evaluate(store, mappings, day(1))
    assert fired(shown) == [("red", "acme")] and not shown.saved and rows() == before
    assert fired(run_alerts(store, mappings, day(1))) == [("red", "acme")]  # the run still fires it


def test_recording_saves_each_action_with_exactly_what_will_be_sent(store, accounts, mappings_from):
    mappings = mappings_from(base=BASE, alerts="""
alerts:
  - name: red
    label: Health turned Red
    when: {status_becomes: Red}
    actions:
      - webhook: {url_env: SLACK_URL, format: slack}
      - salesforce_task: {subject: "Red: {account}", due_in_days: 3, priority: High}
      - hubspot_task: {subject: "Red: {account}"}
""")
    acme = accounts["acme"]
    store.put_records("salesforce", "Account", [("001A", {"Id": "001A", "OwnerId": "005OWNER"}, None, False)])
    store.link([("salesforce", "Account", "001A", acme, "id")])
    store.upsert_accounts([{"key": "acme", "name": "Acme & <Sons>"}])
    put_scores(store, accounts, day(0), {"acme": (80, "Green")})
    run_alerts(store, mappings, day(0))
    put_scores(store, accounts, day(1), {"acme": (30, "Red")})
    plan = run_alerts(store, mappings, day(1))
    assert plan.saved and len(plan.alert_ids) == 1
    [row] = store.fired_alerts()
    assert row["alert"] == "red" and row["fired_at"] == iso(day(1)) and json.loads(row["detail"])["status"]["after"] == "Red"
    slack, task, hubspot = row["deliveries"]
    assert (slack["kind"], slack["target"], slack["status"]) == ("webhook", "SLACK_URL", "pending")
    assert json.loads(slack["payload"]) == {
        "text": "*Health turned Red*: Acme &amp; &lt;Sons&gt;: health became Red (30; was Green 80)"}
    assert (task["target"], task["status"]) == ("001A", "pending")
    assert json.loads(task["payload"]) == {
        "Subject": "Red: Acme & <Sons>", "ActivityDate": "2026-11-05", "Priority": "High", "Status": "Not Started",
        "WhatId": "001A", "OwnerId": "005OWNER",
        "Description": "Acme & <Sons>: health became Red (30; was Green 80)\nDrivers: Support 22 (-18)"
                       f"\n\nhealthsync alert red #{row['id']}"}
    assert (hubspot["status"], hubspot["error"]) == ("skipped", "no live HubSpot company is linked to this account")


def test_migrating_to_alerts_re_reads_the_crm_records_once_for_their_owners(tmp_path):
    import sqlite3

    from connector.store import _MIGRATIONS, Store, _split_sql

    path = tmp_path / "v4.db"
    conn = sqlite3.connect(path)
    for script in _MIGRATIONS[:4]:
        for statement in _split_sql(script):
            conn.execute(statement)
    conn.executemany("INSERT INTO cursors VALUES (?, ?, ?, '2026-11-01T00:00:00Z')",
                     [("salesforce", "Account", "x"), ("hubspot", "companies", "{}"), ("stripe", "events", "1")])
    conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '4')")  # as a real v4 store has it
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.schema_version >= 5
        assert store.cursor("salesforce", "Account") is None and store.cursor("hubspot", "companies") is None
        assert store.cursor("stripe", "events") == "1"  # billing and helpdesk carry on where they were
        assert store.alert_rules() == {} and store.fired_alerts() == []
