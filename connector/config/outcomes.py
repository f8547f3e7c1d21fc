"""`outcomes:` in the mappings: what actually happened to an account, named (churn, renewal,
downsell), each the first event of any of its rules. The rules come from the sources
(`OutcomeRule` in each source folder): `salesforce_opportunity`, `hubspot_deal`,
`stripe_cancellation`, `mrr_drop`.

    outcomes:
      churn:
        label: Churned
        any:
          - salesforce_opportunity: {types: [Renewal], result: lost}
          - stripe_cancellation: {reasons: [cancellation_requested]}
      renewal:
        good: true          # a higher score should predict it
        any:
          - salesforce_opportunity: {types: [Renewal], result: won}
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..sources import registry
from ..sources.base import OutcomeRule
from .models import Strict

KeyPath = tuple[Any, ...]


class OutcomeDef(Strict):
    label: str | None = None
    good: bool = False  # True for an outcome the score should predict by being high (a renewal)
    any: list[dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    system: str
    kind: str  # salesforce_opportunity, ...
    rule: OutcomeRule
    settings: BaseModel


@dataclass
class Outcome:
    name: str
    label: str
    good: bool
    rules: list[Rule] = field(default_factory=list)

    def objects(self) -> set[tuple[str, str]]:
        """(system, object) the outcome reads: what the pull must fetch for it."""
        return {(r.system, obj) for r in self.rules for obj in r.rule.objects}


def known_rules() -> dict[str, tuple[str, OutcomeRule]]:
    """Every outcome rule the registered sources offer: kind -> (system, rule)."""
    return {kind: (p.system, rule) for p in registry.plugins() for kind, rule in p.outcomes.items()}


def check_outcomes(raw: Any, add: Callable[..., None], typed: Callable[[type[BaseModel], Any, KeyPath], Any]
                   ) -> dict[str, Outcome]:
    """Check `outcomes:`; every problem goes to `add(path, message, hint)` at its file:line."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        add(("outcomes",), "'outcomes' must be a mapping of outcome names", "e.g. churn: {any: [...]}")
        return {}
    rules = known_rules()
    found: dict[str, Outcome] = {}
    for name, body in raw.items():
        path: KeyPath = ("outcomes", name)
        if not str(name).isidentifier():
            add(path, f"'{name}' is not a valid outcome name", "use letters, digits and _")
            continue
        definition = typed(OutcomeDef, body if body is not None else {}, path)
        if definition is None:
            continue
        outcome = Outcome(str(name), definition.label or str(name), definition.good)
        if not definition.any:
            add((*path, "any"), "an outcome needs at least one rule", f"one of {', '.join(rules)}")
        for index, item in enumerate(definition.any):
            where = (*path, "any", index)
            if not isinstance(item, dict) or len(item) != 1:
                add(where, "each rule is one mapping: `- <rule>: {settings}`", f"a rule is one of {', '.join(rules)}")
                continue
            kind, settings = next(iter(item.items()))
            if kind not in rules:
                add((*where, kind), f"unknown outcome rule '{kind}'", f"use one of {', '.join(rules)}")
                continue
            system, rule = rules[kind]
            parsed = typed(rule.settings, settings if settings is not None else {}, (*where, kind))
            if parsed is not None:
                outcome.rules.append(Rule(system, kind, rule, parsed))
        found[str(name)] = outcome
    return found
