"""Load the mappings folder, check it whole, and compile it for the scoring engine.

``check_mappings`` collects *every* problem (file:line, key, message, hint)
instead of stopping at the first, so an admin fixes a broken mappings set in one
pass. ``load_mappings`` raises ConfigError when anything is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..catalogue import catalogue
from ..errors import ConfigError, ExpressionError, Problem
from ..expressions import ANY, BOOL, NUM, Expression, infer_type, parse
from .alerts import CompiledAlert, check_alerts
from .datasources import MappedSource, check_sources
from .models import (
    InputField,
    MetricDef,
    ScoreDef,
    ScoreModel,
    parse_weight,
)
from .outcomes import Outcome, check_outcomes
from .reach import analyse
from .schemes import SCHEME_TYPES, BaseScheme
from .source import KeyPath, Located, load_file

TOP_LEVEL = {"inputs", "metrics", "scores", "alerts", "outcomes", "sources"}


@dataclass
class MetricSlot:
    """One metric as one model scores it, with its weight resolved."""

    name: str
    group: str
    use: Any  # MetricUse
    weight: float
    applies: Expression | None


@dataclass
class GroupSlot:
    name: str
    label: str
    weight: float
    metrics: list[MetricSlot]


@dataclass
class CompiledModel:
    name: str
    label: str
    when: Expression | None
    combine: str
    groups: list[GroupSlot]

    def slots(self) -> list[MetricSlot]:
        return [m for g in self.groups for m in g.metrics]


@dataclass
class CompiledScore:
    name: str
    definition: ScoreDef
    models: list[CompiledModel] = field(default_factory=list)
    triggers: list[tuple[Any, Expression]] = field(default_factory=list)

    def group_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for model in self.models:
            for group in model.groups:
                seen.setdefault(group.name, None)
        return list(seen)


@dataclass
class Mappings:
    """The validated mappings, ready to score with."""

    root: Path
    inputs: dict[str, InputField]
    metrics: dict[str, MetricDef]
    derived: dict[str, Expression]  # metric name -> expression, in evaluation order
    scores: dict[str, CompiledScore]
    types: dict[str, str]
    version: str
    located: Located
    alerts: list[CompiledAlert] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    sources: dict[str, MappedSource] = field(default_factory=dict)  # `sources:`: SQL queries, file drops

    def reads(self, system: str, obj: str) -> bool:
        """Whether something in the mappings needs a stored object that its source pulls only on
        demand (Salesforce Opportunity and Case, HubSpot deals): an outcome, or a catalogue metric."""
        if any((system, obj) in outcome.objects() for outcome in self.outcomes.values()):
            return True
        known = catalogue()
        return any(
            known[d.catalogue].system == system and obj in known[d.catalogue].objects
            for d in self.metrics.values() if d.catalogue and d.catalogue in known
        )

    def state(self, **also: Any) -> str:
        """What a step that redoes only what changed did its last work with: this model version,
        healthsync's version, and `also` (the names measured, each CRM's fields). Another state
        means the step does everything again."""
        from .. import __version__

        return json.dumps({"mappings": self.version, "healthsync": __version__, **also}, sort_keys=True)

    def stored_names(self) -> list[str]:
        """Names whose values live in the store: inputs and catalogue metrics."""
        stored = set(self.inputs)
        stored |= {m for m, d in self.metrics.items() if d.catalogue}
        return sorted(stored)

    def aged_names(self) -> set[str]:
        """Stored names some model scores with an age rule (max_age_days, carry_forward)."""
        aged = set()
        for score in self.scores.values():
            for model in score.models:
                for slot in model.slots():
                    if slot.use.max_age_days is not None or slot.use.missing == "carry_forward":
                        aged.add(self.source_of(slot.name))
        return aged

    def source_of(self, name: str) -> str:
        """The store name a metric reads: its input, its catalogue entry, or itself."""
        metric = self.metrics.get(name)
        if metric is not None and metric.input:
            return metric.input
        return name


def mapping_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def read_located(root: Path) -> Located:
    located = Located()
    files = mapping_files(root)
    if not root.exists():
        located.problems.append(Problem(str(root), None, "", "the mappings folder does not exist"))
    elif not files:
        located.problems.append(Problem(str(root), None, "", "no .yaml files in the mappings folder"))
    base = root if root.is_dir() else root.parent
    for path in files:
        load_file(path, str(Path(root.name) / path.relative_to(base)) if root.is_dir() else path.name, located)
    return located


def version_of(root: Path, skip: set[Path] | None = None) -> str:
    """A content hash of the mappings files: which formula produced a score.

    `skip`: files that hold nothing but alerts; editing an alert changes no score.
    """
    digest = hashlib.sha256()
    base = root if root.is_dir() else root.parent
    for path in mapping_files(root):
        if skip and path in skip:
            continue
        digest.update(str(path.relative_to(base)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def load_mappings(root: Path) -> Mappings:
    mappings, problems = check_mappings(root)
    if problems or mappings is None:
        raise ConfigError(problems)
    return mappings


def check_mappings(root: Path) -> tuple[Mappings | None, list[Problem]]:
    located = read_located(Path(root))
    checker = _Checker(located)
    mappings = checker.run(Path(root))
    problems = sorted(located.problems + checker.problems, key=lambda p: (p.file, p.line or 0))
    return (None if problems else mappings), problems


class _Checker:
    def __init__(self, located: Located):
        self.loc = located
        self.problems: list[Problem] = []

    def add(self, path: KeyPath, message: str, hint: str = "") -> None:
        self.problems.append(self.loc.problem(path, message, hint))

    # ------------------------------------------------------------ structure

    def _typed(self, cls: type[BaseModel], data: Any, path: KeyPath) -> Any:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                loc = _without_union_tags(tuple(err["loc"]))
                self._structure_problem(path, loc, err)
            return None

    def _structure_problem(self, path: KeyPath, loc: tuple[Any, ...], err: Any) -> None:
        kind = err["type"]
        where = (*path, *loc)
        key = loc[-1] if loc else path[-1]
        if kind == "extra_forbidden":
            self.add(where, f"unknown key '{key}'", "check the spelling; see docs/mappings.md")
        elif kind == "missing":
            self.add(where, f"required key '{key}' is missing")
        elif kind == "union_tag_invalid":
            self.add(
                where,
                f"unknown scheme type {err['input'].get('type')!r}",
                "use one of: bands, linear, boolean, map, percentile",
            )
        elif kind == "union_tag_not_found":
            self.add(where, "a scheme needs a 'type'", "bands, linear, boolean, map or percentile")
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
            self.add(where, f"{err['msg']}{shown}")

    # ------------------------------------------------------------ run

    def run(self, root: Path) -> Mappings | None:
        data = self.loc.data
        for key in data:
            if key not in TOP_LEVEL:
                self.add((key,), f"unknown top-level key '{key}'", "use inputs, metrics, scores, alerts, outcomes or sources")
        inputs = self._section(data, "inputs", InputField)
        metrics = self._section(data, "metrics", MetricDef)
        types = self._types(inputs, metrics)
        derived = self._metrics(metrics, inputs, types)
        scores: dict[str, CompiledScore] = {}
        for name, raw in _mapping(data.get("scores")).items():
            score = self._score(str(name), raw, inputs, metrics, types)
            if score is not None:
                scores[str(name)] = score
        if "scores" in data and not scores and not self.problems:
            self.add(("scores",), "no scores are defined")
        self._field_ownership(inputs, scores)
        declared = {str(n) for n in _mapping(data.get("scores"))}
        alerts = check_alerts(data.get("alerts"), scores, self.add, self._typed, declared)
        outcomes = check_outcomes(data.get("outcomes"), self.add, self._typed)
        sources = check_sources(data.get("sources"), self.add, self._typed)
        if self.problems or self.loc.problems:
            return None
        return Mappings(
            root, inputs, metrics, derived, scores, types, version_of(root, self._alert_only_files(root)), self.loc,
            alerts, outcomes, sources,
        )

    def _alert_only_files(self, root: Path) -> set[Path]:
        """Files holding only `alerts` and `outcomes`: left out of the model version (no score changes)."""
        keys: dict[str, set[str]] = {}
        for path, (file, _line) in self.loc.lines.items():
            if len(path) == 1:
                keys.setdefault(file, set()).add(str(path[0]))
        base = root if root.is_dir() else root.parent
        shown = {
            (str(Path(root.name) / p.relative_to(base)) if root.is_dir() else p.name): p for p in mapping_files(root)
        }
        return {shown[f] for f, k in keys.items() if k and k <= {"alerts", "outcomes"} and f in shown}

    def _section(self, data: dict[str, Any], key: str, cls: type[BaseModel]) -> dict[str, Any]:
        raw = data.get(key)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.add((key,), f"'{key}' must be a mapping of names to definitions")
            return {}
        out = {}
        for name, body in raw.items():
            if not _is_identifier(name):
                self.add((key, name), f"'{name}' is not a valid name", "use letters, digits and _")
                continue
            typed = self._typed(cls, body if body is not None else {}, (key, name))
            if typed is not None:
                out[name] = typed
        return out

    def _types(self, inputs: dict[str, InputField], metrics: dict[str, MetricDef]) -> dict[str, str]:
        types: dict[str, str] = {name: field.type for name, field in inputs.items()}
        known = catalogue()
        for name, metric in metrics.items():
            if name in inputs and metric.input != name:
                self.add(("metrics", name), f"'{name}' is also an input", "give the metric its own name")
            if metric.catalogue and metric.catalogue in known:
                types[name] = known[metric.catalogue].type
            elif metric.input and metric.input in inputs:
                types[name] = inputs[metric.input].type
            else:
                types[name] = NUM
        return types

    # ------------------------------------------------------------ metrics

    def _metrics(
        self, metrics: dict[str, MetricDef], inputs: dict[str, InputField], types: dict[str, str]
    ) -> dict[str, Expression]:
        parsed: dict[str, Expression] = {}
        known = catalogue()
        for name, metric in metrics.items():
            path: KeyPath = ("metrics", name)
            sources = [k for k in ("input", "catalogue", "expr") if getattr(metric, k)]
            if len(sources) != 1:
                self.add(
                    path,
                    "a metric needs exactly one of input, catalogue or expr"
                    + (f" (has {', '.join(sources)})" if sources else ""),
                )
                continue
            if metric.input and metric.input not in inputs:
                self.add((*path, "input"), f"input '{metric.input}' is not defined", _near(metric.input, inputs))
            if metric.catalogue and metric.catalogue not in known:
                self.add(
                    (*path, "catalogue"),
                    f"'{metric.catalogue}' is not in the metric catalogue",
                    _near(metric.catalogue, known) or "see docs/mappings.md#catalogue",
                )
            if metric.expr:
                expr = self._expression(metric.expr, (*path, "expr"), inputs, metrics, types)
                if expr is not None:
                    stored = set(inputs) | {m for m, d in metrics.items() if not d.expr}
                    for ref, _days in expr.history_refs():
                        if ref not in stored:
                            self.add(
                                (*path, "expr"),
                                f"history of '{ref}' is not kept: it is derived",
                                "change()/pct_change() take an input or a catalogue metric",
                            )
                    parsed[name] = expr
        return self._evaluation_order(parsed)

    def _evaluation_order(self, parsed: dict[str, Expression]) -> dict[str, Expression]:
        ordered: dict[str, Expression] = {}
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in ordered or name not in parsed:
                return
            if name in visiting:
                cycle = " -> ".join([*visiting[visiting.index(name) :], name])
                self.add(("metrics", name, "expr"), f"derived metrics refer to each other in a cycle: {cycle}")
                return
            visiting.append(name)
            for dep in sorted(parsed[name].names):
                visit(dep)
            visiting.pop()
            ordered[name] = parsed[name]

        for name in parsed:
            visit(name)
        return ordered

    def _expression(
        self,
        text: Any,
        path: KeyPath,
        inputs: dict[str, Any],
        metrics: dict[str, Any],
        types: dict[str, str],
        want_condition: bool = False,
    ) -> Expression | None:
        if not isinstance(text, str):
            self.add(path, f"an expression must be text, got {text!r}", "quote it in YAML")
            return None
        try:
            expr = parse(text)
        except ExpressionError as exc:
            self.add(path, f"in '{text}': {exc}", "see docs/mappings.md#expressions")
            return None
        ok = True
        for name in sorted(expr.names):
            if name not in inputs and name not in metrics:
                self.add(path, f"'{name}' is not a defined metric or input", _near(name, {**inputs, **metrics}))
                ok = False
        kind, mistakes = infer_type(expr, types)
        for mistake in mistakes:
            self.add(path, f"in '{text}': {mistake}")
            ok = False
        if want_condition and kind not in (BOOL, ANY):
            self.add(path, f"'{text}' is a {kind}, not a condition", "compare it: e.g. x > 0")
            ok = False
        return expr if ok else None

    # ------------------------------------------------------------ scores

    def _score(
        self,
        name: str,
        raw: Any,
        inputs: dict[str, InputField],
        metrics: dict[str, MetricDef],
        types: dict[str, str],
    ) -> CompiledScore | None:
        path: KeyPath = ("scores", name)
        definition = self._typed(ScoreDef, raw if raw is not None else {}, path)
        if definition is None:
            return None
        score = CompiledScore(name, definition)
        self._bands(definition.status, (*path, "status"), "status")
        if definition.grades:
            self._bands(definition.grades, (*path, "grades"), "grade")
        if definition.kind == "weighted":
            if not definition.models:
                self.add((*path, "models"), "a weighted score needs at least one model")
            if definition.triggers:
                self.add((*path, "triggers"), "triggers belong to kind: triggers scores")
            seen: set[str] = set()
            for index, model in enumerate(definition.models):
                mpath = (*path, "models", index)
                if model.name in seen:
                    self.add((*mpath, "name"), f"model name '{model.name}' is used twice")
                seen.add(model.name)
                compiled = self._model(model, mpath, inputs, metrics, types)
                if compiled is not None:
                    score.models.append(compiled)
            if len(score.models) == len(definition.models):
                self._reach(score, path, inputs, types)
        else:
            if not definition.triggers:
                self.add((*path, "triggers"), "a triggers score needs at least one trigger")
            if definition.models:
                self.add((*path, "models"), "models belong to kind: weighted scores")
            for index, trigger in enumerate(definition.triggers):
                expr = self._expression(
                    trigger.when, (*path, "triggers", index, "when"), inputs, metrics, types, True
                )
                if expr is not None:
                    score.triggers.append((trigger, expr))
        self._override(definition, path, inputs)
        self._min_coverage(definition, path)
        groups = set(score.group_names())
        for system, outputs in definition.outputs.items():
            for group in outputs.groups:
                if group not in groups:
                    self.add(
                        (*path, "outputs", system, "groups", group),
                        f"group '{group}' is not in any model of this score",
                        _near(group, dict.fromkeys(groups)),
                    )
        return score

    def _bands(self, bands: list[Any], path: KeyPath, what: str) -> None:
        if not bands:
            self.add(path, f"at least one {what} band is needed")
            return
        previous = None
        for index, band in enumerate(bands):
            last = index == len(bands) - 1
            if last and band.below is not None:
                self.add((*path, index, "below"), f"the top {what} band takes no 'below'")
            if not last and band.below is None:
                self.add((*path, index), f"every {what} band but the last needs 'below'")
            if band.below is not None and previous is not None and band.below <= previous:
                self.add(
                    (*path, index, "below"),
                    f"{what} bands must go up: {band.below} is not above {previous}",
                    "list bands from the lowest score to the highest",
                )
            if band.below is not None:
                previous = band.below

    def _model(
        self,
        model: ScoreModel,
        path: KeyPath,
        inputs: dict[str, InputField],
        metrics: dict[str, MetricDef],
        types: dict[str, str],
    ) -> CompiledModel | None:
        ok = True
        when = None
        if model.when is not None:
            when = self._expression(model.when, (*path, "when"), inputs, metrics, types, True)
            ok = when is not None
        group_weights = self._weights(
            {g: grp.weight for g, grp in model.groups.items()}, (*path, "groups"), "groups"
        )
        groups: list[GroupSlot] = []
        for gname, group in model.groups.items():
            gpath = (*path, "groups", gname)
            weights = self._weights(
                {m: use.weight for m, use in group.metrics.items()}, (*gpath, "metrics"), "metrics"
            )
            slots: list[MetricSlot] = []
            for mname, use in group.metrics.items():
                mpath = (*gpath, "metrics", mname)
                slot = self._metric_use(mname, gname, use, mpath, weights, inputs, metrics, types)
                if slot is None:
                    ok = False
                else:
                    slots.append(slot)
            groups.append(GroupSlot(gname, group.label or gname.title(), group_weights.get(gname, 0.0), slots))
        if not ok or group_weights is None:
            return None
        return CompiledModel(model.name, model.label or model.name, when, model.combine, groups)

    def _weights(self, specs: dict[str, Any], path: KeyPath, what: str) -> dict[str, float]:
        resolved: dict[str, tuple[str, float]] = {}
        for name, spec in specs.items():
            try:
                resolved[name] = parse_weight(spec)
            except ValueError as exc:
                self.add((*path, name, "weight"), str(exc))
        kinds = {kind for kind, _ in resolved.values()}
        if len(kinds) > 1:
            self.add(path, f"the {what} here mix levels and percentages", "use one or the other")
        elif kinds == {"percent"}:
            total = sum(v for _, v in resolved.values())
            if abs(total - 100) > 0.01:
                self.add(path, f"percentage weights of these {what} add up to {total:g}%, not 100%")
        return {name: value for name, (_, value) in resolved.items()}

    def _metric_use(
        self,
        name: str,
        group: str,
        use: Any,
        path: KeyPath,
        weights: dict[str, float],
        inputs: dict[str, InputField],
        metrics: dict[str, MetricDef],
        types: dict[str, str],
    ) -> MetricSlot | None:
        ok = True
        if name not in metrics:
            self.add(
                path,
                f"metric '{name}' is used but not defined under metrics:",
                _near(name, metrics) or "define it in metrics.yaml",
            )
            ok = False
        if use.per is not None and use.per not in metrics and use.per not in inputs:
            self.add((*path, "per"), f"'{use.per}' is not a defined metric or input", _near(use.per, {**inputs, **metrics}))
            ok = False
        if use.missing == "carry_forward" and use.max_age_days is None:
            self.add(
                (*path, "max_age_days"),
                "carry_forward needs max_age_days",
                "say how old a carried value may get, e.g. max_age_days: 90",
            )
        if use.missing == "carry_forward" and name in metrics and metrics[name].expr:
            self.add((*path, "missing"), "carry_forward needs a stored metric, not a derived one")
        applies = None
        if use.applies_when is not None:
            applies = self._expression(use.applies_when, (*path, "applies_when"), inputs, metrics, types, True)
            ok = ok and applies is not None
        ok = self._scheme(use.scheme, (*path, "scheme"), types.get(name)) and ok
        if not ok or name not in weights:
            return None
        return MetricSlot(name, group, use, weights[name], applies)

    def _scheme(self, scheme: BaseScheme, path: KeyPath, kind: str | None) -> bool:
        problems = scheme.check()
        for where, message, hint in problems:
            self.add((*path, *where), message, hint)
        if kind == "text" and not scheme.takes_text:
            self.add((*path, "type"), "a text metric can only be scored with a map scheme")
            return False
        return not problems

    def _reach(self, score: CompiledScore, path: KeyPath, inputs: dict[str, InputField], types: dict[str, str]) -> None:
        declared = {name: field.values for name, field in inputs.items()}
        result = analyse([m.when for m in score.models], types, declared)
        for index in result.never:
            hint = "check the values against the picklist in inputs:" if any(
                declared.get(n) for n in (score.models[index].when.names if score.models[index].when else ())
            ) else "the condition contradicts itself"
            self.add((*path, "models", index, "when"), f"model '{score.models[index].name}' can never match", hint)
        for index, earlier in result.shadowed.items():
            names = ", ".join(f"'{score.models[i].name}'" for i in earlier) or "earlier models"
            self.add(
                (*path, "models", index, "when"),
                f"model '{score.models[index].name}' is never used: every account it matches is taken first by {names}",
                "first match wins: move the more specific model up",
            )

    def _min_coverage(self, definition: ScoreDef, path: KeyPath) -> None:
        minimum, label = definition.min_coverage, definition.insufficient_label
        if minimum is not None and 0 < minimum < 1:
            self.add(
                (*path, "min_coverage"),
                f"min_coverage {minimum:g} asks for {minimum:g}% of the weight: it is a percent, 0-100",
                f"for {minimum:.0%} write min_coverage: {minimum * 100:g}",
            )
        if label is None:
            return
        if minimum is None:
            self.add((*path, "insufficient_label"), "insufficient_label needs min_coverage",
                     "set min_coverage: the percent of the weight below which the status shows this label")
        if not label.strip():
            self.add((*path, "insufficient_label"), "insufficient_label is empty",
                     "give a text such as 'Insufficient data', or leave the key out to clear the fields")
        elif label in {band.name for band in definition.status}:
            self.add((*path, "insufficient_label"), f"insufficient_label '{label}' is also a status band",
                     "use a name no status band has, such as 'Insufficient data'")

    def _override(self, definition: ScoreDef, path: KeyPath, inputs: dict[str, InputField]) -> None:
        if definition.override is None:
            return
        for key in ("status", "score", "reason", "expires"):
            name = getattr(definition.override, key)
            if name is not None and name not in inputs:
                self.add((*path, "override", key), f"input '{name}' is not defined", _near(name, inputs))
        if definition.override.status is None and definition.override.score is None:
            self.add((*path, "override"), "an override needs a status or a score input")

    # ------------------------------------------------------------ ownership

    def _field_ownership(self, inputs: dict[str, InputField], scores: dict[str, CompiledScore]) -> None:
        owners: dict[tuple[str, str], KeyPath] = {}
        for name, field_def in inputs.items():
            for system in ("salesforce", "hubspot"):
                crm_field = getattr(field_def, system)
                if crm_field:
                    owners[(system, crm_field.lower())] = ("inputs", name, system)
        for sname, score in scores.items():
            for system, outputs in score.definition.outputs.items():
                for key, crm_field in outputs.fields().items():
                    parts = key.split(".")
                    opath: KeyPath = ("scores", sname, "outputs", system, *parts)
                    other = owners.get((system, crm_field.lower()))
                    if other is not None:
                        ofile, oline = self.loc.where(other)
                        role = "an input" if other[0] == "inputs" else "another output"
                        self.add(
                            opath,
                            f"{system} field '{crm_field}' is already {role} at {ofile}:{oline}",
                            "a field is either read (input) or written (output), never both",
                        )
                    else:
                        owners[(system, crm_field.lower())] = opath


def _mapping(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _is_identifier(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier()


_SCHEME_TAGS = set(SCHEME_TYPES)


def _without_union_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic puts the scheme type into error paths (scheme.linear.worst); admins never wrote it."""
    out: list[Any] = []
    for index, part in enumerate(loc):
        if index and loc[index - 1] == "scheme" and part in _SCHEME_TAGS:
            continue
        out.append(part)
    return tuple(out)


def _near(name: str, known: dict[str, Any] | Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean '{close[0]}'?" if close else ""
