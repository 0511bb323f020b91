# SPDX-License-Identifier: GPL-2.0-or-later
"""Canvassing zones (K-means, DBSCAN, walkable radius-capped zones) and walking routes through them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def distinct_locations(x: np.ndarray, y: np.ndarray, at_least: int | None = None) -> int:
    """How many distinct (x, y) locations there are. With ``at_least``, the count may stop early at any value
    >= at_least (a head of the data usually settles it without sorting every point)."""
    if at_least is not None and len(x) > 50 * at_least:
        head = len(np.unique(x[:50 * at_least] + 1j * y[:50 * at_least]))
        if head >= at_least:
            return head
    return len(np.unique(x + 1j * y))


def _kmeans_plus_plus(xy: np.ndarray, w: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with 2 + ln k candidate centres per step and the
    best kept, as scikit-learn does): each centre is drawn with probability proportional to weight x squared
    distance to the nearest centre already chosen."""
    n = len(xy)
    px, py = xy[:, 0], xy[:, 1]
    trials = 2 + int(np.log(k))
    centres = np.empty((k, 2))
    centres[0] = xy[rng.choice(n, p=w / w.sum())]
    closest = (px - centres[0, 0]) ** 2 + (py - centres[0, 1]) ** 2
    for c in range(1, k):
        potential = np.cumsum(w * closest)
        picks = np.minimum(np.searchsorted(potential, rng.uniform(size=trials) * potential[-1]), n - 1)
        candidates = (px[None, :] - px[picks, None]) ** 2  # (trials, n) squared distances to each candidate
        candidates += (py[None, :] - py[picks, None]) ** 2
        np.minimum(candidates, closest[None, :], out=candidates)
        best = int(np.argmin(candidates @ w))
        centres[c] = xy[picks[best]]
        closest = candidates[best]
    return centres


def _lloyd(xy: np.ndarray, w: np.ndarray, centres: np.ndarray, iterations: int, tol: float = 0.0) -> np.ndarray:
    """Lloyd steps (nearest centre by KD-tree, weighted means by bincount) until the centres move less than
    ``tol`` (sum of squared shifts). A centre left without points moves to the point farthest from its own."""
    from scipy.spatial import cKDTree

    k = len(centres)
    workers = -1 if len(xy) > 200_000 else 1  # threads only pay off on large inputs
    for _ in range(iterations):
        dist, labels = cKDTree(centres).query(xy, workers=workers)
        tot = np.bincount(labels, weights=w, minlength=k)
        new = centres.copy()
        keep = tot > 0
        new[keep, 0] = np.bincount(labels, weights=xy[:, 0] * w, minlength=k)[keep] / tot[keep]
        new[keep, 1] = np.bincount(labels, weights=xy[:, 1] * w, minlength=k)[keep] / tot[keep]
        if not keep.all():
            for j, far in zip(np.flatnonzero(~keep), np.argsort(-dist)):
                new[j] = xy[far]
        shift = float(((new - centres) ** 2).sum())
        centres = new
        if shift <= tol:
            break
    return centres


def kmeans_zones(x: np.ndarray, y: np.ndarray, k: int, seed: int = 1, weights: np.ndarray | None = None,
                 sample: int = 50_000, refine: int = 10, refine_sample: int = 250_000) -> np.ndarray:
    """K-means labels 0..k-1: k-means++ seeding and Lloyd iterations to convergence (tolerance 1e-4 of the data's
    variance as scikit-learn, 1e-3 when refinement follows) on a seeded random sample of at most ``sample``
    points, then ``refine`` Lloyd steps on a larger sample of ``refine_sample`` points, then every point to its
    nearest centre. Large inputs get the spread of a full fit in a fraction of the time."""
    from scipy.spatial import cKDTree

    n = len(x)
    xy = np.column_stack([x, y])
    k = int(min(k, distinct_locations(x, y, k)))
    if k < 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    idx = rng.choice(n, sample, replace=False) if n > sample else np.arange(n)
    fit_xy, fit_w = xy[idx], w[idx]
    if fit_w.sum() <= 0:
        fit_w = np.ones(len(idx))
    # scikit-learn's tolerance when the sample is all there is; ten times looser when refinement steps follow
    tol = (1e-3 if n > sample else 1e-4) * float(fit_xy.var(axis=0).mean())
    centres = _lloyd(fit_xy, fit_w, _kmeans_plus_plus(fit_xy, fit_w, k, rng), 300, tol)
    if n > sample:
        more = rng.choice(n, refine_sample, replace=False) if n > refine_sample else np.arange(n)
        centres = _lloyd(xy[more], w[more], centres, refine)
    labels = cKDTree(centres).query(xy, workers=-1)[1]
    # renumber by first appearance for stable ids (a reversed assignment leaves each label's first index)
    first = np.full(k, n)
    first[labels[::-1]] = np.arange(n - 1, -1, -1)
    used = np.flatnonzero(first < n)
    remap = np.empty(k, dtype=np.int64)
    remap[used[np.argsort(first[used])]] = np.arange(len(used))
    return remap[labels]


def dbscan_zones(x: np.ndarray, y: np.ndarray, eps: float, min_points: int,
                 weights: np.ndarray | None = None) -> np.ndarray:
    """DBSCAN labels (-1 = noise)."""
    from sklearn.cluster import DBSCAN

    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    model = DBSCAN(eps=eps, min_samples=min_points, algorithm="kd_tree", n_jobs=-1)
    return model.fit_predict(np.column_stack([x, y]), sample_weight=weights).astype(np.int64)


def _centre(xy: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return xy.mean(axis=0) if w is None else (xy * w[:, None]).sum(axis=0) / w.sum()


def _two_means(xy: np.ndarray, iterations: int = 12) -> np.ndarray:
    """Deterministic 2-means split (farthest-pair start, Lloyd steps). Returns a boolean side per point."""
    c = xy.mean(axis=0)
    a = xy[np.argmax(((xy - c) ** 2).sum(axis=1))]
    b = xy[np.argmax(((xy - a) ** 2).sum(axis=1))]
    side = ((xy - a) ** 2).sum(axis=1) > ((xy - b) ** 2).sum(axis=1)
    for _ in range(iterations):
        if side.all() or not side.any():
            break
        a, b = xy[~side].mean(axis=0), xy[side].mean(axis=0)
        new = ((xy - a) ** 2).sum(axis=1) > ((xy - b) ** 2).sum(axis=1)
        if (new == side).all():
            break
        side = new
    return side


def walkable_zones(x: np.ndarray, y: np.ndarray, max_radius: float, max_points: int = 0,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Zones whose radius (largest distance from the zone centre to its points) is at most ``max_radius`` and
    whose size is at most ``max_points`` (0 = no cap): clusters are split in two recursively until both hold
    (as PostGIS ST_ClusterKMeans with max_radius). Deterministic."""
    n = len(x)
    labels = np.full(n, -1, dtype=np.int64)
    xy = np.column_stack([x, y])
    stack = [np.arange(n)] if n else []
    next_id = 0
    done: list[np.ndarray] = []
    while stack:
        idx = stack.pop()
        pts = xy[idx]
        w = None if weights is None else weights[idx]
        radius = np.sqrt(((pts - _centre(pts, w)) ** 2).sum(axis=1).max())
        if radius <= max_radius and (max_points <= 0 or len(idx) <= max_points):
            done.append(idx)
            continue
        side = _two_means(pts)
        if side.all() or not side.any():  # identical locations: split by order to honour the size cap
            half = len(idx) // 2
            side = np.zeros(len(idx), dtype=bool)
            side[half:] = True
        stack.append(idx[side])
        stack.append(idx[~side])
    # stable numbering: zones ordered by their first point
    done.sort(key=lambda a: a.min())
    for z in done:
        labels[z] = next_id
        next_id += 1
    return labels


@dataclass
class ZoneSummary:
    zone_ids: np.ndarray
    counts: np.ndarray
    centre_x: np.ndarray
    centre_y: np.ndarray
    radius: np.ndarray


def summarise_zones(x, y, labels, weights=None) -> ZoneSummary:
    """Per zone (labels >= 0): point count, (weighted) centre and radius = largest distance from the centre to
    a point of the zone. Vectorised: bincount sums and one grouped maximum."""
    inside = labels >= 0
    lab = labels[inside].astype(np.int64)
    if not len(lab):
        empty = np.zeros(0)
        return ZoneSummary(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), empty, empty, empty)
    px, py = x[inside], y[inside]
    w = np.ones(len(lab)) if weights is None else np.asarray(weights, dtype=float)[inside]
    counts = np.bincount(lab)
    ids = np.flatnonzero(counts)
    total = np.bincount(lab, weights=w)
    plain = total <= 0  # zero total weight: the plain mean
    wx = np.where(plain, np.bincount(lab, weights=px), np.bincount(lab, weights=px * w))
    wy = np.where(plain, np.bincount(lab, weights=py), np.bincount(lab, weights=py * w))
    div = np.where(plain, np.maximum(counts, 1), total)
    cx, cy = wx / div, wy / div
    dist = np.sqrt((px - cx[lab]) ** 2 + (py - cy[lab]) ** 2)
    order = np.argsort(lab, kind="stable")
    starts = np.searchsorted(lab[order], ids)
    radius = np.maximum.reduceat(dist[order], starts)  # largest distance per zone, zones in id order
    return ZoneSummary(ids, counts[ids], cx[ids], cy[ids], radius)


def zone_locations(x: np.ndarray, y: np.ndarray, labels: np.ndarray, zone_ids: np.ndarray) -> list[np.ndarray]:
    """The distinct locations (m, 2) of each zone in ``zone_ids``, sorted by x then y (as ``np.unique(axis=0)``,
    which sorts rows as opaque records and was ten times slower), grouped in one sort."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.r_[zone_ids, np.iinfo(np.int64).max])
    out = []
    for j in range(len(zone_ids)):
        members = order[bounds[j]:bounds[j + 1]]
        zx, zy = x[members], y[members]
        by_xy = np.lexsort((zy, zx))
        zx, zy = zx[by_xy], zy[by_xy]
        new = np.ones(len(zx), dtype=bool)
        new[1:] = (zx[1:] != zx[:-1]) | (zy[1:] != zy[:-1])
        out.append(np.column_stack([zx[new], zy[new]]))
    return out


def path_length(xy: np.ndarray, order: np.ndarray) -> float:
    p = xy[order]
    return float(np.sqrt((np.diff(p, axis=0) ** 2).sum(axis=1)).sum()) if len(order) > 1 else 0.0


def nearest_neighbour_path(xy: np.ndarray, start: int = 0) -> np.ndarray:
    """Greedy walk from ``start`` to the nearest unvisited location. The KD-tree holds the unvisited locations
    and is rebuilt once half of its points are visited, so late steps do not search through the visited ones:
    O(n log n) overall (a fixed tree degrades to O(n²) once most locations are visited)."""
    from scipy.spatial import cKDTree

    n = len(xy)
    if n <= 2:
        return np.r_[start, np.setdiff1d(np.arange(n), [start])].astype(np.int64)
    visited = np.zeros(n, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    members = np.arange(n)
    tree = cKDTree(xy)
    stale = 0  # visited points still in the tree
    cur = start
    for pos in range(n):
        order[pos] = cur
        visited[cur] = True
        stale += 1
        if pos == n - 1:
            break
        if stale > len(members) // 2 and len(members) > 64:
            members = np.flatnonzero(~visited)
            tree = cKDTree(xy[members])
            stale = 0
        k = 8
        while True:
            _, cand = tree.query(xy[cur], k=min(k, len(members)))
            cand = members[np.atleast_1d(cand)]
            free = cand[~visited[cand]]
            if len(free):
                cur = int(free[0])
                break
            if k >= len(members):
                cur = int(np.flatnonzero(~visited)[0])
                break
            k *= 4
    return order


def two_opt(xy: np.ndarray, order: np.ndarray, max_passes: int = 4, max_span: int = 32) -> np.ndarray:
    """Improve an open path with 2-opt moves (reverse order[i:j+1]) while any shortens it; the start is fixed.
    For each segment length up to ``max_span`` the gain of every move of that length is computed at once
    (vectorised over the path), and the locally best improving moves, which cannot overlap, are applied together:
    a pass costs O(n · max_span) in numpy, not O(n²) in Python. Only improving moves are applied, so the result is never
    longer than the input path."""
    return two_opt_many(xy, np.asarray(order), np.array([0, len(order)]), np.array([max_passes]),
                        np.array([max_span]))


def _dist(px: np.ndarray, py: np.ndarray, a: slice, b: slice) -> np.ndarray:
    """Distances between the points of two slices (sqrt of squares: np.hypot is several times slower)."""
    dx, dy = px[a] - px[b], py[a] - py[b]
    return np.sqrt(dx * dx + dy * dy)


def _window_max(values: np.ndarray, half: int) -> np.ndarray:
    """The maximum over values[i - half : i + half + 1] at each i (-inf beyond the ends), in cache-sized blocks."""
    from scipy.ndimage import maximum_filter1d

    out = np.empty_like(values)
    for lo in range(0, len(values), GAIN_BLOCK):
        hi = min(len(values), lo + GAIN_BLOCK)
        a, b = max(0, lo - half), min(len(values), hi + half)
        block = maximum_filter1d(values[a:b], size=2 * half + 1, mode="constant", cval=-np.inf)
        out[lo:hi] = block[lo - a:hi - a]
    return out


def two_opt_many(xy: np.ndarray, order: np.ndarray, bounds: np.ndarray, passes: np.ndarray,
                 spans: np.ndarray) -> np.ndarray:
    """two_opt on many paths at once: ``order`` holds the paths one after another, path z at positions
    bounds[z]:bounds[z + 1], improved with at most passes[z] passes of spans below spans[z]. Each step is one set
    of numpy operations over every path (200 zones cost what one does), with exactly the moves two_opt makes on
    each path alone: the windows that pick non-overlapping moves never reach across paths."""
    order = np.array(order, copy=True)
    bounds = np.asarray(bounds, dtype=np.int64)
    sizes = np.diff(bounds)
    n = len(order)
    if n < 4:
        return order
    # per position, in 32-bit integers (ten million locations: 40 MB an array)
    zone = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    end = bounds[1:].astype(np.int32)[zone]  # of each position's path
    local = (np.arange(n, dtype=np.int32) - bounds[:-1].astype(np.int32)[zone]).astype(np.int32)
    pad = 2 * (int(spans.max()) + 2) + 1  # a gap wider than any window between paths
    slot = np.arange(n, dtype=np.int64) + zone.astype(np.int64) * pad
    # the path's coordinates, kept in path order (one extra copy of the last at the end): every step then reads
    # contiguous slices instead of gathering ten million random rows
    px = np.append(xy[order, 0], xy[order[-1], 0])
    py = np.append(xy[order, 1], xy[order[-1], 1])
    ranked = np.empty(n + len(sizes) * pad)
    positions = np.arange(n, dtype=np.int32)
    active = sizes >= 4  # paths still improving: a pass without a move ends a path's passes, as in two_opt
    for k in range(int(passes.max())):
        moved = np.zeros(len(sizes), dtype=bool)
        live = active[zone] & (k < passes[zone]) & (local >= 1)
        room = np.minimum(spans, sizes - 1).astype(np.int32)[zone]
        left = (sizes.astype(np.int32) - 1)[zone] - local  # positions after each one in its path
        for span in range(1, int(spans.max())):
            m = n - span - 1  # moves i = 1 .. n - span - 1; segment i..j, j = i + span
            if m <= 0:
                break
            i_ = slice(1, 1 + m)
            ok = live[i_] & (span <= left[i_]) & (span < room[i_])
            if not ok.any():
                continue
            gain = np.full(m, -np.inf)
            for lo in range(0, m, GAIN_BLOCK):  # blocks that stay in cache (10M-long temporaries do not)
                hi = min(m, lo + GAIN_BLOCK)
                i_b, a_b = slice(1 + lo, 1 + hi), slice(lo, hi)
                j_b, d_b = slice(1 + span + lo, 1 + span + hi), slice(2 + span + lo, 2 + span + hi)
                has_next = positions[j_b] + 1 < end[i_b]
                old = _dist(px, py, a_b, i_b) + np.where(has_next, _dist(px, py, j_b, d_b), 0.0)
                new = _dist(px, py, a_b, j_b) + np.where(has_next, _dist(px, py, i_b, d_b), 0.0)
                np.copyto(gain[lo:hi], old - new, where=ok[lo:hi])
            if not (gain > 1e-9).any():
                continue
            # the best move in every stretch of 2 * span + 5 positions: local maxima are far enough apart that
            # their segments and changed edges never overlap (ties broken by position), so all apply at once
            ranked.fill(-np.inf)
            ranked[slot[i_]] = gain + (local[i_] - 1) * 1e-12
            peak = _window_max(ranked, span + 2)
            starts = np.flatnonzero((ranked[slot[i_]] == peak[slot[i_]]) & (gain > 1e-9)) + 1
            if not len(starts):
                continue
            idx = starts[:, None] + np.arange(span + 1)
            rev = idx[:, ::-1]
            order[idx], px[idx], py[idx] = order[rev], px[rev], py[rev]
            moved[zone[starts]] = True
        active &= moved
        if not active.any():
            break
    return order


def hilbert_keys(xy: np.ndarray, bits: int = 16) -> np.ndarray:
    """Position of each location along a Hilbert curve over its bounding square (vectorised)."""
    n = 1 << bits
    x, y = xy[:, 0], xy[:, 1]
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-12)
    xi = ((x - x.min()) / span * (n - 1)).astype(np.int64)
    yi = ((y - y.min()) / span * (n - 1)).astype(np.int64)
    d = np.zeros(len(x), dtype=np.int64)
    s = n >> 1
    while s > 0:
        rx = ((xi & s) > 0).astype(np.int64)
        ry = ((yi & s) > 0).astype(np.int64)
        d += s * s * ((3 * rx) ^ ry)
        flip = (ry == 0) & (rx == 1)
        xi = np.where(flip, n - 1 - xi, xi)
        yi = np.where(flip, n - 1 - yi, yi)
        swap = ry == 0
        xi, yi = np.where(swap, yi, xi), np.where(swap, xi, yi)
        s >>= 1
    return d


def curve_path(xy: np.ndarray, start: int) -> np.ndarray:
    """An open path along the Hilbert curve that begins at ``start``: the curve from there to its end, then the
    part before it walked back (vectorised, O(n log n); 2-opt then shortens it)."""
    seq = np.argsort(hilbert_keys(xy), kind="stable")
    k = int(np.flatnonzero(seq == start)[0])
    return np.concatenate([seq[k:], seq[:k][::-1]])


def mst_length(xy: np.ndarray) -> float:
    """Length of the Euclidean minimum spanning tree (over the Delaunay edges): a lower bound of any path
    through every location."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial import Delaunay, QhullError

    n = len(xy)
    if n < 2:
        return 0.0
    try:
        tri = Delaunay(xy)
        edges = np.vstack([tri.simplices[:, [0, 1]], tri.simplices[:, [1, 2]], tri.simplices[:, [0, 2]]])
    except (QhullError, ValueError):  # collinear or too few points: every pair
        a, b = np.triu_indices(n, 1)
        edges = np.column_stack([a, b])
    edges = np.unique(np.sort(edges, axis=1), axis=0)  # each edge once: a sparse matrix sums duplicates
    weight = np.hypot(*(xy[edges[:, 0]] - xy[edges[:, 1]]).T) + 1e-12
    graph = coo_matrix((weight, (edges[:, 0], edges[:, 1])), shape=(n, n))
    return float(minimum_spanning_tree(graph).sum())


CURVE_ABOVE = 1500  # locations in a zone above which the route starts from a Hilbert curve
GAIN_BLOCK = 262_144  # positions per block of two_opt_many's steps (blocks stay in cache; 10M-long arrays do not)


def walking_route(xy: np.ndarray, start_xy: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Route through distinct locations: nearest-neighbour tour from the location closest to ``start_xy`` (or
    the westernmost), then 2-opt. Returns (order, length, nearest-neighbour length)."""
    return walking_routes([xy], [start_xy])[0]


def walking_routes(zones: list[np.ndarray], starts: list | None = None) -> list[tuple[np.ndarray, float, float]]:
    """walking_route for many zones: the first paths zone by zone, the 2-opt of all of them at once."""
    starts = starts or [None] * len(zones)
    firsts, passes, spans = [], [], []
    for xy, start_xy in zip(zones, starts):
        if len(xy) == 0:
            firsts.append(np.zeros(0, dtype=np.int64))
        else:
            if start_xy is not None:
                start = int(np.argmin(((xy - start_xy) ** 2).sum(axis=1)))
            else:
                start = int(np.lexsort((xy[:, 1], xy[:, 0]))[0])
            # a greedy walk for ordinary zones; along a Hilbert curve for large ones (no per-location Python step)
            small = len(xy) <= CURVE_ABOVE
            firsts.append(nearest_neighbour_path(xy, start) if small else curve_path(xy, start))
        passes.append(4 if len(xy) <= CURVE_ABOVE else 3)
        spans.append(32 if len(xy) <= CURVE_ABOVE else 16)
    sizes = np.array([len(xy) for xy in zones], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    if not len(zones) or bounds[-1] == 0:
        return [(f, 0.0, 0.0) for f in firsts]
    every = np.vstack([xy for xy in zones if len(xy)])
    improved = two_opt_many(every, np.concatenate(firsts) + np.repeat(bounds[:-1], sizes), bounds,
                            np.array(passes), np.array(spans))
    out = []
    for z, xy in enumerate(zones):
        route = improved[bounds[z]:bounds[z + 1]] - bounds[z]
        out.append((route, path_length(xy, route), path_length(xy, firsts[z])))
    return out
