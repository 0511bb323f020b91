# SPDX-License-Identifier: GPL-2.0-or-later
"""Pointy-top hexagon grids and the incremental spatial autocorrelation used by optimised hot spots."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .weights import distance_band, min_threshold_distance

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    from scipy import sparse

SQRT3 = np.sqrt(3.0)


def hex_axial(x: np.ndarray, y: np.ndarray, size: float, x0: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial (q, r) of the pointy-top hexagon (circumradius = size) that contains each point."""
    px, py = (x - x0) / size, (y - y0) / size
    qf = SQRT3 / 3 * px - py / 3
    rf = 2.0 / 3 * py
    sf = -qf - rf
    q, r, s = np.round(qf), np.round(rf), np.round(sf)
    dq, dr, ds = np.abs(q - qf), np.abs(r - rf), np.abs(s - sf)
    fix_q = (dq > dr) & (dq > ds)
    fix_r = ~fix_q & (dr > ds)
    q = np.where(fix_q, -r - s, q)
    r = np.where(fix_r, -q - s, r)
    return q.astype(np.int64), r.astype(np.int64)


def hex_centre(q: np.ndarray, r: np.ndarray, size: float, x0: float, y0: float) -> tuple[np.ndarray, np.ndarray]:
    return x0 + size * SQRT3 * (q + r / 2.0), y0 + size * 1.5 * r


def hex_ring(cx: float, cy: float, size: float) -> np.ndarray:
    """Closed ring (7, 2) of a pointy-top hexagon."""
    ang = np.deg2rad(np.arange(7) * 60 + 30)
    return np.column_stack([cx + size * np.cos(ang), cy + size * np.sin(ang)])


def cell_size_from_points(x: np.ndarray, y: np.ndarray) -> float:
    """Hexagon width (flat-to-flat, metres) from the points' spacing.

    Twice the mean nearest-neighbour distance between distinct locations, but never so small that the study
    area needs more than about 20,000 hexagons.
    """
    from scipy.spatial import cKDTree

    xy = np.unique(np.column_stack([x, y]), axis=0)
    if len(xy) < 2:
        return 1.0
    d, _ = cKDTree(xy).query(xy, k=2)
    area = (xy[:, 0].max() - xy[:, 0].min()) * (xy[:, 1].max() - xy[:, 1].min())
    floor = np.sqrt(max(area, 1.0) / 20_000)
    return float(max(2 * d[:, 1].mean(), floor))


@dataclass
class HexCounts:
    q: np.ndarray
    r: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    counts: np.ndarray
    size: float  # circumradius
    point_cell: np.ndarray  # index of each point's cell (-1 for points not in a kept cell)


def hex_counts(x: np.ndarray, y: np.ndarray, width: float, keep_hull_only: bool = True) -> HexCounts:
    """Count points per hexagon of flat-to-flat ``width``; zero-count cells inside the points' convex hull are
    kept (they matter for Gi*), cells outside it are not."""
    from scipy.spatial import Delaunay

    size = width / SQRT3
    x0, y0 = float(np.min(x)), float(np.min(y))
    q, r = hex_axial(x, y, size, x0, y0)
    qmin, qmax, rmin, rmax = q.min() - 1, q.max() + 1, r.min() - 1, r.max() + 1
    gq, gr = np.meshgrid(np.arange(qmin - (rmax - rmin), qmax + 1), np.arange(rmin, rmax + 1))
    gq, gr = gq.ravel(), gr.ravel()
    cx, cy = hex_centre(gq, gr, size, x0, y0)
    key_all = (gr - rmin) * (qmax - qmin + (rmax - rmin) + 2) + (gq - qmin + (rmax - rmin))
    key_pts = (r - rmin) * (qmax - qmin + (rmax - rmin) + 2) + (q - qmin + (rmax - rmin))
    occupied = np.isin(key_all, key_pts)
    keep = occupied.copy()
    if keep_hull_only:
        pts = np.unique(np.column_stack([x, y]), axis=0)
        if len(pts) >= 3:
            try:
                keep |= Delaunay(pts).find_simplex(np.column_stack([cx, cy])) >= 0
            except Exception:  # collinear points: occupied cells only
                pass
    gq, gr, cx, cy, key_all = gq[keep], gr[keep], cx[keep], cy[keep], key_all[keep]
    order = np.argsort(key_all)
    pos = np.searchsorted(key_all[order], key_pts)
    point_cell = order[np.minimum(pos, len(order) - 1)]
    counts = np.bincount(point_cell, minlength=len(gq))
    return HexCounts(gq, gr, cx, cy, counts, size, point_cell)


def global_moran_z(y: np.ndarray, w: sparse.csr_matrix) -> float:
    """Global Moran's I z-score with binary weights under the normality assumption."""
    n = len(y)
    z = y - y.mean()
    den = (z * z).sum()
    s0 = w.sum()
    if den == 0 or s0 == 0 or n < 3:
        return float("nan")
    i_obs = n / s0 * (z @ (w @ z)) / den
    s1 = 0.5 * (w + w.T).power(2).sum()
    rows = np.asarray(w.sum(axis=1)).ravel() + np.asarray(w.sum(axis=0)).ravel()
    s2 = (rows ** 2).sum()
    ei = -1.0 / (n - 1)
    vi = (n * n * s1 - n * s2 + 3 * s0 * s0) / ((n * n - 1) * s0 * s0) - ei * ei
    return float((i_obs - ei) / np.sqrt(vi))


def incremental_band(x: np.ndarray, y: np.ndarray, values: np.ndarray, steps: int = 10) -> tuple[float, list]:
    """ArcGIS-style distance band: the first peak of Moran's I z over 10 increasing bands.

    Bands start at the distance that gives every feature a neighbour and grow by the mean nearest-neighbour
    distance. Without a peak, the mean distance to the k nearest neighbours (k = 5 % of n, 3..30) is used.
    Returns (band, [(distance, z), ...]).
    """
    from scipy.spatial import cKDTree

    start = min_threshold_distance(x, y)
    d, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=2)
    step = float(d[:, 1].mean()) or start or 1.0
    profile = []
    for i in range(steps):
        band = start + i * step
        profile.append((band, global_moran_z(values, distance_band(x, y, band))))
    zs = [z for _, z in profile]
    for i in range(1, len(zs) - 1):
        if np.isfinite(zs[i]) and zs[i] > zs[i - 1] and zs[i] >= zs[i + 1]:
            return profile[i][0], profile
    k = int(np.clip(round(0.05 * len(x)), 3, 30))
    k = min(k, len(x) - 1)
    dk, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=k + 1)
    return max(float(dk[:, 1:].mean()), start), profile
