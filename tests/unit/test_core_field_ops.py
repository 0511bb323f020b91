# SPDX-License-Identifier: GPL-2.0-or-later
"""GTFS parsing, nearest facilities, zones and routes (pure core)."""

import io
import zipfile

import numpy as np
import pytest

from civic311.processing.core.gtfs import GtfsError, read_stops
from civic311.processing.core.proximity import NEIGHBOURS, Facilities
from civic311.processing.core.zones import (
    kmeans_zones,
    nearest_neighbour_path,
    path_length,
    summarise_zones,
    two_opt,
    walkable_zones,
    walking_route,
)
from conftest import SHARED


def make_feed(tmp_path, files: dict, name="feed.zip", subfolder=""):
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as zf:
        for fname, text in files.items():
            zf.writestr(subfolder + fname, text)
    return path


def test_real_cta_feed_loads_every_boarding_stop():
    result = read_stops(SHARED / "chicago_cta_gtfs_2024")
    assert len(result.stops) == 11009
    assert result.stops["routes"].isna().all()  # no stop_times.txt in this partial feed
    assert any("stop_times.txt" in w for w in result.warnings)
    everything = read_stops(SHARED / "chicago_cta_gtfs_2024", boarding_only=False)
    assert len(everything.stops) == 11009 + 141 + 16  # stops, stations, entrances


def test_hand_made_feed_with_bom_crlf_quotes_and_unknown_columns(tmp_path):
    stops = ("\ufeffstop_id,stop_name,stop_lat,stop_lon,location_type,extra_col\r\n"
             "A,\"Main St, North\",41.9,-87.6,0,x\r\n"
             "B,Station,41.91,-87.61,1,y\r\n"
             "C,No coords,,,0,z\r\n"
             "D,Elm,41.92,-87.62,,w\r\n")
    trips = "route_id,service_id,trip_id\nR1,S,T1\nR2,S,T2\nR2,S,T3\n"
    stop_times = ("trip_id,arrival_time,departure_time,stop_id,stop_sequence\n"
                  "T1,08:00:00,08:00:00,A,1\nT1,08:05:00,08:05:00,D,2\nT2,09:00:00,09:00:00,A,1\n"
                  "T3,10:00:00,10:00:00,A,1\n")
    routes = "route_id,route_type\nR1,3\nR2,1\n"
    feed = make_feed(tmp_path, {"stops.txt": stops, "trips.txt": trips, "stop_times.txt": stop_times,
                                "routes.txt": routes}, subfolder="gtfs/")
    result = read_stops(feed)
    frame = result.stops.set_index("stop_id")
    assert list(frame.index) == ["A", "D"]  # B is a station, C has no coordinates
    assert result.rejected == 1
    assert frame.loc["A", "stop_name"] == "Main St, North"
    assert frame.loc["A", "routes"] == 2 and frame.loc["A", "route_types"] == "1,3"
    assert frame.loc["D", "routes"] == 1 and frame.loc["D", "route_types"] == "3"
    assert frame.loc["A", "lat"] == pytest.approx(41.9)


def test_feed_without_stops_is_refused(tmp_path):
    with pytest.raises(GtfsError, match="no stops.txt"):
        read_stops(make_feed(tmp_path, {"routes.txt": "route_id\nR\n"}))
    with pytest.raises(GtfsError, match="stop_lat"):
        read_stops(make_feed(tmp_path, {"stops.txt": "stop_id,stop_name\nA,x\n"}, name="b.zip"))
    with pytest.raises(GtfsError, match="neither"):
        read_stops(tmp_path / "missing.txt")


def test_facilities_nearest_and_counts():
    res = Facilities(np.array([10.0, 300.0, 0.0]), np.array([0.0, 0.0, 390.0])).nearest(
        np.array([0.0, 100.0]), np.array([0.0, 0.0]), radius=400)
    assert res.index.tolist() == [0, 0] and res.distance.tolist() == [10.0, 90.0]
    assert res.within.tolist() == [3, 2]
    empty = Facilities(np.array([]), np.array([])).nearest(np.array([1.0]), np.array([1.0]))
    assert empty.index.tolist() == [-1] and np.isnan(empty.distance[0])


def clusters(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 20_000, size=(25, 2))
    pts = np.vstack([c + rng.normal(0, rng.uniform(100, 900), size=(rng.integers(20, 400), 2)) for c in centres])
    return pts[:, 0], pts[:, 1]


@pytest.mark.parametrize("max_radius,max_points", [(400, 0), (250, 50), (1000, 30)])
def test_walkable_zones_guarantee_radius_and_size(max_radius, max_points):
    x, y = clusters()
    labels = walkable_zones(x, y, max_radius, max_points)
    assert (labels >= 0).all()
    summary = summarise_zones(x, y, labels)
    assert summary.radius.max() <= max_radius + 1e-9
    if max_points:
        assert summary.counts.max() <= max_points
    # deterministic
    assert (walkable_zones(x, y, max_radius, max_points) == labels).all()


def test_walkable_zones_identical_points_respect_size_cap():
    x = np.zeros(25)
    labels = walkable_zones(x, x, 100, 10)
    assert np.bincount(labels).max() <= 10 and np.bincount(labels).sum() == 25  # halves: 6, 6, 6, 7


def test_kmeans_zones_deterministic_and_sampled_path_keeps_spread():
    x, y = clusters(1)
    a = kmeans_zones(x, y, 20, seed=5)
    assert (a == kmeans_zones(x, y, 20, seed=5)).all() and len(np.unique(a)) == 20
    full = summarise_zones(x, y, a).radius.mean()
    sampled = summarise_zones(x, y, kmeans_zones(x, y, 20, seed=5, sample=2000)).radius.mean()
    assert sampled < full * 1.25


def test_routes_never_longer_than_nearest_neighbour_tour():
    rng = np.random.default_rng(2)
    for n in (3, 10, 60, 300):
        xy = rng.uniform(0, 1000, size=(n, 2))
        nn = nearest_neighbour_path(xy, 0)
        assert sorted(nn.tolist()) == list(range(n))
        improved = two_opt(xy, nn)
        assert sorted(improved.tolist()) == list(range(n)) and improved[0] == 0
        assert path_length(xy, improved) <= path_length(xy, nn) + 1e-9
    order, length, nn_length = walking_route(xy, start_xy=np.array([0.0, 0.0]))
    assert length <= nn_length and length == pytest.approx(path_length(xy, order))
    assert order[0] == int(np.argmin((xy ** 2).sum(axis=1)))
    # against the minimum spanning tree, a lower bound of any route through the locations (documented in the help)
    from civic311.processing.core.zones import mst_length

    for n, seed in ((500, 1), (5000, 2)):
        pts = np.random.default_rng(seed).uniform(0, 1000, size=(n, 2))
        order, length, nn_length = walking_route(pts)
        assert sorted(order.tolist()) == list(range(n))
        assert mst_length(pts) <= length <= 1.4 * mst_length(pts)
    line = np.column_stack([np.arange(50.0), np.zeros(50)])
    assert mst_length(line) == pytest.approx(49.0)  # collinear locations: the MST is the line
    # 2-opt removes a crossing: a zig-zag order on a square
    square = np.array([[0, 0], [1, 1], [1, 0], [0, 1]], dtype=float)
    assert path_length(square, two_opt(square, np.arange(4))) == pytest.approx(3.0)


def test_gtfs_zip_bytes_roundtrip_via_folder(tmp_path):
    folder = tmp_path / "gtfs"
    folder.mkdir()
    (folder / "stops.txt").write_text("stop_id,stop_lat,stop_lon\n1,41.0,-87.0\n")
    result = read_stops(folder)
    assert result.stops["stop_id"].tolist() == ["1"] and result.stops["stop_name"].tolist() == [""]
    assert io  # module used for zip fixtures above


def _inertia(x, y, labels, w):
    total = 0.0
    for z in np.unique(labels):
        m = labels == z
        cx, cy = np.average(x[m], weights=w[m]), np.average(y[m], weights=w[m])
        total += float((w[m] * ((x[m] - cx) ** 2 + (y[m] - cy) ** 2)).sum())
    return total


def test_kmeans_zones_as_good_as_scikit_learn():
    """Own k-means++ and Lloyd (no scikit-learn import on this path): over five seeds, the mean within-zone sum
    of squares is within 5 % of scikit-learn's single-start K-means, weighted and unweighted, on clustered and
    on uniform points."""
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(4)
    for x, y in (clusters(1), (rng.uniform(0, 5000, 3000), rng.uniform(0, 5000, 3000))):
        xy = np.column_stack([x, y])
        for w in (np.ones(len(x)), rng.integers(1, 5, len(x)).astype(float)):
            ours = np.mean([_inertia(x, y, kmeans_zones(x, y, 25, seed=s, weights=w), w) for s in range(5)])
            ref = np.mean([KMeans(25, n_init=1, random_state=s).fit(xy, sample_weight=w).inertia_ for s in range(5)])
            assert ours <= ref * 1.05


def test_summarise_zones_matches_a_zone_by_zone_computation():
    rng = np.random.default_rng(8)
    x, y = rng.uniform(0, 1000, 500), rng.uniform(0, 1000, 500)
    labels = rng.integers(-1, 12, 500)  # -1: noise, not a zone
    labels[labels == 7] = 8  # a gap in the ids
    for w in (None, rng.uniform(0.5, 3, 500)):
        s = summarise_zones(x, y, labels, w)
        assert s.zone_ids.tolist() == sorted(set(labels.tolist()) - {-1})
        for j, z in enumerate(s.zone_ids):
            m = labels == z
            ww = np.ones(m.sum()) if w is None else w[m]
            cx, cy = np.average(x[m], weights=ww), np.average(y[m], weights=ww)
            assert s.counts[j] == m.sum()
            assert (s.centre_x[j], s.centre_y[j]) == pytest.approx((cx, cy))
            assert s.radius[j] == pytest.approx(np.sqrt((x[m] - cx) ** 2 + (y[m] - cy) ** 2).max())


def test_facilities_nearest_counts_match_brute_force():
    rng = np.random.default_rng(11)
    px, py = rng.uniform(0, 20_000, 3000), rng.uniform(0, 20_000, 3000)  # many points far from any stop
    fx, fy = rng.uniform(0, 5000, 300), rng.uniform(0, 5000, 300)
    res = Facilities(fx, fy).nearest(px, py, radius=400, chunk=1000)
    d = np.hypot(px[:, None] - fx[None, :], py[:, None] - fy[None, :])
    assert (res.index == d.argmin(axis=1)).all() and np.allclose(res.distance, d.min(axis=1))
    assert (res.within == (d <= 400).sum(axis=1)).all() and 0 < (res.within > 0).mean() < 0.2
    plain = Facilities(fx, fy).nearest(px, py, chunk=1000)  # no radius: the nearest only
    assert (plain.index == res.index).all() and (plain.distance == res.distance).all() and not plain.within.any()


def test_facilities_nearest_counts_beyond_the_neighbours_asked_for():
    # a dense downtown: points with far more stops in reach than one query asks for, points with exactly that
    # many, points with none in reach, and a stop exactly at the walking distance (the radius is inclusive)
    rng = np.random.default_rng(5)
    fx = np.concatenate([rng.uniform(0, 300, 60), np.arange(NEIGHBOURS) * 10.0 + 5000, [400.0 + 9000]])
    fy = np.concatenate([rng.uniform(0, 300, 60), np.zeros(NEIGHBOURS), [0.0]])
    px = np.concatenate([rng.uniform(0, 300, 200), [5000.0, 9000.0, 20_000.0]])
    py = np.concatenate([rng.uniform(0, 300, 200), [0.0, 0.0, 20_000.0]])
    res = Facilities(fx, fy).nearest(px, py, radius=400, chunk=64)
    d = np.hypot(px[:, None] - fx[None, :], py[:, None] - fy[None, :])
    assert (res.index == d.argmin(axis=1)).all() and np.allclose(res.distance, d.min(axis=1))
    assert (res.within == (d <= 400).sum(axis=1)).all()
    assert res.within[:200].min() > NEIGHBOURS and res.within[-3:].tolist() == [NEIGHBOURS, 1, 0]


def test_gtfs_zip_bombs_damage_and_missing_route_ids(tmp_path, monkeypatch):
    """A 'stops.txt' that inflates past the cap, a corrupt CRC, an encrypted entry: clear GtfsError; trips.txt
    without route_id: routes NULL with a warning, never 0 everywhere."""
    import zipfile

    from civic311.processing.core import gtfs

    stops = "stop_id,stop_name,stop_lat,stop_lon\n1,A,41.9,-87.6\n2,B,41.8,-87.7\n"
    monkeypatch.setattr(gtfs, "MAX_TABLE_BYTES", 10_000)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("stops.txt", stops + "3,C,41.7,-87.5\n" * 5000)
    assert bomb.stat().st_size < 5_000
    with pytest.raises(gtfs.GtfsError, match="inflates to more than"):
        gtfs.read_stops(bomb)
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_STORED) as z:
        z.writestr("stops.txt", stops)
    data = bytearray(damaged.read_bytes())
    at = data.index(b"41.9")
    data[at:at + 4] = b"99.9"  # the stored bytes no longer match the CRC
    damaged.write_bytes(bytes(data))
    with pytest.raises(gtfs.GtfsError, match="damaged"):
        gtfs.read_stops(damaged)
    encrypted = tmp_path / "encrypted.zip"
    with zipfile.ZipFile(encrypted, "w") as z:
        z.writestr("stops.txt", stops)
    data = bytearray(encrypted.read_bytes())
    data[6] |= 1  # the local header's "encrypted" flag
    central = data.rindex(b"PK\x01\x02")
    data[central + 8] |= 1  # and the central directory's
    encrypted.write_bytes(bytes(data))
    with pytest.raises(gtfs.GtfsError, match="encrypted"):
        gtfs.read_stops(encrypted)
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "stops.txt").write_text(stops)
    (feed / "stop_times.txt").write_text("trip_id,stop_id\nt1,1\nt1,2\n")
    (feed / "trips.txt").write_text("trip_id,service_id\nt1,wk\n")
    result = gtfs.read_stops(feed)
    assert np.isnan(result.stops["routes"]).all()
    assert any("trips.txt has no route_id" in w for w in result.warnings)


def test_routes_of_many_zones_at_once_equal_each_zone_alone():
    """#16: the 2-opt of all zones runs as one set of numpy steps; its moves must be exactly those each zone
    gets alone (windows never reach across zones), for small (nearest-neighbour) and large (curve) zones."""
    from civic311.processing.core.zones import walking_routes

    rng = np.random.default_rng(16)
    zones = [rng.uniform(0, 500, (m, 2)) for m in (0, 1, 3, 4, 60, 1400, 1700, 4000)]
    starts = [None, None, np.array([0.0, 0.0]), None, np.array([250.0, 250.0]), None, None, np.array([500.0, 0.0])]
    together = walking_routes(zones, starts)
    for xy, start, (order, length, nn_length) in zip(zones, starts, together):
        alone, alone_length, alone_nn = walking_route(xy, start)
        np.testing.assert_array_equal(order, alone)
        assert sorted(order.tolist()) == list(range(len(xy)))  # every location once
        assert length == pytest.approx(alone_length) and length <= nn_length + 1e-9


def test_zone_locations_are_each_zones_distinct_points_sorted_like_unique():
    """#16: zone_locations sorts each zone's points with a float lexsort instead of np.unique(axis=0) (which
    sorted 10M rows as opaque records in 6 s); same distinct locations in the same order."""
    from civic311.processing.core.zones import zone_locations

    rng = np.random.default_rng(5)
    x = np.round(rng.normal(0, 50, 5000), 0)  # many repeated locations, negative and positive
    y = np.round(rng.normal(0, 50, 5000), 0)
    x[:10], y[:10] = -0.0, 0.0  # a signed zero repeats an unsigned one
    labels = rng.integers(-1, 7, 5000)
    zone_ids = np.arange(7)
    got = zone_locations(x, y, labels, zone_ids)
    assert len(got) == 7
    for zone, xy in zip(zone_ids, got):
        expected = np.unique(np.column_stack([x, y])[labels == zone], axis=0)
        np.testing.assert_array_equal(xy, expected)


def test_best_moves_are_window_maxima_of_the_improving_moves_and_never_overlap():
    """#16: two_opt_many picks its moves among the improving positions only (no window maximum over all ten
    million positions). Brute force: each pick is the best improving move within ``half`` either side (an
    exact tie going to the earlier position), and every such position is picked."""
    from civic311.processing.core.zones import _best_moves

    rng = np.random.default_rng(11)
    for trial in range(30):
        n, half = int(rng.integers(1, 400)), int(rng.integers(1, 20))
        gain = np.where(rng.random(n) < rng.uniform(0.02, 0.9), np.round(rng.uniform(-1, 1, n), 1), -np.inf)
        tiebreak = np.zeros(n) if trial % 2 else np.arange(n) * 1e-12
        score = gain + tiebreak
        expected = [p for p in range(n) if gain[p] > 1e-9 and all(
            score[p] > score[q] or (score[p] == score[q] and p < q)
            for q in range(max(0, p - half), min(n, p + half + 1)) if q != p and gain[q] > 1e-9)]
        picked = _best_moves(gain, tiebreak, half)
        assert picked.tolist() == expected
        assert np.all(np.diff(picked) > half)
