"""The scoring engine: metric columns in, one result per named score out.

Everything is column-wise over numpy arrays: the accounts a model takes are
scored together, metric by metric, so a million accounts cost a few dozen
vector operations per metric rather than a million Python loops.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from ..config.mappings import CompiledModel, CompiledScore, Mappings, MetricSlot
from .bands import band_names, points_to_next, round_score
from .frame import Frame, iso

# na_reason of an account whose coverage is below its score's min_coverage: no verdict
INSUFFICIENT = "insufficient coverage"


def coverage_percent(coverage: np.ndarray) -> np.ndarray:
    """Coverage as every output shows it: percent of the weight that had data, 0-100, 1 decimal."""
    return np.round(100.0 * coverage, 1)


@dataclass
class SlotResult:
    """How one metric scored for the accounts of one model (arrays over those rows)."""

    slot: MetricSlot
    raw: np.ndarray
    value: np.ndarray  # after per-seat normalization
    score: np.ndarray  # 0..100, NaN = N/A
    reason: np.ndarray  # object: why N/A, or a note (carried forward, neutral), else None
    applicable: np.ndarray  # bool
    share: np.ndarray = field(default_factory=lambda: np.zeros(0))  # weight share among available
    filled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # scored by a neutral/worst policy

    @property
    def no_value(self) -> np.ndarray:
        """Rows with no usable value: none stored, too old, not carried forward, or no per-seat divisor."""
        return _missing(self.value)


@dataclass
class ModelPass:
    model: CompiledModel
    rows: np.ndarray
    slots: list[SlotResult]
    groups: dict[str, np.ndarray]  # group -> sub-score over rows (NaN = N/A)
    group_loss: dict[str, np.ndarray]  # group -> points it costs the global score


@dataclass
class ScoreResult:
    """One named score for every account in the frame."""

    score: CompiledScore
    ids: np.ndarray
    model: np.ndarray  # object: model name or None
    computed: np.ndarray  # unrounded
    value: np.ndarray  # rounded, effective (after overrides)
    computed_rounded: np.ndarray
    status_computed: np.ndarray
    status: np.ndarray
    grade: np.ndarray
    coverage: np.ndarray
    points_to_next: np.ndarray
    trend: np.ndarray
    trend_direction: np.ndarray
    drivers: np.ndarray
    groups: dict[str, np.ndarray]
    na_reason: np.ndarray
    override_id: np.ndarray
    status_override: np.ndarray | None = None
    insufficient: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # below min_coverage
    passes: list[ModelPass] = field(default_factory=list)
    triggers: list[tuple[Any, np.ndarray]] = field(default_factory=list)


def score_all(
    mappings: Mappings,
    frame: Frame,
    previous: dict[str, np.ndarray] | None = None,
    overrides: dict[str, list[dict[str, Any]]] | None = None,
) -> dict[str, ScoreResult]:
    """Compute every named score. `previous[score]` holds each account's value N days ago."""
    results = {}
    for name, score in mappings.scores.items():
        result = score_one(score, frame)
        _apply_overrides(result, (overrides or {}).get(name, []))
        _trend(result, (previous or {}).get(name))
        results[name] = result
    return results


def score_one(score: CompiledScore, frame: Frame) -> ScoreResult:
    n = frame.n
    definition = score.definition
    result = ScoreResult(
        score=score,
        ids=frame.ids,
        model=np.full(n, None, dtype=object),
        computed=np.full(n, np.nan),
        value=np.full(n, np.nan),
        computed_rounded=np.full(n, np.nan),
        status_computed=np.full(n, None, dtype=object),
        status=np.full(n, None, dtype=object),
        grade=np.full(n, None, dtype=object),
        coverage=np.full(n, np.nan),
        points_to_next=np.full(n, np.nan),
        trend=np.full(n, np.nan),
        trend_direction=np.full(n, None, dtype=object),
        drivers=np.full(n, "", dtype=object),
        groups={g: np.full(n, np.nan) for g in score.group_names()},
        na_reason=np.full(n, None, dtype=object),
        override_id=np.full(n, -1, dtype=np.int64),
        insufficient=np.zeros(n, dtype=bool),
    )
    if definition.kind == "triggers":
        _score_triggers(score, frame, result)
    else:
        _score_models(score, frame, result)
    result.computed_rounded = round_score(result.computed, definition.rounding)
    _no_verdict_below_min_coverage(result)
    result.value = result.computed_rounded.copy()
    result.status_computed = band_names(result.computed_rounded, definition.status)
    if definition.insufficient_label is not None:
        result.status_computed[result.insufficient] = definition.insufficient_label
    _refresh_labels(result)
    return result


def _no_verdict_below_min_coverage(result: ScoreResult) -> None:
    """Below the score's min_coverage: no number, status or grade, and the reason why.

    The unrounded `computed` is kept (explain shows what the thin data gave);
    the rounded and effective values are N/A, so the account counts as not scored.
    """
    minimum = result.score.definition.min_coverage
    if minimum is None:
        return
    percent = coverage_percent(result.coverage)
    thin = ~np.isnan(result.computed) & ~np.isnan(percent) & (percent < minimum)
    if not thin.any():
        return
    result.insufficient = thin
    result.computed_rounded = np.where(thin, np.nan, result.computed_rounded)
    result.drivers[thin] = ""
    result.na_reason[thin] = [
        f"{INSUFFICIENT}: {p:g}% of the weight had data, below the score's minimum of {minimum:g}%"
        for p in percent[thin]
    ]


def _refresh_labels(result: ScoreResult) -> None:
    definition = result.score.definition
    status = band_names(result.value, definition.status)
    if definition.insufficient_label is not None:
        no_verdict = result.insufficient & np.isnan(result.value)
        status = np.where(no_verdict, definition.insufficient_label, status)
    overridden = result.status_override
    result.status = status if overridden is None else np.where(overridden == None, status, overridden)  # noqa: E711
    if definition.grades:
        result.grade = band_names(result.value, definition.grades)
    result.points_to_next = points_to_next(result.value, definition.status)


# ---------------------------------------------------------------- weighted models


def _score_models(score: CompiledScore, frame: Frame, result: ScoreResult) -> None:
    n = frame.n
    chosen = np.full(n, -1, dtype=np.int64)
    for index, model in enumerate(score.models):
        match = np.ones(n, dtype=bool) if model.when is None else model.when.evaluate(frame) == 1.0
        chosen[(chosen == -1) & match] = index
    result.na_reason[chosen == -1] = "no model matches this account"
    for index, model in enumerate(score.models):
        rows = np.flatnonzero(chosen == index)
        if len(rows) == 0:
            continue
        model_pass = run_model(model, frame, rows)
        result.passes.append(model_pass)
        result.model[rows] = model.name
        _combine(model_pass, result, score.definition.drivers, score.definition.rounding)


def run_model(model: CompiledModel, frame: Frame, rows: np.ndarray) -> ModelPass:
    slots = [_score_slot(slot, frame, rows) for slot in model.slots()]
    return ModelPass(model, rows, slots, {}, {})


def _score_slot(slot: MetricSlot, frame: Frame, rows: np.ndarray) -> SlotResult:
    use = slot.use
    column = frame.get(slot.name)
    raw_all = column.values
    raw = raw_all[rows]
    reason = column.na_reason[rows].copy()
    since = column.since[rows]
    text = raw.dtype == object
    missing = _missing(raw)
    reason[missing & (reason == None)] = "no data"  # noqa: E711
    if use.max_age_days is not None:
        cutoff = iso(frame.now - timedelta(days=use.max_age_days))
        stale = ~missing & (since != None) & (since.astype(str) < cutoff)  # noqa: E711
        if stale.any():
            reason[stale] = [f"stale: value since {s[:10]}, older than {use.max_age_days} days" for s in since[stale]]
            raw = raw.copy()
            raw[stale] = None if text else np.nan
            missing = missing | stale
    if use.missing == "carry_forward" and missing.any():
        known = frame.known(slot.name)
        k_raw, k_since = known.values[rows], known.since[rows]
        cutoff = iso(frame.now - timedelta(days=use.max_age_days or 0))
        carry = missing & ~_missing(k_raw) & (k_since != None) & (k_since.astype(str) >= cutoff)  # noqa: E711
        if carry.any():
            raw = raw.copy()
            raw[carry] = k_raw[carry]
            reason[carry] = [f"carried forward from {s[:10]}" for s in k_since[carry]]
            missing = missing & ~carry
    value = raw
    if use.per is not None:
        divisor = frame.column(use.per)[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.asarray(raw, dtype=float) / divisor
        bad = ~missing & ~np.isfinite(value)
        reason[bad] = f"per {use.per}: {use.per} is N/A or 0"
        value = np.where(np.isfinite(value), value, np.nan)
        missing = missing | bad
    applicable = np.ones(len(rows), dtype=bool)
    if slot.applies is not None:
        applicable = slot.applies.evaluate(frame)[rows] == 1.0
        reason[~applicable] = f"not applicable: {slot.applies.source} is not true"
    scheme = use.scheme
    population = _population(slot, frame, value, applicable & ~missing) if scheme.relative else None
    scored = scheme.score(value, population)
    why = scheme.why_not(value)
    if why is not None:
        unscorable = ~missing & np.isnan(scored) & (why != None)  # noqa: E711
        reason[unscorable] = why[unscorable]
    scored = np.where(applicable & ~missing, scored, np.nan)
    filled = np.zeros(len(rows), dtype=bool)
    if use.missing in ("neutral", "worst"):
        fill = use.neutral if use.missing == "neutral" else 0.0
        gap = applicable & np.isnan(scored)
        if gap.any():
            scored = np.where(gap, fill, scored)
            reason[gap] = [f"{r or 'no data'}; scored {use.missing} ({fill:g})" for r in reason[gap]]
            filled = gap
    return SlotResult(slot, raw, value, scored, reason, applicable, filled=filled)


def _population(slot: MetricSlot, frame: Frame, value: np.ndarray, known: np.ndarray) -> np.ndarray:
    """What a relative scheme ranks against: this model's accounts with a value, or every account."""
    use = slot.use
    if use.scheme.within == "model":
        return value[known]
    population = frame.column(slot.name).astype(float)
    if use.per is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            population = population / frame.column(use.per)
    return population


def _missing(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return values == None  # noqa: E711
    return np.isnan(values)


def _combine(model_pass: ModelPass, result: ScoreResult, top: int, rounding: str = "half_up") -> None:
    model, rows = model_pass.model, model_pass.rows
    by_group: dict[str, list[SlotResult]] = {}
    for slot_result in model_pass.slots:
        by_group.setdefault(slot_result.slot.group, []).append(slot_result)
    m = len(rows)
    group_scores: dict[str, np.ndarray] = {}
    group_avail_w: dict[str, np.ndarray] = {}
    group_app_w: dict[str, np.ndarray] = {}
    for group in model.groups:
        members = by_group.get(group.name, [])
        num, den, app = np.zeros(m), np.zeros(m), np.zeros(m)
        for s in members:
            available = ~np.isnan(s.score)
            num += np.where(available, s.score * s.slot.weight, 0.0)
            den += np.where(available, s.slot.weight, 0.0)
            app += np.where(s.applicable, s.slot.weight, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            group_scores[group.name] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        group_avail_w[group.name], group_app_w[group.name] = den, app
        model_pass.groups[group.name] = group_scores[group.name]
        result.groups[group.name][rows] = group_scores[group.name]
    gweights = {g.name: g.weight for g in model.groups}
    if model.combine == "groups":
        total_avail = sum(np.where(group_avail_w[g] > 0, w, 0.0) for g, w in gweights.items())
        total_app = sum(np.where(group_app_w[g] > 0, w, 0.0) for g, w in gweights.items())
        coverage = np.zeros(m)
        for s in model_pass.slots:
            g, w = s.slot.group, s.slot.weight
            avail = ~np.isnan(s.score)
            with np.errstate(invalid="ignore", divide="ignore"):
                s.share = np.where(
                    avail & (total_avail > 0) & (group_avail_w[g] > 0),
                    gweights[g] / _safe(total_avail) * w / _safe(group_avail_w[g]),
                    0.0,
                )
                # coverage: this metric's share of the weight of everything applicable, when it had
                # data (a value scored by the neutral/worst policy takes part in the score, not in coverage)
                coverage += np.where(
                    avail & ~s.filled & (total_app > 0) & (group_app_w[g] > 0),
                    gweights[g] / _safe(total_app) * w / _safe(group_app_w[g]),
                    0.0,
                )
    else:
        total_avail = sum(group_avail_w.values())
        total_app = sum(group_app_w.values())
        coverage = np.zeros(m)
        for s in model_pass.slots:
            avail = ~np.isnan(s.score)
            s.share = np.where(avail & (total_avail > 0), s.slot.weight / _safe(total_avail), 0.0)
            coverage += np.where(avail & ~s.filled & (total_app > 0), s.slot.weight / _safe(total_app), 0.0)
    computed = np.zeros(m)
    for s in model_pass.slots:
        computed += s.share * np.nan_to_num(s.score)
    has_any = total_avail > 0
    result.computed[rows] = np.where(has_any, computed, np.nan)
    result.coverage[rows] = np.where(total_app > 0, coverage, np.nan)
    result.na_reason[rows] = np.where(has_any, None, "no metric of the model has data")
    for group in model.groups:
        loss = np.zeros(m)
        for s in by_group.get(group.name, []):
            loss += s.share * (100.0 - np.nan_to_num(s.score))
        model_pass.group_loss[group.name] = loss
    result.drivers[rows] = _driver_texts(model, model_pass, top, rounding)


def _safe(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, values, 1.0)


@functools.lru_cache(maxsize=64)
def _driver_table(labels: tuple[str, ...], lead: str) -> np.ndarray:
    """Every possible piece, formatted once per set of labels, `lead` before it: piece (group, score,
    lost) at 1 + (group * 101 + score) * 101 + lost, "" at 0 (no piece); rows only pick from it."""
    pieces = [f"{lead}{label} {s} (-{lost})" for label in labels for s in range(101) for lost in range(101)]
    return np.array(["", *pieces], dtype=object)


def _driver_texts(model: CompiledModel, model_pass: ModelPass, top: int, rounding: str = "half_up") -> np.ndarray:
    """'Support 22 (-18), Usage 41 (-9)': the sub-scores costing the most points.

    Each number is the sub-score as its CRM field holds it (2 decimals, see
    pipeline.score_rows) rounded to a whole number by the score's `rounding`,
    like the global score: a sub-score field of 55.5 reads "Usage 56" (half_up).
    A sub-score that costs no point is left out; those come last, as the pieces are in order of
    cost, so each row's text is its rank-1 piece, then ", " and each next one that has a cost.
    """
    m = len(model_pass.rows)
    if top == 0 or m == 0:
        return np.full(m, "", dtype=object)
    losses = np.column_stack([model_pass.group_loss[g.name] for g in model.groups])
    scores = np.column_stack([model_pass.groups[g.name] for g in model.groups])
    lost_r = np.clip(round_score(np.round(losses, 2), rounding), 0, 100).astype(np.int64)
    score_r = np.clip(round_score(np.round(np.nan_to_num(scores), 2), rounding), 0, 100).astype(np.int64)
    labels = tuple(g.label for g in model.groups)
    order = np.argsort(-losses, axis=1, kind="stable")[:, :top]
    pieces = []  # per rank, each row's piece as its place in the table
    for group in order.T:
        lost = np.take_along_axis(lost_r, group[:, None], axis=1)[:, 0]
        score = np.take_along_axis(score_r, group[:, None], axis=1)[:, 0]
        pieces.append(np.where(lost > 0, (group * 101 + score) * 101 + lost + 1, 0))
    texts = _driver_table(labels, "")[pieces[0]]
    for piece in pieces[1:]:
        texts = texts + _driver_table(labels, ", ")[piece]  # object arrays: str + str per row
    return texts


# ---------------------------------------------------------------- trigger indexes


def _score_triggers(score: CompiledScore, frame: Frame, result: ScoreResult) -> None:
    n = frame.n
    total = np.zeros(n)
    known_points = np.zeros(n)
    all_points = sum(t.points for t, _ in score.triggers) or 1.0
    fired_names: list[np.ndarray] = []
    for trigger, expr in score.triggers:
        outcome = expr.evaluate(frame)
        result.triggers.append((trigger, outcome))
        fired = outcome == 1.0
        total += np.where(fired, trigger.points, 0.0)
        known_points += np.where(np.isnan(outcome), 0.0, trigger.points)
        fired_names.append(fired)
    evaluable = known_points > 0
    result.computed = np.where(evaluable, np.minimum(total, 100.0), np.nan)
    result.coverage = known_points / all_points
    result.na_reason = np.where(evaluable, None, "no trigger could be evaluated: inputs are N/A").astype(object)
    result.model = np.where(evaluable, "triggers", None).astype(object)
    labels = [t.label or t.name for t, _ in score.triggers]
    # which triggers fired, as a bit mask: a handful of distinct texts, formatted once each
    masks = sum((fired.astype(np.int64) << bit for bit, fired in enumerate(fired_names)), np.zeros(n, np.int64))
    distinct, inverse = np.unique(masks, return_inverse=True)
    texts = np.array(
        ["; ".join(label for bit, label in enumerate(labels) if mask >> bit & 1) for mask in distinct.tolist()],
        dtype=object,
    )
    result.drivers = texts[inverse] if n else np.full(0, "", dtype=object)


# ---------------------------------------------------------------- overrides and trend


def _apply_overrides(result: ScoreResult, overrides: list[dict[str, Any]]) -> None:
    """Active overrides replace the effective status or score; the computed value stays.

    A score override is rounded like a computed score (the score's `rounding`), so its
    status and grade come from the whole number shown: 39.5 is 40, Yellow.
    """
    if not overrides:
        return
    rounding = result.score.definition.rounding
    position = {int(a): i for i, a in enumerate(result.ids)}
    status_override = np.full(len(result.ids), None, dtype=object)
    for override in overrides:
        i = position.get(int(override["account_id"]))
        if i is None:
            continue
        result.override_id[i] = override["id"]
        if override["kind"] == "score":
            result.value[i] = round_score(np.array([float(override["value"])]), rounding)[0]
        else:
            status_override[i] = override["value"]
    result.status_override = status_override
    _refresh_labels(result)


def _trend(result: ScoreResult, previous: np.ndarray | None) -> None:
    if previous is None:
        return
    flat = result.score.definition.trend.flat_within
    delta = result.value - previous
    result.trend = delta
    direction = np.where(delta > flat, "Up", np.where(delta < -flat, "Down", "Flat")).astype(object)
    result.trend_direction = np.where(np.isnan(delta), None, direction)
