"""The backtest: does a score, as it stood at each snapshot, predict an outcome within a horizon?

Each (snapshot date T, account) with a number is one observation when T + horizon is before the
end of the data: its label is whether the outcome happened in (T, T + horizon]. For a bad outcome
(churn) an account leaves the population after its first event. The measures come from
`measures.py`; this module only arranges the observations and names things for people.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ..config.mappings import Mappings
from ..errors import HealthsyncError
from . import measures
from .history import Rebuilt
from .outcomes import Events

FLOOR_EXIT = 7


class BacktestError(HealthsyncError):
    """What the user must fix before a backtest can judge anything (exit 2)."""

    exit_code = 2


class BelowFloor(HealthsyncError):
    """The backtest ran, and a measure fell below a floor the caller set (--min-auc ...)."""

    exit_code = FLOOR_EXIT


@dataclass
class Observations:
    date: np.ndarray  # datetime64[s]
    account: np.ndarray  # int64
    risk: np.ndarray  # the score, oriented so that lower = the outcome more likely
    value: np.ndarray  # the score as written
    status: np.ndarray  # object
    model: np.ndarray  # object
    label: np.ndarray  # bool
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: dict[str, np.ndarray] = field(default_factory=dict)


def orientation(mappings: Mappings, score: str, good: bool) -> tuple[float, list[str]]:
    """(sign, band names worst first): risk = sign * value is low where the outcome is likely."""
    definition = mappings.scores[score].definition
    sign = 1.0 if definition.higher_is_better != good else -1.0
    names = [band.name for band in definition.status]
    return sign, names if sign > 0 else list(reversed(names))


def observations(rebuilt: Rebuilt, mappings: Mappings, score: str, events: Events, horizon: int,
                 end: datetime) -> Observations:
    sign, _order = orientation(mappings, score, events.outcome.good)
    usable = [d for d in rebuilt.dates if d + timedelta(days=horizon) <= end]
    if not usable:
        first = rebuilt.dates[0].date() if rebuilt.dates else None
        raise BacktestError(
            f"a {horizon}-day horizon needs a snapshot at least {horizon} days before the end of the data "
            f"({end.date()}); the history starts {first}: rescore from an earlier date (--from) or use a shorter --horizon")
    ids = rebuilt.ids
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("date", "account", "value", "status", "model", "label")}
    groups: dict[str, list[np.ndarray]] = {}
    metrics: dict[str, list[np.ndarray]] = {}
    rows, when = _event_rows(ids, events)
    first = np.full(len(ids), np.inf)
    np.minimum.at(first, rows, when)
    for at in usable:
        s = rebuilt.scores[at][score]
        stamp, until = at.timestamp(), (at + timedelta(days=horizon)).timestamp()
        keep = ~np.isnan(s.value)
        if not events.outcome.good:
            keep &= ~(first <= stamp)  # gone before this snapshot
        label = np.zeros(len(ids), dtype=bool)
        label[rows[(when > stamp) & (when <= until)]] = True
        parts["date"].append(np.full(int(keep.sum()), np.datetime64(at.replace(tzinfo=None), "s")))
        parts["account"].append(ids[keep])
        parts["value"].append(s.value[keep])
        parts["status"].append(s.status[keep])
        parts["model"].append(s.model[keep])
        parts["label"].append(label[keep])
        for g, v in s.groups.items():
            groups.setdefault(g, []).append(v[keep])
        for m, v in rebuilt.metrics[at].items():
            metrics.setdefault(m, []).append(v[keep])
    value = np.concatenate(parts["value"])
    return Observations(np.concatenate(parts["date"]), np.concatenate(parts["account"]), sign * value, value,
                        np.concatenate(parts["status"]), np.concatenate(parts["model"]),
                        np.concatenate(parts["label"]), {g: np.concatenate(v) for g, v in groups.items()},
                        {m: np.concatenate(v) for m, v in metrics.items()})


def _event_rows(ids: np.ndarray, events: Events) -> tuple[np.ndarray, np.ndarray]:
    """(row in ids, moment in epoch seconds) of every event of an account among `ids`."""
    index = {int(a): i for i, a in enumerate(ids.tolist())}
    pairs = [(index[a], w.timestamp()) for a, found in events.by_account.items() if a in index for w, _what in found]
    if not pairs:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    rows, when = zip(*pairs, strict=True)
    return np.array(rows, dtype=np.int64), np.array(when, dtype=float)


def backtest(rebuilt: Rebuilt, mappings: Mappings, score: str, events: Events, horizon: int, end: datetime,
             names: dict[int, str], renewals: Events | None = None) -> dict[str, Any]:
    """Everything `healthsync backtest` shows for one score and one outcome, as plain data."""
    if score not in mappings.scores:
        raise BacktestError(f"no score named '{score}' in the mappings (scores: {', '.join(mappings.scores)})")
    if not events.by_account:
        raise BacktestError(f"no account has the outcome '{events.outcome.name}' in the pulled records: check "
                            "mappings/outcomes.yaml (opportunity types, deal types, reasons) and that the pull read them")
    obs = observations(rebuilt, mappings, score, events, horizon, end)
    _sign, order = orientation(mappings, score, events.outcome.good)
    overall = measures.discrimination(obs.risk, obs.label)
    one = _one_per_account(obs)
    per_account = measures.discrimination(obs.risk[one], obs.label[one])
    result: dict[str, Any] = {
        "score": score, "outcome": events.outcome.name, "outcome_label": events.outcome.label,
        "good_outcome": events.outcome.good, "horizon_days": horizon, "mappings_version": rebuilt.version,
        "snapshots": [str(d)[:10] for d in np.unique(obs.date).tolist()],
        "observations": int(len(obs.label)), "accounts": int(len(np.unique(obs.account))),
        "accounts_with_outcome": len(events.by_account), "events": events.count,
        "assumptions": rebuilt.assumptions,
        "discrimination": asdict(overall),
        # the snapshots of one account are not independent: the interval that means something is the
        # one over a single snapshot per account (drawn with a fixed seed)
        "per_account": asdict(per_account),
        "bands": asdict(measures.bands(obs.status, obs.label, order)),
        "calibration": asdict(measures.calibration(obs.risk, obs.label)),
        "by_model": {},
        "sub_scores": [asdict(s) for s in measures.rank_separation(obs.groups, obs.label)],
        "metrics": [asdict(s) for s in measures.rank_separation(obs.metrics, obs.label)],
    }
    for model in sorted({m for m in obs.model.tolist() if m is not None}):
        mask = obs.model == model
        result["by_model"][model] = {
            "discrimination": asdict(measures.discrimination(obs.risk[mask], obs.label[mask])),
            "bands": asdict(measures.bands(obs.status[mask], obs.label[mask], order)),
        }
    if not events.outcome.good:
        result["lead_times"] = asdict(_lead_times(rebuilt, score, events, order))
        result["watermelons"] = _watermelons(rebuilt, score, events, order, names)
        result["false_alarms"] = _false_alarms(obs, order, names, renewals, horizon)
    return result


def _one_per_account(obs: Observations) -> np.ndarray:
    """One observation per account: a positive one when it has any, else one drawn at random (seed 0)."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(obs.account))
    key = np.lexsort((order, ~obs.label, obs.account))  # by account, positives first, then random
    accounts = obs.account[key]
    first = np.r_[True, accounts[1:] != accounts[:-1]]
    return np.sort(key[first])


def _lead_times(rebuilt: Rebuilt, score: str, events: Events, order: list[str]) -> measures.LeadTimes:
    best = order[-1]
    offsets, not_green, accounts = [], [], []
    first = rebuilt.dates[0]
    index = {int(a): i for i, a in enumerate(rebuilt.ids.tolist())}
    for account_id, found in events.by_account.items():
        i = index.get(account_id)
        event = next((when for when, _what in found if when > first), None)
        if i is None or event is None:
            continue
        for at in rebuilt.dates:
            s = rebuilt.scores[at][score]
            if at <= event and s.value[i] == s.value[i]:
                offsets.append((at - event).days)
                not_green.append(s.status[i] != best)
                accounts.append(account_id)
    return measures.lead_times(np.array(offsets, dtype=float), np.array(not_green, dtype=bool),
                               np.array(accounts, dtype=np.int64))


def _watermelons(rebuilt: Rebuilt, score: str, events: Events, order: list[str], names: dict[int, str],
                 days: int = 90, limit: int = 25) -> dict[str, Any]:
    """Accounts in the best band about `days` before their event: what the score missed, and why."""
    best = order[-1]
    index = {int(a): i for i, a in enumerate(rebuilt.ids.tolist())}
    dates = sorted(rebuilt.dates)
    found: list[dict[str, Any]] = []
    judged = 0
    for account_id, evs in events.by_account.items():
        i = index.get(account_id)
        for when, what in evs:
            last = bisect.bisect_right(dates, when - timedelta(days=days))  # the snapshots on or before
            if i is None or last == 0:
                continue
            at = dates[last - 1]
            s = rebuilt.scores[at][score]
            if s.value[i] != s.value[i]:
                continue
            judged += 1
            if s.status[i] == best:
                found.append({"account_id": account_id, "account": names.get(account_id, str(account_id)),
                              "event": what, "event_date": when.date().isoformat(), "snapshot": at.date().isoformat(),
                              "status": s.status[i], "score": float(s.value[i]), "drivers": s.drivers[i],
                              "sub_scores": {g: _num(v[i]) for g, v in s.groups.items()}})
            break
    found.sort(key=lambda w: -w["score"])
    return {"days_before": days, "churners_judged": judged, "count": len(found),
            "share": round(len(found) / judged, 4) if judged else None, "accounts": found[:limit]}


def _false_alarms(obs: Observations, order: list[str], names: dict[int, str], renewals: Events | None,
                  horizon: int, limit: int = 25) -> dict[str, Any]:
    """Accounts in the worst band that did not churn within the horizon (and renewed, when a renewal
    outcome is named): where the score cried wolf."""
    worst = order[0]
    flagged = (obs.status == worst) & ~obs.label
    rows: dict[int, dict[str, Any]] = {}
    for i in np.flatnonzero(flagged).tolist():
        account_id = int(obs.account[i])
        at = obs.date[i].astype(datetime).replace(tzinfo=None)
        renewed = None
        if renewals is not None:
            event = next((e for e in renewals.by_account.get(account_id, [])
                          if at < e[0].replace(tzinfo=None) <= at + timedelta(days=horizon)), None)
            if event is None:
                continue
            renewed = event[1]
        rows.setdefault(account_id, {"account_id": account_id, "account": names.get(account_id, str(account_id)),
                                     "snapshot": at.date().isoformat(), "score": float(obs.value[i]),
                                     "renewed": renewed})
    listed = sorted(rows.values(), key=lambda r: r["score"])
    return {"band": worst, "renewal_outcome": renewals.outcome.name if renewals else None, "count": len(listed),
            "accounts": listed[:limit]}


def _num(value: Any) -> float | None:
    return None if value is None or value != value else round(float(value), 2)


def compare(new: dict[str, Any], old: dict[str, Any], changed_band: int) -> dict[str, Any]:
    """Two backtests on the same history, side by side."""
    def summary(r: dict[str, Any]) -> dict[str, Any]:
        worst = r["bands"]["rows"][0] if r["bands"]["rows"] else {}
        return {"mappings_version": r["mappings_version"], "auc": r["discrimination"]["auc"],
                "auc_ci": r["discrimination"]["auc_ci"], "pr_auc": r["discrimination"]["pr_auc"],
                "worst_band": worst.get("band"), "worst_band_lift": worst.get("lift"),
                "monotonic": r["bands"]["monotonic"], "thin": r["discrimination"]["thin"]}
    return {"new": summary(new), "against": summary(old), "accounts_changing_band": changed_band}


def floors(result: dict[str, Any], min_auc: float | None, min_red_lift: float | None) -> list[str]:
    """The floors a backtest fell below, each as a sentence (empty: all met)."""
    failed = []
    auc = result["discrimination"]["auc"]
    if min_auc is not None and (auc is None or auc < min_auc):
        failed.append(f"AUC {'n/a' if auc is None else f'{auc:.3f}'} is below --min-auc {min_auc:g}")
    rows = result["bands"]["rows"]
    lift = rows[0]["lift"] if rows else None
    if min_red_lift is not None and (lift is None or lift < min_red_lift):
        failed.append(f"lift of {rows[0]['band'] if rows else 'the worst band'} "
                      f"{'n/a' if lift is None else f'{lift:.2f}'} is below --min-red-lift {min_red_lift:g}")
    return failed
