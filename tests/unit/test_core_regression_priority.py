# SPDX-License-Identifier: GPL-2.0-or-later
"""Least squares against numpy's lstsq, residual Moran, and the outreach priority formula."""

import numpy as np
import pytest

from civic311.processing.core.precincts import quintiles
from civic311.processing.core.priority import Component, outreach_priority, percentile_rank
from civic311.processing.core.regression import global_moran, least_squares
from civic311.processing.core.weights import knn


def test_ols_matches_numpy_lstsq():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2))
    y = 0.6 - 0.04 * x[:, 0] + 0.01 * x[:, 1] + rng.normal(scale=0.05, size=200)
    res = least_squares(y, x, ["a", "b"])
    design = np.column_stack([np.ones(200), x])
    ref, *_ = np.linalg.lstsq(design, y, rcond=None)
    np.testing.assert_allclose(res.coef, ref, atol=1e-9)
    resid = y - design @ ref
    s2 = resid @ resid / (200 - 3)
    se = np.sqrt(np.diag(np.linalg.inv(design.T @ design)) * s2)
    np.testing.assert_allclose(res.se, se, rtol=1e-9)
    assert res.r2 == pytest.approx(1 - resid @ resid / ((y - y.mean()) @ (y - y.mean())), abs=1e-12)
    assert res.ci_low[1] < -0.04 < res.ci_high[1]


def test_wls_matches_scaled_lstsq():
    rng = np.random.default_rng(4)
    x = rng.normal(size=100)
    w = rng.uniform(100, 3000, size=100)
    y = 0.3 + 0.2 * x + rng.normal(scale=1 / np.sqrt(w))
    res = least_squares(y, x, ["x"], w)
    design = np.column_stack([np.ones(100), x])
    ref, *_ = np.linalg.lstsq(design * np.sqrt(w)[:, None], y * np.sqrt(w), rcond=None)
    np.testing.assert_allclose(res.coef, ref, atol=1e-9)


def test_collinear_explanatory_fields_are_rejected():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="collinear"):
        least_squares(x * 2, np.column_stack([x, 2 * x]), ["a", "b"])


def test_global_moran_detects_clustered_residuals():
    xs, ys = np.meshgrid(np.arange(15.0), np.arange(15.0))
    x, y = xs.ravel(), ys.ravel()
    w = knn(x, y, 4)
    i_clustered, p_clustered = global_moran(x + 0.1 * y, w, permutations=199)
    rng = np.random.default_rng(0)
    i_random, p_random = global_moran(rng.normal(size=len(x)), w, permutations=199)
    assert i_clustered > 0.8 and p_clustered == pytest.approx(1 / 200)
    assert abs(i_random) < 0.15 and p_random > 0.05


def test_percentile_rank_ties_caps_signs_and_missing():
    v = np.array([5.0, 1.0, 3.0, 3.0, np.nan, 9.0])
    np.testing.assert_allclose(percentile_rank(v), [0.75, 0.0, 0.375, 0.375, 0.5, 1.0])
    np.testing.assert_allclose(percentile_rank(v, sign=-1), [0.25, 1.0, 0.625, 0.625, 0.5, 0.0])
    # everything above the cap ties at the top: one far outlier cannot lift a precinct above the others past it
    np.testing.assert_allclose(percentile_rank(np.array([100.0, 5000.0, 2000.0, 50.0]), cap=1609.0),
                               [1 / 3, 5 / 6, 5 / 6, 0.0])


def test_priority_is_the_weighted_mean_of_percentile_ranks():
    rng = np.random.default_rng(4)
    n = 60
    nv, rate, poll = rng.gamma(2, 300, n), rng.gamma(1, 10, n), rng.gamma(1, 800, n)
    poll[0] = 50_000.0  # an airport-like outlier
    res = outreach_priority([Component("non_voters", nv, 0.5, 1), Component("rate_eb", rate, 0.3, 1),
                             Component("poll_m", poll, 0.2, 1, cap=1609.0)])

    def pct(v):  # by hand: average ranks with scipy
        from scipy.stats import rankdata

        return (rankdata(v) - 1) / (len(v) - 1)

    p = np.column_stack([pct(nv), pct(rate), pct(np.minimum(poll, 1609.0))])
    expected = p @ np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(res.raw, expected)
    np.testing.assert_allclose(res.priority, 100 * expected)  # not rescaled to the max
    assert res.rank[np.argmax(expected)] == 1 and sorted(res.rank) == list(range(1, n + 1))
    drivers = np.array(["non_voters", "rate_eb", "poll_m"])[np.argmax(p * [0.5, 0.3, 0.2], axis=1)]
    assert res.top_driver.tolist() == drivers.tolist()
    assert res.tier.tolist() == quintiles(expected).tolist()
    assert res.stability.min() >= 0 and res.stability.max() <= 1


def test_rank_stability_counts_tier_changes_under_weight_perturbations():
    # precinct 0 tops every component: it stays in the top tier whatever the weights; the others trade places
    a = np.array([10.0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    b = np.array([10.0, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    res = outreach_priority([Component("a", a, 1.0, 1), Component("b", b, 1.0, 1)], seed=3)
    assert res.stability[0] == 1.0
    # by hand: the share of the same 200 perturbations in which each precinct keeps its tier
    rng = np.random.default_rng(3)
    w = rng.uniform(0.75, 1.25, size=(200, 2))
    w /= w.sum(axis=1, keepdims=True)
    p = np.column_stack([percentile_rank(a), percentile_rank(b)])
    kept = np.array([quintiles(p @ wk) == res.tier for wk in w]).mean(axis=0)
    np.testing.assert_allclose(res.stability, kept)
    assert kept.min() < 1  # some precincts are fragile
    again = outreach_priority([Component("a", a, 1.0, 1), Component("b", b, 1.0, 1)], seed=3)
    np.testing.assert_array_equal(again.stability, res.stability)


def test_priority_weights_and_missing_values():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([3.0, 2.0, 1.0, 2.0])
    only_a = outreach_priority([Component("a", a, 1.0, 1), Component("b", b, 0.0, 1)])
    assert only_a.used == ["a"] and only_a.rank[2] == 1
    assert only_a.raw[3] == pytest.approx(0.5)  # the missing value counts as the middle
    with pytest.raises(ValueError):
        outreach_priority([Component("a", a, 0.0, 1)])
