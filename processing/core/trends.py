# SPDX-License-Identifier: GPL-2.0-or-later
"""Time series of request counts: periods, Mann-Kendall trends, spike tests, emerging hot spot classes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    from scipy import sparse

INTERVALS = ("day", "week", "month")


def period_starts(times: np.ndarray, interval: int) -> np.ndarray:
    """Start (datetime64[D]) of the calendar day / ISO week (Monday) / month containing each time."""
    days = times.astype("datetime64[D]")
    if interval == 0:
        return days
    if interval == 1:
        # 1970-01-01 was a Thursday: shift so that weeks start on Monday
        offset = (days.astype(np.int64) + 3) % 7
        return days - offset.astype("timedelta64[D]")
    return days.astype("datetime64[M]").astype("datetime64[D]")


def period_range(first: np.datetime64, last: np.datetime64, interval: int) -> np.ndarray:
    """Every period start from ``first`` to ``last`` inclusive."""
    if interval == 0:
        return np.arange(first, last + np.timedelta64(1, "D"), dtype="datetime64[D]")
    if interval == 1:
        return np.arange(first, last + np.timedelta64(1, "D"), 7, dtype="datetime64[D]")
    months = np.arange(first.astype("datetime64[M]"), last.astype("datetime64[M]") + 1, dtype="datetime64[M]")
    return months.astype("datetime64[D]")


@dataclass
class Cube:
    """Counts[zone, period] (and [zone, period, category]) over consecutive periods ending at ``periods[-1]``."""

    periods: np.ndarray
    counts: np.ndarray
    by_category: np.ndarray
    categories: list[str]
    out_of_range: int


def build_cube(zone: np.ndarray, times: np.ndarray, categories: np.ndarray | None, n_zones: int, interval: int,
               end: np.datetime64 | None = None) -> Cube:
    """Count requests (zone index >= 0 and a valid time) per zone, period and category.

    The last period is the one containing ``end`` (default: the latest request); requests after it are
    counted in ``out_of_range``."""
    times = np.asarray(times, dtype="datetime64[ms]")
    ok = (zone >= 0) & ~np.isnat(times)
    if not ok.any():
        raise ValueError("No request has both a zone and a valid created_at date.")
    starts = period_starts(times[ok], interval)
    last = period_starts(np.array([end], dtype="datetime64[ms]"), interval)[0] if end is not None else starts.max()
    first = min(starts.min(), last)
    periods = period_range(first, last, interval)
    pos = np.searchsorted(periods, starts)
    keep = starts <= last
    z = zone[ok][keep]
    pos = pos[keep]
    if categories is None:
        cat_codes = np.zeros(len(z), dtype=np.int64)
        cat_names = ["(all)"]
    else:
        cats = np.asarray(categories, dtype=object)[ok][keep]
        cats = np.array(["(none)" if c is None else str(c) for c in cats], dtype=object)
        cat_names_arr, cat_codes = np.unique(cats, return_inverse=True)
        cat_names = [str(c) for c in cat_names_arr]
    n_per, n_cat = len(periods), len(cat_names)
    flat = (z * n_per + pos) * n_cat + cat_codes
    by_cat = np.bincount(flat, minlength=n_zones * n_per * n_cat).reshape(n_zones, n_per, n_cat)
    return Cube(periods, by_cat.sum(axis=2), by_cat, cat_names, int((~keep).sum()))


EXACT_MAX = 10  # up to this many periods the p-value comes from the exact null distribution of S


def _qbinomial(m: int, r: int) -> np.ndarray:
    """Coefficients of the Gaussian (q-)binomial [m choose r]_q: how many arrangements of r equal items among m
    positions have each number of inversions."""
    table = {(0, 0): np.array([1], dtype=object)}
    for mm in range(1, m + 1):
        for rr in range(0, min(mm, r) + 1):
            left = table.get((mm - 1, rr - 1), np.zeros(0, dtype=object)) if rr > 0 else np.zeros(0, dtype=object)
            right = table.get((mm - 1, rr), np.zeros(0, dtype=object)) if rr < mm else np.zeros(0, dtype=object)
            out = np.zeros(max(len(left), len(right) + rr), dtype=object)
            out[:len(left)] += left
            out[rr:rr + len(right)] += right
            table[(mm, rr)] = out
    return table[(m, r)]


@lru_cache(maxsize=512)
def exact_s_distribution(ties: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(S values, probabilities) of the Mann-Kendall statistic under the null (every arrangement of the observed
    values equally likely), for tie groups of these sizes. The inversions of a multiset permutation follow the
    q-multinomial coefficient, built as a product of q-binomials; S = n(n-1)/2 - T - 2 I with T the tied
    pairs."""
    n = sum(ties)
    counts = np.array([1], dtype=object)
    total = 0
    for t in ties:
        total += t
        counts = np.convolve(counts, _qbinomial(total, t))
    tied = sum(t * (t - 1) // 2 for t in ties)
    inversions = np.arange(len(counts))
    s_values = n * (n - 1) // 2 - tied - 2 * inversions
    probs = np.asarray(counts / counts.sum(), dtype=float)
    return s_values, probs


def mann_kendall(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kendall's tau-b of each row against time and the two-sided Mann-Kendall p-value: exact (the null
    distribution of S given the row's ties) for at most EXACT_MAX periods, else the normal approximation with the
    tie-corrected variance and the continuity correction (S − sign(S)), as pymannkendall.original_test."""
    from scipy import stats

    x = np.atleast_2d(np.asarray(series, dtype=float))
    n = x.shape[1]
    if n < 3:
        return np.full(len(x), np.nan), np.full(len(x), np.nan)
    i, j = np.triu_indices(n, 1)
    s = np.empty(len(x))
    step = max(1, 8_000_000 // len(i))  # rows at a time: 4,000 zones x 262 weeks would need 2 GB at once
    for lo in range(0, len(x), step):
        s[lo:lo + step] = np.sign(x[lo:lo + step, j] - x[lo:lo + step, i]).sum(axis=1)
    srt = np.sort(x, axis=1)
    # tie groups per row: run lengths of equal sorted values
    tie_terms = np.zeros(len(x))
    tie_pairs = np.zeros(len(x))
    groups = []
    new_run = np.concatenate([np.ones((len(x), 1), bool), srt[:, 1:] != srt[:, :-1]], axis=1)
    run_id = np.cumsum(new_run, axis=1) - 1
    for r in range(len(x)):
        t = np.bincount(run_id[r])
        groups.append(tuple(sorted(t.tolist())))
        t = t[t > 1]
        tie_terms[r] = (t * (t - 1) * (2 * t + 5)).sum()
        tie_pairs[r] = (t * (t - 1) / 2).sum()
    n0 = n * (n - 1) / 2
    var = (n * (n - 1) * (2 * n + 5) - tie_terms) / 18.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = s / np.sqrt(n0 * (n0 - tie_pairs))
        z = (s - np.sign(s)) / np.sqrt(var)
    p = 2 * stats.norm.sf(np.abs(z))
    if n <= EXACT_MAX:
        for r in range(len(x)):
            if var[r] <= 0:
                continue
            values, probs = exact_s_distribution(groups[r])
            p[r] = min(1.0, float(probs[np.abs(values) >= abs(s[r]) - 1e-9].sum()))
    tau[var <= 0] = np.nan
    p[var <= 0] = np.nan
    return tau, p


PRIOR_DF = 8.0  # weight of the pooled dispersion, in baseline degrees of freedom, when shrinking each zone's


def pooled_dispersion(base: np.ndarray) -> tuple[np.ndarray, float]:
    """Dispersion φ (variance / mean) per zone, shrunk towards the dispersion pooled over every zone (empirical
    Bayes): φ_i = ((B−1)·v_i/m_i + d·φ̂) / ((B−1) + d), with φ̂ = Σ_i Σ_t (x_it − m_i)² / Σ_i (B−1)·m_i, d =
    PRIOR_DF, floored at 1. A handful of baseline periods says little about one zone's dispersion; the city's
    zones together say a lot. Returns (φ_i, φ̂)."""
    b = base.shape[1]
    mean = base.mean(axis=1)
    if b < 2:
        return np.ones(len(base)), 1.0
    ss = ((base - mean[:, None]) ** 2).sum(axis=1)
    used = mean > 0
    pooled = float(ss[used].sum() / ((b - 1) * mean[used].sum())) if used.any() else 1.0
    pooled = max(pooled, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = np.where(used, ss / ((b - 1) * np.where(used, mean, 1.0)), pooled)
    phi = ((b - 1) * raw + PRIOR_DF * pooled) / ((b - 1) + PRIOR_DF)
    return np.maximum(phi, pooled), pooled


def spike_test(last: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """z-score of the last count against the baseline periods, for small overdispersed counts.

    The last count is compared with a negative binomial of mean μ̂ = (S + ½)/B (B baseline periods summing to
    S) and variance φ'·μ̂, where φ' = φ·(1 + 1/B) adds the uncertainty of μ̂ to the dispersion φ
    (pooled_dispersion: each zone's shrunk towards the city's). The mid-p upper tail P = P(X > x) + P(X = x)/2
    is turned into a z-score, z = Φ^-1(1 − P). Returns (z, baseline mean, P)."""
    from scipy import stats

    last = np.asarray(last, dtype=float)
    base = np.asarray(baseline, dtype=float)
    b = base.shape[1]
    mean = base.mean(axis=1)
    phi, _ = pooled_dispersion(base)
    mu = (base.sum(axis=1) + 0.5) / b
    phi_pred = phi * (1.0 + 1.0 / b)
    size = mu / (phi_pred - 1.0)
    prob = 1.0 / phi_pred
    tail = stats.nbinom.sf(last - 1, size, prob)  # P(X >= x)
    z = stats.norm.isf(np.clip(tail, 1e-300, 1.0))
    return z, mean, tail


def space_time_weights(w_space: sparse.csr_matrix, n_steps: int, window: int) -> sparse.csr_matrix:
    """Neighbours of bin (zone i, step t): zone i and its spatial neighbours at steps t - window … t, without
    the bin itself (Gi* adds it). Bins are ordered zone-major: index = i * n_steps + t."""
    from scipy import sparse

    n = w_space.shape[0]
    spatial = (sparse.csr_matrix(w_space, copy=True) + sparse.identity(n, format="csr")).tocsr()
    spatial.data[:] = 1.0
    offsets = list(range(-window, 1))
    temporal = sparse.diags([np.ones(n_steps - abs(o)) for o in offsets], offsets, shape=(n_steps, n_steps))
    full = sparse.kron(spatial, temporal, format="csr")
    full = (full - sparse.diags(full.diagonal())).tocsr()
    full.eliminate_zeros()
    return full


HOT_CLASSES = ("New", "Consecutive", "Intensifying", "Persistent", "Diminishing", "Sporadic", "Oscillating",
               "Historical")


def classify_emerging(z: np.ndarray, significant: np.ndarray, trend_tau: np.ndarray, trend_p: np.ndarray,
                      alpha_trend: float = 0.05) -> np.ndarray:
    """ArcGIS Pro Emerging Hot Spot Analysis categories from each zone's series of Gi* bins.

    ``significant`` marks bins significant at 90 % (after FDR); hot = significant with z > 0, cold = z < 0."""
    labels = np.empty(len(z), dtype=object)
    n_steps = z.shape[1]
    for r in range(len(z)):
        labels[r] = _classify_one(z[r], significant[r], trend_tau[r], trend_p[r], alpha_trend, n_steps)
    return labels


def _classify_one(z, sig, tau, p, alpha, n_steps) -> str:
    hot = sig & (z > 0)
    cold = sig & (z < 0)
    for kind, this, other, up in (("Hot", hot, cold, 1), ("Cold", cold, hot, -1)):
        if not this[-1]:
            continue
        frac = this.mean()
        trend_sig = np.isfinite(p) and p < alpha
        if frac >= 0.9:
            if trend_sig and np.sign(tau) == up:
                return f"Intensifying {kind} Spot"
            if trend_sig and np.sign(tau) == -up:
                return f"Diminishing {kind} Spot"
            return f"Persistent {kind} Spot"
        if not this[:-1].any():
            return f"New {kind} Spot"
        run = n_steps - (np.flatnonzero(~this)[-1] + 1)
        if run >= 2 and not this[:n_steps - run].any():
            return f"Consecutive {kind} Spot"
        if other[:-1].any():
            return f"Oscillating {kind} Spot"
        return f"Sporadic {kind} Spot"
    for kind, this in (("Hot", hot), ("Cold", cold)):
        if this.mean() >= 0.9:
            return f"Historical {kind} Spot"
    return "No Pattern Detected"
