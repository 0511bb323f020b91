# SPDX-License-Identifier: GPL-2.0-or-later
"""Local spatial statistics: Getis-Ord Gi*, Local Moran's I, conditional randomisation, FDR.

Formulas and the permutation scheme follow PySAL's esda (Getis & Ord 1992, Ord & Getis 1995, Anselin 1995;
esda ``G_Local(star=True, transform="B")`` and ``Moran_Local(transformation="r")``) so values can be checked
against it: the same seed draws the same conditional permutations as esda without numba.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    from scipy import sparse

CONFIDENCE_LEVELS = ((0.01, 3), (0.05, 2), (0.10, 1))
LISA_LABELS = {1: "HH", 2: "LH", 3: "LL", 4: "HL"}
NOT_SIGNIFICANT = "Not significant"


def fdr_threshold(pvalues: np.ndarray, alpha: float = 0.05) -> float:
    """Benjamini-Hochberg threshold as esda.fdr: p < threshold is significant."""
    p = np.asarray(pvalues, dtype=float)
    p = p[np.isfinite(p)]
    n = len(p)
    if n == 0:
        return alpha
    p_sort = np.sort(p)[::-1]
    p_fdr = np.arange(n, 0, -1) * alpha / n
    hits = np.flatnonzero(p_sort < p_fdr)
    return float(p_fdr[hits[0]]) if len(hits) else alpha / n


def confidence_bins(z: np.ndarray, p: np.ndarray, use_fdr: bool) -> np.ndarray:
    """-3..3 bins: sign(z) x (3 = 99 %, 2 = 95 %, 1 = 90 %), 0 = not significant."""
    bins = np.zeros(len(z), dtype=np.int64)
    finite = np.isfinite(p) & np.isfinite(z)
    for alpha, level in reversed(CONFIDENCE_LEVELS):  # 90 % first, stronger levels overwrite
        thr = fdr_threshold(p[finite], alpha) if use_fdr else alpha
        sig = finite & (p < thr)
        bins[sig] = level
    return (bins * np.sign(np.nan_to_num(z))).astype(np.int64)


class CancelledError(Exception):
    """The user cancelled a long computation (checked between blocks, so within a fraction of a second)."""


def _check(cancelled) -> None:
    if cancelled is not None and cancelled():
        raise CancelledError()


def permutation_ids(n: int, max_card: int, permutations: int, seed: int, cancelled=None) -> np.ndarray:
    """esda's vec_permutations without numba: ids sampled from the n - 1 other observations."""
    rs = np.random.RandomState(seed)
    out = np.empty((permutations, max_card), dtype=np.int64)
    for k in range(permutations):
        if k % 50 == 0:
            _check(cancelled)
        out[k] = rs.permutation(n - 1)[:max_card]
    return out


def random_neighbour_sums(values: np.ndarray, w: sparse.csr_matrix, permutations: int, seed: int,
                          chunk: int = 4_000_000, cancelled=None, reduce=None) -> np.ndarray:
    """(n, permutations) sums of ``k_i`` values drawn without replacement from the other observations.

    The i-th row uses the same permutation table as esda's conditional randomisation: index ``a`` of the
    table refers to the array with observation i removed, i.e. to ``a + (a >= i)`` in the full array.
    With ``reduce(rows, sums)`` -> one value per row, the (n,) reduced values instead, block by block: the
    (n, permutations) matrix is never held (a space-time cube of a million cells x 99 draws is 800 MB).
    """
    n = len(values)
    card = np.diff(w.indptr).astype(np.int64)
    max_card = int(card.max()) if n else 0
    out = np.zeros((n, permutations)) if reduce is None else np.zeros(n)
    if max_card == 0 or n < 2:
        return out if reduce is None else reduce(np.arange(n), np.zeros((n, permutations)))
    ids = permutation_ids(n, max_card, permutations, seed, cancelled)
    v_same = values[ids]
    v_next = values[np.minimum(ids + 1, n - 1)]
    block = max(1, chunk // max(permutations * max_card, 1))
    for start in range(0, n, block):
        _check(cancelled)
        rows = np.arange(start, min(start + block, n))
        shifted = ids[None, :, :] >= rows[:, None, None]
        vals = np.where(shifted, v_next[None], v_same[None])
        mask = np.arange(max_card)[None, None, :] < card[rows][:, None, None]
        sums = (vals * mask).sum(axis=2)
        out[rows] = sums if reduce is None else reduce(rows, sums)
    return out


def binary_offdiagonal(w: sparse.spmatrix) -> sparse.csr_matrix:
    """Binary copy of ``w`` without self-neighbours."""
    from scipy import sparse

    wb = sparse.csr_matrix(w, copy=True)
    wb.data[:] = 1.0
    wb = (wb - sparse.diags(wb.diagonal())).tocsr()
    wb.eliminate_zeros()
    return wb


def _folded_pseudo_p(observed: np.ndarray, sims: np.ndarray) -> np.ndarray:
    """Folded pseudo p-value (min(#sims >= obs, #sims <= obs) + 1) / (permutations + 1).

    Without ties this is esda's 'directed' p_sim. With ties (common with counts: a zero-request precinct among
    zero-request neighbours) esda counts tied draws only on the upper side and can report p = 0.001 for a
    feature whose every draw ties; here a tie counts as at least as extreme on both sides, and values equal up
    to rounding noise (1e-10 relative) are ties, so the result is never decided by floating-point noise.
    """
    perms = sims.shape[1]
    tol = 1e-10 * np.maximum(np.abs(observed), 1e-300)[:, None]
    upper = (sims >= observed[:, None] - tol).sum(axis=1)
    lower = (sims <= observed[:, None] + tol).sum(axis=1)
    return (np.minimum(upper, lower) + 1.0) / (perms + 1.0)


@dataclass
class GiStarResult:
    g: np.ndarray
    z: np.ndarray
    p: np.ndarray  # two-sided, normal approximation
    p_sim: np.ndarray  # NaN when permutations == 0
    bins: np.ndarray
    n_neighbors: np.ndarray  # neighbours excluding the feature itself


def gi_star(y: np.ndarray, w: sparse.csr_matrix, permutations: int = 999, seed: int = 1,
            use_fdr: bool = True, cancelled=None) -> GiStarResult:
    """Getis-Ord Gi* with binary weights and the feature itself included."""
    from scipy import sparse, stats

    y = np.asarray(y, dtype=float)
    n = len(y)
    wb = binary_offdiagonal(w)
    n_nb = np.diff(wb.indptr)
    wstar = wb + sparse.identity(n, format="csr")
    total = y.sum()
    mean = total / n
    var = (y ** 2).sum() / n - mean ** 2
    card = np.asarray(wstar.sum(axis=1)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        g = (wstar @ y) / total
        expected = card / n
        variance = card * (n - card) / (n - 1) / n ** 2 * var / mean ** 2
        z = (g - expected) / np.sqrt(variance)
    p = 2 * stats.norm.sf(np.abs(z))
    p_sim = np.full(n, np.nan)
    if permutations > 0 and n > 2:
        def fold(rows, sums):
            return _folded_pseudo_p(g[rows], (sums + y[rows, None]) / total)

        p_sim = random_neighbour_sums(y, wb, permutations, seed, cancelled=cancelled, reduce=fold)
        p_sim[n_nb == 0] = np.nan
    bins = confidence_bins(z, p, use_fdr)
    return GiStarResult(g, z, p, p_sim, bins, n_nb)


@dataclass
class LocalMoranResult:
    i: np.ndarray
    z_sim: np.ndarray
    p_sim: np.ndarray
    quadrant: np.ndarray  # 1 HH, 2 LH, 3 LL, 4 HL (esda's q)
    labels: np.ndarray  # HH/LH/LL/HL or "Not significant"
    e_i: np.ndarray  # analytic expectation and variance under randomisation
    v_i: np.ndarray


def local_moran(y: np.ndarray, w: sparse.csr_matrix, permutations: int = 999, seed: int = 1,
                use_fdr: bool = True, alpha: float = 0.05, cancelled=None) -> LocalMoranResult:
    """Local Moran's I with row-standardised weights (esda Moran_Local, transformation='r')."""
    from scipy import sparse, stats

    y = np.asarray(y, dtype=float)
    n = len(y)
    wb = binary_offdiagonal(w)
    card = np.diff(wb.indptr).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        row_w = np.where(card > 0, 1.0 / card, 0.0)
        wr = sparse.diags(row_w) @ wb
        z = (y - y.mean()) / y.std()
        den = (z * z).sum()
        lag = wr @ z
        i_stat = (n - 1) * z * lag / den
        wi = np.asarray(wr.sum(axis=1)).ravel()
        wi2 = np.asarray(wr.multiply(wr).sum(axis=1)).ravel()
        m2 = den / n
        # conditional randomisation (Sokal et al. 1998, eqs A7-A8; esda's EIc, VIc): the feature's own value
        # stays, the others are permuted, the null that the permutation test uses too
        e_i = -(z ** 2 * wi) / ((n - 1) * m2)
        v_i = (z / m2) ** 2 * (n / (n - 2)) * (wi2 - wi ** 2 / (n - 1)) * (m2 - z ** 2 / (n - 1))
    quadrant = np.where(z > 0, np.where(lag > 0, 1, 4), np.where(lag > 0, 2, 3))
    z_sim = np.full(n, np.nan)
    p_sim = np.full(n, np.nan)
    if permutations > 0 and n > 2 and np.isfinite(z).all():
        sums = random_neighbour_sums(z, wb, permutations, seed, cancelled=cancelled)
        sims = z[:, None] * (sums * row_w[:, None]) * ((n - 1) / den)
        p_sim = _folded_pseudo_p(i_stat, sims)
        with np.errstate(divide="ignore", invalid="ignore"):
            z_sim = (i_stat - sims.mean(axis=1)) / sims.std(axis=1)
        p_sim[card == 0] = np.nan
    p_for_sig = p_sim if permutations > 0 else 2 * stats.norm.sf(np.abs((i_stat - e_i) / np.sqrt(v_i)))
    thr = fdr_threshold(p_for_sig, alpha) if use_fdr else alpha
    significant = np.isfinite(p_for_sig) & (p_for_sig < thr)
    labels = np.array([LISA_LABELS[q] if s else NOT_SIGNIFICANT for q, s in zip(quadrant, significant)],
                      dtype=object)
    return LocalMoranResult(i_stat, z_sim, p_sim, quadrant, labels, e_i, v_i)
