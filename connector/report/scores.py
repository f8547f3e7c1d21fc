"""How each named score is spread: per segment and status, per sub-score, and who moved.

Histograms and status counts come from one SQL aggregation per score (score
values are whole numbers, so a segment has at most a few hundred distinct
(value, status) rows); sub-scores and movers read the score's rows once into
numpy arrays.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from ..config.mappings import CompiledScore
from ..scoring.engine import INSUFFICIENT
from ..scoring.frame import iso
from ..store import Store

SCORE_BIN = 5  # width of a score histogram bar, in points
GROUP_BIN = 10  # width of a sub-score histogram bar
MOVERS = 10  # accounts listed per direction
TRIGGERS_MODEL = "triggers"  # the `model` the engine stores for trigger scores


@dataclass
class Segment:
    """One model's (segment's) accounts for one score."""

    model: str
    label: str
    edges: np.ndarray
    by_status: dict[str, np.ndarray]  # status -> accounts per bar
    status_counts: dict[str, int]
    not_scored: int = 0  # taken by this model, but no value (no metric had data, ...)
    no_verdict: int = 0  # taken by this model, coverage below the score's min_coverage: no verdict
    mean: float | None = None
    median: float | None = None
    coverage: float | None = None  # mean percent (0-100) of the formula's weight that had data

    @property
    def scored(self) -> int:
        return sum(self.status_counts.values())

    @property
    def total(self) -> int:
        return self.scored + self.not_scored + self.no_verdict


@dataclass
class SubScore:
    name: str
    label: str
    counts: np.ndarray  # accounts per GROUP_BIN-wide bar, 0..100
    not_available: int
    mean: float | None


@dataclass
class SegmentSubScores:
    model: str
    label: str
    groups: list[SubScore]


@dataclass
class Mover:
    account_id: int
    key: str
    name: str | None
    model: str | None
    before: float
    after: float
    status_before: str | None
    status_after: str | None

    @property
    def change(self) -> float:
        return self.after - self.before


@dataclass
class Movers:
    since: str
    days: int
    compared: int  # accounts with a value then and now
    changed: int
    down: list[Mover] = field(default_factory=list)
    up: list[Mover] = field(default_factory=list)


def status_order(score: CompiledScore, seen: set[str]) -> list[str]:
    """The score's status bands, lowest first, then any other status found in the store."""
    names = [band.name for band in score.definition.status]
    return names + sorted(seen - set(names))


def model_labels(score: CompiledScore) -> dict[str, str]:
    if score.definition.kind == "triggers":
        return {TRIGGERS_MODEL: "All accounts"}
    return {m.name: m.label for m in score.models}


# ---------------------------------------------------------------- segments


def segments(store: Store, score: CompiledScore) -> list[Segment]:
    """Per model found in the store: accounts per SCORE_BIN-wide bar and status, mean, median."""
    rows = store.score_spread(score.name, INSUFFICIENT)
    edges = np.arange(0, 100 + SCORE_BIN, SCORE_BIN, dtype=float)
    # a status without a value (the insufficient_label, a status override on an unscored account) is no band
    statuses = status_order(score, {r[2] for r in rows if r[2] is not None and r[1] is not None})
    found: dict[str, Segment] = {}
    values: dict[str, list[tuple[float, int]]] = defaultdict(list)
    coverage: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for model, value, status, n, cov_sum, cov_n, thin in rows:
        segment = found.get(model) or found.setdefault(model, _empty_segment(model, edges, statuses))
        coverage[model][0] += cov_sum or 0.0
        coverage[model][1] += cov_n
        if value is None:
            segment.no_verdict += thin or 0
            segment.not_scored += n - (thin or 0)
            continue
        bar = min(max(int(value // SCORE_BIN), 0), len(edges) - 2)
        segment.by_status[status or "N/A"][bar] += n
        segment.status_counts[status or "N/A"] = segment.status_counts.get(status or "N/A", 0) + n
        values[model].append((float(value), int(n)))
    for model, segment in found.items():
        segment.mean, segment.median = _mean_median(values[model])
        total, n = coverage[model]
        segment.coverage = total / n if n else None
    return _in_model_order(found, score)


def _empty_segment(model: str, edges: np.ndarray, statuses: list[str]) -> Segment:
    bars = len(edges) - 1
    by_status = {s: np.zeros(bars, dtype=np.int64) for s in [*statuses, "N/A"]}
    return Segment(model, model, edges, by_status, {s: 0 for s in statuses})


def _mean_median(pairs: list[tuple[float, int]]) -> tuple[float | None, float | None]:
    if not pairs:
        return None, None
    pairs.sort()
    values = np.array([v for v, _ in pairs])
    counts = np.array([n for _, n in pairs])
    cumulative = np.cumsum(counts)
    median = float(values[np.searchsorted(cumulative, (cumulative[-1] + 1) / 2)])
    return float((values * counts).sum() / counts.sum()), median


def _in_model_order(found: dict[str, Segment], score: CompiledScore) -> list[Segment]:
    labels = model_labels(score)
    order = [m for m in labels if m in found] + sorted(m for m in found if m not in labels)
    for model in order:
        found[model].label = labels.get(model, f"{model} (not in the mappings)")
    return [found[m] for m in order]


def unscored(store: Store, score: CompiledScore) -> dict[str, int]:
    """Why accounts have no value for this score: reason -> accounts.

    Coverage below the score's min_coverage is one reason, whatever each account's percent.
    """
    minimum = score.definition.min_coverage
    thin = f"{INSUFFICIENT} (below {minimum:g}%)" if minimum is not None else INSUFFICIENT
    return store.unscored_reasons(score.name, INSUFFICIENT, thin)


# ---------------------------------------------------------------- sub-scores


def sub_scores(store: Store, score: CompiledScore) -> list[SegmentSubScores]:
    """Per model of the mappings: each group's sub-score distribution (the `groups` JSON)."""
    names = score.group_names()
    if not names:
        return []
    rows = store.group_values(score.name, names)
    if not rows:
        return []
    models = np.array([r[0] for r in rows], dtype=object)
    values = {name: np.array([r[i + 1] for r in rows], dtype=float) for i, name in enumerate(names)}
    edges = np.arange(0, 100 + GROUP_BIN, GROUP_BIN, dtype=float)
    out = []
    for model in score.models:
        mask = models == model.name
        if mask.any():
            groups = [_sub_score(g.name, g.label, values[g.name][mask], edges) for g in model.groups]
            out.append(SegmentSubScores(model.name, model.label, groups))
    return out


def _sub_score(name: str, label: str, values: np.ndarray, edges: np.ndarray) -> SubScore:
    known = values[~np.isnan(values)]
    counts = np.histogram(np.clip(known, 0, 100), bins=edges)[0]
    mean = float(known.mean()) if len(known) else None
    return SubScore(name, label, counts, int(len(values) - len(known)), mean)


# ---------------------------------------------------------------- movers


def movers(store: Store, score: CompiledScore, now: datetime, days: int, top: int = MOVERS) -> Movers:
    """The accounts whose value moved most since `days` before `now` (score_history)."""
    since = iso(now - timedelta(days=days))
    ids, after = store.score_values(score.name)
    change = after - store.score_as_of(score.name, ids, since)
    known = np.flatnonzero(~np.isnan(change))
    moved = known[change[known] != 0]
    down = [int(i) for i in moved[np.lexsort((ids[moved], change[moved]))][:top] if change[i] < 0]
    up = [int(i) for i in moved[np.lexsort((ids[moved], -change[moved]))][:top] if change[i] > 0]
    details = _mover_details(store, score.name, [int(ids[i]) for i in down + up], since)

    def mover(i: int) -> Mover:
        key, name, model, status_then, status_now = details[int(ids[i])]
        return Mover(int(ids[i]), key, name, model, float(after[i] - change[i]), float(after[i]),
                     status_then, status_now)

    return Movers(since, days, len(known), len(moved), [mover(i) for i in down], [mover(i) for i in up])


def _mover_details(store: Store, score: str, ids: list[int], since: str) -> dict[int, tuple[str, str | None, str | None, str | None, str | None]]:
    """account id -> (key, name, model, status then, status now), for a handful of accounts."""
    then = {account_id: status for account_id, (_value, status) in store.scores_before(score, ids, since).items()}
    rows = store.score_accounts(score, ids)
    return {aid: (key, name, model, then.get(aid), status) for aid, key, name, model, status in rows}
