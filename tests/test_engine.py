"""Scoring behaviour: schemes, weights, N/A, segments, missing-data policies, bands."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from connector.scoring.engine import score_all
from connector.scoring.frame import from_values

INPUTS = """\
inputs:
  segment: {type: text, values: [SMB, Enterprise]}
  plan: {type: text}
  a: {}
  b: {}
  c: {}
  seats: {}
  rating: {}
  status: {type: text}
"""
METRICS = """\
metrics:
  a: {input: a}
  b: {input: b}
  c: {input: c}
  rating: {input: rating}
  status: {input: status}
  a_per_b: {expr: a / b}
"""


def health(models: str, extra: str = "") -> str:
    return f"scores:\n  health:\n{extra}    models:\n{models}"


def one_model(metrics: str, groups_extra: str = "", combine: str = "groups") -> str:
    return f"""\
      - name: only
        combine: {combine}
        groups:
          usage:
            metrics:
{metrics}{groups_extra}"""


def run(mappings_from, models, values, extra="", now=None):
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=health(models, extra))
    frame = from_values(values, mappings, now)
    return score_all(mappings, frame)["health"]


# ------------------------------------------------------------------ schemes


def test_bands_upper_bound_is_inclusive(mappings_from):
    m = "              a: {scheme: {type: bands, bands: [{upto: 10, score: 0}, {upto: 30, score: 50}, {score: 100}]}}\n"
    r = run(mappings_from, one_model(m), {"a": [10, 10.5, 30, 31]})
    assert r.value.tolist() == [0, 50, 50, 100]


def test_bands_lower_is_better(mappings_from):
    m = "              a: {scheme: {type: bands, direction: lower_is_better, bands: [{upto: 2, score: 100}, {upto: 5, score: 50}, {score: 0}]}}\n"
    r = run(mappings_from, one_model(m), {"a": [0, 3, 9]})
    assert r.value.tolist() == [100, 50, 0]


def test_linear_clamps_and_runs_backwards_when_lower_is_better(mappings_from):
    m = (
        "              a: {scheme: {type: linear, worst: 10, best: 60}}\n"
    )
    r = run(mappings_from, one_model(m), {"a": [0, 35, 70]})
    assert r.value.tolist() == [0, 50, 100]
    m = "              a: {scheme: {type: linear, worst: 20, best: 0}}\n"
    r = run(mappings_from, one_model(m), {"a": [0, 5, 40]})
    assert r.value.tolist() == [100, 75, 0]


def test_boolean_scheme(mappings_from):
    m = "              a: {scheme: {type: boolean, if_true: 100, if_false: 20}}\n"
    r = run(mappings_from, one_model(m), {"a": [1, 0, None]})
    assert r.value[:2].tolist() == [100, 20] and np.isnan(r.value[2])


def test_map_scheme_for_picklists_and_unknown_values(mappings_from):
    m = "              rating: {scheme: {type: map, values: {'1': 0, '3': 50, '5': 100}}}\n"
    r = run(mappings_from, one_model(m), {"rating": [1, 5, 4]})
    assert r.value[:2].tolist() == [0, 100]
    assert np.isnan(r.value[2])
    assert "value '4' is not in the scheme's values" in r.passes[0].slots[0].reason[2]


def test_map_scheme_on_text(mappings_from):
    m = "              status: {scheme: {type: map, values: {active: 100, past_due: 20}}}\n"
    r = run(mappings_from, one_model(m), {"status": ["active", "past_due", None]})
    assert r.value[:2].tolist() == [100, 20]
    assert r.na_reason[2] == "no metric of the model has data"


def test_percentile_within_model_with_ties(mappings_from):
    m = "              a: {scheme: {type: percentile}}\n"
    r = run(mappings_from, one_model(m), {"a": [10, 20, 20, 40, None]})
    assert r.value[:4].tolist() == [0, 50, 50, 100]
    m = "              a: {scheme: {type: percentile, direction: lower_is_better}}\n"
    r = run(mappings_from, one_model(m), {"a": [10, 20, 30]})
    assert r.value.tolist() == [100, 50, 0]


def test_per_seat_normalization(mappings_from):
    m = "              a: {per: seats, scheme: {type: bands, direction: lower_is_better, bands: [{upto: 0.1, score: 100}, {score: 0}]}}\n"
    r = run(mappings_from, one_model(m), {"a": [5, 5, 5], "seats": [100, 10, 0]})
    assert r.value[:2].tolist() == [100, 0]
    assert np.isnan(r.value[2])
    assert r.passes[0].slots[0].reason[2] == "per seats: seats is N/A or 0"


def test_derived_metric_expression(mappings_from):
    m = "              a_per_b: {scheme: {type: linear, worst: 0, best: 1}}\n"
    r = run(mappings_from, one_model(m), {"a": [1, 3, 1], "b": [4, 4, 0]})
    assert r.value[:2].tolist() == [25, 75]
    assert np.isnan(r.value[2])  # division by zero is N/A, not infinity


# ------------------------------------------------------------------ weights and N/A

LIN = "scheme: {type: linear, worst: 0, best: 100}"


def test_na_metric_is_left_out_with_its_weight(mappings_from):
    m = f"              a: {{weight: high, {LIN}}}\n              b: {{weight: low, {LIN}}}\n"
    r = run(mappings_from, one_model(m), {"a": [None, 80], "b": [40, 40]})
    assert r.value.tolist() == [40, 70]  # (3*80 + 1*40) / 4 = 70; N/A a: just b
    assert r.coverage[0] == pytest.approx(0.25)
    assert r.coverage[1] == pytest.approx(1.0)


def test_global_with_no_data_is_na_not_zero(mappings_from):
    m = f"              a: {{{LIN}}}\n"
    r = run(mappings_from, one_model(m), {"a": [None]})
    assert np.isnan(r.value[0]) and r.status[0] is None
    assert r.na_reason[0] == "no metric of the model has data"


def test_group_weights_and_na_group(mappings_from):
    models = f"""\
      - name: only
        groups:
          usage:
            weight: high
            metrics:
              a: {{{LIN}}}
          support:
            weight: low
            metrics:
              b: {{{LIN}}}
"""
    r = run(mappings_from, models, {"a": [80, 80], "b": [40, None]})
    assert r.value.tolist() == [70, 80]  # (3*80 + 1*40)/4; support N/A -> usage alone
    assert r.groups["usage"].tolist() == [80, 80]
    assert np.isnan(r.groups["support"][1])


def test_percentage_weights(mappings_from):
    m = f"              a: {{weight: 70%, {LIN}}}\n              b: {{weight: 30%, {LIN}}}\n"
    r = run(mappings_from, one_model(m), {"a": [100], "b": [0]})
    assert r.value.tolist() == [70]


def test_weight_none_counts_for_nothing(mappings_from):
    m = f"              a: {{weight: none, {LIN}}}\n              b: {{weight: low, {LIN}}}\n"
    r = run(mappings_from, one_model(m), {"a": [0], "b": [90]})
    assert r.value.tolist() == [90]


def test_contributions_add_up_and_drivers_name_the_costliest_groups(mappings_from):
    models = f"""\
      - name: only
        groups:
          usage:
            weight: high
            metrics:
              a: {{weight: high, {LIN}}}
              c: {{weight: low, {LIN}}}
          support:
            weight: medium
            metrics:
              b: {{{LIN}}}
"""
    r = run(mappings_from, models, {"a": [40], "b": [22], "c": [60]})
    slots = r.passes[0].slots
    total = sum(s.share[0] * s.score[0] for s in slots)
    assert total == pytest.approx(r.computed[0])
    # usage = (3*40 + 60)/4 = 45, support 22; global = (3*45 + 2*22)/5 = 35.8
    assert r.computed[0] == pytest.approx(35.8)
    assert r.drivers[0] == "Usage 45 (-33), Support 22 (-31)"


def test_applies_when_makes_metric_not_applicable(mappings_from):
    m = f"              a: {{{LIN}}}\n              b: {{applies_when: plan == \"pro\", {LIN}}}\n"
    r = run(mappings_from, one_model(m), {"a": [50, 50], "b": [0, 0], "plan": ["pro", "basic"]})
    assert r.value.tolist() == [25, 50]
    assert r.coverage[1] == pytest.approx(1.0)  # not applicable is not missing data
    assert "not applicable" in r.passes[0].slots[1].reason[1]


# ------------------------------------------------------------------ missing-data policies


def test_missing_neutral_and_worst(mappings_from):
    m = (
        f"              a: {{missing: neutral, neutral: 60, {LIN}}}\n"
        f"              b: {{missing: worst, {LIN}}}\n"
        f"              c: {{{LIN}}}\n"
    )
    r = run(mappings_from, one_model(m), {"a": [None], "b": [None], "c": [90]})
    assert r.value.tolist() == [50]  # (60 + 0 + 90) / 3


def test_stale_value_no_longer_counts_and_carry_forward(store, mappings_from):
    from connector import pipeline

    m = (
        "              rating: {missing: carry_forward, max_age_days: 90, scheme: {type: linear, worst: 1, best: 5}}\n"
        f"              a: {{{LIN}}}\n"
    )
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=health(one_model(m)))
    store.upsert_accounts([{"key": "fresh"}, {"key": "carried"}, {"key": "stale"}], "2026-01-01T00:00:00Z")
    ids = store.account_keys()
    store.set_values([(ids["fresh"], "rating", 5), (ids["carried"], "rating", 5), (ids["stale"], "rating", 5)], "2026-01-01T00:00:00Z")
    store.set_values([(ids["fresh"], "rating", 5), (ids["carried"], "rating", 5)], "2026-03-01T00:00:00Z")
    store.set_values([(ids["carried"], "rating", None)], "2026-03-15T00:00:00Z")
    store.set_values([(i, "a", 0) for i in ids.values()], "2026-04-01T00:00:00Z")
    _, results = pipeline.compute(store, mappings, datetime(2026, 4, 15, tzinfo=UTC))
    r = results["health"]
    by_key = dict(zip([ids["fresh"], ids["carried"], ids["stale"]], range(3), strict=True))
    # fresh: rating 5 since Jan 1 -> unchanged value keeps its `since`: 104 days old, stale
    assert np.isnan(r.passes[0].slots[0].score[by_key[ids["stale"]]])
    assert "stale" in r.passes[0].slots[0].reason[by_key[ids["stale"]]]
    # carried: rating went N/A on Mar 15; last known 5 was set on Jan 1 (> 90 days): not carried
    assert np.isnan(r.passes[0].slots[0].score[by_key[ids["carried"]]])


def test_carry_forward_within_age(store, mappings_from):
    from connector import pipeline

    m = "              rating: {missing: carry_forward, max_age_days: 90, scheme: {type: linear, worst: 1, best: 5}}\n"
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=health(one_model(m)))
    store.upsert_accounts([{"key": "x"}])
    (account,) = store.account_keys().values()
    store.set_values([(account, "rating", 4)], "2026-03-01T00:00:00Z")
    store.set_values([(account, "rating", None)], "2026-04-01T00:00:00Z")
    _, results = pipeline.compute(store, mappings, datetime(2026, 4, 15, tzinfo=UTC))
    slot = results["health"].passes[0].slots[0]
    assert results["health"].value[0] == 75
    assert slot.reason[0] == "carried forward from 2026-03-01"
    _, later = pipeline.compute(store, mappings, datetime(2026, 6, 15, tzinfo=UTC))
    assert np.isnan(later["health"].value[0])  # older than 90 days by then


def test_last_known_values_are_read_for_the_accounts_na_now_and_carried_as_before(store, mappings_from):
    from connector import pipeline
    from connector.scoring.frame import from_store

    m = "              rating: {missing: carry_forward, max_age_days: 90, scheme: {type: linear, worst: 1, best: 5}}\n"
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=health(one_model(m)))
    keys = [f"a{i}" for i in range(10)]
    store.upsert_accounts([{"key": k} for k in keys])
    ids = store.account_keys()
    store.set_values([(ids[k], "rating", 1 + i % 5) for i, k in enumerate(keys)], "2026-03-01T00:00:00Z")
    store.set_values([(ids["a2"], "rating", None), (ids["a7"], "rating", None)], "2026-04-01T00:00:00Z")
    now = datetime(2026, 4, 15, tzinfo=UTC)
    frame = from_store(store, mappings, now)
    known = frame.known("rating")
    full = store.history_column("rating", frame.ids, False, "2026-04-15T00:00:00Z", non_null=True)
    na = [i for i, a in enumerate(frame.ids.tolist()) if a in (ids["a2"], ids["a7"])]
    assert known.values[na].tolist() == full.values[na].tolist() == [3.0, 3.0]  # a2 and a7 were 3
    assert known.since[na].tolist() == full.since[na].tolist()
    assert np.isnan(np.delete(known.values, na)).all()  # the others' are their current values: not read
    _, results = pipeline.compute(store, mappings, now)
    slot = results["health"].passes[0].slots[0]
    reasons = slot.reason.tolist()
    assert reasons.count("carried forward from 2026-03-01") == 2
    assert sorted(results["health"].value.tolist()) == sorted([0.0, 25.0, 50.0, 75.0, 100.0] * 2)


# ------------------------------------------------------------------ segments


SEGMENTED = """\
      - name: smb
        when: segment == "SMB"
        groups:
          usage:
            metrics:
              a: {scheme: {type: bands, direction: lower_is_better, bands: [{upto: 10, score: 100}, {score: 0}]}}
      - name: enterprise
        when: segment == "Enterprise"
        groups:
          usage:
            metrics:
              a: {scheme: {type: bands, direction: lower_is_better, bands: [{upto: 100, score: 100}, {score: 0}]}}
"""


def test_segments_use_their_own_thresholds(mappings_from):
    r = run(mappings_from, SEGMENTED, {"segment": ["SMB", "Enterprise", None], "a": [50, 50, 50]})
    assert r.model.tolist() == ["smb", "enterprise", None]
    assert r.value[:2].tolist() == [0, 100]
    assert r.na_reason[2] == "no model matches this account"


def test_first_matching_model_wins_and_default_takes_the_rest(mappings_from):
    default = f"""\
      - name: default
        groups:
          usage:
            metrics:
              a: {{{LIN}}}
"""
    r = run(mappings_from, SEGMENTED + default, {"segment": ["SMB", None], "a": [50, 50]})
    assert r.model.tolist() == ["smb", "default"]
    assert r.value.tolist() == [0, 50]


# ------------------------------------------------------------------ bands, grades, rounding


def test_status_grade_and_points_to_next_band(mappings_from):
    m = f"              a: {{{LIN}}}\n"
    r = run(mappings_from, one_model(m), {"a": [0, 19, 20, 39.5, 40, 69, 70, 100]})
    assert r.value.tolist() == [0, 19, 20, 40, 40, 69, 70, 100]  # 39.5 rounds half up
    assert r.status.tolist() == ["Red", "Red", "Red", "Yellow", "Yellow", "Yellow", "Green", "Green"]
    assert r.grade.tolist() == ["F", "F", "D", "C", "C", "B", "B", "A"]
    assert r.points_to_next[:6].tolist() == [40, 21, 20, 30, 30, 1]
    assert np.isnan(r.points_to_next[6]) and np.isnan(r.points_to_next[7])  # Green is the top band


def test_configurable_status_bands_and_half_even(mappings_from):
    extra = "    rounding: half_even\n    status: [{name: Bad, below: 50}, {name: Good}]\n"
    m = f"              a: {{{LIN}}}\n"
    r = run(mappings_from, one_model(m), {"a": [49.5, 50.5]}, extra)
    assert r.value.tolist() == [50, 50]
    assert r.status.tolist() == ["Good", "Good"]


# ------------------------------------------------------------------ churn triggers


def test_trigger_index(mappings_from):
    text = """\
scores:
  churn_risk:
    kind: triggers
    grades: none
    status: [{name: Low, below: 30}, {name: High}]
    triggers:
      - {name: late, label: Invoice late, when: a >= 30, points: 40}
      - {name: unhappy, when: rating <= 2, points: 70}
"""
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, churn=text)
    frame = from_values({"a": [45, 0, None], "rating": [1, 5, None]}, mappings)
    r = score_all(mappings, frame)["churn_risk"]
    assert r.value[:2].tolist() == [100, 0]  # 40 + 70 capped at 100
    assert r.drivers.tolist()[:2] == ["Invoice late; unhappy", ""]
    assert r.status[:2].tolist() == ["High", "Low"]
    assert np.isnan(r.value[2])  # nothing could be evaluated: N/A, not "no risk"
    assert r.grade.tolist() == [None, None, None]
