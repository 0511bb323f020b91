# SPDX-License-Identifier: GPL-2.0-or-later
"""Point-in-polygon assignment, empirical-Bayes rates, quintiles and category counts."""

import numpy as np
import pytest

from civic311.processing.core.geometry import assign_points_to_polygons, points_from_wkb, polygon_rings_from_wkb
from civic311.processing.core.precincts import (
    category_field_names,
    empirical_bayes_rates,
    quintiles,
    slugify,
    summarise,
)


def square(x0, y0, size=1.0):
    return [np.array([[x0, y0], [x0 + size, y0], [x0 + size, y0 + size], [x0, y0 + size], [x0, y0]])]


def test_shared_boundary_points_are_counted_once():
    grid = [square(i, j) for j in range(3) for i in range(3)]
    # points on shared edges and shared corners, and a grid of interior points
    edge_pts = np.array([[1.0, 0.5], [2.0, 1.5], [0.5, 1.0], [1.0, 1.0], [2.0, 2.0], [1.5, 2.0]])
    interior = np.array([[i + 0.5, j + 0.5] for j in range(3) for i in range(3)])
    pts = np.vstack([edge_pts, interior, [[5.0, 5.0]]])
    result = assign_points_to_polygons(pts[:, 0], pts[:, 1], grid)
    assert (result[:-1] >= 0).all() and result[-1] == -1
    assert np.bincount(result[result >= 0], minlength=9).sum() == len(pts) - 1
    assert result[len(edge_pts):-1].tolist() == list(range(9))


def test_holes_and_multipolygons():
    outer = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], dtype=float)
    hole = np.array([[4, 4], [6, 4], [6, 6], [4, 6], [4, 4]], dtype=float)
    polys = [[outer, hole], square(4, 4, 2)[0:1] + square(20, 20)]
    res = assign_points_to_polygons(np.array([1.0, 5.0, 20.5, 15.0]), np.array([1.0, 5.0, 20.5, 15.0]), polys)
    assert res.tolist() == [0, 1, 1, -1]


def brute_force_assignment(px, py, polygons):
    """The plain reference: each polygon in turn, every edge (taken from its lower end) against every point
    (even-odd, half-open)."""
    result = np.full(len(px), -1)
    for i, rings in enumerate(polygons):
        crossings = np.zeros(len(px), dtype=int)
        for ring in rings:
            for (x1, y1), (x2, y2) in zip(ring[:-1], ring[1:]):
                if y1 > y2:
                    x1, y1, x2, y2 = x2, y2, x1, y1
                straddle = (y1 > py) != (y2 > py)
                with np.errstate(divide="ignore", invalid="ignore"):
                    xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
                crossings += straddle & (px < xint)
        result[(crossings % 2 == 1) & (result < 0)] = i
    return result


def test_vectorised_assignment_equals_the_brute_force_reference():
    """Regression for #16: the grid lookup (exact tests only in cells an edge touches) gives the per-polygon
    result on a jagged tiling with shared edges, holes, overlaps, long thin polygons, points on vertices and
    edges, and points outside."""
    rng = np.random.default_rng(16)
    polygons = []
    # a 12 x 9 tiling with jittered shared vertices: every inner edge is shared by two polygons
    gx = np.arange(13)[None, :] + rng.uniform(-0.3, 0.3, (10, 13)) * (np.arange(13)[None, :] % 12 != 0)
    gy = np.arange(10)[:, None] + rng.uniform(-0.3, 0.3, (10, 13)) * (np.arange(10)[:, None] % 9 != 0)
    for j in range(9):
        for i in range(12):
            ring = np.array([[gx[j, i], gy[j, i]], [gx[j, i + 1], gy[j, i + 1]], [gx[j + 1, i + 1], gy[j + 1, i + 1]],
                             [gx[j + 1, i], gy[j + 1, i]], [gx[j, i], gy[j, i]]])
            polygons.append([ring])
    polygons[16].append(np.array([[4.4, 1.4], [4.6, 1.4], [4.6, 1.6], [4.4, 1.6], [4.4, 1.4]]))  # a hole
    polygons.append(square(2.2, 2.2, 3.3))  # overlaps many tiles: never wins where a tile comes first
    polygons.insert(0, [np.array([[0.0, 4.5], [12.0, 4.6], [12.0, 4.7], [0.0, 4.5]])])  # a long thin sliver
    polygons.append([])  # an empty geometry
    polygons.append(square(20, 20, 2) + square(20.5, 20.5, 1))  # a part with a hole drawn as a second ring
    vertices = np.vstack([r for p in polygons for r in p])
    px = np.concatenate([rng.uniform(-1, 23, 60_000), vertices[:, 0], gx.ravel(), [4.5, 21.0, 21.8]])
    py = np.concatenate([rng.uniform(-1, 23, 60_000), vertices[:, 1], np.full(gx.size, 3.0), [1.5, 21.0, 21.8]])
    on_edges = rng.integers(0, 12, 2000)  # points exactly on vertical-ish shared edges
    t = rng.uniform(0, 1, 2000)
    px = np.concatenate([px, gx[3, on_edges] + t * (gx[4, on_edges] - gx[3, on_edges])])
    py = np.concatenate([py, gy[3, on_edges] + t * (gy[4, on_edges] - gy[3, on_edges])])
    px[5] = np.nan
    result = assign_points_to_polygons(px, py, polygons)
    expected = brute_force_assignment(px, py, polygons)
    np.testing.assert_array_equal(result, expected)
    assert result[5] == -1 and result[-2003] == -1 and result[-2002] == -1 and result[-2001] == len(polygons) - 1
    # the sliver comes first and wins some; the square lies wholly in the tiling, which comes first, so it wins
    # none (it used to win points on shared edges that an ulp's difference left in neither tile)
    assert (result == 0).sum() > 0 and (result == len(polygons) - 3).sum() == 0


def test_wkb_parsing_polygon_and_points():
    import struct

    ring = [(0, 0), (1, 0), (1, 1), (0, 0)]
    wkb = struct.pack("<BII", 1, 3, 1) + struct.pack("<I", 4) + b"".join(struct.pack("<dd", *p) for p in ring)
    multi = struct.pack("<BII", 1, 6, 2) + wkb + wkb
    assert len(polygon_rings_from_wkb(wkb)) == 1
    rings = polygon_rings_from_wkb(multi)
    assert len(rings) == 2 and rings[1][2].tolist() == [1.0, 1.0]
    big_endian = struct.pack(">BIdd", 0, 1, 3.5, -2.25)
    little = struct.pack("<BIdd", 1, 1, 1.0, 2.0)
    x, y = points_from_wkb([little, None, big_endian])
    assert x[0] == 1.0 and y[0] == 2.0 and np.isnan(x[1]) and x[2] == 3.5 and y[2] == -2.25


def test_empirical_bayes_hand_checked_example():
    # b = 35/2000 = 0.0175; s2 = (3*500*0.0075^2 + 500*0.0225^2)/2000 = 1.6875e-4; a = s2 - b/500 = 1.3375e-4
    # shrink = a / (a + b/500) = 0.792593; EB = b + shrink * (r - b) -> 0.0115556 and 0.0353333
    eb = empirical_bayes_rates(np.array([5, 5, 5, 20]), np.array([500, 500, 500, 500]))
    np.testing.assert_allclose(eb, [0.0115555556, 0.0115555556, 0.0115555556, 0.0353333333], rtol=1e-8)


def test_empirical_bayes_full_shrinkage_and_null_population():
    # s2 - b / mean(n) < 0 -> a = 0: every rate equals the city rate b = 12 / 1150
    eb = empirical_bayes_rates(np.array([2, 10, 0, 3]), np.array([100, 1000, 50, np.nan]))
    np.testing.assert_allclose(eb[:3], 12 / 1150)
    assert np.isnan(eb[3])


def test_small_precincts_do_not_dominate():
    # a tiny precinct with 3 requests has the highest raw rate, but not the highest smoothed rate
    events = np.array([3, 50, 35, 30, 20])
    pop = np.array([20, 1000, 1000, 1000, 1000])
    raw = events / pop
    eb = empirical_bayes_rates(events, pop)
    assert raw.argmax() == 0 and eb.argmax() == 1


def test_quintiles():
    assert quintiles(np.arange(10.0)).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert quintiles(np.array([0, 0, 0, 0, 1.0])).tolist() == [1, 1, 1, 1, 5]
    assert quintiles(np.array([np.nan, 2.0])).tolist() == [0, 1]


def test_slugs_are_unique_and_ascii():
    assert slugify("Garbage Cart Black Maintenance/Replacement") == "garbage_cart_black_maintenance_replaceme"
    assert slugify("Café – Noise!") == "cafe_noise"
    assert category_field_names(["Noise", "noise", "NOISE!"]) == ["cat_noise", "cat_noise_2", "cat_noise_3"]


def test_summarise_counts_rates_and_suppression():
    assignment = np.array([0, 0, 0, 1, 1, 2, -1, -1])
    cats = np.array(["A", "A", "B", "B", "B", "A", "A", None], dtype=object)
    s = summarise(assignment, cats, 4, voters=np.array([1000, 500, 250, 0.0]), ballots=np.array([400, 100, 50, 0.0]),
                  top_n=2, suppress_below=2)
    assert s.requests.tolist() == [3, 2, 1, 0] and s.matched == 6 and s.unmatched == 2
    np.testing.assert_allclose(s.rate_1k[:3], [3.0, 4.0, 4.0])
    assert np.isnan(s.rate_1k[3]) and np.isnan(s.rate_eb[3])
    np.testing.assert_allclose(s.turnout[:3], [0.4, 0.2, 0.2])
    # precinct 0 (A 2, B 1): B is below 2, and 3 − 2 would give it back, so A is hidden too, and so is the top
    # category's name; precinct 2 (A 1): its top category is small
    assert s.top_category.tolist() == [None, "B", None, None]
    assert s.category_names == ["A", "B"] and s.category_fields == ["cat_a", "cat_b"]
    assert np.isnan(s.category_counts[0]).all()
    assert s.category_counts[1].tolist() == [0.0, 2.0]  # zeros disclose nobody: shown
    assert np.isnan(s.category_counts[2]).all() and s.category_counts[3].tolist() == [0.0, 0.0]
    assert s.quintile[3] == 0


def test_suppression_is_complementary_and_top_category_is_not_leaked():
    from civic311.processing.core.precincts import summarise, suppress_counts

    counts = np.array([[10.0, 2.0, 7.0],   # one small cell, nothing unlisted: 2 = 19 - 10 - 7 -> hide 7 too
                       [10.0, 2.0, 7.0],   # 3 requests outside the listed categories: 2 cannot be recovered
                       [1.0, 2.0, 9.0],    # two small cells: only their sum is recoverable
                       [12.0, 6.0, 5.0]])  # nothing small
    requests = np.array([19, 22, 12, 23])
    hidden = suppress_counts(counts, requests, 5)
    assert hidden.tolist() == [[False, True, True], [False, True, False], [True, True, False],
                               [False, False, False]]
    # no row is left with one hidden cell that its total and the shown cells give back
    shown = np.where(hidden, np.nan, counts)
    for row, total, full in zip(shown, requests, counts):
        if np.isnan(row).sum() == 1:
            assert total - np.nansum(row) != full[np.isnan(row)][0] or total != full.sum()
    # through summarise: precinct 0 has 3 Noise + 1 Rodent; the top category (Noise, 3 < 5) is not named
    assignment = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    categories = np.array(["Noise", "Noise", "Noise", "Rodent"] + ["Noise"] * 6, dtype=object)
    summary = summarise(assignment, categories, 2, top_n=2, suppress_below=5)
    assert summary.top_category.tolist() == [None, "Noise"]
    assert np.isnan(summary.category_counts[0]).all() and summary.category_counts[1].tolist()[0] == 6


def test_assignment_does_not_loop_over_polygons(monkeypatch):
    """Regression for #16: 2,500 polygons are handled by vectorised exact-test calls whose number depends on
    the points (one for the run starts, one per block of points for those in boundary cells), not one numpy
    pass per polygon."""
    from civic311.processing.core import geometry

    calls = []
    original = geometry._Polygons.first_containing

    def counted(self, qx, qy, **kw):
        calls.append(len(qx))
        return original(self, qx, qy, **kw)

    monkeypatch.setattr(geometry._Polygons, "first_containing", counted)
    tiles = [square(i, j) for j in range(50) for i in range(50)]
    rng = np.random.default_rng(3)
    px, py = rng.uniform(0, 50, 200_000), rng.uniform(0, 50, 200_000)
    result = assign_points_to_polygons(px, py, tiles, chunk=100_000)
    np.testing.assert_array_equal(result, np.floor(py).astype(int) * 50 + np.floor(px).astype(int))
    assert len(calls) == 3 and sum(calls[1:]) < len(px) / 2  # most points took their cell's label


def _same_summary(a, b):
    np.testing.assert_array_equal(a.requests, b.requests)
    np.testing.assert_array_equal(a.category_counts, b.category_counts)  # NaN (hidden) in the same cells
    assert a.top_category.tolist() == b.top_category.tolist() and a.category_names == b.category_names
    assert (a.matched, a.unmatched) == (b.matched, b.unmatched)
    np.testing.assert_array_equal(a.quintile, b.quintile)


def test_tally_in_blocks_equals_one_pass_and_categorical_equals_text():
    """#16: precinctstats counts a block of points at a time (Tally, codes into a label list that grows); the
    summary equals that of all points at once, and a Categorical gives what plain text gives. A missing value
    and a literal "(none)" are both "(none)"; labels that occur only outside every precinct get no column."""
    import pandas as pd

    from civic311.processing.core.precincts import Tally, summarise_tally

    rng = np.random.default_rng(5)
    assignment = rng.integers(-1, 6, 4000)
    values = rng.choice(np.array(["b", None, "a", "(none)", "zz", "é", "B"], dtype=object), 4000)
    values[assignment == -1] = rng.choice(np.array(["c", "a"], dtype=object), int((assignment == -1).sum()))
    voters = np.array([900.0, 400, 0, 1200, 300, 700])
    whole = summarise(assignment, values, 6, voters=voters, top_n=4, suppress_below=40)
    assert whole.category_names[:1] and set(whole.category_names) <= {"(none)", "B", "a", "b", "zz", "é"}
    as_categorical = summarise(assignment, pd.Categorical(values), 6, voters=voters, top_n=4, suppress_below=40)
    _same_summary(as_categorical, whole)
    tally, table = Tally(6), {}
    for lo in range(0, 4000, 700):  # the stream's way: each block coded into one growing table
        block = values[lo:lo + 700]
        codes = np.array([table.setdefault(v, len(table)) if v is not None else -1 for v in block])
        tally.add(assignment[lo:lo + 700], codes)
    _same_summary(summarise_tally(tally, list(table), voters=voters, top_n=4, suppress_below=40), whole)
    full = summarise(assignment, values, 6, top_n=10)
    assert full.category_names == sorted(full.category_names, key=lambda c: -np.nansum(
        full.category_counts[:, full.category_names.index(c)]))  # ranked by count
    assert "c" not in full.category_names and "(none)" in full.category_names
    n_none = int(((assignment >= 0) & np.isin(values, [None, "(none)"])).sum())
    assert full.category_counts[:, full.category_names.index("(none)")].sum() == n_none
    merged = summarise(np.array([0, 0, 1]), pd.Categorical([1, "1", None]), 2)  # categories 1 and "1": one label
    assert merged.category_names == ["1", "(none)"] and merged.category_counts[:, 0].tolist() == [2.0, 0.0]


def test_no_top_categories_with_suppression_does_not_fail():
    """TOP_CATEGORIES 0 with SUPPRESS_BELOW: no category column, and the top category is still withheld where
    its count is small (this raised an IndexError)."""
    s = summarise(np.array([0, 1, 1, 1]), np.array(["a", "b", "b", "b"], dtype=object), 2, top_n=0, suppress_below=3)
    assert s.category_names == [] and s.top_category.tolist() == [None, "b"]


def _wavy_tiling(n=5, per_side=48, seed=7):
    """n x n tiles whose sides are broken lines of ``per_side`` segments with jittered vertices, each side shared
    exactly by the two tiles it separates (precinct-like: hundreds of vertices per polygon)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, per_side + 1)
    # horizontal sides h[j][i]: from (i, j) to (i + 1, j); vertical sides v[j][i]: from (i, j) to (i, j + 1)
    wob = lambda k: np.r_[0, rng.uniform(-0.08, 0.08, per_side - 1), 0] * (0 < k < n)  # noqa: E731
    h = [[np.column_stack([i + t, j + wob(j)]) for i in range(n)] for j in range(n + 1)]
    v = [[np.column_stack([i + wob(i), j + t]) for i in range(n + 1)] for j in range(n)]
    tiles = []
    for j in range(n):
        for i in range(n):
            ring = np.vstack([h[j][i], v[j][i + 1][1:], h[j + 1][i][::-1][1:], v[j][i][::-1][1:]])
            tiles.append([ring])
    return tiles


def test_many_vertex_polygons_equal_the_reference_and_test_only_the_band_s_edges():
    """Regression for #16: the exact test gathered every edge of each candidate polygon (hundreds for a real
    precinct, 99 on average for Chicago's); it now gathers the edges of the point's horizontal band, with the
    same result as the per-polygon reference, on vertices and shared edges too."""
    from civic311.processing.core import geometry

    tiles = _wavy_tiling()
    rng = np.random.default_rng(5)
    vertices = np.vstack([r for p in tiles for r in p])
    along = []
    for ring in (tiles[7][0], tiles[12][0]):  # points exactly on shared edges
        k, s = rng.integers(0, len(ring) - 1, 3000), rng.uniform(0, 1, (3000, 1))
        along.append(ring[k] + s * (ring[k + 1] - ring[k]))
    extra = np.vstack([vertices] + along)
    px = np.concatenate([rng.uniform(-0.5, 5.5, 30_000), extra[:, 0]])
    py = np.concatenate([rng.uniform(-0.5, 5.5, 30_000), extra[:, 1]])
    result = assign_points_to_polygons(px, py, tiles)
    np.testing.assert_array_equal(result, brute_force_assignment(px, py, tiles))
    assert (result[:30_000] >= 0).sum() > 19_000 and (result[-6000:] >= 0).all()
    polys = geometry._Polygons(tiles)
    per_slot = np.diff(polys.band_start)
    assert np.mean([len(r) for p in tiles for r in p]) > 190 and per_slot.mean() < 12 and per_slot.max() < 40


def test_boundary_cells_hold_every_point_of_every_edge_and_few_more():
    """The lookup grid marks each cell an edge passes through (edges along grid lines, a hair off them, through
    cell corners, and tiny ones included), so no cell labelled inside holds a point of an edge; and it marks
    hardly more. Regression for #16: marking the 2 x 2 corner cells of each piece made a quarter of the exact
    tests, and missed the middle cell of a piece that spans three once widened."""
    from civic311.processing.core import geometry

    rng = np.random.default_rng(11)
    star = [np.column_stack([np.cos(a) * r, np.sin(a) * r]) for a, r in
            [(np.sort(rng.uniform(0, 2 * np.pi, 40)), rng.uniform(20, 60, 40))]][0]
    star = np.vstack([star, star[:1]])
    lookup = geometry.PolygonLookup([[star]], 40_000)
    x0, y0 = lookup.polys.extent[:2]
    gx = lambda k: x0 + k * lookup.cw  # noqa: E731  (grid lines)
    gy = lambda k: y0 + k * lookup.ch  # noqa: E731
    tricky = np.array([[gx(10), gy(10)], [gx(30), gy(10)], [gx(30), gy(30) + 1e-10 * lookup.ch],
                       [gx(12) - 1e-10 * lookup.cw, gy(30)], [gx(12), gy(12)], [gx(12) + 1e-9, gy(12) + 1e-9],
                       [gx(20), gy(22)], [gx(10), gy(10)]])
    hits = {}
    for name, rings in (("star", [star]), ("tricky", [star, tricky])):
        lk = geometry.PolygonLookup([rings], 40_000) if name == "tricky" else lookup
        xs, ys = [], []
        for ring in rings:
            for (ax, ay), (bx, by) in zip(ring[:-1], ring[1:]):
                t = np.linspace(0, 1, 20_001)
                xs.append(ax + t * (bx - ax))
                ys.append(ay + t * (by - ay))
        x, y = np.concatenate(xs), np.concatenate(ys)
        cell = geometry._border_cell(x, y, lk.polys.extent, (1 / lk.cw, 1 / lk.ch), lk.nx, lk.ny)
        assert (lk.label[cell] == -2).all(), name
        hits[name] = (len(np.unique(cell)), int((lk.label == -2).sum()), sum(len(r) for r in rings))
    touched, marked, vertices = hits["star"]
    assert marked <= 1.1 * touched + 4 * vertices
    # the cell a piece of an edge from a hair above a grid line to a hair below the next one runs through
    # (the session-8 marking left it out, and its points took the label of the run)
    px, py = rng.uniform(gx(9), gx(31), 200_000), rng.uniform(gy(9), gy(31), 200_000)
    polygons = [[star, tricky]]
    np.testing.assert_array_equal(assign_points_to_polygons(px, py, polygons), brute_force_assignment(px, py, polygons))


@pytest.mark.parametrize("side", [30, 200])
def test_polygon_indices_beyond_int16_keep_their_label(side):
    """The lookup grid stores labels as int16 while the polygon indices fit, int32 beyond: with 900 and 40,000
    unit squares, every point gets the square whose half-open cell [i, i + 1) x [j, j + 1) holds it, points on
    shared edges and corners included (the crossing rule gives them to the square right of and above them)."""
    from civic311.processing.core import geometry

    squares = [[np.array([[i, j], [i + 1, j], [i + 1, j + 1], [i, j + 1], [i, j]], dtype=float)]
               for j in range(side) for i in range(side)]
    rng = np.random.default_rng(side)
    px, py = rng.uniform(0, side, 300_000), rng.uniform(0, side, 300_000)
    px[:2000] = rng.integers(1, side, 2000)  # on vertical edges
    py[1000:3000] = rng.integers(1, side, 2000)  # on horizontal edges (and, for 1,000, on corners)
    lookup = geometry.PolygonLookup(squares, len(px))
    assert lookup.label.dtype == (np.int16 if side * side < 32_000 else np.int32)
    expected = np.floor(py).astype(np.int64) * side + np.floor(px).astype(np.int64)
    np.testing.assert_array_equal(lookup.assign(px, py), expected)


def test_a_polygon_finer_than_the_grid_everywhere_is_still_assigned():
    """Regression: a comb of 600 teeth on a grid of 1,024 cells leaves no cell free of edges, and building the
    lookup raised an IndexError (a traceback in precinctstats); every point now takes the exact test."""
    teeth = 600
    xs = np.repeat(np.arange(teeth + 1) / teeth, 2)[1:-1]
    ys = np.tile([0.0, 1.0, 1.0, 0.0], teeth // 2 + 1)[:len(xs)]
    comb = [np.vstack([np.column_stack([xs, ys]), [[1.0, -0.01], [0.0, -0.01], [xs[0], ys[0]]]])]
    rng = np.random.default_rng(9)
    px, py = rng.uniform(-0.1, 1.1, 5000), rng.uniform(-0.1, 1.1, 5000)
    result = assign_points_to_polygons(px, py, [comb])
    np.testing.assert_array_equal(result, brute_force_assignment(px, py, [comb]))
    assert 0 < (result == 0).sum() < 5000
