# SPDX-License-Identifier: GPL-2.0-or-later
"""Nearest facility and facilities within a walking distance, on metric coordinates (KD-tree)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEIGHBOURS = 12  # facilities asked for per point; more are rare within a walk (and then counted by a ball query)


@dataclass
class Nearest:
    index: np.ndarray  # index of the nearest facility (-1 when there is none)
    distance: np.ndarray  # metres (NaN when there is none)
    within: np.ndarray  # facilities within the radius


class Facilities:
    """A KD-tree over facility locations, built once and queried for any number of point batches."""

    def __init__(self, fx: np.ndarray, fy: np.ndarray):
        from scipy.spatial import cKDTree

        self.count = len(fx)
        self.tree = cKDTree(np.column_stack([fx, fy])) if self.count else None

    def nearest(self, px: np.ndarray, py: np.ndarray, radius: float = 0.0, chunk: int = 100_000) -> Nearest:
        """Nearest facility of every point and, with ``radius``, how many facilities lie within it.

        With a radius, one query returns the ``NEIGHBOURS`` nearest facilities within reach, which gives both the
        nearest and the count; only points with that many in reach are counted again by a ball query, and only
        points with none in reach are searched again without the bound."""
        n = len(px)
        index = np.full(n, -1, dtype=np.int64)
        distance = np.full(n, np.nan)
        within = np.zeros(n, dtype=np.int64)
        if n == 0 or self.tree is None:
            return Nearest(index, distance, within)
        tree, k = self.tree, min(NEIGHBOURS, self.count)
        bound = np.nextafter(radius, np.inf)  # the bound excludes its own value; the radius is inclusive
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            pts = np.column_stack([px[sl], py[sl]])
            if radius <= 0:
                distance[sl], index[sl] = tree.query(pts, k=1, workers=-1)
                continue
            d, i = tree.query(pts, k=k, distance_upper_bound=bound, workers=-1)
            d, i = d.reshape(len(pts), k), i.reshape(len(pts), k)
            counts = np.isfinite(d).sum(axis=1)
            near, dist = i[:, 0].copy(), d[:, 0].copy()
            far = np.flatnonzero(counts == 0)  # nothing within reach: the nearest lies farther
            if len(far):
                dist[far], near[far] = tree.query(pts[far], k=1, workers=-1)
            full = np.flatnonzero(counts == k)  # as many in reach as were asked for: there may be more
            if len(full) and k < self.count:
                counts[full] = tree.query_ball_point(pts[full], r=radius, return_length=True, workers=-1)
            index[sl], distance[sl], within[sl] = near, dist, counts
        return Nearest(index, distance, within)

