"""The steps of a healthsync run, in order, each reading and writing the store.

Implemented so far: score (metric values -> scores). Pull, match, measure,
plan and push join here as they are built.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from .config.mappings import Mappings
from .scoring.engine import ScoreResult, score_all
from .scoring.frame import Frame, from_store, iso
from .scoring.overrides import sync_crm_overrides
from .store import Store


@dataclass
class ScoreSummary:
    accounts: int = 0
    scored: dict[str, int] = field(default_factory=dict)
    not_scored: dict[str, int] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def compute(
    store: Store, mappings: Mappings, now: datetime | None = None, frame: Frame | None = None
) -> tuple[Frame, dict[str, ScoreResult]]:
    """Everything `score` does except writing: frame, overrides, history, results."""
    now = now or datetime.now(UTC)
    frame = frame or from_store(store, mappings, now)
    previous = {
        name: store.score_as_of(name, frame.ids, iso(now - timedelta(days=s.definition.trend.days)))
        for name, s in mappings.scores.items()
    }
    overrides = {name: store.active_overrides(name, iso(now)) for name in mappings.scores}
    return frame, score_all(mappings, frame, previous, overrides)


def score(store: Store, mappings: Mappings, now: datetime | None = None) -> ScoreSummary:
    """Score every account with every named score and save the results and history."""
    now = now or datetime.now(UTC)
    stamp = iso(now)
    summary = ScoreSummary()
    store.expire_overrides(stamp)
    frame = from_store(store, mappings, now)
    summary.warnings += sync_crm_overrides(store, mappings, frame, now)
    frame, results = compute(store, mappings, now, frame)
    summary.accounts = frame.n
    for name, result in results.items():
        rows = score_rows(result, mappings.version)
        summary.changed[name] = store.write_scores(name, rows, stamp)
        scored = ~np.isnan(result.value)
        summary.scored[name] = int(scored.sum())
        summary.not_scored[name] = int((~scored).sum())
        labels, counts = np.unique(result.status[scored].astype(str), return_counts=True)
        summary.by_status[name] = {str(k): int(v) for k, v in zip(labels, counts, strict=True)}
    return summary


def score_rows(result: ScoreResult, version: str) -> Iterator[tuple[object, ...]]:
    """One store row per account, in Store.write_scores order, made as they are consumed."""
    group_names = list(result.groups)
    group_cols = [_floats(np.round(result.groups[g], 2)) for g in group_names]
    groups_json = (
        json.dumps(dict(zip(group_names, values, strict=True)))
        for values in zip(*group_cols, strict=True)
    ) if group_names else itertools.repeat("{}", len(result.ids))
    return iter(
        zip(
            result.ids.tolist(),
            result.model.tolist(),
            itertools.repeat(version, len(result.ids)),
            _floats(np.round(result.computed, 4)),
            _floats(result.value),
            result.status_computed.tolist(),
            result.status.tolist(),
            result.grade.tolist(),
            [None if o < 0 else o for o in result.override_id.tolist()],
            _floats(result.trend),
            result.trend_direction.tolist(),
            _floats(np.round(result.coverage, 4)),
            _floats(result.points_to_next),
            result.drivers.tolist(),
            groups_json,
            result.na_reason.tolist(),
            strict=True,
        )
    )


def _floats(values: np.ndarray) -> list[float | None]:
    return [None if v != v else v for v in values.tolist()]
