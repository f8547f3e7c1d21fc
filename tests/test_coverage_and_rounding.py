"""Issue 11, items 8-10: coverage counts only data and is one unit (percent 0-100) everywhere;
no verdict below a score's min_coverage; numbers rounded as documented."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from datetime import UTC, datetime

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REPO

from connector import pipeline
from connector.cli import cli
from connector.config.mappings import load_mappings
from connector.outputs import specs
from connector.report import render_report
from connector.report.scores import segments, unscored
from connector.scoring.engine import score_all
from connector.scoring.explain import explain
from connector.scoring.frame import from_values
from connector.store import Store
from connector.writeback import _output_value

NOW = datetime(2026, 4, 15, tzinfo=UTC)
STAMP = "2026-04-15T00:00:00Z"
LIN = "scheme: {type: linear, worst: 0, best: 100}"
INPUTS = "inputs:\n  a: {}\n  b: {}\n  c: {}\n"
METRICS = "metrics:\n  a: {input: a}\n  b: {input: b}\n  c: {input: c}\n"


def two_groups(b_use: str = LIN, extra: str = "", outputs: str = "") -> str:
    """usage (a) and support (b), equal weights."""
    return f"""\
scores:
  health:
{extra}    models:
      - name: only
        groups:
          usage:
            metrics:
              a: {{{LIN}}}
          support:
            metrics:
              b: {{{b_use}}}
{outputs}"""


def result_of(mappings, values, overrides=None):
    return score_all(mappings, from_values(values, mappings, NOW), overrides=overrides)["health"]


# ------------------------------------------------------------------ coverage: only metrics with data


@pytest.mark.parametrize("policy", ["missing: worst", "missing: neutral, neutral: 60"])
def test_a_metric_filled_by_the_missing_policy_is_not_data(mappings_from, policy):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups(f"{policy}, {LIN}"))
    r = result_of(mappings, {"a": [80, 80], "b": [None, 40]})
    fill = 0 if "worst" in policy else 60
    assert r.value.tolist() == [(80 + fill) / 2, 60]  # the fill still takes part in the score
    assert r.coverage.tolist() == [pytest.approx(0.5), pytest.approx(1.0)]


def test_a_filled_metric_is_not_data_when_metrics_combine_directly(mappings_from):
    health = f"""\
scores:
  health:
    models:
      - name: only
        combine: metrics
        groups:
          usage:
            metrics:
              a: {{weight: high, {LIN}}}
              b: {{weight: low, missing: neutral, {LIN}}}
"""
    r = result_of(mappings_from(inputs=INPUTS, metrics=METRICS, health=health), {"a": [100], "b": [None]})
    assert r.coverage[0] == pytest.approx(0.75)


# ------------------------------------------------------------------ coverage: one unit, percent 0-100


@pytest.fixture
def scored_store(tmp_path, write_mappings):
    """A store with one account scored at 50 % coverage (support N/A, scored worst), and its mappings."""
    root = write_mappings(inputs=INPUTS, metrics=METRICS, health=two_groups(f"missing: worst, {LIN}"))
    mappings = load_mappings(root)
    db = tmp_path / "cov.db"
    with Store(db) as store:
        store.upsert_accounts([{"key": "acme", "name": "Acme"}], STAMP)
        (account,) = store.account_keys().values()
        store.set_values([(account, "a", 80)], STAMP)
        pipeline.score(store, mappings, NOW)
    return str(db), str(root)


def test_coverage_is_a_percent_in_the_store_json_csv_cli_and_explain(scored_store):
    db, root = scored_store
    with Store(db) as store:
        (row,) = store.current_scores("health")
    assert row["coverage"] == 50.0

    def run(*args):
        result = CliRunner().invoke(cli, ["--db", db, "--mappings", root, *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert json.loads(run("scores", "--json"))[0]["coverage"] == 50.0
    assert next(csv.DictReader(io.StringIO(run("scores", "--csv"))))["coverage"] == "50.0"
    assert re.search(r"\b50%", run("scores")) and "5000%" not in run("scores")
    assert json.loads(run("explain", "acme", "--json"))["coverage"] == 50.0
    assert "coverage 50%" in run("explain", "acme")


def test_the_crm_gets_the_stored_percent():
    assert _output_value("coverage", {"value": 60.0, "coverage": 14.3}, "percent") == 14.3


def test_a_store_of_schema_5_has_its_coverage_turned_into_percent(tmp_path):
    db = tmp_path / "old.db"
    with Store(db) as store:
        store.conn.execute(
            "INSERT INTO scores (score, account_id, model_version, value, coverage, scored_at) "
            "VALUES ('health', 1, 'v', 60, 0.1429, ?), ('health', 2, 'v', NULL, NULL, ?)", (STAMP, STAMP))
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 5")
    conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Store(db) as store:
        assert store.schema_version >= 6
        got = dict(store.conn.execute("SELECT account_id, coverage FROM scores").fetchall())
    assert got == {1: 14.3, 2: None}


def test_the_report_shows_coverage_as_a_percent(scored_store):
    db, root = scored_store
    mappings = load_mappings(root)
    with Store(db) as store:
        (segment,) = segments(store, mappings.scores["health"])
        page = render_report(store, mappings, now=NOW)
    assert segment.coverage == pytest.approx(50.0)
    table = re.search(r'<table class="status-counts" data-score="health">.*?</table>', page, re.S)
    assert table and '<td class="num">50%</td>' in table.group(0)
    assert "coverage 50%" in page


# ------------------------------------------------------------------ no verdict without evidence


def test_below_min_coverage_there_is_no_number_status_or_grade(mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups(extra="    min_coverage: 60\n"))
    r = result_of(mappings, {"a": [0, 0], "b": [None, 0]})
    # account 0: only usage had data (50 %); account 1: both (100 %)
    assert np.isnan(r.value[0]) and r.status[0] is None and r.grade[0] is None
    assert r.status_computed[0] is None and r.drivers[0] == ""
    assert r.na_reason[0] == "insufficient coverage: 50% of the weight had data, below the score's minimum of 60%"
    assert r.computed[0] == 0  # what the thin data gave stays visible to explain
    assert r.value[1] == 0 and r.status[1] == "Red" and r.na_reason[1] is None
    data = explain(r, int(r.ids[0]))
    assert data["global"] is None and data["coverage"] == 50.0 and data["status"] is None


def test_below_min_coverage_the_status_is_the_configured_label(mappings_from):
    extra = "    min_coverage: 60\n    insufficient_label: Insufficient data\n"
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups(extra=extra))
    r = result_of(mappings, {"a": [0, 0], "b": [None, 0]})
    assert np.isnan(r.value[0]) and r.grade[0] is None
    assert r.status[0] == "Insufficient data" and r.status_computed[0] == "Insufficient data"
    assert r.status[1] == "Red"


def test_a_trigger_index_also_gives_no_verdict_below_min_coverage(mappings_from):
    churn = """\
scores:
  health:
    kind: triggers
    grades: none
    min_coverage: 50
    triggers:
      - {name: t1, when: a > 1, points: 40}
      - {name: t2, when: b > 1, points: 40}
      - {name: t3, when: c > 1, points: 20}
"""
    r = result_of(mappings_from(inputs=INPUTS, metrics=METRICS, health=churn), {"a": [5, 5], "b": [None, 0], "c": [None, 0]})
    assert np.isnan(r.value[0]) and r.status[0] is None and r.na_reason[0].startswith("insufficient coverage: 40%")
    assert r.value[1] == 40


def test_no_verdict_clears_the_crm_fields_or_writes_the_label(mappings_from):
    extra = "    min_coverage: 60\n"
    for label in (None, "Insufficient data"):
        text = extra + (f"    insufficient_label: {label}\n" if label else "")
        mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups(extra=text))
        rows = list(pipeline.score_rows(result_of(mappings, {"a": [0], "b": [None]}), "v"))
        columns = ["account_id", "model", "model_version", "computed", "value", "status_computed", "status",
                   "grade", "override_id", "trend", "trend_direction", "coverage", "points_to_next", "drivers",
                   "groups", "na_reason"]
        row = dict(zip(columns, rows[0], strict=True))
        fields = {key: _output_value(key, row, kind) for key, kind in
                  (("score", "double"), ("grade", "string"), ("status", "picklist"), ("group.usage", "double"),
                   ("trend", "string"), ("coverage", "percent"))}
        assert fields == {"score": None, "grade": None, "status": label, "group.usage": None, "trend": None,
                          "coverage": 50.0}


def test_the_status_picklist_of_the_crm_holds_the_label(mappings_from):
    outputs = "    outputs:\n      salesforce: {status: Health_Status__c}\n      hubspot: {status: health_status}\n"
    extra = "    min_coverage: 60\n    insufficient_label: Insufficient data\n"
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups(extra=extra, outputs=outputs))
    for system in ("salesforce", "hubspot"):
        (status,) = specs(mappings, system)
        assert status.options == ("Red", "Yellow", "Green", "Insufficient data")


def test_no_verdict_counts_as_not_scored_in_the_run_summary_and_report(tmp_path, mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups(extra="    min_coverage: 60\n"))
    with Store(tmp_path / "s.db") as store:
        store.upsert_accounts([{"key": "thin"}, {"key": "full"}, {"key": "empty"}], STAMP)
        ids = store.account_keys()
        store.set_values([(ids["thin"], "a", 90), (ids["full"], "a", 90), (ids["full"], "b", 90)], STAMP)
        summary = pipeline.score(store, mappings, NOW)
        assert summary.scored["health"] == 1 and summary.not_scored["health"] == 2
        (segment,) = segments(store, mappings.scores["health"])
        assert (segment.scored, segment.no_verdict, segment.not_scored) == (1, 1, 1)
        assert unscored(store, mappings.scores["health"]) == {
            "insufficient coverage (below 60%)": 1, "no metric of the model has data": 1}
        page = render_report(store, mappings, now=NOW)
    table = re.search(r'<table class="status-counts" data-score="health">.*?</table>', page, re.S).group(0)
    assert re.search(r'data-status="No verdict" data-count="1"', table)
    assert re.search(r'data-status="N/A" data-count="1"', table)


def test_min_coverage_takes_a_percent_sign(mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups(extra="    min_coverage: '60%'\n"))
    assert mappings.scores["health"].definition.min_coverage == 60
    assert np.isnan(result_of(mappings, {"a": [0], "b": [None]}).value[0])


def test_the_shipped_health_score_gives_no_verdict_below_25_percent():
    mappings = load_mappings(REPO / "mappings")
    assert mappings.scores["health"].definition.min_coverage >= 25


@pytest.mark.parametrize(
    ("extra", "message", "line"),
    [
        ("    min_coverage: 140\n", "less than or equal to 100", 3),
        ("    min_coverage: 0.25\n", "min_coverage 0.25 asks for 0.25% of the weight: it is a percent, 0-100", 3),
        ("    insufficient_label: No data\n", "insufficient_label needs min_coverage", 3),
        ("    min_coverage: 25\n    insufficient_label: Red\n", "insufficient_label 'Red' is also a status band", 4),
    ],
)
def test_min_coverage_mistakes_are_named_with_file_and_line(problems_from, extra, message, line):
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=two_groups(extra=extra))
    hits = [p for p in problems if message in p.message]
    assert hits, [p.render() for p in problems]
    assert (hits[0].file, hits[0].line) == ("mappings/health.yaml", line)


# ------------------------------------------------------------------ numbers as documented


@pytest.mark.parametrize(("rounding", "raw", "shown"), [("half_up", 16.65, 56), ("half_even", 16.35, 54)])
def test_drivers_round_the_sub_score_field_like_the_score(mappings_from, rounding, raw, shown):
    # linear 0..30: 16.65 -> 55.49999999999999 (the field says 55.5); 16.35 -> 54.5
    health = f"""\
scores:
  health:
    rounding: {rounding}
    models:
      - name: only
        groups:
          usage:
            metrics:
              a: {{scheme: {{type: linear, worst: 0, best: 30}}}}
"""
    r = result_of(mappings_from(inputs=INPUTS, metrics=METRICS, health=health), {"a": [raw]})
    (row,) = pipeline.score_rows(r, "v")
    field = json.loads(row[14])["usage"]
    assert field == round(raw / 30 * 100, 2)
    assert r.value[0] == shown
    assert r.drivers[0].startswith(f"Usage {shown} (-")


def test_a_fractional_score_override_is_rounded_like_a_score(mappings_from):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=two_groups())
    override = {"id": 7, "account_id": 1, "kind": "score", "value": "39.5"}
    r = result_of(mappings, {"a": [90], "b": [90]}, {"health": [override]})
    assert r.override_id[0] == 7
    assert r.value[0] == 40 and r.status[0] == "Yellow" and r.grade[0] == "C"


@pytest.mark.parametrize(
    ("weight", "says"),
    [
        ("1.5", "weight 1.5 is not a whole number: a numeric weight is 0, 1, 2 or 3"),
        ("5", "weight 5 is out of range: a numeric weight is a whole number 0, 1, 2 or 3"),
        ("'1.5'", "weight '1.5' is not none/low/medium/high, a whole number 0, 1, 2 or 3"),
    ],
)
def test_a_weight_message_says_what_is_accepted(problems_from, weight, says):
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=two_groups(f"weight: {weight}, {LIN}"))
    (problem,) = [p for p in problems if "weight" in p.message]
    assert says in problem.message
    if weight == "1.5":
        assert "out of range" not in problem.message  # 1.5 lies between 0 and 3


def test_the_percentile_formula_is_documented_and_is_the_one_used():
    doc = (REPO / "docs" / "mappings.md").read_text(encoding="utf-8")
    assert "(mid-rank − 1) / (n − 1) × 100" in doc
    assert "10, 20, 20, 40 score 0, 50, 50, 100" in doc
    assert "A population of one scores 50" in doc
    from connector.config.models import PercentileScheme

    higher = PercentileScheme(type="percentile")
    values = np.array([10.0, 20.0, 20.0, 40.0])
    assert higher.score(values, values).tolist() == [0, 50, 50, 100]
    assert higher.score(np.array([7.0]), np.array([7.0])).tolist() == [50]
