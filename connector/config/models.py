"""Typed models of the mappings, as admins write them in YAML.

Structure only: pydantic checks keys and types here; the rules that need the
whole picture (references, weights, monotonic bands, reachable segments) live in
``validate.py``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .schemes import (  # noqa: F401  (re-exported: the scheme models are part of the mappings' models)
    Band,
    BandsScheme,
    BooleanScheme,
    LinearScheme,
    MapScheme,
    PercentileScheme,
    Scheme,
    Strict,
)

WEIGHT_LEVELS = {"none": 0, "low": 1, "medium": 2, "high": 3}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


WeightSpec = str | int | float


def parse_weight(spec: WeightSpec) -> tuple[str, float]:
    """('level', 0, 1, 2 or 3) or ('percent', 0..100); ValueError saying what is accepted."""
    if isinstance(spec, bool):
        raise ValueError(
            f"weight {spec!r} is not a weight: use none/low/medium/high, a whole number 0, 1, 2 or 3, "
            "or a percentage like '25%'"
        )
    if isinstance(spec, str):
        word = spec.strip().lower()
        if word in WEIGHT_LEVELS:
            return "level", float(WEIGHT_LEVELS[word])
        match = _PERCENT.match(word)
        if match:
            value = float(match.group(1))
            if not 0 <= value <= 100:
                raise ValueError(f"percentage {spec!r} is out of range 0%..100%")
            return "percent", value
        raise ValueError(
            f"weight {spec!r} is not none/low/medium/high, a whole number 0, 1, 2 or 3, "
            "or a percentage like '25%'"
        )
    if not 0 <= spec <= 3:
        raise ValueError(
            f"weight {spec:g} is out of range: a numeric weight is a whole number 0, 1, 2 or 3 "
            "(none/low/medium/high), or use a percentage like '25%'"
        )
    if spec != int(spec):
        raise ValueError(
            f"weight {spec:g} is not a whole number: a numeric weight is 0, 1, 2 or 3 "
            "(none/low/medium/high); for finer weights give every weight here as a percentage, like '25%'"
        )
    return "level", float(spec)


class InputField(Strict):
    """A human-owned CRM field that healthsync reads and never writes."""

    label: str | None = None
    type: Literal["number", "text", "date", "boolean"] = "number"
    salesforce: str | None = None
    hubspot: str | None = None
    values: list[str | float] | None = None  # the picklist's values, when it has a fixed set
    # rescore: before healthsync first read it, an input is N/A at past dates, unless this says
    # its value today may stand for the past (an assumption every rebuilt result shows)
    carry_back: bool = False


class MetricDef(Strict):
    """A metric: read from an input, computed by the catalogue, or derived by an expression."""

    label: str | None = None
    description: str | None = None
    unit: str | None = None
    input: str | None = None
    catalogue: str | None = None
    expr: str | None = None


class MetricUse(Strict):
    """How one model scores one metric."""

    weight: WeightSpec = "medium"
    scheme: Scheme
    per: str | None = None  # divide the raw value by this metric or input first (per seat)
    applies_when: str | None = None  # outside this condition the metric is N/A, weight and all
    missing: Literal["exclude", "neutral", "worst", "carry_forward"] = "exclude"
    neutral: float = Field(50, ge=0, le=100)
    max_age_days: int | None = Field(None, ge=1)


class Group(Strict):
    label: str | None = None
    weight: WeightSpec = "medium"
    metrics: dict[str, MetricUse] = Field(min_length=1)


class ScoreModel(Strict):
    """One segment's formula: the first model whose `when` matches an account scores it."""

    name: str
    label: str | None = None
    when: str | None = None
    combine: Literal["groups", "metrics"] = "groups"
    groups: dict[str, Group] = Field(min_length=1)


class Trigger(Strict):
    name: str
    label: str | None = None
    when: str
    points: float = Field(ge=0, le=100)


class StatusBand(Strict):
    name: str
    below: float | None = None  # exclusive upper bound; none on the top band


class GradeBand(Strict):
    name: str
    below: float | None = None


DEFAULT_STATUS = [
    StatusBand(name="Red", below=40),
    StatusBand(name="Yellow", below=70),
    StatusBand(name="Green"),
]
DEFAULT_GRADES = [
    GradeBand(name="F", below=20),
    GradeBand(name="D", below=40),
    GradeBand(name="C", below=60),
    GradeBand(name="B", below=80),
    GradeBand(name="A"),
]


class Trend(Strict):
    days: int = Field(30, ge=1)
    flat_within: float = Field(2, ge=0)  # a change this small is "Flat"


class OverrideInputs(Strict):
    """CRM input fields through which a CSM overrides the computed status or score."""

    status: str | None = None
    score: str | None = None
    reason: str
    expires: str | None = None
    default_days: int = Field(90, ge=1)


class Outputs(Strict):
    """Connector-owned CRM fields a score writes."""

    score: str | None = None
    grade: str | None = None
    status: str | None = None
    trend: str | None = None
    trend_direction: str | None = None
    coverage: str | None = None
    drivers: str | None = None
    scored_at: str | None = None
    groups: dict[str, str] = Field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """Output key ('score', 'group.usage', ...) to CRM field name."""
        out = {k: v for k, v in self.model_dump(exclude={"groups"}).items() if v}
        out.update({f"group.{g}": f for g, f in self.groups.items()})
        return out


class ScoreDef(Strict):
    """A named score (health, churn_risk, ...) with its own formula and fields."""

    label: str | None = None
    kind: Literal["weighted", "triggers"] = "weighted"
    higher_is_better: bool = True
    models: list[ScoreModel] = Field(default_factory=list)
    triggers: list[Trigger] = Field(default_factory=list)
    status: list[StatusBand] = Field(default_factory=lambda: list(DEFAULT_STATUS))
    grades: list[GradeBand] | Literal[False] = Field(default_factory=lambda: list(DEFAULT_GRADES))
    rounding: Literal["half_up", "half_even"] = "half_up"
    trend: Trend = Field(default_factory=Trend)
    drivers: int = Field(3, ge=0, le=10)
    # no verdict without evidence: below this percent (0-100) of the weight having data an
    # account gets no number, status or grade; the status shows `insufficient_label` if set
    min_coverage: float | None = Field(None, ge=0, le=100)
    insufficient_label: str | None = None
    override: OverrideInputs | None = None
    outputs: dict[Literal["salesforce", "hubspot"], Outputs] = Field(default_factory=dict)

    @field_validator("grades", mode="before")
    @classmethod
    def _grades_off(cls, value: object) -> object:
        return False if value in (None, "none", "off") else value

    @field_validator("min_coverage", mode="before")
    @classmethod
    def _percent_sign(cls, value: object) -> object:
        """'25%' is 25, as weights take percentages."""
        match = _PERCENT.match(value) if isinstance(value, str) else None
        return float(match.group(1)) if match else value
