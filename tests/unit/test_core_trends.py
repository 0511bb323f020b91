# SPDX-License-Identifier: GPL-2.0-or-later
"""Periods, Mann-Kendall, spike test and emerging hot spot categories (pure core)."""

import itertools
import json

import numpy as np
import pytest
from scipy import sparse, stats

from civic311.processing.core.retry import backoff_delay, redact_url, retry_after_seconds, should_retry
from civic311.processing.core.trends import (
    build_cube,
    classify_emerging,
    mann_kendall,
    period_starts,
    pooled_dispersion,
    space_time_weights,
    spike_test,
)
from conftest import TEST_DATA


def test_period_starts_day_week_month():
    t = np.array(["2024-03-06T13:00", "2024-03-10T23:59", "2024-03-11T00:00", "2024-02-29T08:00"],
                 dtype="datetime64[ms]")
    assert period_starts(t, 0).astype(str).tolist() == ["2024-03-06", "2024-03-10", "2024-03-11", "2024-02-29"]
    # ISO weeks start on Monday: 2024-03-04 and 2024-03-11 are Mondays
    assert period_starts(t, 1).astype(str).tolist() == ["2024-03-04", "2024-03-04", "2024-03-11", "2024-02-26"]
    assert period_starts(t, 2).astype(str).tolist() == ["2024-03-01", "2024-03-01", "2024-03-01", "2024-02-01"]


def test_cube_counts_every_request_once_and_fills_empty_periods():
    times = np.array(["2024-01-01", "2024-01-01", "2024-01-20", "2024-02-05", "NaT"], dtype="datetime64[ms]")
    cube = build_cube(np.array([0, 1, 0, 1, 0]), times, np.array(["a", "b", "a", "a", "a"], dtype=object), 2, 1)
    assert cube.periods.astype(str).tolist()[0] == "2024-01-01" and len(cube.periods) == 6
    assert cube.counts.sum() == 4 and cube.counts[0].tolist() == [1, 0, 1, 0, 0, 0]
    assert cube.by_category.sum() == 4 and cube.categories == ["a", "b"]
    ended = build_cube(np.array([0, 0]), times[:3:2], None, 1, 1, end=np.datetime64("2024-01-10"))
    assert ended.counts.sum() == 1 and ended.out_of_range == 1


REFERENCE = json.loads((TEST_DATA / "inference_reference.json").read_text())


def brute_force_p(row):
    """Two-sided exact p by enumerating every arrangement of the row's values (each equally likely)."""
    perms = np.array(list(itertools.permutations(row)), dtype=float)
    i, j = np.triu_indices(len(row), 1)
    all_s = np.sign(perms[:, j] - perms[:, i]).sum(axis=1)
    observed = abs(np.sign(np.asarray(row, float)[j] - np.asarray(row, float)[i]).sum())
    return float((np.abs(all_s) >= observed).mean())


def test_mann_kendall_is_exact_for_few_periods():
    tau, p = mann_kendall(np.array([[1.0, 2, 3, 4]]))
    assert tau[0] == 1 and p[0] == pytest.approx(1 / 12)  # not the normal approximation's 0.041
    rng = np.random.default_rng(8)
    rows = [[3, 1, 4, 1, 5, 9, 2], [0, 0, 1, 0, 2, 2, 3, 0], [5, 5, 5, 6, 5, 5], rng.poisson(2, 8).tolist()]
    for row in rows:
        assert mann_kendall(np.array([row], dtype=float))[1][0] == pytest.approx(brute_force_p(row), abs=1e-12)
    flat_tau, flat_p = mann_kendall(np.ones((1, 10)))
    assert np.isnan(flat_tau[0]) and np.isnan(flat_p[0])


def test_mann_kendall_matches_pymannkendall_above_ten_periods():
    for case in REFERENCE["mann_kendall"]:
        row = np.array([case["series"]], dtype=float)
        tau, p = mann_kendall(row)
        assert p[0] == pytest.approx(case["p"], rel=1e-9, abs=1e-12)
        ref = stats.kendalltau(np.arange(row.shape[1]), row[0])
        assert tau[0] == pytest.approx(ref.statistic, abs=1e-12)  # tau-b, with ties


def test_injected_spike_is_flagged_and_noise_is_not():
    rng = np.random.default_rng(1)
    base = rng.poisson(4, (1, 8))
    z_spike, mean, _ = spike_test(np.array([20]), base)
    z_normal, _, _ = spike_test(np.array([5]), base)
    assert z_spike[0] > 3 and z_normal[0] < 1.5 and mean[0] == pytest.approx(base.mean())
    # an overdispersed baseline needs a bigger jump
    wild = np.array([[0, 12, 1, 9, 0, 14, 2, 10]])
    assert spike_test(np.array([20]), wild)[0][0] < spike_test(np.array([20]), np.full((1, 8), 6))[0][0]


@pytest.mark.parametrize("mu", [0.5, 3.0, 15.0])
def test_false_alarm_rate_on_poisson_noise_is_near_nominal(mu):
    rng = np.random.default_rng(int(mu * 10))
    base = rng.poisson(mu, (100_000, 8))
    last = rng.poisson(mu, 100_000)
    z, _, _ = spike_test(last, base)
    for threshold in (2.0, 3.0):
        ratio = (z >= threshold).mean() / stats.norm.sf(threshold)
        assert 0.3 < ratio < 1.2, (mu, threshold, ratio)


def negative_binomial(rng, mu, phi, size):
    """Counts of mean mu and variance phi * mu (Poisson when phi = 1)."""
    return rng.poisson(mu, size) if phi == 1 else rng.negative_binomial(mu / (phi - 1), 1 / phi, size)


@pytest.mark.parametrize("phi", [1, 2, 3])
@pytest.mark.parametrize("baseline", [3, 4, 8])
def test_spike_false_alarms_stay_at_or_below_nominal_under_overdispersion(phi, baseline):
    """Zones of varied size, counts overdispersed by phi, no real spike: the share flagged at SPIKE_Z = 3 (and
    2) must not exceed the nominal rate (allowing 3 standard errors of simulation noise). Before the dispersion
    was pooled, phi = 3 gave up to 17 times the nominal rate."""
    rng = np.random.default_rng(100 * phi + baseline)
    zones = 20_000
    mu = rng.gamma(2.0, 3.0, zones) + 0.5
    counts = np.stack([negative_binomial(rng, mu, phi, zones) for _ in range(baseline + 1)], axis=1).astype(float)
    z, _, _ = spike_test(counts[:, -1], counts[:, :-1])
    for threshold in (3.0, 2.0):
        nominal = stats.norm.sf(threshold)
        assert (z >= threshold).mean() <= nominal + 3 * np.sqrt(nominal * (1 - nominal) / zones), threshold


def test_dispersion_is_pooled_across_zones():
    rng = np.random.default_rng(2)
    base = np.stack([negative_binomial(rng, np.full(5000, 6.0), 3, 5000) for _ in range(4)], axis=1).astype(float)
    phi, pooled = pooled_dispersion(base)
    assert pooled == pytest.approx(3, rel=0.05)
    assert phi.min() >= pooled  # a zone whose few periods happen to look calm is not trusted below the city's


def series_for(pattern: str, n: int = 12):
    """z-scores and significance for one zone from a pattern of H (hot), C (cold), . (not significant)."""
    z = np.array([3.0 if c == "H" else -3.0 if c == "C" else 0.2 for c in pattern])
    return z, np.array([c != "." for c in pattern])


@pytest.mark.parametrize("pattern,trend,expected", [
    ("..........H", 0.0, "New Hot Spot"),
    ("........HHH", 0.0, "Consecutive Hot Spot"),
    ("HHHHHHHHHHH", 1.0, "Intensifying Hot Spot"),
    ("HHHHHHHHHHH", 0.0, "Persistent Hot Spot"),
    ("HHHHHHHHHHH", -1.0, "Diminishing Hot Spot"),
    ("..H..H...HH", 0.0, "Sporadic Hot Spot"),
    ("..C..H....H", 0.0, "Oscillating Hot Spot"),
    ("HHHHHHHHHHHHHHHHHHH.", 0.0, "Historical Hot Spot"),
    ("..........C", 0.0, "New Cold Spot"),
    ("CCCCCCCCCCC", 1.0, "Intensifying Cold Spot"),  # z ever more negative
    ("CCCCCCCCCCC", -1.0, "Diminishing Cold Spot"),
    ("..H....C..C", 0.0, "Oscillating Cold Spot"),
    ("...........", 0.0, "No Pattern Detected"),
    ("HH.........", 0.0, "No Pattern Detected"),
])
def test_every_emerging_category(pattern, trend, expected):
    z, sig = series_for(pattern)
    if trend:  # make the magnitude of the z-scores grow (+1) or shrink (-1): the Mann-Kendall input
        z = z + trend * np.linspace(0, 2, len(z)) * np.sign(z)
    tau, p = mann_kendall(z[None])
    if not trend:
        p = np.array([0.9])
    assert classify_emerging(z[None], sig[None], tau, p)[0] == expected


def test_space_time_weights_structure():
    w = sparse.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    st = space_time_weights(w, n_steps=4, window=1).toarray()
    # bin (zone 1, step 2) = index 6: itself excluded; zones 0,1,2 at steps 1 and 2
    assert set(np.flatnonzero(st[6])) == {1, 2, 5, 9, 10}
    # first step has no previous step
    assert set(np.flatnonzero(st[4])) == {0, 8}


def test_retry_policy():
    assert should_retry(None) and should_retry(429) and should_retry(503) and should_retry(202)
    assert not should_retry(400) and not should_retry(404) and not should_retry(403)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert backoff_delay(0, "3") == 3.0
    import random

    delays = [backoff_delay(a, None, base=1.0, cap=8.0, rng=random.Random(1)) for a in range(6)]
    assert all(0.5 * min(8, 2 ** a) <= d <= 1.5 * min(8, 2 ** a) for a, d in enumerate(delays))
    assert redact_url("https://x.org/q?token=abc&where=1%3D1&$$app_token=zz") == \
        "https://x.org/q?token=***&where=1%3D1&$$app_token=***"
