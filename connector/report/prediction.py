"""Does the score predict churn? The backtest of each weighted score, on the stored series.

Only what is already in the store is judged: the newest series `healthsync rescore` kept for
the loaded mappings version, against the mappings' first bad outcome (`good: false`, the
churn-like one) found in the pulled records. Nothing is rebuilt here. Without an outcome or a
series the report says how to get them; a backtest that cannot judge (a horizon longer than
the history, no account with the outcome) shows its message instead of the measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..backtest.evaluate import BacktestError, backtest, orientation
from ..backtest.history import load
from ..backtest.outcomes import check_against_records, events_of, outcome_records
from ..config.mappings import Mappings
from ..errors import ConfigError
from ..store import Store

HORIZON = 90  # days after a snapshot within which the outcome counts, as `healthsync backtest` defaults

NO_OUTCOME = "outcome"  # the mappings name no bad outcome (mappings/outcomes.yaml)
NO_SERIES = "series"  # no stored series for the mappings version (healthsync rescore)


@dataclass
class Prediction:
    """One weighted score's backtest: its result, why it could not run, or what is missing."""

    score: str
    horizon: int = HORIZON
    outcome: str | None = None  # the outcome judged against
    missing: str | None = None  # NO_OUTCOME or NO_SERIES
    error: str | None = None  # the BacktestError (or outcome check) message
    result: dict[str, Any] | None = None  # backtest(...) as it returned it
    sign: float = 1.0  # risk = sign * score: low risk = the outcome more likely
    group_labels: dict[str, str] | None = None  # sub-score name -> label
    metric_labels: dict[str, str] | None = None  # metric name -> label


def predictions(store: Store, mappings: Mappings, now: datetime) -> dict[str, Prediction]:
    """score name -> Prediction, for every weighted score of the mappings."""
    weighted = [s for s in mappings.scores.values() if s.definition.kind == "weighted"]
    if not weighted:
        return {}
    outcome = next((o for o in mappings.outcomes.values() if not o.good), None)
    if outcome is None:
        return {s.name: Prediction(s.name, missing=NO_OUTCOME) for s in weighted}
    series = store.latest_series(mappings.version)
    if series is None:
        return {s.name: Prediction(s.name, outcome=outcome.name, missing=NO_SERIES) for s in weighted}
    data = outcome_records(store, mappings)
    try:
        check_against_records(outcome, data, mappings)
    except ConfigError as err:
        message = "; ".join(p.render() for p in err.problems)
        return {s.name: Prediction(s.name, outcome=outcome.name, error=message) for s in weighted}
    events = events_of(outcome, data)
    renewal = next((o for o in mappings.outcomes.values() if o.good), None)
    renewals = events_of(renewal, data) if renewal is not None else None
    names = {i: name or key for i, (key, name) in store.live_accounts().items()}
    rebuilt = load(store, mappings, series)
    out = {}
    for score in weighted:
        found = Prediction(score.name, outcome=outcome.name, sign=orientation(mappings, score.name, False)[0],
                           group_labels={g.name: g.label for m in score.models for g in m.groups if g.label},
                           metric_labels={n: m.label for n, m in mappings.metrics.items() if m.label})
        try:
            found.result = backtest(rebuilt, mappings, score.name, events, HORIZON, now, names, renewals)
        except BacktestError as err:
            found.error = str(err)
        out[score.name] = found
    return out

