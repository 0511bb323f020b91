# SPDX-License-Identifier: GPL-2.0-or-later
"""Outreach priority: a weighted sum of signed z-scores, rescaled to 0-100."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .precincts import quintiles


@dataclass
class Component:
    name: str
    values: np.ndarray
    weight: float
    sign: int  # +1: higher value = higher priority; -1: lower value = higher priority


@dataclass
class PriorityResult:
    priority: np.ndarray
    rank: np.ndarray
    tier: np.ndarray
    raw: np.ndarray
    used: list[str]


def zscore(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    out = np.full(len(v), np.nan)
    if ok.sum() == 0:
        return out
    sd = v[ok].std()
    out[ok] = (v[ok] - v[ok].mean()) / sd if sd > 0 else 0.0
    return out


def outreach_priority(components: list[Component]) -> PriorityResult:
    """S_i = sum_c w_c * sign_c * z_c,i / sum_c w_c ; priority = 100 * (S - min S) / (max S - min S).

    A missing component value counts as the city average (z = 0), so one missing field does not remove a
    precinct from the ranking. rank 1 = highest priority; tier = quintile of the score (5 = top).
    """
    used = [c for c in components if c.weight > 0]
    if not used:
        raise ValueError("Give at least one component a positive weight.")
    n = len(used[0].values)
    total = sum(c.weight for c in used)
    raw = np.zeros(n)
    for c in used:
        raw += c.weight * c.sign * np.nan_to_num(zscore(c.values), nan=0.0)
    raw /= total
    lo, hi = raw.min(initial=0.0), raw.max(initial=0.0)
    priority = np.full(n, 50.0) if hi == lo else 100.0 * (raw - lo) / (hi - lo)
    order = np.argsort(-raw, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    return PriorityResult(priority, rank, quintiles(raw), raw, [c.name for c in used])
