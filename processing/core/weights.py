# SPDX-License-Identifier: GPL-2.0-or-later
"""Spatial neighbours as sparse binary matrices (no self-neighbours).

Contiguity follows libpysal's definitions so results match PySAL/esda: Queen = the polygons share at least one
vertex, Rook = they share at least one edge (two consecutive vertices), both on exact coordinates.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .geometry import Polygon

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    from scipy import sparse


class Neighbours(IntEnum):
    """The NEIGHBOURS enum of the hot spot algorithms, in parameter order."""

    QUEEN = 0
    ROOK = 1
    KNN = 2
    DISTANCE = 3


NEIGHBOUR_LABELS = ("Queen contiguity", "Rook contiguity", "K nearest neighbours", "Fixed distance band")


def _pairs_to_matrix(a: np.ndarray, b: np.ndarray, n: int) -> sparse.csr_matrix:
    from scipy import sparse

    keep = a != b
    a, b = a[keep], b[keep]
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    m = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    m.data[:] = 1.0  # duplicates were summed
    return m


def _shared_key_pairs(keys: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of distinct owners that share a key (keys: integer ids)."""
    uniq = np.unique(np.stack([keys, owner], axis=1), axis=0)
    keys, owner = uniq[:, 0], uniq[:, 1]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    a_list, b_list = [], []
    for size in np.unique(counts[counts > 1]):
        grp = starts[counts == size]
        members = owner[grp[:, None] + np.arange(size)]
        ii, jj = np.triu_indices(size, 1)
        a_list.append(members[:, ii].ravel())
        b_list.append(members[:, jj].ravel())
    if not a_list:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(a_list), np.concatenate(b_list)


def contiguity(polygons: Sequence[Polygon], rook: bool = False) -> sparse.csr_matrix:
    """Queen (shared vertex) or Rook (shared edge) contiguity of polygons given as rings."""
    from scipy import sparse

    n = len(polygons)
    coords, owner, ring_id = [], [], []
    rid = 0
    for i, rings in enumerate(polygons):
        for ring in rings:
            coords.append(ring)
            owner.append(np.full(len(ring), i, dtype=np.int64))
            ring_id.append(np.full(len(ring), rid, dtype=np.int64))
            rid += 1
    if not coords:
        return sparse.csr_matrix((n, n))
    xy = np.vstack(coords)
    own = np.concatenate(owner)
    rings_of = np.concatenate(ring_id)
    _, vid = np.unique(xy, axis=0, return_inverse=True)
    vid = vid.ravel()
    if not rook:
        a, b = _shared_key_pairs(vid, own)
        return _pairs_to_matrix(a, b, n)
    same_ring = rings_of[:-1] == rings_of[1:]
    v1, v2 = vid[:-1][same_ring], vid[1:][same_ring]
    lo, hi = np.minimum(v1, v2), np.maximum(v1, v2)
    edge_owner = own[:-1][same_ring]
    nz = lo != hi
    _, eid = np.unique(np.stack([lo[nz], hi[nz]], axis=1), axis=0, return_inverse=True)
    a, b = _shared_key_pairs(eid.ravel(), edge_owner[nz])
    return _pairs_to_matrix(a, b, n)


def knn(x: np.ndarray, y: np.ndarray, k: int) -> sparse.csr_matrix:
    """k nearest neighbours (asymmetric, self excluded); k is capped at n - 1."""
    from scipy import sparse
    from scipy.spatial import cKDTree

    n = len(x)
    k = int(min(k, n - 1))
    if k < 1:
        return sparse.csr_matrix((n, n))
    tree = cKDTree(np.column_stack([x, y]))
    _, idx = tree.query(np.column_stack([x, y]), k=k + 1)
    rows = np.repeat(np.arange(n), k + 1)
    cols = idx.ravel()
    keep = cols != rows
    rows, cols = rows[keep], cols[keep]
    # with duplicate locations the point itself may not come first: keep exactly k others per row
    order = np.lexsort((np.arange(len(rows)), rows))
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    m = sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(n, n))
    return m


def min_threshold_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Smallest distance band that gives every feature at least one neighbour."""
    from scipy.spatial import cKDTree

    if len(x) < 2:
        return 0.0
    tree = cKDTree(np.column_stack([x, y]))
    d, _ = tree.query(np.column_stack([x, y]), k=2)
    return float(d[:, 1].max())


def distance_band(x: np.ndarray, y: np.ndarray, threshold: float) -> sparse.csr_matrix:
    """Binary neighbours within ``threshold`` (inclusive), self excluded."""
    from scipy.spatial import cKDTree

    n = len(x)
    tree = cKDTree(np.column_stack([x, y]))
    pairs = tree.query_pairs(r=threshold * (1 + 1e-12), output_type="ndarray")
    return _pairs_to_matrix(pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), n)


def build_weights(kind: int, polygons: Sequence[Polygon] | None, x: np.ndarray, y: np.ndarray,
                  k: int = 8, distance: float = 0.0) -> tuple[sparse.csr_matrix, float]:
    """Neighbour matrix for the NEIGHBOURS option; returns (matrix, distance band actually used)."""
    kind = Neighbours(kind)
    if kind in (Neighbours.QUEEN, Neighbours.ROOK):
        if polygons is None:
            raise ValueError("Contiguity neighbours need polygons; use K nearest neighbours or a distance band "
                             "for points.")
        return contiguity(polygons, rook=kind == Neighbours.ROOK), 0.0
    if kind == Neighbours.KNN:
        return knn(x, y, k), 0.0
    band = distance if distance > 0 else min_threshold_distance(x, y)
    return distance_band(x, y, band), band
