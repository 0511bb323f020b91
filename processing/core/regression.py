# SPDX-License-Identifier: GPL-2.0-or-later
"""Ordinary and weighted least squares with the usual inference, for the complaints-turnout regression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OLSResult:
    names: list[str]
    coef: np.ndarray
    se: np.ndarray
    t: np.ndarray
    p: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    r2: float
    adj_r2: float
    n: int
    predicted: np.ndarray
    residual: np.ndarray
    std_resid: np.ndarray


def least_squares(y: np.ndarray, x: np.ndarray, names: list[str], weights: np.ndarray | None = None) -> OLSResult:
    """y = b0 + X b (+ e), optionally weighted (WLS with weights w_i, e.g. registered voters).

    Solved with a QR-based least-squares solve on sqrt(w)-scaled data; standard errors from
    s^2 (X'WX)^-1 with s^2 = sum(w e^2) / (n - p); R^2 is the weighted R^2 about the weighted mean.
    """
    from scipy import stats

    y = np.asarray(y, dtype=float)
    x = np.asarray(x, dtype=float).reshape(len(y), -1)
    n, k = x.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    design = np.column_stack([np.ones(n), x])
    p = design.shape[1]
    if n <= p:
        raise ValueError(f"The regression needs more observations ({n}) than coefficients ({p}).")
    sw = np.sqrt(w)
    coef, _, rank, _ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    if rank < p:
        raise ValueError("The explanatory fields are collinear (or constant): drop one of them.")
    predicted = design @ coef
    resid = y - predicted
    dof = n - p
    s2 = (w * resid ** 2).sum() / dof
    xtwx_inv = np.linalg.inv((design * w[:, None]).T @ design)
    se = np.sqrt(np.diag(xtwx_inv) * s2)
    t = coef / se
    pval = 2 * stats.t.sf(np.abs(t), dof)
    q = stats.t.ppf(0.975, dof)
    ybar = (w * y).sum() / w.sum()
    ss_tot = (w * (y - ybar) ** 2).sum()
    r2 = 1 - (w * resid ** 2).sum() / ss_tot if ss_tot > 0 else float("nan")
    adj = 1 - (1 - r2) * (n - 1) / dof
    leverage = np.einsum("ij,jk,ik->i", design * w[:, None], xtwx_inv, design)
    with np.errstate(divide="ignore", invalid="ignore"):
        std_resid = resid * sw / np.sqrt(s2 * (1 - leverage))
    return OLSResult(["intercept", *names], coef, se, t, pval, coef - q * se, coef + q * se, float(r2),
                     float(adj), n, predicted, resid, std_resid)


def global_moran(values: np.ndarray, w, permutations: int = 999, seed: int = 1) -> tuple[float, float]:
    """Global Moran's I (row-standardised) and its permutation pseudo p-value (folded, as esda's p_sim)."""
    from scipy import sparse

    from .spatialstats import binary_offdiagonal

    z = np.asarray(values, dtype=float)
    z = z - z.mean()
    wb = binary_offdiagonal(w)
    card = np.diff(wb.indptr).astype(float)
    wr = sparse.diags(np.where(card > 0, 1 / np.maximum(card, 1), 0)) @ wb
    s0 = wr.sum()
    n = len(z)
    den = (z * z).sum()
    if den == 0 or s0 == 0:
        return float("nan"), float("nan")
    i_obs = n / s0 * (z @ (wr @ z)) / den
    rs = np.random.RandomState(seed)
    sims = np.empty(permutations)
    for k in range(permutations):
        zp = z[rs.permutation(n)]
        sims[k] = n / s0 * (zp @ (wr @ zp)) / den
    larger = int((sims >= i_obs).sum())
    if permutations - larger < larger:
        larger = permutations - larger
    return float(i_obs), (larger + 1.0) / (permutations + 1.0)
