"""Why an account scored what it scored: every metric's part in the global score."""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import ScoreResult, coverage_percent


def explain(result: ScoreResult, account_id: int) -> dict[str, Any]:
    """A plain-data explanation; the metric contributions add up to the global score."""
    i = int(np.searchsorted(result.ids, account_id))
    if i >= len(result.ids) or result.ids[i] != account_id:
        raise KeyError(account_id)
    definition = result.score.definition
    out: dict[str, Any] = {
        "score": result.score.name,
        "label": definition.label or result.score.name,
        "model": result.model[i],
        "global": _num(result.value[i]),
        "computed": _num(result.computed[i], 4),
        "computed_rounded": _num(result.computed_rounded[i]),
        "status": result.status[i],
        "status_computed": result.status_computed[i],
        "grade": result.grade[i],
        "coverage": _num(coverage_percent(result.coverage[i : i + 1])[0], 1),  # percent 0-100
        "points_to_next_band": _num(result.points_to_next[i]),
        "trend": _num(result.trend[i]),
        "trend_direction": result.trend_direction[i],
        "override_id": None if result.override_id[i] < 0 else int(result.override_id[i]),
        "drivers": result.drivers[i],
        "na_reason": result.na_reason[i],
        "groups": {},
        "metrics": [],
        "triggers": [],
    }
    for trigger, outcome in result.triggers:
        state = "unknown (N/A)" if np.isnan(outcome[i]) else ("fired" if outcome[i] == 1 else "not fired")
        out["triggers"].append(
            {"name": trigger.name, "label": trigger.label, "when": trigger.when, "points": trigger.points, "state": state}
        )
    for model_pass in result.passes:
        row = int(np.searchsorted(model_pass.rows, i))
        if row >= len(model_pass.rows) or model_pass.rows[row] != i:
            continue
        for group in model_pass.model.groups:
            out["groups"][group.name] = {
                "label": group.label,
                "weight": group.weight,
                "score": _num(model_pass.groups[group.name][row], 2),
                "points_lost": _num(model_pass.group_loss[group.name][row], 2),
            }
        for s in model_pass.slots:
            score = s.score[row]
            out["metrics"].append(
                {
                    "metric": s.slot.name,
                    "group": s.slot.group,
                    "raw": _plain(s.raw[row]),
                    "normalized": _plain(s.value[row]) if s.slot.use.per else None,
                    "per": s.slot.use.per,
                    "scheme": s.slot.use.scheme.type,
                    "scheme_rule": s.slot.use.scheme.describe(),
                    "score": _num(score, 2),
                    "weight": s.slot.weight,
                    "share": _num(s.share[row], 4),
                    "contribution": _num(s.share[row] * score, 4) if not np.isnan(score) else 0.0,
                    "points_lost": _num(s.share[row] * (100 - score), 4) if not np.isnan(score) else 0.0,
                    "na_reason": s.reason[row] if np.isnan(score) else None,
                    "note": s.reason[row] if not np.isnan(score) else None,
                }
            )
    return out


def _num(value: float, digits: int = 0) -> float | int | None:
    if value is None or value != value:
        return None
    return int(value) if digits == 0 else round(float(value), digits)


def _plain(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return None if np.isnan(value) else float(value)
    return value
