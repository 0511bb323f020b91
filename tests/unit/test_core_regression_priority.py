# SPDX-License-Identifier: GPL-2.0-or-later
"""Least squares against numpy's lstsq, residual Moran, and the outreach priority formula."""

import numpy as np
import pytest

from civic311.processing.core.priority import Component, outreach_priority, zscore
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


def test_priority_formula_signs_and_scaling():
    rate = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    turnout = np.array([0.6, 0.5, 0.4, 0.3, 0.2])
    res = outreach_priority([Component("rate_eb", rate, 1.0, 1), Component("turnout", turnout, 1.0, -1)])
    expected = (zscore(rate) - zscore(turnout)) / 2
    np.testing.assert_allclose(res.raw, expected)
    np.testing.assert_allclose(res.priority, [0, 25, 50, 75, 100])
    assert res.rank.tolist() == [5, 4, 3, 2, 1] and res.tier.tolist() == [1, 2, 3, 4, 5]


def test_priority_weights_and_missing_values():
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([3.0, 2.0, 1.0, 2.0])
    only_a = outreach_priority([Component("a", a, 1.0, 1), Component("b", b, 0.0, 1)])
    assert only_a.used == ["a"] and only_a.rank[2] == 1
    # the missing value counts as average (z = 0)
    assert only_a.raw[3] == pytest.approx(0.0)
    with pytest.raises(ValueError):
        outreach_priority([Component("a", a, 0.0, 1)])
