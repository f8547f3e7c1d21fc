"""The backtest's statistics: hand-computed cases, agreement with scikit-learn and scipy (the
references its own numpy code is held to; neither is imported at run time), and the
behaviour of the DeLong interval on synthetic data whose true AUC is known."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm, rankdata
from sklearn.metrics import average_precision_score, roc_auc_score

from connector.backtest import measures
from connector.backtest.measures import (
    bands,
    calibration,
    discrimination,
    lead_times,
    rank_separation,
    separation,
)

# 4 churners, 4 retained; of the 16 (churner, retained) pairs the churner scores lower in 12.
CHURN_SCORES = [10, 20, 35, 65]
KEPT_SCORES = [30, 40, 60, 70]


def small_case():
    score = np.array(CHURN_SCORES + KEPT_SCORES, dtype=float)
    outcome = np.array([True] * 4 + [False] * 4)
    return score, outcome


def binormal(rng, n_churn, n_kept, gap=15.0, sd=15.0):
    """Churners score N(55 - gap, sd), retained N(55, sd): the true AUC is Phi(gap / (sd * sqrt 2))."""
    score = np.r_[rng.normal(55 - gap, sd, n_churn), rng.normal(55, sd, n_kept)]
    outcome = np.r_[np.ones(n_churn, bool), np.zeros(n_kept, bool)]
    return score, outcome, float(norm.cdf(gap / (sd * math.sqrt(2))))


# ------------------------------------------------------------------ discrimination: by hand


def test_a_hand_counted_auc_of_three_quarters_and_its_average_precision():
    d = discrimination(*small_case())
    assert (d.n, d.positives, d.negatives, d.unscored, d.base_rate) == (8, 4, 4, 0, 0.5)
    assert d.auc == pytest.approx(12 / 16)
    # Riskiest first: 10 C, 20 C, 30 K, 35 C, 40 K, 60 K, 65 C, 70 K -> precision at each churner.
    assert d.pr_auc == pytest.approx((1 + 1 + 3 / 4 + 4 / 7) / 4)
    assert d.pr_baseline == 0.5
    assert d.ci_method == "DeLong"
    assert d.thin is not None and "Only 4 of the 8 scored accounts churned" in d.thin


def test_ties_between_a_churner_and_a_retained_account_count_half():
    # pairs: 10<50, 10<90, 50=50 (half), 50<90 -> 3.5 of 4
    d = discrimination(np.array([10.0, 50, 50, 90]), np.array([True, True, False, False]))
    assert d.auc == pytest.approx(3.5 / 4)
    flat = discrimination(np.full(6, 70.0), np.array([True, False] * 3))
    assert flat.auc == pytest.approx(0.5)
    assert (flat.roc_fpr, flat.roc_tpr) == ([0.0, 1.0], [0.0, 1.0])


def test_perfect_separation_is_one_and_the_reverse_is_zero():
    churn = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    low_first = np.r_[np.arange(20.0), np.arange(50.0, 70.0)]
    perfect = discrimination(low_first, churn)
    assert perfect.auc == 1.0 and perfect.pr_auc == pytest.approx(1.0)
    assert perfect.auc_ci == (1.0, 1.0)  # DeLong's standard error is 0 at perfect separation
    reversed_ = discrimination(low_first[::-1].copy(), churn)
    assert reversed_.auc == 0.0
    assert reversed_.pr_auc == pytest.approx(average_precision_score(churn, -low_first[::-1]))


def test_nan_scores_are_dropped_and_counted():
    score, outcome = small_case()
    d = discrimination(np.r_[score, np.nan, np.nan, np.nan], np.r_[outcome, True, False, True])
    assert (d.n, d.unscored, d.positives, d.negatives) == (8, 3, 4, 4)
    assert d.auc == pytest.approx(0.75)


def test_one_class_has_no_auc_and_says_why():
    only_kept = discrimination(np.arange(30.0), np.zeros(30, bool))
    assert (only_kept.auc, only_kept.auc_ci, only_kept.pr_auc, only_kept.roc_fpr) == (None, None, None, [])
    assert only_kept.base_rate == 0.0
    assert "None of the 30 scored accounts churned" in only_kept.thin
    only_churn = discrimination(np.arange(5.0), np.ones(5, bool))
    assert only_churn.auc is None and "All 5 scored accounts churned" in only_churn.thin
    nothing = discrimination(np.array([np.nan]), np.array([True]))
    assert (nothing.n, nothing.unscored, nothing.base_rate) == (0, 1, None)
    assert nothing.thin == "There are no scored accounts, so there is nothing to judge."


def test_three_churners_are_too_thin_to_judge():
    rng = np.random.default_rng(3)
    score = rng.uniform(0, 100, 200)
    outcome = np.zeros(200, bool)
    outcome[:3] = True
    d = discrimination(score, outcome)
    assert d.auc is not None
    assert d.thin == ("Only 3 of the 200 scored accounts churned; at least 10 churners are needed "
                      "before the result means much.")
    few_kept = discrimination(score, ~outcome)
    assert few_kept.thin.startswith("Only 3 of the 200 scored accounts did not churn")


def test_a_wide_interval_is_thin_and_a_narrow_one_is_not():
    rng = np.random.default_rng(12)
    score, outcome, _ = binormal(rng, 12, 12, gap=0.0)
    small = discrimination(score, outcome)
    lo, hi = small.auc_ci
    assert hi - lo > 0.3
    assert small.thin.startswith(f"The 95% interval for the AUC runs from {lo:.2f} to {hi:.2f}")
    score, outcome, _ = binormal(rng, 400, 1600)
    assert discrimination(score, outcome).thin is None


# ------------------------------------------------------------------ discrimination: against libraries


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_average_precision_agree_with_scipy_sklearn_and_a_brute_force_count(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 400))
    score = np.round(rng.uniform(0, 100, n))  # rounded: plenty of ties
    outcome = rng.random(n) < 1 / (1 + np.exp((score - 40) / 15))
    d = discrimination(score, outcome)
    u = mannwhitneyu(-score[outcome], -score[~outcome]).statistic
    assert d.auc == pytest.approx(u / (outcome.sum() * (~outcome).sum()))
    assert d.auc == pytest.approx(roc_auc_score(outcome, -score))
    assert measures._delong(-score[outcome], -score[~outcome])[0] == pytest.approx(d.auc)
    assert d.pr_auc == pytest.approx(average_precision_score(outcome, -score))
    # Without ties average precision is the mean precision at each churner's rank.
    distinct = score + rng.uniform(0, 0.5, n)
    ranked = outcome[np.argsort(distinct, kind="stable")]
    hits = np.cumsum(ranked)
    by_hand = float(np.mean(hits[ranked] / (np.flatnonzero(ranked) + 1)))
    assert discrimination(distinct, outcome).pr_auc == pytest.approx(by_hand)


@pytest.mark.parametrize("seed", range(4))
def test_the_roc_curve_and_average_precision_are_sklearns_exactly(seed):
    from sklearn.metrics import roc_curve
    rng = np.random.default_rng(50 + seed)
    n = int(rng.integers(20, 3000))
    risk = np.round(rng.normal(0, 1, n), int(rng.integers(0, 3)))  # 0-2 decimals: few to no ties
    y = rng.random(n) < 1 / (1 + np.exp(-2 * risk))
    fpr, tpr, ap = measures._curve(y, risk)
    want_fpr, want_tpr, _ = roc_curve(y, risk, drop_intermediate=False)
    assert np.allclose(fpr, want_fpr) and np.allclose(tpr, want_tpr)
    assert ap == pytest.approx(average_precision_score(y, risk), rel=1e-12)
    assert measures._auc_ci(risk[y], risk[~y])[0] == pytest.approx(roc_auc_score(y, risk), rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_the_delong_variance_matches_its_definition_computed_pair_by_pair(seed):
    rng = np.random.default_rng(100 + seed)
    pos = np.round(rng.normal(1, 1, 23), 1)
    neg = np.round(rng.normal(0, 1, 31), 1)
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    want = np.var(v10, ddof=1) / pos.size + np.var(v01, ddof=1) / neg.size
    auc, var = measures._delong(pos, neg)
    assert auc == pytest.approx(psi.mean())
    assert var == pytest.approx(want)


def test_the_midranks_are_scipys_average_ranks():
    x = np.array([3.0, 1, 3, 2, 3, 1, 7])
    assert measures._midranks(x).tolist() == rankdata(x).tolist()


def test_the_interval_contains_the_true_auc_on_a_large_sample_and_is_wider_on_a_small_one():
    rng = np.random.default_rng(2024)
    score, outcome, truth = binormal(rng, 2000, 6000)
    big = discrimination(score, outcome)
    assert big.auc_ci[0] < truth < big.auc_ci[1]
    assert big.auc_ci[0] < big.auc < big.auc_ci[1]
    assert abs(big.auc - truth) < 0.02
    score, outcome, _ = binormal(rng, 40, 120)
    small = discrimination(score, outcome)
    assert small.auc_ci[1] - small.auc_ci[0] > 3 * (big.auc_ci[1] - big.auc_ci[0])


def test_the_interval_covers_the_true_auc_about_95_times_in_100():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(300):
        score, outcome, truth = binormal(rng, 60, 90)
        lo, hi = measures._delong_ci(-score[outcome], -score[~outcome])
        covered += lo <= truth <= hi
    assert 0.91 <= covered / 300 <= 0.985


def test_the_roc_curve_is_downsampled_for_drawing_and_keeps_its_ends():
    rng = np.random.default_rng(5)
    score, outcome, _ = binormal(rng, 800, 1200)
    d = discrimination(score, outcome)
    assert 2 <= len(d.roc_fpr) == len(d.roc_tpr) <= 101
    assert (d.roc_fpr[0], d.roc_tpr[0], d.roc_fpr[-1], d.roc_tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(d.roc_fpr) >= 0) and np.all(np.diff(d.roc_tpr) >= 0)
    assert np.trapezoid(d.roc_tpr, d.roc_fpr) == pytest.approx(d.auc, abs=0.01)
    # Riskiest first C C K C K K C K: the staircase's corners, in order (sklearn may keep a
    # point or two in between on a straight stretch).
    small = discrimination(*small_case())
    points = list(zip(small.roc_fpr, small.roc_tpr, strict=True))
    corners = [(0, 0), (0, 0.5), (0.25, 0.5), (0.25, 0.75), (0.75, 0.75), (0.75, 1), (1, 1)]
    assert [p for p in points if p in corners] == corners
    assert set(points) <= set(corners) | {(0, 0.25), (0.5, 0.75)}


def test_results_are_plain_data():
    d = discrimination(*small_case())
    assert json.loads(json.dumps(dataclasses.asdict(d)))["auc"] == 0.75
    assert all(type(v) is float for v in d.roc_fpr)
    assert type(d.auc) is float and type(d.n) is int


def test_outcomes_must_be_true_or_false():
    with pytest.raises(ValueError, match="True/False"):
        discrimination(np.arange(3.0), np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        discrimination(np.arange(3.0), np.array([True, False]))
    assert discrimination(np.arange(4.0), np.array([1, 1, 0, 0])).auc == 1.0
    assert discrimination(np.arange(4.0), np.array([True, True, False, False], dtype=object)).auc == 1.0


# ------------------------------------------------------------------ bands


def test_band_rates_lift_and_the_worst_band_as_a_predictor():
    status = np.array(["Red"] * 10 + ["Yellow"] * 20 + ["Green"] * 70 + [None] * 5, dtype=object)
    outcome = np.zeros(105, bool)
    outcome[:6] = True        # 6 of 10 Red
    outcome[10:14] = True     # 4 of 20 Yellow
    outcome[30:35] = True     # 5 of 70 Green
    outcome[100:] = True      # unbanded churners are left out
    t = bands(status, outcome, ["Red", "Yellow", "Green"])
    assert (t.n, t.unbanded, t.outcomes, t.base_rate) == (100, 5, 15, 0.15)
    assert [(r.band, r.n, r.outcomes) for r in t.rows] == [("Red", 10, 6), ("Yellow", 20, 4), ("Green", 70, 5)]
    assert [r.rate for r in t.rows] == pytest.approx([0.6, 0.2, 5 / 70])
    assert [r.lift for r in t.rows] == pytest.approx([4.0, 0.2 / 0.15, (5 / 70) / 0.15])
    assert [r.share for r in t.rows] == pytest.approx([0.1, 0.2, 0.7])
    assert t.monotonic is True
    assert t.worst == "Red"
    assert t.worst_precision == pytest.approx(0.6)
    assert t.worst_recall == pytest.approx(6 / 15)
    # Red or Yellow: 10 of 30 churned, 10 of 15 churners caught; all bands: everyone.
    assert [r.cum_precision for r in t.rows] == pytest.approx([0.6, 10 / 30, 0.15])
    assert [r.cum_recall for r in t.rows] == pytest.approx([6 / 15, 10 / 15, 1.0])
    assert t.thin is None


def test_a_better_band_churning_more_is_not_monotonic():
    status = np.array(["Red"] * 20 + ["Yellow"] * 20 + ["Green"] * 20, dtype=object)
    outcome = np.zeros(60, bool)
    outcome[:8] = True        # Red 40 %
    outcome[20:22] = True     # Yellow 10 %
    outcome[40:45] = True     # Green 25 %: more than Yellow
    t = bands(status, outcome, ["Red", "Yellow", "Green"])
    assert t.monotonic is False
    assert "Only 15 of the 60" not in (t.thin or "")


def test_equal_rates_and_empty_bands_keep_the_order_monotonic():
    status = np.array(["Red"] * 10 + ["Green"] * 10)
    outcome = np.array(([True] * 3 + [False] * 7) * 2)
    t = bands(status, outcome, ["Red", "Yellow", "Green"])
    assert t.monotonic is True
    assert (t.rows[1].n, t.rows[1].rate, t.rows[1].lift) == (0, None, None)
    assert bands(status[:10], outcome[:10], ["Red", "Yellow", "Green"]).monotonic is None
    assert "Only 6 of the 20 banded accounts churned" in t.thin


def test_bands_refuse_an_order_with_a_band_twice():
    with pytest.raises(ValueError, match="twice"):
        bands(np.array(["Red"]), np.array([True]), ["Red", "Red"])


# ------------------------------------------------------------------ calibration


def test_deciles_hold_equal_counts_lowest_scores_first():
    rng = np.random.default_rng(1)
    score = rng.permutation(np.arange(100.0))
    outcome = score < 30
    c = calibration(score, outcome)
    assert [b.n for b in c.bins] == [10] * 10
    assert [b.bin for b in c.bins] == list(range(1, 11))
    assert [b.mean_score for b in c.bins] == pytest.approx([4.5 + 10 * k for k in range(10)])
    assert [b.rate for b in c.bins] == [1.0, 1.0, 1.0] + [0.0] * 7
    assert (c.bins[0].score_min, c.bins[0].score_max) == (0.0, 9.0)
    assert (c.n, c.unscored, c.base_rate) == (100, 0, 0.3)


def test_uneven_counts_differ_by_at_most_one_and_nan_is_dropped():
    score = np.r_[np.arange(95.0), [np.nan] * 4]
    c = calibration(score, np.r_[np.zeros(95, bool), np.ones(4, bool)], bins=10)
    counts = [b.n for b in c.bins]
    assert sum(counts) == 95 and max(counts) - min(counts) <= 1 and len(counts) == 10
    assert c.unscored == 4


def test_tied_scores_share_a_bin():
    score = np.r_[np.full(50, 80.0), np.arange(50.0)]
    outcome = np.zeros(100, bool)
    c = calibration(score, outcome, bins=10)
    assert [b.n for b in c.bins] == [10] * 5 + [50]
    assert c.bins[-1].score_min == c.bins[-1].score_max == 80.0
    assert [b.n for b in calibration(np.full(30, 5.0), outcome[:30]).bins] == [30]
    assert [b.n for b in calibration(np.arange(3.0), outcome[:3]).bins] == [1, 1, 1]


# ------------------------------------------------------------------ lead times


def snapshots(account, days, not_green):
    return [(account, d, g) for d, g in zip(days, not_green, strict=True)]


def call(rows, **kw):
    account, day, not_green = zip(*rows, strict=True)
    return lead_times(np.array(day), np.array(not_green), np.array(account), **kw)


def test_an_account_red_from_four_months_out_was_flagged_at_every_horizon():
    days = list(range(-120, 1, 10))
    t = call(snapshots("red", days, [True] * len(days)))
    assert [(h.days, h.accounts, h.not_green, h.share, h.missing) for h in t.horizons] == [
        (30, 1, 1, 1.0, 0), (60, 1, 1, 1.0, 0), (90, 1, 1, 1.0, 0)]
    assert t.median_lead_days == 120.0 >= 90
    assert (t.churners, t.accounts, t.warned, t.never_warned, t.no_history) == (1, 1, 1, 0, 0)


def test_an_account_green_until_ten_days_out_had_ten_days_of_warning():
    days = list(range(-120, 1))           # daily snapshots
    t = call(snapshots("late", days, [d >= -10 for d in days]))
    assert t.median_lead_days == 10.0
    assert [(h.accounts, h.not_green) for h in t.horizons] == [(1, 0), (1, 0), (1, 0)]  # Green at -30


def test_lead_times_over_several_churners():
    rows = (snapshots("A", range(-120, 1, 10), [True] * 13)                      # lead 120
            + snapshots("B", [-100, -50, -20, -5], [False, False, True, True])    # lead 20
            + snapshots("C", [-45, -15], [True, True])                            # lead 45, none at 60/90
            + snapshots("D", [-80, -40, -3], [True, True, False])                 # Green last: lead 0
            + snapshots("E", [-200, -70, -60], [True, False, True])               # lead 60 (last snapshot -60)
            + snapshots("F", [3, 10], [True, True]))                              # only after the event
    rng = np.random.default_rng(0)
    rows = [rows[i] for i in rng.permutation(len(rows))]                          # order doesn't matter
    t = call(rows)
    assert (t.churners, t.accounts, t.no_history) == (6, 5, 1)
    assert t.median_lead_days == 45.0                                             # of 0, 20, 45, 60, 120
    assert (t.warned, t.never_warned) == (4, 1)
    at = {h.days: h for h in t.horizons}
    # -30: A red, B green(-50), C red(-45), D red(-40), E red(-60) -> 4 of 5; F missing
    assert (at[30].accounts, at[30].not_green, at[30].missing) == (5, 4, 1)
    # -60: A red, B green(-100), D red(-80), E red(-60) -> 3 of 4; C and F missing
    assert (at[60].accounts, at[60].not_green, at[60].missing) == (4, 3, 2)
    # -90: A red, B green(-100), E red(-200) -> 2 of 3
    assert (at[90].accounts, at[90].not_green, at[90].share) == (3, 2, pytest.approx(2 / 3))


def test_lead_times_take_other_horizons_integer_ids_and_nothing():
    t = lead_times(np.array([-14, -7, 0]), np.array([True, True, True]), np.array([7, 7, 7]),
                   horizons=(7, 14, 21))
    assert [h.not_green for h in t.horizons] == [1, 1, 0] and t.median_lead_days == 14.0
    empty = lead_times(np.array([]), np.array([], bool), np.array([]))
    assert (empty.churners, empty.median_lead_days, empty.horizons[0].share) == (0, None, None)
    with pytest.raises(ValueError, match="one length"):
        lead_times(np.array([-1, -2]), np.array([True]), np.array(["a", "a"]))


# ------------------------------------------------------------------ separation


def test_separation_reads_the_direction_off_the_data():
    rng = np.random.default_rng(9)
    outcome = np.r_[np.ones(300, bool), np.zeros(700, bool)]
    tickets = np.r_[rng.poisson(6, 300), rng.poisson(3, 700)].astype(float)   # more = riskier
    logins = np.r_[rng.normal(5, 3, 300), rng.normal(9, 3, 700)]              # fewer = riskier
    logins[::4] = np.nan
    t = separation(tickets, outcome, name="tickets")
    assert t.direction == "higher is riskier" and t.auc > 0.7 and t.strength == t.auc
    assert t.auc == pytest.approx(roc_auc_score(outcome, tickets))
    s = separation(logins, outcome, name="logins")
    assert s.direction == "lower is riskier" and s.auc < 0.3 and s.strength == pytest.approx(1 - s.auc)
    assert (s.n, s.missing, s.coverage) == (750, 250, 0.75)
    assert s.auc_ci[0] < s.auc < s.auc_ci[1] and s.thin is None
    noise = separation(rng.normal(size=1000), outcome, name="noise")
    assert noise.auc_ci[0] < 0.5 < noise.auc_ci[1]
    ranked = rank_separation({"noise": rng.normal(size=1000), "tickets": tickets, "logins": logins,
                              "empty": np.full(1000, np.nan)}, outcome)
    assert {r.name for r in ranked[:2]} == {"logins", "tickets"}
    assert [r.name for r in ranked][2:] == ["noise", "empty"]
    assert ranked[0].strength >= ranked[1].strength
    assert ranked[-1].auc is None and ranked[-1].coverage == 0.0 and ranked[-1].direction is None


def test_separation_by_hand():
    s = separation(np.array([3.0, 2, 1, 0]), np.array([True, True, False, False]))
    assert (s.auc, s.direction, s.strength) == (1.0, "higher is riskier", 1.0)
    flat = separation(np.ones(4), np.array([True, True, False, False]))
    assert (flat.auc, flat.direction, flat.strength) == (0.5, "neither", 0.5)
