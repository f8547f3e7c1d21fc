"""Output fields as real orgs have them: a numeric trend field, Text fields shorter than the values.

validate --live / setup (outputs.live_check), the plan and the writer agree: a Number trend field
takes the points change, a Text one "+3 (Up)"; every text value is cut to the field's length (read
from describe / properties) with an ellipsis, in the plan, so no record fails STRING_TOO_LONG and a
cut value is not planned again; a label that can never fit is a warning naming its mappings line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import REPO

from connector import outputs
from connector.config.mappings import load_mappings
from connector.http import CallLog, RetryPolicy
from connector.pipeline import run
from connector.sources.base import SourceSetup
from connector.sources.hubspot.client import STRING_LENGTH, HubSpotSource
from connector.sources.salesforce.client import SalesforceSource
from connector.store import Store
from connector.writeback import field_lengths, field_types
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

MAPPINGS = load_mappings(REPO / "mappings")
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def env_of(sb: Sandbox) -> dict[str, str]:
    return {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01",
            "HEALTHSYNC_RETRY_ATTEMPTS": "6"}


def salesforce(sb: Sandbox) -> SalesforceSource:
    env = env_of(sb)
    source = SalesforceSource.from_env(SourceSetup(env, CallLog(), RetryPolicy.from_env(env)))
    assert source is not None
    return source


def hubspot(sb: Sandbox) -> HubSpotSource:
    env = env_of(sb)
    source = HubSpotSource.from_env(SourceSetup(env, CallLog(), RetryPolicy.from_env(env)))
    assert source is not None
    return source


def linked_scores(store: Store, system: str, obj: str) -> dict[str, dict]:
    scores = {r["account_id"]: r for r in store.current_scores("health")}
    return {rid: scores[aid] for rid, aid in store.linked(system, obj).items() if aid in scores}


# ------------------------------------------------------------------ the trend field


def test_validate_live_accepts_a_number_trend_field_and_names_what_a_trend_may_be():
    dataset = build_dataset(accounts=30, seed=4, now=NOW)
    with Sandbox(dataset, salesforce_types={"Health_Trend__c": "double"}) as sb:
        [report] = outputs.live_check(MAPPINGS, [salesforce(sb)])
    assert report.good, [p.render() for p in report.problems]
    assert "Health_Trend__c" in report.ok
    with Sandbox(dataset, salesforce_types={"Health_Trend__c": "date"}) as sb:
        [report] = outputs.live_check(MAPPINGS, [salesforce(sb)])
    [problem] = report.problems
    assert "Account.Health_Trend__c (health trend) is a date field; a trend needs one of currency, double" in \
        problem.message and "string, textarea" in problem.message
    assert problem.file.endswith("health.yaml") and problem.key == "scores.health.outputs.salesforce.trend"


def test_a_number_trend_field_gets_the_points_change_and_a_text_one_the_words(tmp_path):
    dataset = build_dataset(accounts=200, seed=8, now=NOW)
    with Sandbox(dataset, salesforce_types={"Health_Trend__c": "double"}) as sb, Store(tmp_path / "t.db") as store:
        [checked] = outputs.live_check(MAPPINGS, [salesforce(sb)])  # validate --live / setup: this org is fine
        assert checked.good, [p.render() for p in checked.problems]
        first = run(store, MAPPINGS, env_of(sb), now=NOW)
        assert first.exit_code == 0 and not any(first.pushed.failed.values())
        sb.mutate(fraction=0.3, seed=2)
        later = NOW + timedelta(days=31)  # a month on: every account has a trend
        second = run(store, MAPPINGS, env_of(sb), now=later)
        assert second.exit_code == 0 and not any(second.pushed.failed.values())
        assert field_types(store, "salesforce")["Health_Trend__c"] == "double"

        numeric = {rid: row for rid, row in linked_scores(store, "salesforce", "Account").items()
                   if row["trend"] is not None and not dataset.sf_accounts[rid]["IsDeleted"]}
        assert len(numeric) > 50 and any(row["trend"] for row in numeric.values())
        for rid, row in numeric.items():
            assert dataset.sf_accounts[rid]["Health_Trend__c"] == row["trend"], rid  # the points change

        words = {cid: row for cid, row in linked_scores(store, "hubspot", "companies").items()
                 if row["trend"] is not None and not dataset.hs_companies[cid]["archived"]}
        assert words
        for cid, row in words.items():
            assert dataset.hs_companies[cid]["properties"]["health_trend"] == \
                f"{row['trend']:+.0f} ({row['trend_direction']})"

        third = run(store, MAPPINGS, env_of(sb), now=later + timedelta(minutes=5))
        assert "Health_Trend__c" not in third.planned.fields["salesforce"]  # a written number is not planned again


# ------------------------------------------------------------------ text cut to the field's length


def test_text_values_are_cut_to_the_field_length_and_a_cut_value_is_not_planned_again(tmp_path):
    dataset = build_dataset(accounts=300, seed=21, now=NOW)
    short = {"Health_Drivers__c": 40, "Health_Status__c": 5, "Churn_Risk_Triggers__c": 30}
    types = {"Health_Drivers__c": "string", "Health_Status__c": "string", "Churn_Risk_Triggers__c": "string"}
    with Sandbox(dataset, salesforce_types=types, salesforce_lengths=short) as sb, \
            Store(tmp_path / "c.db") as store:
        first = run(store, MAPPINGS, env_of(sb), now=NOW)
        assert first.exit_code == 0 and first.pushed.failed == {"salesforce": 0, "hubspot": 0}
        assert field_lengths(store, "salesforce")["Health_Drivers__c"] == 40
        cut = 0
        for rid, row in linked_scores(store, "salesforce", "Account").items():
            account = dataset.sf_accounts[rid]
            if account["IsDeleted"] or row["value"] is None:
                continue
            held, full = account["Health_Drivers__c"] or "", row["drivers"] or ""  # no drivers at 100
            assert len(held) <= 40 and (held == full if len(full) <= 40 else held == outputs.fit(full, 40)), rid
            assert held.endswith("…") == (len(full) > 40)
            cut += len(full) > 40
            assert account["Health_Status__c"] == {"Red": "Red", "Green": "Green", "Yellow": "Yell…"}[row["status"]]
        assert cut > 20
        # what HubSpot holds is never cut: its string properties take 65,536 characters
        hs = linked_scores(store, "hubspot", "companies")
        assert any(dataset.hs_companies[c]["properties"]["health_drivers"] == r["drivers"] and len(r["drivers"]) > 40
                   for c, r in hs.items() if not dataset.hs_companies[c]["archived"] and r["drivers"])

        second = run(store, MAPPINGS, env_of(sb), now=NOW + timedelta(minutes=5))
        assert second.planned.changes["salesforce"] == 0, second.planned.fields  # delta-only on the cut values
        assert second.pushed.written["salesforce"] == 0


def test_fit_cuts_text_only_and_ends_in_an_ellipsis():
    assert outputs.fit("Usage 55, Support 20, Billing 0", 12) == "Usage 55, S…"
    assert outputs.fit("Usage 55,  Support", 11) == "Usage 55,…"  # no space before the ellipsis
    assert outputs.fit("short", 10) == "short" and outputs.fit("exactly10!", 10) == "exactly10!"
    assert outputs.fit(72.5, 2) == 72.5 and outputs.fit(None, 3) is None and outputs.fit("abc", 0) == "abc"


def test_the_pull_records_each_text_field_length_beside_its_type():
    dataset = build_dataset(accounts=10, seed=2, now=NOW)
    with Sandbox(dataset, salesforce_lengths={"Health_Grade__c": 7}) as sb:
        sf, hs = salesforce(sb), hubspot(sb)
        sf.check(MAPPINGS)
        hs.check(MAPPINGS)
    assert sf.field_types["Health_Grade__c"] == {"type": "string", "length": 7}
    assert sf.field_types["Health_Score__c"] == {"type": "double"}  # a number has no length to keep
    assert sf.field_types["Health_Drivers__c"] == {"type": "textarea", "length": 1000}
    assert hs.field_types["health_drivers"] == {"type": "string", "length": STRING_LENGTH} == {
        "type": "string", "length": 65_536}
    assert hs.field_types["health_score"] == {"type": "number"}
    json.dumps(sf.field_types)  # stored as the store's fields.<system> meta as it is


def test_field_types_still_read_a_store_written_by_an_older_healthsync(store):
    store.set_meta("fields.salesforce", json.dumps({"Health_Score__c": "double", "Health_Grade__c": "string"}))
    assert field_types(store, "salesforce") == {"Health_Score__c": "double", "Health_Grade__c": "string"}
    assert field_lengths(store, "salesforce") == {}
    store.set_meta("fields.salesforce", json.dumps({"Health_Score__c": {"type": "double"},
                                                    "Health_Grade__c": {"type": "string", "length": 10}}))
    assert field_types(store, "salesforce") == {"Health_Score__c": "double", "Health_Grade__c": "string"}
    assert field_lengths(store, "salesforce") == {"Health_Grade__c": 10}


# ------------------------------------------------------------------ labels that can never fit


def test_validate_live_warns_where_a_status_name_can_never_fit_naming_its_mappings_line():
    dataset = build_dataset(accounts=30, seed=4, now=NOW)
    with Sandbox(dataset, salesforce_types={"Health_Status__c": "string"},
                 salesforce_lengths={"Health_Status__c": 5}) as sb:
        [report] = outputs.live_check(MAPPINGS, [salesforce(sb)])
    assert report.good  # a warning, not a problem: validate --live still exits 0
    [warning] = report.warnings
    file, line = MAPPINGS.located.where(("scores", "health", "status", 1, "name"))
    assert (warning.file, warning.line, warning.key) == (file, line, "scores.health.status[1].name")
    assert "the status name 'Yellow' (6 characters) can never fit Account.Health_Status__c (health status), " \
           "a string field of 5 characters: it is written as 'Yell…'" in warning.render()
    assert warning.render().startswith(f"{file}:{line}: scores.health.status[1].name:")
    assert "hint: lengthen the field" in warning.render()


GRADED = """
scores:
  health:
    grades:
      - {name: F - failing, below: 20}
      - {name: D, below: 40}
      - {name: C, below: 60}
      - {name: B, below: 80}
      - {name: Excellent A}
    models:
      - name: all
        groups:
          usage: {weight: high, metrics: {seats: {weight: high, scheme: {type: linear, worst: 0, best: 10}}}}
    outputs:
      salesforce: {score: Health_Score__c, grade: Health_Grade__c, trend: Health_Trend__c}
"""
INPUTS = """
inputs:
  seats: {salesforce: Seats_Purchased__c}
"""
METRICS = """
metrics:
  seats: {input: seats}
"""


def test_a_grade_label_longer_than_its_text_field_is_a_warning_and_setup_makes_the_field_long_enough(mappings_from):
    mappings = mappings_from(health=GRADED, inputs=INPUTS, metrics=METRICS)
    described = {  # Account as describe gives it, by hand: Text(10) grade, Number(3, 0) trend
        "Seats_Purchased__c": {"name": "Seats_Purchased__c", "type": "double", "length": 0, "updateable": True},
        "Health_Score__c": {"name": "Health_Score__c", "type": "double", "length": 0, "updateable": True},
        "Health_Grade__c": {"name": "Health_Grade__c", "type": "string", "length": 10, "updateable": True},
        "Health_Trend__c": {"name": "Health_Trend__c", "type": "double", "length": 0, "precision": 3, "scale": 0,
                            "updateable": True},
    }
    report = outputs.check_salesforce(mappings, described)
    assert report.good and sorted(report.ok) == ["Health_Grade__c", "Health_Score__c", "Health_Trend__c"]
    assert [(w.key, w.line is not None) for w in report.warnings] == [
        ("scores.health.grades[0].name", True), ("scores.health.grades[4].name", True)]
    assert "the grade 'F - failing' (11 characters) can never fit Account.Health_Grade__c" in report.warnings[0].message
    assert "written as 'Excellent…'" in report.warnings[1].message
    # the field setup writes for these mappings holds the longest grade
    [grade] = [s for s in outputs.specs(mappings, "salesforce") if s.key == "grade"]
    assert grade.length == 11
    xml = outputs.salesforce_metadata(mappings)["force-app/main/default/objects/Account/fields/Health_Grade__c.field-meta.xml"]
    assert "<length>11</length>" in xml
    trend = outputs.salesforce_metadata(mappings)["force-app/main/default/objects/Account/fields/Health_Trend__c.field-meta.xml"]
    assert "<type>Text</type>" in trend and "<length>40</length>" in trend  # a new trend field: the words


def test_a_text_trend_field_too_short_for_the_words_is_a_warning(mappings_from):
    mappings = mappings_from(health=GRADED, inputs=INPUTS, metrics=METRICS)
    described = {name: {"name": name, "type": "double", "updateable": True}
                 for name in ("Seats_Purchased__c", "Health_Score__c")}
    described["Health_Grade__c"] = {"name": "Health_Grade__c", "type": "string", "length": 20, "updateable": True}
    described["Health_Trend__c"] = {"name": "Health_Trend__c", "type": "string", "length": 8, "updateable": True}
    report = outputs.check_salesforce(mappings, described)
    assert report.good
    [warning] = report.warnings
    assert warning.key == "scores.health.outputs.salesforce.trend"
    assert "the trend text '-100 (Down)' (11 characters) can never fit Account.Health_Trend__c" in warning.message


@pytest.mark.parametrize("kind", ["number", "string"])
def test_hubspot_takes_a_number_or_a_string_trend_property(kind):
    described = {s.name: {"name": s.name, "type": outputs.HUBSPOT_NEW[s.kind][0],
                          "options": [{"value": o} for o in s.options]} for s in outputs.specs(MAPPINGS, "hubspot")}
    described["health_trend"] = {"name": "health_trend", "type": kind}
    report = outputs.check_hubspot(MAPPINGS, described)
    assert report.good and not report.warnings
