"""The statistics of the backtest: does a low health score come before churn?

Everything here is pure: numpy arrays in, frozen dataclasses out (``dataclasses.asdict`` turns any
result into plain dicts, lists and numbers, ready for JSON), no I/O and no imports from the rest
of healthsync. The conventions, shared by every function:

* ``outcome`` is a bool array, one entry per account: True = the account churned within the
  horizon the backtest looks at. 0/1 integers or floats are accepted too; anything else (NaN,
  2, ...) is an error, because a churn flag that is "unknown" must be dropped by the caller.
* ``score`` is the health score (0-100, higher = healthier); NaN means "not scored": such
  accounts are dropped and counted, never treated as a score.
* A measure that can't be computed (one class only, no accounts) is None, not NaN.
* ``thin`` is None when there is enough data to judge, else one sentence for a CS-ops reader
  saying why not: fewer than ``MIN_CLASS`` churned or retained accounts, or an AUC interval wider
  than ``MAX_CI_WIDTH``.

The AUC's 95 % interval is DeLong's (DeLong, DeLong & Clarke-Pearson 1988, with the midrank
algorithm of Sun & Xu 2014): the normal interval ``auc +- 1.96 * se`` with DeLong's standard error,
clipped to [0, 1], as R's ``pROC::ci.auc(method = "delong")`` computes it. It is exact arithmetic,
so there is no bootstrap and no seed. With (near) perfect separation DeLong's standard error goes
to 0 and the interval collapses onto the AUC: read it together with ``thin``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_CLASS = 10
"""Fewer churned (or fewer retained) accounts than this and a result is called thin."""
MAX_CI_WIDTH = 0.3
"""An AUC interval wider than this (upper - lower) and a result is called thin."""
ROC_POINTS = 101
"""The most points of the ROC curve handed back for drawing."""
Z95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95 % interval."""
CI_METHOD = "DeLong"


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Discrimination:
    """How well the score ranks churners below retained accounts (see :func:`discrimination`).

    auc: the chance that a random churner scored lower than a random retained account (ties
    count half); 0.5 = a coin toss, 1.0 = every churner scored below every retained account,
    0.0 = exactly backwards. pr_auc is the average precision of "low score = churn risk"; compare
    it with pr_baseline (= base_rate), which is what flagging accounts at random achieves.
    roc_fpr/roc_tpr: the ROC curve (share of retained accounts flagged, share of churners
    flagged) as the threshold on the score rises, from (0, 0) to (1, 1), at most 101 points.
    """

    n: int                      # scored accounts used
    unscored: int               # accounts dropped because their score was NaN
    positives: int              # churned
    negatives: int              # retained
    base_rate: float | None     # positives / n
    auc: float | None
    auc_ci: tuple[float, float] | None
    ci_method: str              # "DeLong"
    pr_auc: float | None
    pr_baseline: float | None
    roc_fpr: list[float]
    roc_tpr: list[float]
    thin: str | None


@dataclass(frozen=True, slots=True)
class BandRate:
    """One status band: how many accounts were in it and how many of them churned.

    rate = outcomes / n; lift = rate / base rate (2.0 = churned twice as often as the average
    account). cum_precision / cum_recall: if CS treated every account in this band *or a worse
    one* as at risk, the share of those that did churn, and the share of all churners caught.
    For the worst band these are its precision and recall as a churn predictor; for the second
    band (e.g. Yellow) they answer "Red or Yellow".
    """

    band: str
    n: int
    share: float | None         # n / all banded accounts
    outcomes: int
    rate: float | None          # None when the band is empty
    lift: float | None          # None when empty or when nobody churned at all
    cum_precision: float | None
    cum_recall: float | None


@dataclass(frozen=True, slots=True)
class BandTable:
    """Churn by status band, worst band first (see :func:`bands`).

    monotonic: True when the churn rate never rises from a worse band to a better one (equal
    rates are fine), False when some better band churned more than a worse one, None when fewer
    than two bands have accounts. Empty bands are skipped in that comparison.
    worst_precision / worst_recall: the worst band (``worst``, e.g. "Red") as a predictor.
    """

    rows: list[BandRate]
    n: int                      # accounts in one of the bands
    unbanded: int               # accounts whose status is in none of the bands (None, unscored, ...)
    outcomes: int
    base_rate: float | None
    monotonic: bool | None
    worst: str
    worst_precision: float | None
    worst_recall: float | None
    thin: str | None


@dataclass(frozen=True, slots=True)
class CalibrationBin:
    """One equal-count score bin: its score range, mean score and churn rate."""

    bin: int                    # 1 = the lowest scores
    n: int
    score_min: float
    score_max: float
    mean_score: float
    outcomes: int
    rate: float


@dataclass(frozen=True, slots=True)
class Calibration:
    """Churn rate by score bin, lowest scores first (see :func:`calibration`)."""

    bins: list[CalibrationBin]
    n: int
    unscored: int
    base_rate: float | None
    thin: str | None


@dataclass(frozen=True, slots=True)
class HorizonShare:
    """Of the churners with a snapshot ``days`` or more before their churn, how many were not
    Green then (at their latest snapshot on or before that day)."""

    days: int
    accounts: int               # churners with a snapshot on or before event - days
    not_green: int
    share: float | None         # not_green / accounts
    missing: int                # churners left out: no snapshot that early


@dataclass(frozen=True, slots=True)
class LeadTimes:
    """How early the score warned about the accounts that churned (see :func:`lead_times`).

    median_lead_days: over the churners with at least one snapshot on or before their churn
    (``accounts``), the median number of days they had been continuously not Green when they
    churned; an account Green at its last snapshot counts 0 (``never_warned``).
    """

    churners: int               # distinct accounts in the input
    accounts: int               # churners with a snapshot on or before the event
    no_history: int             # churners whose snapshots are all after the event
    horizons: list[HorizonShare]
    median_lead_days: float | None
    warned: int                 # lead > 0: not Green at their last snapshot
    never_warned: int           # lead = 0: Green at their last snapshot


@dataclass(frozen=True, slots=True)
class Separation:
    """How well one input (a metric or a sub-score) separates churners, direction unknown.

    auc is of the raw value: > 0.5 means churners tend to have *higher* values, < 0.5 *lower*.
    direction says which ("higher is riskier", "lower is riskier", or "neither" at exactly 0.5)
    and strength = max(auc, 1 - auc) is the AUC in the risky direction, for ranking inputs. The
    direction was read off the same data, so strength is never below 0.5: only an auc_ci that
    excludes 0.5 is evidence that the input separates at all.
    """

    name: str
    n: int                      # accounts with a value
    missing: int                # accounts without (NaN)
    coverage: float | None      # n / (n + missing)
    positives: int
    negatives: int
    auc: float | None
    auc_ci: tuple[float, float] | None
    direction: str | None
    strength: float | None
    thin: str | None


# --------------------------------------------------------------------------- functions


def discrimination(score: Any, outcome: Any, *, min_class: int = MIN_CLASS,
                   max_ci_width: float = MAX_CI_WIDTH) -> Discrimination:
    """Does a low score pick out the accounts that churn? The ROC AUC, its 95 % interval, the
    average precision and the ROC curve of "lower score = more risk".

    score: health score per account (NaN = not scored: dropped and counted in ``unscored``).
    outcome: True = churned within the horizon. Returns a :class:`Discrimination`; the AUC, its
    interval and the average precision are None when only churners or only retained accounts
    are left. ``thin`` says in a sentence when there are too few of either (< ``min_class``)
    or the interval is wider than ``max_ci_width``.
    """
    x, y, unscored = _scored(score, outcome)
    risk = -x
    pos, neg = int(y.sum()), int((~y).sum())
    n = pos + neg
    auc = ci = pr = None
    fpr: list[float] = []
    tpr: list[float] = []
    if pos and neg:
        auc, ci = _auc_ci(risk[y], risk[~y])
        f, t, pr = _curve(y, risk)
        fpr, tpr = _downsample(f, t, ROC_POINTS)
    rate = pos / n if n else None
    return Discrimination(
        n=n, unscored=unscored, positives=pos, negatives=neg, base_rate=rate, auc=auc,
        auc_ci=ci, ci_method=CI_METHOD, pr_auc=pr, pr_baseline=rate, roc_fpr=fpr, roc_tpr=tpr,
        thin=_thin(pos, neg, ci, min_class, max_ci_width, who="scored accounts"))


def bands(status: Any, outcome: Any, order: Sequence[str], *,
          min_class: int = MIN_CLASS) -> BandTable:
    """Churn rate per status band, worst band first, e.g. ``order=["Red", "Yellow", "Green"]``.

    status: the band name per account (str; None or any name not in ``order`` = unbanded,
    left out of every number and counted in ``unbanded``). Each row gives the band's accounts,
    churners, churn rate and lift over the base rate (the churn rate of all banded accounts).
    A score whose bands mean something churns most in Red and least in Green: ``monotonic``
    says whether that holds. ``worst_precision`` / ``worst_recall`` treat the worst band as the
    prediction "will churn": the share of Red accounts that churned, and the share of churners
    that were Red.
    """
    names = list(order)
    if not names:
        raise ValueError("bands: order names no band")
    if len(set(names)) != len(names):
        raise ValueError(f"bands: order names a band twice: {names}")
    s = np.asarray(status, dtype=object)
    y = _outcome(outcome, s.shape)
    members = [s == name for name in names]
    banded = np.logical_or.reduce(members) if members else np.zeros(s.shape, dtype=bool)
    total, churned = int(banded.sum()), int(y[banded].sum())
    base = churned / total if total else None
    rows: list[BandRate] = []
    cum_n = cum_out = 0
    for name, member in zip(names, members, strict=True):
        k, out = int(member.sum()), int(y[member].sum())
        cum_n, cum_out = cum_n + k, cum_out + out
        rate = out / k if k else None
        rows.append(BandRate(
            band=name, n=k, share=k / total if total else None, outcomes=out, rate=rate,
            lift=rate / base if rate is not None and base else None,
            cum_precision=cum_out / cum_n if cum_n else None,
            cum_recall=cum_out / churned if churned else None))
    rates = [r.rate for r in rows if r.rate is not None]
    monotonic = (all(a >= b for a, b in zip(rates, rates[1:], strict=False))
                 if len(rates) >= 2 else None)
    worst = rows[0]
    return BandTable(
        rows=rows, n=total, unbanded=int(s.size - total), outcomes=churned, base_rate=base,
        monotonic=monotonic, worst=worst.band, worst_precision=worst.rate,
        worst_recall=worst.outcomes / churned if churned else None,
        thin=_thin(churned, total - churned, None, min_class, MAX_CI_WIDTH, who="banded accounts"))


def calibration(score: Any, outcome: Any, bins: int = 10, *,
                min_class: int = MIN_CLASS) -> Calibration:
    """Churn rate by score bin (deciles by default), lowest scores first.

    The scored accounts are cut into ``bins`` groups of (nearly) equal size at the score's
    quantiles: with n accounts each bin holds n / bins of them, give or take one. Accounts with
    the same score always share a bin, so many ties make some bins larger and leave fewer bins
    (bins are never empty, and are numbered 1, 2, ... without gaps). A score that means
    something shows the churn rate falling from the first bin to the last.
    """
    if bins < 1:
        raise ValueError(f"calibration: bins must be at least 1, not {bins}")
    x, y, unscored = _scored(score, outcome)
    n = x.size
    out: list[CalibrationBin] = []
    if n:
        # Bin by midrank: equal counts (within one) without ties, tied scores kept together.
        which = np.floor((_midranks(x) - 1) * bins / n).astype(int)
        for number, b in enumerate(np.unique(which), start=1):
            sel = which == b
            xs, ys = x[sel], y[sel]
            out.append(CalibrationBin(
                bin=number, n=int(sel.sum()), score_min=float(xs.min()), score_max=float(xs.max()),
                mean_score=float(xs.mean()), outcomes=int(ys.sum()), rate=float(ys.mean())))
    pos = int(y.sum())
    return Calibration(bins=out, n=n, unscored=unscored, base_rate=pos / n if n else None,
                       thin=_thin(pos, n - pos, None, min_class, MAX_CI_WIDTH, who="scored accounts"))


def lead_times(day_offset: Any, not_green: Any, account: Any, *,
               horizons: Sequence[int] = (30, 60, 90)) -> LeadTimes:
    """How long before they churned were the churners flagged (not Green)?

    One row per (churned account, snapshot), all three arrays the same length:

    * ``day_offset``: the snapshot's day relative to that account's churn event, negative =
      before (-30 = a month before it churned; 0 = the day itself). Snapshots after the event
      (> 0) are ignored.
    * ``not_green``: True when the account's status at that snapshot was not Green (Red or
      Yellow). Drop unscored snapshots before calling.
    * ``account``: the account's id (any hashable values numpy can sort: str or int).

    For each horizon h (30/60/90 days): the share of churners that were not Green h days before
    churning, read at each account's latest snapshot on or before day -h. Churners without a
    snapshot that early are left out of that share and counted in ``missing``.

    The lead time of a churner is how many days before its churn it had been continuously not
    Green: minus the day of the first not-Green snapshot after its last Green one (or of its
    first snapshot when it was never Green), and 0 when its last snapshot on or before the
    event was Green. This is the conservative reading: between a Green snapshot at day -20 and a
    Red one at day -10 the status changed at some unknown day, and only the -10 is certain.
    Rows of one account on the same day: the later row wins.
    """
    d = np.asarray(day_offset, dtype=float)
    g = np.asarray(not_green)
    a = np.asarray(account)
    if not (d.shape == g.shape == a.shape) or d.ndim != 1:
        raise ValueError(f"lead_times: day_offset, not_green and account must be 1-D and of one "
                         f"length, not {d.shape}, {g.shape}, {a.shape}")
    if np.isnan(d).any():
        raise ValueError("lead_times: day_offset has NaN; drop the snapshots without a day")
    g = _outcome(g, g.shape, what="not_green")
    days = [int(h) for h in horizons]
    order = np.lexsort((d, a))           # by account, then day; stable, so later rows stay later
    d, g, a = d[order], g[order], a[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if a.size else np.zeros(0, dtype=int)
    ends = np.r_[starts[1:], a.size] if a.size else np.zeros(0, dtype=int)
    leads: list[float] = []
    seen = {h: 0 for h in days}
    flagged = {h: 0 for h in days}
    no_history = 0
    for lo, hi in zip(starts, ends, strict=True):
        dd, gg = d[lo:hi], g[lo:hi]
        keep = dd <= 0
        dd, gg = dd[keep], gg[keep]
        if not dd.size:
            no_history += 1
            continue
        for h in days:
            at = int(np.searchsorted(dd, -h, side="right")) - 1
            if at >= 0:
                seen[h] += 1
                flagged[h] += bool(gg[at])
        if not gg[-1]:
            leads.append(0.0)
            continue
        green = np.flatnonzero(~gg)
        first = int(green[-1]) + 1 if green.size else 0
        leads.append(float(-dd[first]))
    churners = int(starts.size)
    warned = sum(1 for v in leads if v > 0)
    return LeadTimes(
        churners=churners, accounts=len(leads), no_history=no_history,
        horizons=[HorizonShare(days=h, accounts=seen[h], not_green=flagged[h],
                               share=flagged[h] / seen[h] if seen[h] else None,
                               missing=churners - seen[h]) for h in days],
        median_lead_days=float(np.median(leads)) if leads else None,
        warned=warned, never_warned=len(leads) - warned)


def separation(values: Any, outcome: Any, *, name: str = "", min_class: int = MIN_CLASS,
               max_ci_width: float = MAX_CI_WIDTH) -> Separation:
    """Does this one input (a metric or a sub-score) differ between churners and the rest?

    values: the input per account (NaN = missing: dropped and counted, see ``coverage``).
    Unlike the health score, an input's risky direction isn't known in advance (more support
    tickets is bad, more logins is good), so the AUC is of the raw value and ``direction`` and
    ``strength`` say which way and how strongly it separates. Rank inputs by ``strength`` (see
    :func:`rank_separation`); trust only those whose ``auc_ci`` excludes 0.5 and that are not
    ``thin``.
    """
    x, y, missing = _scored(values, outcome)
    pos, neg = int(y.sum()), int((~y).sum())
    n = pos + neg
    auc = ci = direction = strength = None
    if pos and neg:
        auc, ci = _auc_ci(x[y], x[~y])
        direction = ("higher is riskier" if auc > 0.5 else
                     "lower is riskier" if auc < 0.5 else "neither")
        strength = max(auc, 1.0 - auc)
    total = n + missing
    return Separation(
        name=name, n=n, missing=missing, coverage=n / total if total else None, positives=pos,
        negatives=neg, auc=auc, auc_ci=ci, direction=direction, strength=strength,
        thin=_thin(pos, neg, ci, min_class, max_ci_width, who="accounts with a value"))


def rank_separation(inputs: Mapping[str, Any], outcome: Any, **options: Any) -> list[Separation]:
    """:func:`separation` for each named input, strongest first (inputs with no AUC last)."""
    found = [separation(v, outcome, name=k, **options) for k, v in inputs.items()]
    return sorted(found, key=lambda s: (s.strength is None, -(s.strength or 0.0), s.name))


# --------------------------------------------------------------------------- helpers


def _outcome(outcome: Any, shape: tuple[int, ...], what: str = "outcome") -> np.ndarray:
    """A bool array of the given shape; 0/1 numbers are accepted, anything else is an error."""
    y = np.asarray(outcome)
    if y.shape != shape:
        raise ValueError(f"{what} has shape {y.shape}, expected {shape}")
    if y.dtype == bool:
        return y
    if y.dtype.kind in "iuf":
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"{what} must be True/False (or 0/1); it has other values (NaN?)")
        return y.astype(bool)
    if y.dtype == object and all(isinstance(v, (bool, np.bool_, int, np.integer)) and v in (0, 1)
                                 for v in y.ravel()):
        return y.astype(bool)
    raise ValueError(f"{what} must be a bool array (True/False), not {y.dtype} with other values")


def _scored(score: Any, outcome: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """The finite scores with their outcomes, and how many were dropped as not scored."""
    x = np.asarray(score, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"scores must be 1-D, not of shape {x.shape}")
    y = _outcome(outcome, x.shape)
    keep = np.isfinite(x)
    return x[keep], y[keep], int((~keep).sum())


def _midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties getting the mean of the ranks they span (scipy's rankdata 'average')."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], x.size]
    ranks = np.empty(x.size, dtype=float)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _delong(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """The AUC of "higher = positive" and DeLong's variance of it (Sun & Xu's midrank method).

    The variance is NaN with fewer than two positives or two negatives.
    """
    m, n = pos.size, neg.size
    tz = _midranks(np.concatenate([pos, neg]))
    v10 = (tz[:m] - _midranks(pos)) / n          # per positive: share of negatives below it
    v01 = 1.0 - (tz[m:] - _midranks(neg)) / m    # per negative: share of positives above it
    if m < 2 or n < 2:
        return float(v10.mean()), float("nan")
    return float(v10.mean()), float(v10.var(ddof=1) / m + v01.var(ddof=1) / n)


def _auc_ci(pos: np.ndarray, neg: np.ndarray) -> tuple[float, tuple[float, float] | None]:
    """The AUC (the Mann-Whitney statistic / (m n), ties counting half) and its DeLong interval."""
    auc, var = _delong(pos, neg)
    if not np.isfinite(var):
        return auc, None
    half = Z95 * float(np.sqrt(max(var, 0.0)))
    return auc, (max(0.0, auc - half), min(1.0, auc + half))


def _delong_ci(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float] | None:
    return _auc_ci(pos, neg)[1]


def _curve(y: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The ROC curve (fpr, tpr at each distinct threshold, from (0, 0)) and the average precision
    (sum over thresholds of recall gained x precision there), riskiest first, as scikit-learn's
    roc_curve and average_precision_score define them (tests/test_backtest_measures.py)."""
    order = np.argsort(-risk, kind="mergesort")
    ranked, hits = risk[order], y[order]
    last = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1]  # each threshold's last row
    tps = np.cumsum(hits)[last].astype(float)
    fps = (last + 1) - tps
    pos, neg = tps[-1], fps[-1]
    recall = tps / pos
    precision = tps / (tps + fps)
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return np.r_[0.0, fps / neg], np.r_[0.0, recall], ap


def _downsample(fpr: np.ndarray, tpr: np.ndarray, most: int) -> tuple[list[float], list[float]]:
    """At most ``most`` of the curve's own vertices, evenly spread, first and last kept."""
    if fpr.size > most:
        pick = np.unique(np.round(np.linspace(0, fpr.size - 1, most)).astype(int))
        fpr, tpr = fpr[pick], tpr[pick]
    return [float(v) for v in fpr], [float(v) for v in tpr]


def _thin(pos: int, neg: int, ci: tuple[float, float] | None, min_class: int,
          max_ci_width: float, who: str) -> str | None:
    """Why the data is too thin to judge, as a sentence, or None."""
    n = pos + neg
    if n == 0:
        return f"There are no {who}, so there is nothing to judge."
    if pos == 0:
        return (f"None of the {n} {who} churned, so there is nothing to tell churners "
                f"from; the backtest needs both churned and retained accounts.")
    if neg == 0:
        return (f"All {n} {who} churned, so there is nothing to tell them from; the "
                f"backtest needs both churned and retained accounts.")
    if pos < min_class:
        return (f"Only {pos} of the {n} {who} churned; at least {min_class} churners "
                f"are needed before the result means much.")
    if neg < min_class:
        return (f"Only {neg} of the {n} {who} did not churn; at least {min_class} "
                f"retained accounts are needed before the result means much.")
    if ci is not None and ci[1] - ci[0] > max_ci_width:
        return (f"The 95% interval for the AUC runs from {ci[0]:.2f} to {ci[1]:.2f}, wider than "
                f"{max_ci_width:.2f}: too uncertain to tell a useful score from a weak one.")
    return None
