# SPDX-License-Identifier: GPL-2.0-or-later
"""Nearest facility and facilities within a walking distance, on metric coordinates (KD-tree)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Nearest:
    index: np.ndarray  # index of the nearest facility (-1 when there is none)
    distance: np.ndarray  # metres (NaN when there is none)
    within: np.ndarray  # facilities within the radius


def nearest_facilities(px: np.ndarray, py: np.ndarray, fx: np.ndarray, fy: np.ndarray, radius: float = 0.0,
                       chunk: int = 250_000) -> Nearest:
    from scipy.spatial import cKDTree

    n = len(px)
    index = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, np.nan)
    within = np.zeros(n, dtype=np.int64)
    if n == 0 or len(fx) == 0:
        return Nearest(index, distance, within)
    tree = cKDTree(np.column_stack([fx, fy]))
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        pts = np.column_stack([px[sl], py[sl]])
        d, i = tree.query(pts, k=1, workers=-1)
        index[sl], distance[sl] = i, d
        if radius > 0:  # only points whose nearest facility is within reach can have any within reach
            near = np.flatnonzero(d <= radius)
            counts = np.zeros(len(d), dtype=np.int64)
            if len(near):
                counts[near] = tree.query_ball_point(pts[near], r=radius, return_length=True, workers=-1)
            within[sl] = counts
    return Nearest(index, distance, within)
