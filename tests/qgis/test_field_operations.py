# SPDX-License-Identifier: GPL-2.0-or-later
"""loadgtfsstops, transitaccess and canvasszones through processing.run, with geodesic checks."""

import sqlite3

import numpy as np
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDistanceArea,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsVectorLayer,
)

from conftest import SAMPLE, SHARED, sample_layer

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


def geodesic():
    d = QgsDistanceArea()
    d.setSourceCrs(WGS84, QgsProject.instance().transformContext())
    d.setEllipsoid("WGS84")
    return d


def to_wgs84(layer):
    ct = QgsCoordinateTransform(layer.crs(), WGS84, QgsProject.instance())
    return lambda g: ct.transform(g.asPoint() if g.type() == 0 else g.pointOnSurface().asPoint())


def test_load_real_cta_feed(run_alg):
    res = run_alg("civic311:loadgtfsstops", {"INPUT": str(SHARED / "chicago_cta_gtfs_2024"), "OUTPUT": "memory:"})
    out = res["OUTPUT"]
    assert out.featureCount() == 11009 and out.crs().authid() == "EPSG:4326"
    assert [f.name() for f in out.fields()] == ["stop_id", "stop_name", "location_type", "parent_station",
                                                "wheelchair_boarding", "routes", "route_types"]
    first = next(out.getFeatures())
    assert first["stop_id"] == "1" and first["stop_name"] == "Jackson & Austin Terminal"
    assert str(first["routes"]) == "NULL"
    assert any("stop_times.txt" in m for m in res["_feedback"].messages)


def test_gtfs_without_stops_is_a_clear_error(run_alg, tmp_path):
    import zipfile

    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("routes.txt", "route_id\nR\n")
    with pytest.raises(QgsProcessingException, match="no stops.txt"):
        run_alg("civic311:loadgtfsstops", {"INPUT": str(path), "OUTPUT": "memory:"})


@pytest.fixture(scope="module")
def access(run_alg):
    return run_alg("civic311:transitaccess", {
        "INPUT": f"{SAMPLE}|layername=requests", "STOPS": f"{SAMPLE}|layername=stops", "STOP_ID_FIELD": "stop_id",
        "POLLING_PLACES": f"{SAMPLE}|layername=polling_places", "POLLING_ID_FIELD": "name",
        "OUTPUT": "memory:"})["OUTPUT"]


def test_distances_match_an_independent_geodesic_computation(access):
    stops = {f["stop_id"]: f.geometry().asPoint() for f in sample_layer("stops").getFeatures()}
    polls = {}
    for f in sample_layer("polling_places").getFeatures():
        polls.setdefault(f["name"], []).append(f.geometry().asPoint())
    d = geodesic()
    feats = list(access.getFeatures())
    assert len(feats) == 8304
    rng = np.random.default_rng(0)
    for i in rng.choice(len(feats), 150, replace=False):
        f = feats[i]
        p = f.geometry().asPoint()
        ref = d.measureLine(p, stops[f["stop_id"]])
        assert f["stop_m"] == pytest.approx(ref, rel=0.005, abs=0.05)
        assert f["poll_m"] == pytest.approx(min(d.measureLine(p, q) for q in polls[f["poll_id"]]), rel=0.005,
                                            abs=0.05)
    # nearest really is nearest: brute force over every stop for a few requests
    for f in feats[:5]:
        p = f.geometry().asPoint()
        best = min(d.measureLine(p, q) for q in stops.values())
        assert f["stop_m"] == pytest.approx(best, rel=0.005)


def test_walk_counts_and_access_gap_rule(access):
    feats = list(access.getFeatures())
    for f in feats[:300]:
        assert (f["stops_walk"] > 0) == (f["stop_m"] <= 400)
        assert f["access_gap"] == int(f["stop_m"] <= 400 and f["poll_m"] > 800)
    assert 0 < sum(f["access_gap"] for f in feats) < len(feats)


def test_polygons_projected_crs_and_null_geometry(run_alg):
    # precincts reprojected to Illinois East (US feet): distances must still be ground metres
    prec = run_alg("native:reprojectlayer", {"INPUT": f"{SAMPLE}|layername=precincts",
                                             "TARGET_CRS": "EPSG:3435", "OUTPUT": "memory:"})["OUTPUT"]
    hole = QgsFeature(prec.fields())
    prec.dataProvider().addFeatures([hole])  # a feature without geometry
    res = run_alg("civic311:transitaccess", {"INPUT": prec, "STOPS": f"{SAMPLE}|layername=stops",
                                             "OUTPUT": "memory:"})
    out = list(res["OUTPUT"].getFeatures())
    assert len(out) == 1292
    assert str(out[-1]["stop_m"]) == "NULL" and str(out[-1]["access_gap"]) == "NULL"
    assert any("have no geometry" in m for m in res["_feedback"].messages)
    stops = {f["stop_id"]: f.geometry().asPoint() for f in sample_layer("stops").getFeatures()}
    d, back = geodesic(), to_wgs84(prec)
    for f in out[:50]:
        p = back(f.geometry())
        assert f.geometry().pointOnSurface().within(f.geometry())
        assert f["stop_m"] == pytest.approx(d.measureLine(p, stops[f["stop_id"]]), rel=0.005)


def test_bad_stops_input(run_alg):
    empty = QgsVectorLayer("Point?crs=EPSG:4326&field=stop_id:string", "e", "memory")
    with pytest.raises(QgsProcessingException, match="STOPS has no located features"):
        run_alg("civic311:transitaccess", {"INPUT": f"{SAMPLE}|layername=requests", "STOPS": empty,
                                           "OUTPUT": "memory:"})
    with pytest.raises(QgsProcessingException, match="point layer"):
        run_alg("civic311:transitaccess", {"INPUT": f"{SAMPLE}|layername=requests",
                                           "STOPS": f"{SAMPLE}|layername=precincts", "STOP_ID_FIELD": "",
                                           "OUTPUT": "memory:"})


@pytest.fixture(scope="module")
def walkable(run_alg):
    return run_alg("civic311:canvasszones", {
        "INPUT": f"{SAMPLE}|layername=requests", "METHOD": 2, "MAX_RADIUS": 400, "MAX_POINTS": 60,
        "START_POINTS": f"{SAMPLE}|layername=stops", "OUTPUT": "memory:", "ZONES": "memory:",
        "ROUTES": "memory:"})


def test_walkable_zones_hold_the_radius_and_size_on_real_requests(walkable):
    points, zones = walkable["OUTPUT"], walkable["ZONES"]
    zone_rows = {f["zone_id"]: f for f in zones.getFeatures()}
    assert sum(f["requests"] for f in zone_rows.values()) == 8304
    members = {}
    for f in points.getFeatures():
        members.setdefault(f["zone_id"], []).append(f.geometry().asPoint())
    assert set(members) == set(zone_rows)
    d = geodesic()
    for zid, pts in members.items():
        z = zone_rows[zid]
        assert z["requests"] == len(pts) <= 60
        assert z["radius_m"] <= 400
        centre = QgsPointXY(z["centre_lon"], z["centre_lat"])
        assert max(d.measureLine(centre, p) for p in pts) <= 400  # on the ground, not only in the projection
        assert max(d.measureLine(centre, p) for p in pts) == pytest.approx(z["radius_m"], rel=0.005, abs=0.5)


def test_routes_start_at_a_stop_and_visit_every_location(walkable):
    from scipy.spatial import cKDTree

    stop_xy = np.array([[f.geometry().asPoint().x(), f.geometry().asPoint().y()]
                        for f in sample_layer("stops").getFeatures()])
    tree = cKDTree(stop_xy)
    zones = {f["zone_id"]: f for f in walkable["ZONES"].getFeatures()}
    locations = {}
    for f in walkable["OUTPUT"].getFeatures():
        p = f.geometry().asPoint()
        locations.setdefault(f["zone_id"], set()).add((round(p.x(), 7), round(p.y(), 7)))
    routes = list(walkable["ROUTES"].getFeatures())
    assert len(routes) == len(zones)
    d = geodesic()
    for r in routes[:80]:
        line = r.geometry().asPolyline()
        assert tree.query([line[0].x(), line[0].y()])[0] < 1e-9  # the route starts at a transit stop
        assert r["stops"] == len(locations[r["zone_id"]])
        assert r["length_m"] == pytest.approx(sum(d.measureLine(a, b) for a, b in zip(line, line[1:])), rel=0.005,
                                              abs=0.5)


def test_kmeans_and_dbscan_zones(run_alg):
    km = run_alg("civic311:canvasszones", {"INPUT": f"{SAMPLE}|layername=requests", "METHOD": 0, "ZONE_COUNT": 25,
                                           "SEED": 3, "OUTPUT": "memory:", "ZONES": "memory:"})
    ids = [f["zone_id"] for f in km["OUTPUT"].getFeatures()]
    assert sorted(set(ids)) == list(range(25))
    again = run_alg("civic311:canvasszones", {"INPUT": f"{SAMPLE}|layername=requests", "METHOD": 0,
                                              "ZONE_COUNT": 25, "SEED": 3, "OUTPUT": "memory:"})
    assert ids == [f["zone_id"] for f in again["OUTPUT"].getFeatures()]
    db = run_alg("civic311:canvasszones", {"INPUT": f"{SAMPLE}|layername=requests", "METHOD": 1, "EPS": 150,
                                           "MIN_POINTS": 8, "OUTPUT": "memory:", "ZONES": "memory:"})
    labels = [f["zone_id"] for f in db["OUTPUT"].getFeatures()]
    assert -1 in labels and max(labels) >= 1
    assert db["ZONES"].featureCount() == len(set(labels) - {-1})
    # one style class per zone: noise (grey) on the points only
    # one legend entry, the zone's colour data-defined from its id: grey for noise, a distinct hue per zone
    from qgis.core import QgsExpressionContext, QgsExpressionContextUtils, QgsSymbolLayer

    for layer in (db["OUTPUT"], db["ZONES"]):
        renderer = layer.renderer()
        assert renderer.type() == "singleSymbol" and len(renderer.legendSymbolItems()) == 1
        prop = renderer.symbol().symbolLayer(0).dataDefinedProperties().property(QgsSymbolLayer.PropertyFillColor)
        context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
        colours = {}
        for feat in layer.getFeatures():
            context.setFeature(feat)
            colours[feat["zone_id"]] = prop.valueAsString(context)[0]
        assert len(set(colours.values())) == len(colours)  # every zone (and noise) its own colour
        if -1 in colours:
            assert colours[-1].startswith("#bdbdbd")
    with pytest.raises(QgsProcessingException, match="larger than the number of distinct"):
        run_alg("civic311:canvasszones", {"INPUT": f"{SAMPLE}|layername=requests", "METHOD": 0,
                                          "ZONE_COUNT": 100000, "OUTPUT": "memory:"})


def test_canvass_zones_on_empty_layer_and_null_geometry(run_alg):
    layer = QgsVectorLayer("Point?crs=EPSG:4326", "pts", "memory")
    with pytest.raises(QgsProcessingException, match="no located points"):
        run_alg("civic311:canvasszones", {"INPUT": layer, "OUTPUT": "memory:"})
    feats = []
    for x, y in [(-87.6, 41.8), (-87.6001, 41.8001), (None, None)]:
        f = QgsFeature()
        if x is not None:
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    res = run_alg("civic311:canvasszones", {"INPUT": layer, "METHOD": 2, "OUTPUT": "memory:", "ZONES": "memory:",
                                            "ROUTES": "memory:"})
    assert [str(f["zone_id"]) for f in res["OUTPUT"].getFeatures()] == ["0", "0", "NULL"]
    route = next(res["ROUTES"].getFeatures())
    assert route["stops"] == 2 and route["length_m"] == pytest.approx(13.9, abs=0.5)


def test_geopackage_to_geopackage_outputs_match_the_feature_by_feature_path(run_alg, tmp_path):
    memory = run_alg("civic311:transitaccess", {
        "INPUT": f"{SAMPLE}|layername=requests", "STOPS": f"{SAMPLE}|layername=stops",
        "POLLING_PLACES": f"{SAMPLE}|layername=polling_places", "OUTPUT": "memory:"})["OUTPUT"]
    out = tmp_path / "access.gpkg"
    run_alg("civic311:transitaccess", {
        "INPUT": f"{SAMPLE}|layername=requests", "STOPS": f"{SAMPLE}|layername=stops",
        "POLLING_PLACES": f"{SAMPLE}|layername=polling_places", "OUTPUT": str(out)})
    layer = QgsVectorLayer(str(out), "a", "ogr")
    assert layer.featureCount() == memory.featureCount() == 8304
    assert [f.name() for f in layer.fields()][1:] == [f.name() for f in memory.fields()][1:]
    ref = {f["request_id"]: f for f in memory.getFeatures()}
    for f in layer.getFeatures():
        m = ref[f["request_id"]]
        assert f["stop_id"] == m["stop_id"] and f["stop_m"] == pytest.approx(m["stop_m"])
        assert f["access_gap"] == m["access_gap"] and f["created_at"] == m["created_at"]
        assert f.geometry().asPoint() == m.geometry().asPoint()
    assert layer.renderer().classAttribute() == "access_gap"
    zones = tmp_path / "zones.gpkg"
    run_alg("civic311:canvasszones", {"INPUT": f"{SAMPLE}|layername=requests", "METHOD": 0, "ZONE_COUNT": 12,
                                      "OUTPUT": str(zones)})
    zl = QgsVectorLayer(str(zones), "z", "ogr")
    assert zl.featureCount() == 8304 and sorted({f["zone_id"] for f in zl.getFeatures()}) == list(range(12))


@pytest.mark.parametrize("crs,own_crs_is_metric", [("EPSG:32616", True), ("EPSG:3857", False),
                                                   ("EPSG:3435", False)])
def test_distances_are_ground_metres_in_utm_web_mercator_and_feet(run_alg, crs, own_crs_is_metric):
    """UTM is used as it is (its scale stays within 0.1 % over Chicago); Web Mercator (1.34x at Chicago's
    latitude) and US feet go through the equidistant projection. Either way: geodesic metres."""
    from qgis.core import QgsProcessingContext, QgsRectangle

    from civic311.processing.layerio import is_ground_metric

    moved = run_alg("native:reprojectlayer", {"INPUT": f"{SAMPLE}|layername=requests", "TARGET_CRS": crs,
                                              "OUTPUT": "memory:"})["OUTPUT"]
    extent = moved.extent()
    assert is_ground_metric(moved.crs(), QgsRectangle(extent), QgsProcessingContext()) == own_crs_is_metric
    out = list(run_alg("civic311:transitaccess", {"INPUT": moved, "STOPS": f"{SAMPLE}|layername=stops",
                                                  "OUTPUT": "memory:"})["OUTPUT"].getFeatures())
    stops = {f["stop_id"]: f.geometry().asPoint() for f in sample_layer("stops").getFeatures()}
    d, back = geodesic(), to_wgs84(moved)
    for f in out[::97]:
        assert f["stop_m"] == pytest.approx(d.measureLine(back(f.geometry()), stops[f["stop_id"]]), rel=0.005,
                                            abs=0.05)


def test_walkable_radius_holds_on_the_ground_for_a_utm_layer(run_alg):
    """In the layer's own UTM CRS (no reprojection) the radius still holds as a ground (geodesic) distance."""
    utm = run_alg("native:reprojectlayer", {"INPUT": f"{SAMPLE}|layername=requests", "TARGET_CRS": "EPSG:32616",
                                            "OUTPUT": "memory:"})["OUTPUT"]
    res = run_alg("civic311:canvasszones", {"INPUT": utm, "METHOD": 2, "MAX_RADIUS": 300, "MAX_POINTS": 0,
                                            "OUTPUT": "memory:", "ZONES": "memory:"})
    zones = {f["zone_id"]: f for f in res["ZONES"].getFeatures()}
    d, back = geodesic(), to_wgs84(utm)
    members = {}
    for f in res["OUTPUT"].getFeatures():
        members.setdefault(f["zone_id"], []).append(back(f.geometry()))
    assert len(zones) > 100 and set(members) == set(zones)
    for zid, pts in members.items():
        centre = QgsPointXY(zones[zid]["centre_lon"], zones[zid]["centre_lat"])
        assert zones[zid]["radius_m"] <= 300 and max(d.measureLine(centre, p) for p in pts) <= 300


def test_transitaccess_cancelled_stops_before_writing(run_alg, tmp_path):
    from qgis.core import QgsProcessingException, QgsProcessingFeedback

    feedback = QgsProcessingFeedback()
    feedback.cancel()  # as if Cancel was pressed while the places were being read
    out = tmp_path / "cancelled.gpkg"
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        run_alg("civic311:transitaccess", {"INPUT": f"{SAMPLE}|layername=requests",
                                           "STOPS": f"{SAMPLE}|layername=stops", "OUTPUT": str(out)}, feedback)
    con = sqlite3.connect(out) if out.exists() else None
    assert con is None or con.execute("SELECT count(*) FROM cancelled").fetchone()[0] == 0


def test_zone_hull_candidates_keep_the_hull():
    """#16: the ZONES hull is built from qhull's hull vertices (not all 50,000 points of a zone); collinear and
    tiny zones keep every point, and the hull GEOS builds from the candidates is the hull of all points."""
    import numpy as np

    from civic311.processing.algorithms.canvasszones import geometry_from_wkb, hull_candidates, multipoint_wkb

    pts = np.random.default_rng(2).uniform(0, 500, size=(5000, 2))
    few = hull_candidates(pts)
    assert 3 <= len(few) < 100
    whole = geometry_from_wkb(multipoint_wkb(pts)).convexHull()
    assert geometry_from_wkb(multipoint_wkb(few)).convexHull().equals(whole)
    line = np.column_stack([np.arange(10.0), np.arange(10.0) * 2])
    assert len(hull_candidates(line)) == 10 and len(hull_candidates(pts[:3])) == 3


def test_canvasszones_copies_its_output_alongside_the_routes_unless_they_share_a_file(run_alg, tmp_path, monkeypatch):
    """The OUTPUT copy (SQLite) runs in a worker thread while ZONES and ROUTES are computed, with the same layers
    as the copy made first; when another output names the same GeoPackage (two writers of one file would block
    each other) it runs first in the calling thread; an error in the worker reaches the caller."""
    import threading

    from civic311.processing import gpkgwriter

    copied_in = []
    original = gpkgwriter.copy_with_columns

    def spy(*args, **kwargs):
        copied_in.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(gpkgwriter, "copy_with_columns", spy)
    params = {"INPUT": f"{SAMPLE}|layername=requests", "METHOD": 0, "ZONE_COUNT": 12}
    apart = {"OUTPUT": str(tmp_path / "out.gpkg"), "ZONES": str(tmp_path / "zones.gpkg"),
             "ROUTES": str(tmp_path / "routes.gpkg")}
    res = run_alg("civic311:canvasszones", {**params, **apart})
    one = tmp_path / "one.gpkg"
    shared = {"OUTPUT": str(one), "ZONES": f"ogr:dbname='{one}' table=\"zones\" (geom)",
              "ROUTES": f"ogr:dbname='{one}' table=\"routes\" (geom)"}
    res_one = run_alg("civic311:canvasszones", {**params, **shared})
    assert copied_in == ["civic311-copy", "MainThread"]
    assert res["OUTPUT"] == f"{tmp_path / 'out.gpkg'}|layername=out"
    for key, layer_name in (("OUTPUT", "one"), ("ZONES", "zones"), ("ROUTES", "routes")):
        a = QgsVectorLayer(res[key], "a", "ogr")
        b = QgsVectorLayer(f"{one}|layername={layer_name}", "b", "ogr")
        assert a.isValid() and b.isValid(), key
        assert a.featureCount() == b.featureCount() == (8304 if key == "OUTPUT" else 12), key
        rows = [sorted((f.attributes()[1:], f.geometry().asWkb().data()) for f in layer.getFeatures())
                for layer in (a, b)]
        assert rows[0] == rows[1], key
    assert res_one["OUTPUT"] == f"{one}|layername=one"

    def failing(*args, **kwargs):
        raise OSError("disk full while copying")

    monkeypatch.setattr(gpkgwriter, "copy_with_columns", failing)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(Exception, match="disk full while copying"):
        run_alg("civic311:canvasszones", {**params, "OUTPUT": str(tmp_path / "fails.gpkg"),
                                          "ROUTES": str(tmp_path / "routes2.gpkg")})
    assert "civic311-copy" not in {t.name for t in threading.enumerate()} - before
    # an output whose destination is an expression (a model's) is known only later: assumed to share the file
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProperty

    from civic311.processing.layerio import _may_share_file

    out = str(tmp_path / "out.gpkg")
    assert not _may_share_file(out, [None, "TEMPORARY_OUTPUT", str(tmp_path / "zones.gpkg"),
                                     QgsProcessingOutputLayerDefinition(str(tmp_path / "routes.gpkg"))])
    assert _may_share_file(out, [QgsProcessingOutputLayerDefinition(QgsProperty.fromExpression(f"'{out}'"))])
    assert _may_share_file(out, [f"ogr:dbname='{tmp_path / 'OUT.gpkg'}' table=\"z\" (geom)"])
