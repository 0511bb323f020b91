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
    which sorts rows as opaque records and was ten times slower: here as complex numbers), grouped in one
    sort."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.r_[zone_ids, np.iinfo(np.int64).max])
    out = []
    for j in range(len(zone_ids)):
        members = order[bounds[j]:bounds[j + 1]]
        distinct = np.unique(x[members] + 1j * y[members])  # complex numbers sort by real, then imaginary part
        out.append(np.column_stack([distinct.real, distinct.imag]))
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


def _dist(px: np.ndarray, py: np.ndarray, a, b) -> np.ndarray:
    """Distances between the points at two slices or index arrays (sqrt of squares: np.hypot is several times
    slower)."""
    dx, dy = px[a] - px[b], py[a] - py[b]
    return np.sqrt(dx * dx + dy * dy)


def _best_moves(gain: np.ndarray, tiebreak: np.ndarray, half: int) -> np.ndarray:
    """Positions of the improving moves (gain > 1e-9) that are the best improving move within ``half``
    positions either side (by gain plus ``tiebreak``; an exact tie of the two goes to the earlier position).
    Such moves are more than ``half`` apart, so their segments never overlap. Only the improving positions are
    compared (a few percent of the path after the first steps), each with its improving neighbours in the
    window."""
    cand = np.flatnonzero(gain > 1e-9)
    if len(cand) < 2:
        return cand
    score = gain[cand] + tiebreak[cand]
    best = np.ones(len(cand), dtype=bool)
    for k in range(1, len(cand)):
        near = cand[k:] - cand[:-k] <= half  # pairs k apart in the list and within the window
        if not near.any():
            break
        lower = np.flatnonzero(near)
        upper = lower + k
        later_wins = score[upper] > score[lower]  # a tie keeps the earlier position
        best[lower[later_wins]] = False
        best[upper[~later_wins]] = False
    return cand[best]


def two_opt_many(xy: np.ndarray, order: np.ndarray, bounds: np.ndarray, passes: np.ndarray,
                 spans: np.ndarray) -> np.ndarray:
    """two_opt on many paths at once: ``order`` holds the paths one after another, path z at positions
    bounds[z]:bounds[z + 1], improved with at most passes[z] passes of spans below spans[z]. Each step is one set
    of numpy operations over every path (200 zones cost what one does), with exactly the moves two_opt makes on
    each path alone.

    The paths are laid out in "slots" with a gap of empty slots (NaN coordinates) between them, wider than any
    segment: a move never reaches across paths, the windows that pick non-overlapping moves never hold two
    paths' moves, and every step reads contiguous slices (no gather or scatter of ten million positions)."""
    order = np.array(order, copy=True)
    bounds = np.asarray(bounds, dtype=np.int64)
    sizes = np.diff(bounds)
    n, zones = len(order), len(sizes)
    if n < 4:
        return order
    top = int(spans.max())
    gap = top + 3
    first_slot = bounds[:-1] + gap * (np.arange(zones) + 1)  # slot of each path's first position
    total = n + gap * (zones + 1) + 1
    zone_of_pos = np.repeat(np.arange(zones), sizes)
    local = np.arange(n) - bounds[:-1][zone_of_pos]
    slot = first_slot[zone_of_pos] + local
    sx, sy = np.full(total, np.nan), np.full(total, np.nan)
    sx[slot], sy[slot] = xy[order, 0], xy[order, 1]
    sorder = np.full(total, -1, dtype=np.int64)
    sorder[slot] = order
    szone = np.full(total, zones, dtype=np.int32)  # the gap slots belong to an extra, never active path
    szone[slot] = zone_of_pos
    real = sorder >= 0
    limit = np.zeros(total, dtype=np.int32)  # the longest segment a move may start here with (+1); 0: none
    limit[slot] = np.where(local >= 1, np.minimum(spans, sizes - 1)[zone_of_pos], 0)
    tiebreak = np.zeros(total)
    tiebreak[slot] = (local - 1) * 1e-12  # of two equal gains in a window, the later position's move wins
    del zone_of_pos, local, slot
    active = np.append(sizes >= 4, False)  # paths still improving: a pass without a move ends a path's passes
    edge = np.full(total, np.nan)  # edge[p]: length of the path's edge from slot p to p + 1 (NaN at the gaps)
    edge[:-1] = _dist(sx, sy, slice(0, total - 1), slice(1, total))
    for k in range(int(passes.max())):
        moved = np.zeros(zones + 1, dtype=bool)
        live = active & np.append(k < passes, False)
        lim = np.where(live[szone], limit, 0)
        for span in range(1, top):
            m = total - span - 2  # moves at slots 1 .. m: segment i..j (j = i + span), j + 1 readable
            s_ = slice(1, 1 + m)
            ok = (lim[s_] > span) & real[1 + span:1 + span + m]
            if not ok.any():
                continue
            gain = np.full(m, -np.inf)
            for lo in range(0, m, GAIN_BLOCK):  # blocks that stay in cache (10M-long temporaries do not)
                hi = min(m, lo + GAIN_BLOCK)
                a_b, i_b = slice(lo, hi), slice(1 + lo, 1 + hi)
                j_b, d_b = slice(1 + span + lo, 1 + span + hi), slice(2 + span + lo, 2 + span + hi)
                after = edge[j_b] - _dist(sx, sy, i_b, d_b)  # NaN where j is the path's last position
                np.nan_to_num(after, copy=False, nan=0.0)
                np.copyto(gain[lo:hi], edge[a_b] - _dist(sx, sy, a_b, j_b) + after, where=ok[lo:hi])
            starts = _best_moves(gain, tiebreak[s_], span + 2) + 1
            if not len(starts):
                continue
            idx = starts[:, None] + np.arange(span + 1)
            rev = idx[:, ::-1]
            sorder[idx], sx[idx], sy[idx] = sorder[rev], sx[rev], sy[rev]
            inner = idx[:, :-1]  # the edges inside a segment keep their lengths, in reverse order
            edge[inner] = edge[inner[:, ::-1]]
            for p in (starts - 1, starts + span):  # the two edges the move changed
                edge[p] = _dist(sx, sy, p, p + 1)
            moved[szone[starts]] = True
        active &= moved
        if not active.any():
            break
    return sorder[real]


def hilbert_keys(xy: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Position of each location along a Hilbert curve over its bounding square (vectorised). The curve has
    2**bits cells a side: by default about 16 cells per location (at most 2**16 a side)."""
    if bits is None:
        bits = int(np.clip(np.ceil(np.log2(max(len(xy), 1) * 16) / 2), 1, 16))
    n = 1 << bits
    x, y = xy[:, 0], xy[:, 1]
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    span = max(float(np.ptp(x)), float(np.ptp(y)), 1e-12)
    xi = ((x - x.min()) / span * (n - 1)).astype(np.int32)
    yi = ((y - y.min()) / span * (n - 1)).astype(np.int32)
    d = np.zeros(len(x), dtype=np.int64)
    s = n >> 1
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        d += (s * s) * ((3 * rx.astype(np.int64)) ^ ry)
        flip = ~ry & rx
        np.subtract(n - 1, xi, out=xi, where=flip)
        np.subtract(n - 1, yi, out=yi, where=flip)
        swap = ~ry
        xi, yi = np.where(swap, yi, xi), np.where(swap, xi, yi)
        s >>= 1
    return d


def curve_path(xy: np.ndarray, start: int) -> np.ndarray:
    """An open path along the Hilbert curve that begins at ``start``: the curve from there to its end, then the
    part before it walked back (vectorised, O(n log n); 2-opt then shortens it)."""
    seq = np.argsort(hilbert_keys(xy))  # deterministic; locations in one curve cell may come in any order
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
GAIN_BLOCK = 32_768  # positions per block of two_opt_many's steps (their temporaries stay in the CPU cache)


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
                west = np.flatnonzero(xy[:, 0] == xy[:, 0].min())  # the westernmost (then southernmost) location
                start = int(west[np.argmin(xy[west, 1])])
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
