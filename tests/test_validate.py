"""`healthsync validate`: every kind of mistake is named with file:line and a hint."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO

from connector.config.mappings import check_mappings

INPUTS = """\
inputs:
  segment:
    type: text
    salesforce: Customer_Segment__c
    values: [SMB, Enterprise]
  csm_rating:
    salesforce: CSM_Rating__c
  seats:
    salesforce: Seats_Purchased__c
"""
METRICS = """\
metrics:
  csm_rating: {input: csm_rating}
  open_tickets: {catalogue: open_tickets}
"""


def score(models: str, outputs: str = "") -> str:
    return f"scores:\n  health:\n    models:\n{models}{outputs}"


GOOD_MODEL = """\
      - name: smb
        when: segment == "SMB"
        groups:
          support:
            metrics:
              open_tickets:
                scheme: {type: bands, direction: lower_is_better, bands: [{upto: 2, score: 100}, {score: 0}]}
"""


def one(problems, text):
    hits = [p for p in problems if text in p.message]
    assert hits, f"no problem mentions {text!r}: {[p.render() for p in problems]}"
    return hits[0]


def test_shipped_mappings_are_valid():
    mappings, problems = check_mappings(REPO / "mappings")
    assert problems == []
    assert set(mappings.scores) == {"health", "churn_risk"}
    assert [m.name for m in mappings.scores["health"].models] == [
        "onboarding", "smb", "mid_market", "enterprise", "unsegmented"
    ]


def test_validate_command_exits_2_and_names_file_and_line(write_mappings):
    root = write_mappings(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL.replace("upto: 2", "uptoo: 2")))
    run = subprocess.run(
        [sys.executable, "-m", "connector", "--mappings", str(root), "validate"], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "mappings/health.yaml:10" in run.stderr
    assert "scheme.bands[0].uptoo" in run.stderr
    assert "unknown key 'uptoo'" in run.stderr


def test_validate_command_passes_on_shipped_mappings():
    run = subprocess.run([sys.executable, "-m", "connector", "--mappings", str(REPO / "mappings"), "validate"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "mappings OK" in run.stdout


def test_unknown_key(problems_from):
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL.replace("groups:", "groupz: {}\n        groups:")))
    p = one(problems, "unknown key 'groupz'")
    assert (p.file, p.line) == ("mappings/health.yaml", 6)
    assert p.hint


def test_wrong_type(problems_from):
    problems = problems_from(inputs=INPUTS.replace("salesforce: CSM_Rating__c", "salesforce: [a, b]"), metrics=METRICS, health=score(GOOD_MODEL))
    p = one(problems, "valid string")
    assert (p.file, p.line, p.key) == ("mappings/inputs.yaml", 7, "inputs.csm_rating.salesforce")


def test_metric_used_but_not_defined(problems_from):
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL.replace("open_tickets:", "open_tikets:")))
    p = one(problems, "metric 'open_tikets' is used but not defined")
    assert p.line == 9
    assert "open_tickets" in p.hint


def test_expression_names_undefined_metric(problems_from):
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL.replace('segment == "SMB"', 'segmnt == "SMB"')))
    p = one(problems, "'segmnt' is not a defined metric or input")
    assert p.line == 5 and "segment" in p.hint


def test_field_both_input_and_output(problems_from):
    outputs = "    outputs:\n      salesforce:\n        score: CSM_Rating__c\n"
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL, outputs))
    p = one(problems, "'CSM_Rating__c' is already an input at mappings/inputs.yaml:7")
    assert p.file == "mappings/health.yaml" and p.line == 13


def test_same_output_field_twice(problems_from):
    outputs = "    outputs:\n      hubspot:\n        score: health_score\n        grade: health_score\n"
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL, outputs))
    one(problems, "'health_score' is already another output")


def test_weight_out_of_range(problems_from):
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL.replace("open_tickets:\n", "open_tickets:\n                weight: 5\n")))
    p = one(problems, "weight 5 is out of range")
    assert p.line == 10


def test_weight_word_unknown(problems_from):
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL.replace("open_tickets:\n", "open_tickets:\n                weight: huge\n")))
    one(problems, "'huge' is not none/low/medium/high")


def test_percentages_must_add_up(problems_from):
    model = GOOD_MODEL.replace("open_tickets:\n", "open_tickets:\n                weight: 60%\n") + """\
              csm_rating:
                weight: 30%
                scheme: {type: linear, worst: 1, best: 5}
"""
    problems = problems_from(inputs=INPUTS, metrics=METRICS, health=score(model))
    one(problems, "add up to 90%, not 100%")


def test_levels_and_percentages_do_not_mix(problems_from):
    model = GOOD_MODEL.replace("open_tickets:\n", "open_tickets:\n                weight: 60%\n") + """\
              csm_rating:
                weight: high
                scheme: {type: linear, worst: 1, best: 5}
"""
    one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "mix levels and percentages")


def test_thresholds_must_increase(problems_from):
    model = GOOD_MODEL.replace("[{upto: 2, score: 100}, {score: 0}]", "[{upto: 5, score: 100}, {upto: 2, score: 50}, {score: 0}]")
    p = one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "thresholds must increase: 2 after 5")
    assert p.line == 10


def test_band_scores_must_follow_direction(problems_from):
    model = GOOD_MODEL.replace("lower_is_better", "higher_is_better")
    one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "band scores must rise")


def test_condition_that_can_never_match(problems_from):
    model = GOOD_MODEL.replace('segment == "SMB"', 'segment == "Enterprize"')
    p = one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "model 'smb' can never match")
    assert p.line == 5 and "picklist" in p.hint


def test_contradictory_condition(problems_from):
    model = GOOD_MODEL.replace('segment == "SMB"', "seats > 100 and seats < 50")
    one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "can never match")


def test_condition_shadowed_by_earlier_model(problems_from):
    later = GOOD_MODEL.replace("name: smb", "name: small_smb").replace('segment == "SMB"', 'segment == "SMB" and seats < 10')
    p = one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL + later)), "model 'small_smb' is never used")
    assert "'smb'" in p.message and p.line == 12


def test_model_after_default_is_shadowed(problems_from):
    default = GOOD_MODEL.replace("name: smb", "name: default").replace('        when: segment == "SMB"\n', "")
    one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(default + GOOD_MODEL)), "model 'smb' is never used")


def test_models_covering_each_other_only_partly_are_fine(mappings_from):
    later = GOOD_MODEL.replace("name: smb", "name: big").replace('segment == "SMB"', "seats >= 100")
    mappings = mappings_from(inputs=INPUTS, metrics=METRICS, health=score(GOOD_MODEL + later))
    assert len(mappings.scores["health"].models) == 2


def test_expression_syntax_error(problems_from):
    model = GOOD_MODEL.replace('segment == "SMB"', "'segment == ) SMB'")
    p = one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "syntax error at column")
    assert p.line == 5


def test_expression_may_not_call_arbitrary_code(problems_from):
    model = GOOD_MODEL.replace('segment == "SMB"', "'__import__(\"os\").system(\"true\")'")
    one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "unknown function '__import__")


def test_expression_type_mistake(problems_from):
    metrics = METRICS + "  odd: {expr: segment * 2}\n"
    one(problems_from(inputs=INPUTS, metrics=metrics, health=score(GOOD_MODEL)), "arithmetic '*' needs numbers")


def test_derived_metric_cycle(problems_from):
    metrics = METRICS + "  a: {expr: b + 1}\n  b: {expr: a + 1}\n"
    one(problems_from(inputs=INPUTS, metrics=metrics, health=score(GOOD_MODEL)), "cycle")


def test_yaml_syntax_error_names_line(problems_from):
    p = one(problems_from(inputs=INPUTS, metrics=METRICS + "  bad: [unclosed\n", health=score(GOOD_MODEL)), "not valid YAML")
    assert p.file == "mappings/metrics.yaml" and p.line is not None


def test_duplicate_key(problems_from):
    metrics = METRICS + "  csm_rating: {input: csm_rating}\n"
    p = one(problems_from(inputs=INPUTS, metrics=metrics, health=score(GOOD_MODEL)), "defined twice")
    assert p.line == 4


def test_unknown_catalogue_metric(problems_from):
    p = one(problems_from(inputs=INPUTS, metrics=METRICS + "  x: {catalogue: open_tikets}\n", health=score(GOOD_MODEL)), "not in the metric catalogue")
    assert "open_tickets" in p.hint


def test_unknown_scheme_type(problems_from):
    model = GOOD_MODEL.replace("type: bands", "type: steps")
    one(problems_from(inputs=INPUTS, metrics=METRICS, health=score(model)), "unknown scheme type 'steps'")


def test_status_bands_must_rise(problems_from):
    text = score(GOOD_MODEL) + "    status: [{name: Red, below: 70}, {name: Yellow, below: 40}, {name: Green}]\n"
    one(problems_from(inputs=INPUTS, metrics=METRICS, health=text), "status bands must go up")


def test_every_problem_is_reported_not_just_the_first(problems_from):
    model = GOOD_MODEL.replace("open_tickets:\n", "open_tickets:\n                weight: 7\n").replace('segment == "SMB"', "segment ==")
    problems = problems_from(inputs=INPUTS, metrics=METRICS + "  y: {catalogue: nope}\n", health=score(model))
    messages = " | ".join(p.message for p in problems)
    assert "weight 7" in messages and "syntax error" in messages and "catalogue" in messages
