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
    cluster_se: np.ndarray | None = None  # cluster-robust (CR1) standard errors, when clusters are given
    cluster_p: np.ndarray | None = None  # their two-sided p-values (Student's t, G − 1 degrees of freedom)
    clusters: int = 0


def least_squares(y: np.ndarray, x: np.ndarray, names: list[str], weights: np.ndarray | None = None,
                  clusters: np.ndarray | None = None) -> OLSResult:
    """y = b0 + X b (+ e), optionally weighted (WLS with weights w_i, e.g. registered voters).

    Solved with a QR-based least-squares solve on sqrt(w)-scaled data; standard errors from
    s^2 (X'WX)^-1 with s^2 = sum(w e^2) / (n - p); R^2 is the weighted R^2 about the weighted mean.
    With ``clusters`` (a label per row), also cluster-robust standard errors, as statsmodels'
    fit(cov_type='cluster', use_t=True): CR1 = G/(G−1)·(n−1)/(n−p)·B M B with B = (X'WX)^-1 and
    M = Σ_g u_g u_g', u_g = Σ_{i∈g} x_i w_i e_i; p-values from Student's t with G − 1 degrees of freedom.
    Degenerate fits (no rows, a constant dependent variable, an exact fit) raise ValueError.
    """
    from scipy import stats

    y = np.asarray(y, dtype=float)
    if len(y) == 0:
        raise ValueError("No precinct has values in every model field: there is nothing to fit.")
    if np.ptp(y) == 0:
        raise ValueError(f"The dependent variable is constant (every value is {y[0]:g}): there is nothing to "
                         "explain.")
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
    spread = float((w * (y - (w * y).sum() / w.sum()) ** 2).sum())
    if (w * resid ** 2).sum() <= 1e-20 * spread:
        raise ValueError("The model fits the data exactly (no residual variance): the explanatory fields determine "
                         "the dependent variable, so standard errors and p-values are undefined.")
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
    out = OLSResult(["intercept", *names], coef, se, t, pval, coef - q * se, coef + q * se, float(r2),
                    float(adj), n, predicted, resid, std_resid)
    if clusters is not None:
        import pandas as pd

        codes, labels = pd.factorize(np.asarray(clusters, dtype=object))
        g = len(labels)
        if g < 2:
            raise ValueError("Cluster-robust standard errors need at least two clusters.")
        scores = design * (w * resid)[:, None]
        sums = np.zeros((g, p))
        np.add.at(sums, codes, scores)
        meat = sums.T @ sums
        cov = g / (g - 1) * (n - 1) / (n - p) * xtwx_inv @ meat @ xtwx_inv
        out.cluster_se = np.sqrt(np.diag(cov))
        with np.errstate(divide="ignore", invalid="ignore"):
            out.cluster_p = 2 * stats.t.sf(np.abs(coef / out.cluster_se), g - 1)
        out.clusters = g
    return out


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
