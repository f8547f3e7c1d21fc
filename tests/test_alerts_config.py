"""Alerts in the mappings: every mistake is refused by `validate` with file:line, key and a hint."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO

from connector.config.mappings import check_mappings, load_mappings

BASE = """\
inputs:
  segment: {type: text, salesforce: Customer_Segment__c, values: [SMB, Enterprise]}
  csm_rating: {salesforce: CSM_Rating__c}
metrics:
  csm_rating: {input: csm_rating}
  open_tickets: {catalogue: open_tickets}
  days_past_due: {catalogue: days_past_due}
scores:
  health:
    models:
      - name: smb
        when: segment == "SMB"
        groups:
          support:
            metrics:
              open_tickets: {scheme: {type: linear, worst: 20, best: 0}}
      - name: rest
        groups:
          relationship:
            metrics:
              csm_rating: {scheme: {type: linear, worst: 1, best: 5}}
  churn_risk:
    kind: triggers
    status: [{name: Low, below: 25}, {name: High}]
    triggers:
      - {name: invoice_late, when: days_past_due >= 30, points: 40}
"""


def alerts(body: str) -> str:
    return "alerts:\n" + body


def line_of(text: str, snippet: str, nth: int = 1) -> int:
    """The line number (in the alerts file) of the nth line containing snippet."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if snippet in line]
    return hits[nth - 1]


def one(problems, text):
    hits = [p for p in problems if text in p.message]
    assert hits, f"no problem mentions {text!r}: {[p.render() for p in problems]}"
    return hits[0]


def test_the_shipped_alerts_are_valid_and_resolved_against_their_scores():
    mappings = load_mappings(REPO / "mappings")
    by_name = {a.name: a for a in mappings.alerts}
    assert set(by_name) == {"health_turned_red", "health_dropped_fast", "invoice_late"}
    assert (by_name["health_turned_red"].condition, by_name["health_turned_red"].status) == ("status_becomes", "Red")
    assert (by_name["health_dropped_fast"].drop, by_name["health_dropped_fast"].days) == (15, 30)
    assert by_name["invoice_late"].score == "churn_risk"  # found from the trigger's name
    assert [a.kind for a in by_name["health_turned_red"].actions] == ["webhook", "salesforce_task"]


def test_every_condition_kind_and_action_kind_is_accepted(mappings_from):
    mappings = mappings_from(base=BASE, alerts=alerts("""\
  - name: red
    when: {status_becomes: Red}
    models: [smb]
    actions: [{webhook: {url_env: SLACK_URL, format: slack, text: "{account} is {status} ({previous_status})"}}]
  - name: drop
    when: {drops_by: 10, within_days: 14}
    actions: [{hubspot_task: {subject: "{account} -{drop} in {days} days", due_in_days: 0, priority: Low}}]
  - name: late
    score: churn_risk
    when: {trigger_fires: invoice_late}
    on_first_run: fire
    actions: [{salesforce_task: {subject: "{trigger}", priority: High}}]
  - name: support_low
    when: {sub_score_below: {group: support, below: 30}}
    actions: [{webhook: {url_env: ALERTS_URL}}]
"""))
    assert [(a.name, a.condition, a.score) for a in mappings.alerts] == [
        ("red", "status_becomes", "health"), ("drop", "drops_by", "health"),
        ("late", "trigger_fires", "churn_risk"), ("support_low", "sub_score_below", "health")]
    assert mappings.alerts[0].models == ("smb",) and mappings.alerts[2].on_first_run == "fire"
    assert (mappings.alerts[3].group, mappings.alerts[3].below) == ("support", 30)


def test_unknown_names_are_refused_with_file_line_and_a_hint(problems_from):
    text = alerts("""\
  - name: red
    score: helth
    when: {status_becomes: Red}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: purple
    when: {status_becomes: Purple}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: late
    when: {trigger_fires: invoice_lat}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: usage
    when: {sub_score_below: {group: usage, below: 30}}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: wrong_model
    when: {status_becomes: Red}
    models: [enterprise]
    actions: [{webhook: {url_env: SLACK_URL}}]
""")
    problems = problems_from(base=BASE, alerts=text)
    score = one(problems, "score 'helth' is not defined")
    assert (score.file, score.line, score.key) == ("mappings/alerts.yaml", line_of(text, "helth"), "alerts[0].score")
    assert "did you mean 'health'?" in score.hint
    status = one(problems, "'Purple' is not a status of score 'health'")
    assert status.line == line_of(text, "Purple") and "Red, Yellow, Green" in status.hint
    trigger = one(problems, "'invoice_lat' is not a trigger of any score")
    assert trigger.line == line_of(text, "invoice_lat") and "did you mean 'invoice_late'?" in trigger.hint
    group = one(problems, "'usage' is not a sub-score (group) of score 'health'")
    assert group.line == line_of(text, "group: usage") and "support" in group.hint
    model = one(problems, "'enterprise' is not a model of score 'health'")
    assert (model.line, model.key) == (line_of(text, "[enterprise]"), "alerts[4].models[0]")


def test_bad_numbers_and_incomplete_conditions_are_refused(problems_from):
    text = alerts("""\
  - name: a
    when: {drops_by: 15}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: b
    when: {drops_by: -5, within_days: 30}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: c
    when: {sub_score_below: {group: support, below: 130}}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: d
    when: {status_becomes: Red, drops_by: 10, within_days: 5}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: e
    when: {status_becomes: Red}
    actions: [{salesforce_task: {due_in_days: 1000, priority: Urgent}}]
  - name: f
    when: {status_becomes: Red}
    actions: []
""")
    problems = problems_from(base=BASE, alerts=text)
    assert one(problems, "drops_by needs within_days").line == line_of(text, "{drops_by: 15}")
    assert one(problems, "greater than 0").key == "alerts[1].when.drops_by"
    assert one(problems, "less than or equal to 100").key == "alerts[2].when.sub_score_below.below"
    assert one(problems, "exactly one condition (has status_becomes, drops_by)").line == line_of(text, "within_days: 5")
    assert one(problems, "less than or equal to 365").key == "alerts[4].actions[0].salesforce_task.due_in_days"
    assert one(problems, "'High', 'Normal' or 'Low'").line == line_of(text, "Urgent")
    assert one(problems, "at least 1 item").key == "alerts[5].actions"


def test_unknown_action_kinds_and_bad_webhook_variables_are_refused(problems_from):
    text = alerts("""\
  - name: a
    when: {status_becomes: Red}
    actions:
      - email: {to: cs@example.com}
      - webhook: {url_env: https://hooks.slack.com/services/T000/B000/XXXX}
  - name: b
    when: {status_becomes: Red}
    actions:
      - webhook: {url_env: HUBSPOT_ACCESS_TOKEN}
      - webhook: {url_env: SLACK_URL_FILE}
      - webhook: {url_env: slack-url}
  - name: c
    when: {status_becomes: Red}
    actions:
      - webhook: {url_env: SLACK_URL, format: teams}
""")
    problems = problems_from(base=BASE, alerts=text)
    email = one(problems, "unknown action 'email'")
    assert (email.line, email.key) == (line_of(text, "email:"), "alerts[0].actions[0].email") and "webhook" in email.hint
    url = one(problems, "url_env holds a URL, not the name of an environment variable")
    assert url.line == line_of(text, "hooks.slack.com") and "HEALTHSYNC_SLACK_WEBHOOK" in url.hint
    assert "T000/B000" not in url.render()  # a URL pasted in the wrong place is not echoed back
    assert one(problems, "'HUBSPOT_ACCESS_TOKEN' is one of healthsync's own").line == line_of(text, "HUBSPOT_ACCESS")
    assert one(problems, "name the variable without _FILE ('SLACK_URL')").line == line_of(text, "SLACK_URL_FILE")
    assert one(problems, "'slack-url' is not an environment variable name").line == line_of(text, "slack-url")
    assert one(problems, "'slack' or 'json'").line == line_of(text, "teams")


def test_message_templates_take_only_the_placeholders_of_their_condition(problems_from):
    text = alerts("""\
  - name: a
    when: {status_becomes: Red}
    actions:
      - salesforce_task: {subject: "{account} dropped {drop}"}
      - hubspot_task: {subject: "{account.__class__}", body: "{score!r} {status:>10}"}
      - webhook: {url_env: SLACK_URL, text: "unbalanced {account"}
""")
    problems = problems_from(base=BASE, alerts=text)
    drop = one(problems, "unknown placeholder {drop}")
    assert (drop.line, drop.key) == (line_of(text, "{drop}"), "alerts[0].actions[0].salesforce_task.subject")
    assert "{previous_status}" in drop.hint and "{drop}" not in drop.hint
    assert one(problems, "unknown placeholder {account.__class__}").line == line_of(text, "__class__")
    assert one(problems, "placeholder {score} in '{score!r} {status:>10}' takes no format").line == line_of(text, "!r")
    assert one(problems, "expected '}' before end of string").line == line_of(text, "unbalanced")


def test_names_must_be_unique_and_alerts_a_list(problems_from):
    text = alerts("""\
  - name: red
    when: {status_becomes: Red}
    actions: [{webhook: {url_env: SLACK_URL}}]
  - name: red
    when: {status_becomes: Yellow}
    actions: [{webhook: {url_env: SLACK_URL}}]
""")
    problems = problems_from(base=BASE, alerts=text)
    assert one(problems, "alert name 'red' is used twice").line == line_of(text, "name: red", 2)
    problems = problems_from(base=BASE, alerts="alerts:\n  red: {when: {status_becomes: Red}}\n")
    assert one(problems, "'alerts' must be a list").line == 1


def test_trigger_fires_on_a_weighted_score_is_refused(problems_from):
    problems = problems_from(base=BASE, alerts=alerts("""\
  - name: late
    score: health
    when: {trigger_fires: invoice_late}
    actions: [{webhook: {url_env: SLACK_URL}}]
"""))
    assert one(problems, "score 'health' has no triggers").line == 3  # score: health


def test_an_alerts_only_file_leaves_the_model_version_alone(write_mappings, tmp_path):
    root = write_mappings(base=BASE)
    before = load_mappings(root).version
    (root / "alerts.yaml").write_text(alerts("""\
  - name: red
    when: {status_becomes: Red}
    actions: [{webhook: {url_env: SLACK_URL}}]
"""), encoding="utf-8")
    with_alerts = load_mappings(root)
    assert with_alerts.alerts and with_alerts.version == before  # editing alerts rewrites no score
    (root / "base.yaml").write_text(BASE.replace("worst: 20", "worst: 25"), encoding="utf-8")
    assert load_mappings(root).version != before


def test_validate_command_names_the_alert_problem(write_mappings, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(REPO / "mappings", root)
    text = (root / "alerts.yaml").read_text(encoding="utf-8").replace("status_becomes: Red", "status_becomes: red")
    (root / "alerts.yaml").write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "status_becomes: red" in t)
    run = subprocess.run([sys.executable, "-m", "connector", "--mappings", str(root), "validate"],
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert f"copy/alerts.yaml:{line}: alerts[0].when.status_becomes: 'red' is not a status of score 'health'" in run.stderr
    mappings, problems = check_mappings(REPO / "mappings")
    assert mappings is not None and not problems
