# SPDX-License-Identifier: GPL-2.0-or-later
"""Outreach priority: a weighted mean of percentile ranks, with the component that drives each precinct and how
stable its tier is when the weights move."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .precincts import quintiles

PERTURBATIONS = 200
PERTURB_RANGE = (0.75, 1.25)
STABLE = 0.8  # a precinct is stable when it keeps its tier in at least this share of perturbations


@dataclass
class Component:
    name: str
    values: np.ndarray
    weight: float
    sign: int  # +1: higher value = higher priority; -1: lower value = higher priority
    cap: float | None = None  # values above the cap count as the cap (ties at the top)


@dataclass
class PriorityResult:
    priority: np.ndarray  # 0-100
    rank: np.ndarray  # 1 = highest priority
    tier: np.ndarray  # 1-5, 5 = top quintile of the score
    raw: np.ndarray  # the score, 0-1
    used: list[str]
    top_driver: np.ndarray  # name of the component contributing most to each precinct's score
    stability: np.ndarray  # share of weight perturbations in which the precinct keeps its tier
    percentiles: np.ndarray  # (precincts x components) percentile ranks, 0-1


def zscore(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    out = np.full(len(v), np.nan)
    if ok.sum() == 0:
        return out
    sd = v[ok].std()
    out[ok] = (v[ok] - v[ok].mean()) / sd if sd > 0 else 0.0
    return out


def percentile_rank(values: np.ndarray, sign: int = 1, cap: float | None = None) -> np.ndarray:
    """(average rank − 1) / (n − 1) over the finite values: 0 for the lowest, 1 for the highest, ties sharing
    their average; reversed for sign −1. Values above ``cap`` count as the cap. Missing values get 0.5 (the
    middle), so one missing field neither lifts nor sinks a precinct."""
    import pandas as pd

    v = np.asarray(values, dtype=float)
    if cap is not None:
        v = np.minimum(v, cap)
    ok = np.isfinite(v)
    out = np.full(len(v), 0.5)
    m = int(ok.sum())
    if m > 1:
        ranks = pd.Series(v[ok]).rank(method="average").to_numpy()
        out[ok] = (ranks - 1) / (m - 1)
    if sign < 0:
        out = 1.0 - out
    return out


def tiers_of(scores: np.ndarray) -> np.ndarray:
    """Quintile tiers (5 = top) of every column of a (precincts x runs) score matrix, ties sharing the lower
    tier, as quintiles() does for one column."""
    from scipy.stats import rankdata

    n = scores.shape[0]
    ranks = rankdata(scores, method="min", axis=0)
    return np.minimum(np.floor(5 * (ranks - 1) / n).astype(np.int64) + 1, 5)


def outreach_priority(components: list[Component], perturbations: int = PERTURBATIONS,
                      seed: int = 1) -> PriorityResult:
    """S_i = Σ_c w_c · p_c,i / Σ_c w_c, p the percentile rank (0–1) of component c (reversed when lower is
    worse, capped where a cap is set); priority = 100 · S. rank 1 = highest S; tier = quintile of S (5 = top).
    top_driver = the component with the largest w_c · p_c,i. stability = share of ``perturbations`` random
    weight sets (each weight × U(0.75, 1.25), renormalised) in which the precinct keeps its tier."""
    used = [c for c in components if c.weight > 0]
    if not used:
        raise ValueError("Give at least one component a positive weight.")
    n = len(used[0].values)
    weights = np.array([c.weight for c in used], dtype=float)
    pct = np.column_stack([percentile_rank(c.values, c.sign, c.cap) for c in used])
    raw = pct @ (weights / weights.sum())
    priority = 100.0 * raw
    order = np.argsort(-raw, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    tier = quintiles(raw)
    names = np.array([c.name for c in used], dtype=object)
    top_driver = names[np.argmax(pct * weights, axis=1)] if n else np.array([], dtype=object)
    rng = np.random.default_rng(seed)
    factors = rng.uniform(*PERTURB_RANGE, size=(perturbations, len(used))) * weights
    factors /= factors.sum(axis=1, keepdims=True)
    stability = (tiers_of(pct @ factors.T) == tier[:, None]).mean(axis=1) if n else np.zeros(0)
    return PriorityResult(priority, rank, tier, raw, [c.name for c in used], top_driver, stability, pct)
