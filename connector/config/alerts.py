"""Alerts declared in the mappings: which score change notifies whom, and how.

An alert watches one named score for one condition (a status reached, a drop of
N points within M days, a churn trigger firing, a sub-score under a threshold)
and lists actions (a webhook POST, a Salesforce Task, a HubSpot task). This
module holds the YAML structure and the checks that need the scores; the
evaluation is ``connector/alerts.py``, the sending ``connector/delivery.py``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from ..sources import registry
from .models import ScoreDef, Strict
from .source import KeyPath

CONDITIONS = ("status_becomes", "drops_by", "trigger_fires", "sub_score_below")
ACTION_KINDS = ("webhook", "salesforce_task", "hubspot_task")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")

# placeholders every message may use, and those only one condition knows
COMMON_PLACEHOLDERS = ("account", "alert", "score_name", "score", "status", "previous", "previous_status", "drivers")
CONDITION_PLACEHOLDERS = {
    "status_becomes": (),
    "drops_by": ("drop", "days"),
    "trigger_fires": ("trigger",),
    "sub_score_below": ("group", "sub_score", "below"),
}
DEFAULT_SUMMARY = {
    "status_becomes": "{account}: {score_name} became {status} ({score}; was {previous_status} {previous})",
    "drops_by": "{account}: {score_name} dropped {drop} points within {days} days ({previous} -> {score})",
    "trigger_fires": "{account}: {trigger} ({score_name} {score}, {status})",
    "sub_score_below": "{account}: {group} sub-score {sub_score} is below {below} ({score_name} {score})",
}


class SubScoreBelow(Strict):
    group: str
    below: float = Field(gt=0, le=100)


class AlertWhen(Strict):
    """Exactly one condition (drops_by takes within_days with it)."""

    status_becomes: str | None = None
    drops_by: float | None = Field(None, gt=0, le=100)
    within_days: int | None = Field(None, ge=1, le=3650)
    trigger_fires: str | None = None
    sub_score_below: SubScoreBelow | None = None


class WebhookAction(Strict):
    url_env: str  # the env var (or NAME_FILE secret file) holding the URL: URLs carry tokens
    format: Literal["slack", "json"] = "json"
    text: str | None = None


class SalesforceTaskAction(Strict):
    subject: str | None = None
    description: str | None = None
    due_in_days: int = Field(3, ge=0, le=365)
    priority: Literal["High", "Normal", "Low"] = "Normal"


class HubSpotTaskAction(Strict):
    subject: str | None = None
    body: str | None = None
    due_in_days: int = Field(3, ge=0, le=365)
    priority: Literal["High", "Medium", "Low"] = "Medium"


class AlertAction(Strict):
    webhook: WebhookAction | None = None
    salesforce_task: SalesforceTaskAction | None = None
    hubspot_task: HubSpotTaskAction | None = None


class AlertDef(Strict):
    name: str
    label: str | None = None
    score: str | None = None  # default: the triggers score defining trigger_fires, else health
    when: AlertWhen
    models: list[str] | None = None  # only accounts scored by these models
    on_first_run: Literal["baseline", "fire"] = "baseline"
    actions: list[AlertAction] = Field(min_length=1)


@dataclass(frozen=True)
class Action:
    kind: str  # webhook | salesforce_task | hubspot_task
    spec: Any  # WebhookAction | SalesforceTaskAction | HubSpotTaskAction


@dataclass(frozen=True)
class CompiledAlert:
    """One validated alert, resolved against its score."""

    name: str
    label: str
    score: str
    score_label: str
    condition: str  # one of CONDITIONS
    status: str | None = None
    drop: float | None = None
    days: int | None = None
    trigger: str | None = None
    group: str | None = None
    below: float | None = None
    models: tuple[str, ...] | None = None
    on_first_run: str = "baseline"
    actions: tuple[Action, ...] = ()

    def placeholders(self) -> tuple[str, ...]:
        return COMMON_PLACEHOLDERS + CONDITION_PLACEHOLDERS[self.condition]

    def fingerprint(self) -> str:
        """What the alert watches; when it changes, the alert's state starts again from a baseline."""
        watched = {"score": self.score, "condition": self.condition, "status": self.status, "drop": self.drop,
                   "days": self.days, "trigger": self.trigger, "group": self.group, "below": self.below,
                   "models": list(self.models) if self.models is not None else None}
        return json.dumps(watched, sort_keys=True)

    def describe(self) -> str:
        if self.condition == "status_becomes":
            return f"{self.score} status becomes {self.status}"
        if self.condition == "drops_by":
            return f"{self.score} drops by {self.drop:g} points within {self.days} days"
        if self.condition == "trigger_fires":
            return f"{self.score} trigger {self.trigger} fires"
        return f"{self.score} sub-score {self.group} below {self.below:g}"


class Add(Protocol):
    """Where problems go: the mappings checker's `add(path, message, hint)`."""

    def __call__(self, path: KeyPath, message: str, hint: str = "") -> None: ...


Typed = Callable[[type[BaseModel], Any, KeyPath], Any]


def check_alerts(raw: Any, scores: dict[str, Any], add: Add, typed: Typed,
                 declared: set[str] | None = None) -> list[CompiledAlert]:
    """Check the `alerts:` list against the compiled scores; every problem goes to `add(path, message, hint)`.

    `declared`: every score name written under scores:, compiled or not (an alert
    on a score that has its own problems adds none of its own).
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        add(("alerts",), "'alerts' must be a list of alerts", "start each alert with '- name: ...'")
        return []
    compiled: list[CompiledAlert] = []
    seen: set[str] = set()
    for index, body in enumerate(raw):
        path: KeyPath = ("alerts", index)
        if not isinstance(body, dict):
            add(path, "an alert must be a mapping with name, when and actions")
            continue
        named = _actions_named(body.get("actions"), (*path, "actions"), add)
        if not named:  # a stand-in for each unknown action, so the rest is still checked at its own line
            stand_in = {"webhook": {"url_env": "HEALTHSYNC_STAND_IN"}}
            body = {**body, "actions": [a if _known_action(a) else stand_in for a in body["actions"]]}
        definition = typed(AlertDef, body, path)
        if definition is None:
            continue
        if not definition.name.isidentifier():
            add((*path, "name"), f"'{definition.name}' is not a valid name", "use letters, digits and _")
        elif definition.name in seen:
            add((*path, "name"), f"alert name '{definition.name}' is used twice", "each alert needs its own name")
        seen.add(definition.name)
        if definition.score is not None and definition.score not in scores and definition.score in (declared or ()):
            continue  # that score's own problems are reported
        alert = _compile(definition, path, scores, add)
        if alert is not None and named:
            compiled.append(alert)
    return compiled


def _known_action(action: Any) -> bool:
    return isinstance(action, dict) and len(action) == 1 and next(iter(action)) in ACTION_KINDS


def _actions_named(actions: Any, path: KeyPath, add: Add) -> bool:
    """Each action is a mapping of exactly one known kind; say so plainly (pydantic would not)."""
    if not isinstance(actions, list):
        return True  # pydantic reports a missing or mistyped list
    ok = True
    for index, action in enumerate(actions):
        if not isinstance(action, dict) or len(action) != 1:
            add((*path, index), "each action is one of webhook, salesforce_task or hubspot_task",
                "write e.g. '- webhook: {url_env: HEALTHSYNC_SLACK_WEBHOOK, format: slack}'")
            ok = False
            continue
        kind = next(iter(action))
        if kind not in ACTION_KINDS:
            add((*path, index, str(kind)), f"unknown action '{kind}'", "use webhook, salesforce_task or hubspot_task")
            ok = False
    return ok


def _compile(definition: AlertDef, path: KeyPath, scores: dict[str, Any], add: Add) -> CompiledAlert | None:
    when = definition.when
    kinds = [k for k in CONDITIONS if getattr(when, k) is not None]
    if len(kinds) != 1:
        add((*path, "when"), "an alert needs exactly one condition" + (f" (has {', '.join(kinds)})" if kinds else ""),
            "status_becomes, drops_by (with within_days), trigger_fires or sub_score_below")
        return None
    condition = kinds[0]
    if condition == "drops_by" and when.within_days is None:
        add((*path, "when", "within_days"), "drops_by needs within_days", "e.g. drops_by: 15, within_days: 30")
        return None
    if condition != "drops_by" and when.within_days is not None:
        add((*path, "when", "within_days"), "within_days goes with drops_by only")
        return None
    score_name = _score_of(definition, condition, path, scores, add)
    if score_name is None:
        return None
    compiled_score = scores[score_name]
    score_def: ScoreDef = compiled_score.definition
    found = [0]

    def problem(where: KeyPath, message: str, hint: str = "") -> None:
        found[0] += 1
        add(where, message, hint)

    extra: dict[str, Any] = {}
    if condition == "status_becomes":
        names = [band.name for band in score_def.status]
        if when.status_becomes not in names:
            problem((*path, "when", "status_becomes"), f"'{when.status_becomes}' is not a status of score '{score_name}'",
                    f"use one of: {', '.join(names)}")
        extra["status"] = when.status_becomes
    elif condition == "drops_by":
        extra["drop"], extra["days"] = when.drops_by, when.within_days
    elif condition == "trigger_fires":
        triggers = [t.name for t in score_def.triggers]
        if score_def.kind != "triggers":
            problem((*path, "score"), f"score '{score_name}' has no triggers", "trigger_fires needs a kind: triggers score")
        elif when.trigger_fires not in triggers:
            problem((*path, "when", "trigger_fires"), f"'{when.trigger_fires}' is not a trigger of score '{score_name}'",
                    _near(str(when.trigger_fires), triggers) or f"use one of: {', '.join(triggers)}")
        extra["trigger"] = when.trigger_fires
    else:
        assert when.sub_score_below is not None
        groups = compiled_score.group_names()
        if when.sub_score_below.group not in groups:
            problem((*path, "when", "sub_score_below", "group"),
                    f"'{when.sub_score_below.group}' is not a sub-score (group) of score '{score_name}'",
                    _near(when.sub_score_below.group, groups) or f"use one of: {', '.join(groups) or 'none'}")
        extra["group"], extra["below"] = when.sub_score_below.group, when.sub_score_below.below
    if definition.models is not None:
        known = [m.name for m in score_def.models]
        if not known:
            problem((*path, "models"), f"score '{score_name}' has no models to filter on")
        for index, model in enumerate(definition.models):
            if known and model not in known:
                problem((*path, "models", index), f"'{model}' is not a model of score '{score_name}'",
                        _near(model, known) or f"use some of: {', '.join(known)}")
        extra["models"] = tuple(definition.models)
    actions = tuple(_action(a) for a in definition.actions)
    alert = CompiledAlert(
        name=definition.name, label=definition.label or definition.name.replace("_", " ").capitalize(),
        score=score_name, score_label=score_def.label or score_name, condition=condition,
        on_first_run=definition.on_first_run, actions=actions, **extra,
    )
    for index, action in enumerate(actions):
        _check_action(alert, action, (*path, "actions", index, action.kind), problem)
    return alert if found[0] == 0 else None


def _score_of(definition: AlertDef, condition: str, path: KeyPath, scores: dict[str, Any], add: Add) -> str | None:
    if definition.score is not None:
        if definition.score not in scores:
            add((*path, "score"), f"score '{definition.score}' is not defined under scores:",
                _near(definition.score, list(scores)) or f"use one of: {', '.join(scores)}")
            return None
        return definition.score
    if condition == "trigger_fires":
        owners = [n for n, s in scores.items() if any(t.name == definition.when.trigger_fires
                                                      for t in s.definition.triggers)]
        if len(owners) == 1:
            return owners[0]
        if owners:
            add((*path, "when", "trigger_fires"), f"trigger '{definition.when.trigger_fires}' is in several scores "
                f"({', '.join(owners)})", "name the one meant with score:")
        else:
            known = [t.name for s in scores.values() for t in s.definition.triggers]
            add((*path, "when", "trigger_fires"), f"'{definition.when.trigger_fires}' is not a trigger of any score",
                _near(str(definition.when.trigger_fires), known) or "define it under a kind: triggers score")
        return None
    if "health" not in scores:
        add((*path, "score"), "which score does this alert watch? (there is no score named 'health')",
            f"add score: with one of {', '.join(scores)}")
        return None
    return "health"


def _action(action: AlertAction) -> Action:
    for kind in ACTION_KINDS:
        spec = getattr(action, kind)
        if spec is not None:
            return Action(kind, spec)
    raise AssertionError("checked by _actions_named")


def _check_action(alert: CompiledAlert, action: Action, path: KeyPath,
                  problem: Callable[[KeyPath, str, str], None]) -> None:
    spec = action.spec
    if isinstance(spec, WebhookAction):
        name = spec.url_env
        if "://" in name:  # a pasted URL holds a token: not repeated in the message
            problem((*path, "url_env"), "url_env holds a URL, not the name of an environment variable",
                    "put the URL in a variable (or a secret file) and name it, e.g. HEALTHSYNC_SLACK_WEBHOOK")
        elif not _ENV_NAME.fullmatch(name):
            problem((*path, "url_env"), f"'{name}' is not an environment variable name",
                    "use capitals, digits and _, e.g. HEALTHSYNC_SLACK_WEBHOOK")
        elif name.startswith(_reserved_env()):
            problem((*path, "url_env"), f"'{name}' is one of healthsync's own credential or API settings",
                    "give the webhook URL its own variable, e.g. HEALTHSYNC_SLACK_WEBHOOK")
        elif name.endswith("_FILE"):
            problem((*path, "url_env"), f"name the variable without _FILE ('{name[:-5]}')",
                    f"healthsync reads {name} by itself when {name[:-5]} is not set")
        texts = {"text": spec.text}
    elif isinstance(spec, SalesforceTaskAction):
        texts = {"subject": spec.subject, "description": spec.description}
    else:
        texts = {"subject": spec.subject, "body": spec.body}
    for key, text in texts.items():
        if text is not None:
            for message, hint in template_problems(text, alert.placeholders()):
                problem((*path, key), message, hint)


def template_problems(text: str, allowed: tuple[str, ...]) -> list[tuple[str, str]]:
    """What is wrong with a message template: only plain {name} placeholders from `allowed`."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [(f"in '{text}': {exc}", "write {{ and }} for literal braces")]
    problems = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in allowed:
            problems.append((f"unknown placeholder {{{name}}} in '{text}'",
                             f"this alert can use: {', '.join('{' + a + '}' for a in allowed)}"))
        elif spec or conversion:
            problems.append((f"placeholder {{{name}}} in '{text}' takes no format or conversion",
                             f"write {{{name}}}: values come formatted"))
    return problems


def render(text: str, values: dict[str, str]) -> str:
    """A checked template with its placeholders filled; nothing but whitelisted names is looked up."""
    return text.format_map(values)


def _near(name: str, known: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def _reserved_env() -> tuple[str, ...]:
    """The prefixes of the settings that hold a source's credentials and API address (SALESFORCE_,
    HUBSPOT_, ...: each source's name in capitals): never a webhook URL."""
    return tuple(f"{system.upper()}_" for system in registry.systems())
