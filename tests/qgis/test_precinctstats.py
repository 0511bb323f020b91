# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:precinctstats through processing.run on the real Chicago sample and on crafted layers."""

import numpy as np
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsVectorLayer,
)

from conftest import SAMPLE

ALG = "civic311:precinctstats"
BASE = {"PRECINCT_ID_FIELD": "ward_prec", "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast",
        "OUTPUT": "memory:"}


def features(layer):
    return {f["ward_prec"]: f for f in layer.getFeatures()}


@pytest.fixture(scope="module")
def sample_stats(run_alg):
    return run_alg(ALG, {**BASE, "REQUESTS": f"{SAMPLE}|layername=requests",
                         "PRECINCTS": f"{SAMPLE}|layername=precincts"})


def test_counts_sum_to_matched_and_every_request_is_accounted_for(sample_stats):
    out = sample_stats["OUTPUT"]
    assert out.featureCount() == 1291
    total = sum(f["requests"] for f in out.getFeatures())
    assert total == sample_stats["MATCHED"]
    assert sample_stats["MATCHED"] + sample_stats["UNMATCHED"] == 8304
    assert sample_stats["UNMATCHED"] > 0  # some 2018 requests fall outside the 2023 precincts (city edge, O'Hare)
    for name in ("requests", "rate_1k", "rate_eb", "quintile", "turnout", "top_category"):
        assert out.fields().lookupField(name) >= 0
    cat_fields = [f.name() for f in out.fields() if f.name().startswith("cat_")]
    assert len(cat_fields) == 4  # the sample has four categories (TOP_CATEGORIES = 5)
    assert "cat_pothole_in_street" in cat_fields


def test_invalid_precincts_are_repaired_and_named(sample_stats):
    messages = "\n".join(sample_stats["_feedback"].messages)
    assert "Repaired 2 invalid polygon(s)" in messages
    assert "41001" in messages and "41004" in messages
    out = features(sample_stats["OUTPUT"])
    assert "41001" in out and "41004" in out


def test_rates_turnout_and_quintiles_are_consistent(sample_stats):
    rows = list(sample_stats["OUTPUT"].getFeatures())
    voters = np.array([f["registered_voters"] for f in rows], dtype=float)
    ballots = np.array([f["ballots_cast"] for f in rows], dtype=float)
    req = np.array([f["requests"] for f in rows], dtype=float)
    np.testing.assert_allclose([f["rate_1k"] for f in rows], req / voters * 1000)
    np.testing.assert_allclose([f["turnout"] for f in rows], ballots / voters)
    eb = np.array([f["rate_eb"] for f in rows])
    city = req.sum() / voters.sum() * 1000
    # shrinkage: every EB rate lies between the raw rate and the city rate
    raw = req / voters * 1000
    assert np.all((eb - city) * (raw - city) >= -1e-9) and np.all(np.abs(eb - city) <= np.abs(raw - city) + 1e-9)
    quint = np.array([f["quintile"] for f in rows])
    assert sorted(set(quint)) == [1, 2, 3, 4, 5]
    assert eb[quint == 5].min() >= eb[quint == 4].max()
    assert abs((quint == 3).sum() - 1291 / 5) < 30


def test_agrees_with_native_count_points_in_polygon_except_boundary_points(sample_stats, run_alg):
    from qgis.core import QgsFeatureRequest, QgsProcessingContext

    import processing

    context = QgsProcessingContext()
    context.setInvalidGeometryCheck(QgsFeatureRequest.InvalidGeometryCheck.GeometryNoCheck)
    native = processing.run("native:countpointsinpolygon", {
        "POLYGONS": f"{SAMPLE}|layername=precincts", "POINTS": f"{SAMPLE}|layername=requests",
        "FIELD": "native_n", "OUTPUT": "memory:"}, context=context)["OUTPUT"]
    ours = {f["ward_prec"]: f["requests"] for f in sample_stats["OUTPUT"].getFeatures()}
    theirs = {f["ward_prec"]: f["native_n"] for f in native.getFeatures()}
    diff = {k: theirs[k] - ours[k] for k in ours if theirs[k] != ours[k]}
    # native drops a point lying exactly on a precinct boundary ("contains"); civic311 counts it once. On the
    # sample no request lies exactly on a boundary, so the two agree precinct by precinct.
    assert all(d < 0 for d in diff.values())
    assert sum(theirs.values()) - sum(diff.values()) == sample_stats["MATCHED"]
    assert diff == {}


def test_boundary_points_counted_once_where_native_drops_them(run_alg):
    import processing

    prec = grid_precincts(crs="EPSG:3435", origin=(0, 0), size=100)
    pts = memory_points([(100, 50, None, "a"), (100, 100, None, "b"), (50, 50, None, "c")], crs="EPSG:3435")
    native = processing.run("native:countpointsinpolygon", {"POLYGONS": prec, "POINTS": pts, "FIELD": "n",
                                                            "OUTPUT": "memory:"})["OUTPUT"]
    ours = run_alg(ALG, {**BASE, "REQUESTS": pts, "PRECINCTS": prec})
    # QGIS's native algorithm tests "contains": a point exactly on a precinct boundary is counted nowhere
    # (edge point: 0, corner point: 0, interior point: 1). civic311 counts each of them in exactly one precinct.
    assert sorted(f["n"] for f in native.getFeatures()) == [0, 0, 0, 1]
    assert sum(f["requests"] for f in ours["OUTPUT"].getFeatures()) == ours["MATCHED"] == 3


def memory_points(points, crs="EPSG:4326", fields="created_at:datetime&field=category:string"):
    layer = QgsVectorLayer(f"Point?crs={crs}&field={fields}", "pts", "memory")
    feats = []
    for x, y, *attrs in points:
        f = QgsFeature(layer.fields())
        if x is not None:
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        f.setAttributes(list(attrs))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def grid_precincts(crs="EPSG:4326", origin=(-87.7, 41.8), size=0.01):
    layer = QgsVectorLayer(f"Polygon?crs={crs}&field=ward_prec:string&field=registered_voters:integer"
                           "&field=ballots_cast:integer", "prec", "memory")
    feats = []
    for j in range(2):
        for i in range(2):
            f = QgsFeature(layer.fields())
            x0, y0 = origin[0] + i * size, origin[1] + j * size
            f.setGeometry(QgsGeometry.fromRect(__import__("qgis.core").core.QgsRectangle(x0, y0, x0 + size,
                                                                                        y0 + size)))
            f.setAttributes([f"P{j}{i}", 1000 * (1 + i + j), 400])
            feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_crs_mismatch_boundary_points_dates_and_suppression(run_alg):
    from qgis.PyQt.QtCore import QDateTime

    t = QDateTime.fromString("2024-03-05T10:00:00", "yyyy-MM-ddTHH:mm:ss")
    pts = [(-87.695, 41.805, t, "Noise"), (-87.69, 41.805, t, "Noise"),  # second on the P00|P01 shared edge
           (-87.685, 41.815, t, "Rodent"), (-87.685, 41.815, t.addDays(30), "Rodent"),
           (-87.5, 41.5, t, "Noise"), (None, None, t, "Noise")]
    prec = grid_precincts()
    # precincts in a projected CRS, requests in WGS84
    to_3435 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"),
                                     QgsCoordinateReferenceSystem("EPSG:3435"), QgsProject.instance())
    projected = QgsVectorLayer("Polygon?crs=EPSG:3435&field=ward_prec:string&field=registered_voters:integer"
                               "&field=ballots_cast:integer", "p3435", "memory")
    feats = []
    for f in prec.getFeatures():
        g = f.geometry()
        g.transform(to_3435)
        nf = QgsFeature(projected.fields())
        nf.setGeometry(g)
        nf.setAttributes(f.attributes())
        feats.append(nf)
    projected.dataProvider().addFeatures(feats)
    res = run_alg(ALG, {**BASE, "REQUESTS": memory_points(pts), "PRECINCTS": projected, "SUPPRESS_BELOW": 2})
    out = features(res["OUTPUT"])
    assert res["MATCHED"] == 4 and res["UNMATCHED"] == 2
    assert sum(f["requests"] for f in out.values()) == 4
    assert out["P11"]["requests"] == 2 and out["P11"]["top_category"] == "Rodent"
    assert out["P00"]["requests"] + out["P01"]["requests"] == 2
    assert out["P11"]["cat_rodent"] == 2
    assert out["P00"]["cat_noise"] is None or str(out["P00"]["cat_noise"]) == "NULL"  # 1 < SUPPRESS_BELOW
    # date filter: only 2024-03-05, inclusive end day
    from qgis.PyQt.QtCore import QDate

    res = run_alg(ALG, {**BASE, "REQUESTS": memory_points(pts), "PRECINCTS": prec,
                        "START_DATE": QDate(2024, 3, 5), "END_DATE": QDate(2024, 3, 5)})
    assert res["MATCHED"] == 3
    assert "were outside the date range" in "\n".join(res["_feedback"].messages)


def test_bad_input_gives_clear_errors(run_alg):
    prec = grid_precincts()
    with pytest.raises(QgsProcessingException, match="VOTERS_FIELD"):
        run_alg(ALG, {**BASE, "VOTERS_FIELD": None, "REQUESTS": memory_points([]), "PRECINCTS": prec})
    empty_prec = QgsVectorLayer("Polygon?crs=EPSG:4326&field=ward_prec:string", "e", "memory")
    with pytest.raises(QgsProcessingException, match="no features"):
        run_alg(ALG, {"PRECINCT_ID_FIELD": "ward_prec", "OUTPUT": "memory:", "REQUESTS": memory_points([]),
                      "PRECINCTS": empty_prec})
    # no requests at all: every precinct gets 0, nothing crashes
    res = run_alg(ALG, {**BASE, "REQUESTS": memory_points([]), "PRECINCTS": prec})
    assert res["MATCHED"] == 0 and [f["requests"] for f in res["OUTPUT"].getFeatures()] == [0, 0, 0, 0]


CRAFTED_CATEGORIES = ["Street Light Out", "Street Lights All Out", "Street Light Out - Complete", "árbol caído",
                      "Árbol Caído", None, "", "(none)", "x" * 300, "x" * 299 + "y"]


def test_categories_read_as_codes_match_the_per_feature_read(run_alg, tmp_path):
    """Regression for #16: categories are read from a GeoPackage as codes into one table of distinct values
    (fast path) instead of one Python string per row. Names that share their first 8 or 299 bytes, UTF-8
    names, NULL, '' and a literal "(none)" must give exactly what the per-feature read gives."""
    from osgeo import ogr, osr

    src = ogr.Open(str(SAMPLE))
    requests = src.GetLayerByName("requests")
    path = tmp_path / "crafted.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    layer = ds.CreateLayer("requests", srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("category", ogr.OFTString))
    expected = {}
    for i, feat in enumerate(requests):
        out = ogr.Feature(layer.GetLayerDefn())
        out.SetGeometry(feat.GetGeometryRef().Clone())
        name = CRAFTED_CATEGORIES[(i * 7) % len(CRAFTED_CATEGORIES)]
        if name is not None:
            out.SetField("category", name)
        layer.CreateFeature(out)
        expected[name] = expected.get(name, 0) + 1
    ds = None
    params = {**BASE, "PRECINCTS": f"{SAMPLE}|layername=precincts", "TOP_CATEGORIES": 10}
    fast = run_alg(ALG, {**params, "REQUESTS": f"{path}|layername=requests"})
    from qgis.core import QgsProcessingFeatureSourceDefinition

    slow = run_alg(ALG, {**params, "REQUESTS": QgsProcessingFeatureSourceDefinition(
        f"{path}|layername=requests", featureLimit=10**9)})  # a feature limit takes the per-feature read
    rows = [[f.attributes() for f in res["OUTPUT"].getFeatures()] for res in (fast, slow)]
    assert rows[0] == rows[1]
    names = [f.name() for f in fast["OUTPUT"].fields() if f.name().startswith("cat_")]
    assert len(names) == 8  # eight distinct texts; NULL, '' and "(none)" are one "(none)"
    total = {name: sum(f[name] for f in fast["OUTPUT"].getFeatures()) for name in names}
    assert sum(total.values()) == fast["MATCHED"]
    assert fast["MATCHED"] + fast["UNMATCHED"] == sum(expected.values())
    # EXCLUDE_CATEGORIES compares lower-cased text: both spellings of "árbol caído" go, nothing else
    dropped = run_alg(ALG, {**params, "REQUESTS": f"{path}|layername=requests",
                            "EXCLUDE_CATEGORIES": "ÁRBOL CAÍDO".lower()})
    gone = expected["árbol caído"] + expected["Árbol Caído"]
    assert f"EXCLUDE_CATEGORIES left out {gone} request(s)" in "\n".join(dropped["_feedback"].messages)
    assert dropped["MATCHED"] + dropped["UNMATCHED"] == sum(expected.values()) - gone


def _streaming_city(path, n: int = 150_000):
    """A GeoPackage of ``n`` requests over the sample precincts (three Arrow batches and more): categories that
    first appear in later batches, NULL and empty categories, NULL dates and flags, and features without
    geometry."""
    from osgeo import ogr, osr

    sample = ogr.Open(str(SAMPLE))  # kept open while its layer is used
    x0, x1, y0, y1 = sample.GetLayerByName("precincts").GetExtent()
    rng = np.random.default_rng(16)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layer = ds.CreateLayer("requests", srs, ogr.wkbPoint)
    for name, kind in (("category", ogr.OFTString), ("created_at", ogr.OFTDateTime),
                       ("city_initiated", ogr.OFTInteger)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    xs = rng.uniform(x0 - 0.01, x1 + 0.01, n)
    ys = rng.uniform(y0 - 0.01, y1 + 0.01, n)
    names = ["Noise", "Rodent", "Graffiti", "", None, "Pothole"]
    layer.StartTransaction()
    for i in range(n):
        feat = ogr.Feature(layer.GetLayerDefn())
        if i % 997:
            feat.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({xs[i]} {ys[i]})"))
        name = names[i % len(names)] if i < 70_000 else ("Late Arrival" if i % 3 == 0 else f"Later {i % 4}")
        if name is not None:
            feat.SetField("category", name)
        if i % 13:
            feat.SetField("created_at", f"2024/0{1 + i % 6}/1{i % 10} 10:00:00")
        if i % 11:
            feat.SetField("city_initiated", int(i % 5 == 0))
        layer.CreateFeature(feat)
    layer.CommitTransaction()
    ds = None


@pytest.mark.parametrize("share_at", [0, 10**6])
def test_streamed_blocks_give_what_the_whole_read_gives(run_alg, tmp_path, monkeypatch, share_at):
    """#16: precinctstats tallies the requests a block at a time as GDAL reads them (PointStream), never
    holding them all. Over several Arrow batches, with categories that first appear in later batches, NULLs,
    features without geometry, a date range, EXCLUDE_CATEGORIES and RESIDENT_ONLY, every output value and every
    count reported is what the whole per-feature read gives: whether the reading thread locates the blocks
    (as it does while the tally lags behind; SHARE_AT 0: every block once the lookup is built) or never does."""
    import threading

    from qgis.core import QgsProcessingFeatureSourceDefinition
    from qgis.PyQt.QtCore import QDate

    from civic311.processing import layerio
    from civic311.processing.core.geometry import PolygonLookup

    monkeypatch.setattr(layerio.PointStream, "SHARE_AT", share_at)
    assign, callers = PolygonLookup.assign, []

    def recorded(self, *args, **kwargs):
        callers.append(threading.current_thread().name)
        return assign(self, *args, **kwargs)

    monkeypatch.setattr(PolygonLookup, "assign", recorded)

    path = tmp_path / "stream.gpkg"
    _streaming_city(path)
    batches = []
    original = layerio._ogr_point_batches

    def counted(*args, **kwargs):
        for batch in original(*args, **kwargs):
            if batches:  # from the second batch on, read once the first has been located (so the lookup is set)
                for _ in range(1000):
                    if callers:
                        break
                    threading.Event().wait(0.01)
            batches.append(len(batch[0]))
            yield batch

    monkeypatch.setattr(layerio, "_ogr_point_batches", counted)
    params = {**BASE, "PRECINCTS": f"{SAMPLE}|layername=precincts", "TOP_CATEGORIES": 10, "SUPPRESS_BELOW": 3,
              "START_DATE": QDate(2024, 2, 1), "END_DATE": QDate(2024, 5, 31), "EXCLUDE_CATEGORIES": "rodent",
              "RESIDENT_ONLY": True}
    fast = run_alg(ALG, {**params, "REQUESTS": f"{path}|layername=requests"})
    assert len(batches) >= 3 and sum(batches) == 150_000  # streamed, in several blocks
    by_reader = callers.count("civic311-producer")
    assert len(callers) == len(batches) and by_reader == (len(batches) - 1 if share_at == 0 else 0)
    slow = run_alg(ALG, {**params, "REQUESTS": QgsProcessingFeatureSourceDefinition(
        f"{path}|layername=requests", featureLimit=10**9)})  # a feature limit takes the per-feature read
    assert len(batches) >= 3 and sum(batches) == 150_000  # the whole read did not go through the stream
    rows = [[f.attributes() for f in res["OUTPUT"].getFeatures()] for res in (fast, slow)]
    assert rows[0] == rows[1]
    assert (fast["MATCHED"], fast["UNMATCHED"]) == (slow["MATCHED"], slow["UNMATCHED"])
    assert fast["MATCHED"] == sum(f["requests"] for f in fast["OUTPUT"].getFeatures()) > 10_000
    counts = [[m for m in res["_feedback"].messages if "request" in m] for res in (fast, slow)]
    assert counts[0] == counts[1] and any("151 had no location" in m for m in counts[0])
    names = [f.name() for f in fast["OUTPUT"].fields()]
    assert "cat_late_arrival" in names and "cat_rodent" not in names and "cat_none" in names


def test_cancelling_while_the_stream_reads_ahead_stops_its_reader(run_alg, tmp_path, monkeypatch):
    """GDAL reads REQUESTS ahead in a worker thread while the blocks are counted: cancelling after the first
    block ends the run and stops the reader thread, not left running (nor blocked on a full queue)."""
    import threading

    from qgis.core import QgsProcessingFeedback

    from civic311.processing.layerio import PointStream

    monkeypatch.setattr(PointStream, "AHEAD", 1)  # the reader waits on a full queue when the run is cancelled
    path = tmp_path / "stream.gpkg"
    _streaming_city(path)

    class CancelAtFirstBlock(QgsProcessingFeedback):
        def setProgress(self, progress):  # noqa: N802 - QGIS API
            super().setProgress(progress)
            if progress > 20:
                self.cancel()

    try:
        result = run_alg(ALG, {**BASE, "REQUESTS": f"{path}|layername=requests",
                               "PRECINCTS": f"{SAMPLE}|layername=precincts"}, feedback=CancelAtFirstBlock())
    except QgsProcessingException:
        result = {}
    assert not result.get("OUTPUT")
    assert not [t for t in threading.enumerate() if t.name == "civic311-producer"]


def test_a_category_field_of_ids_is_refused_by_name(run_alg, monkeypatch):
    """CATEGORY_FIELD naming a field of ids (a distinct value per request) would need a count per precinct and
    value (4,000 precincts x 10 million ids): it is an error naming the field, before the counts are built."""
    from civic311.processing.algorithms import precinctstats

    monkeypatch.setattr(precinctstats, "MAX_CATEGORIES", 50)
    points = [(-87.695 + (i % 20) * 0.0005, 41.805 + (i // 20) * 0.0005, None, f"SR-{i}") for i in range(60)]
    layer = memory_points(points)
    with pytest.raises(QgsProcessingException, match="category has more than 50 distinct values"):
        run_alg(ALG, {**BASE, "REQUESTS": layer, "PRECINCTS": grid_precincts(), "CATEGORY_FIELD": "category"})
    fine = run_alg(ALG, {**BASE, "REQUESTS": memory_points(points[:50]), "PRECINCTS": grid_precincts(),
                         "CATEGORY_FIELD": "category", "TOP_CATEGORIES": 3})
    assert fine["MATCHED"] == 50


def test_geopackage_output_copied_in_sqlite_holds_what_the_feature_path_writes(run_alg, tmp_path, monkeypatch):
    """Valid GeoPackage precincts to a new GeoPackage: the precincts are copied inside SQLite with the computed
    columns joined by fid, and hold the same fields, values (NULL included), geometries and replaced input field
    as the feature-by-feature output; precincts that had to be repaired are written feature by feature, as
    repaired."""
    from osgeo import gdal, ogr

    from civic311.processing import gpkgwriter

    valid = tmp_path / "valid.gpkg"
    # the sample's precincts less its two invalid ones, with the feature id column named as ArcGIS names it (it
    # is a field to QGIS, kept by name), a field the computed one replaces, and a quoted name
    gdal.VectorTranslate(str(valid), str(SAMPLE), layers=["precincts"], layerName="precincts",
                         where="ward_prec NOT IN ('41001', '41004')", layerCreationOptions=["FID=OBJECTID"])
    ds = ogr.Open(str(valid), 1)
    ds.GetLayer(0).CreateField(ogr.FieldDefn("Requests", ogr.OFTInteger))
    ds.GetLayer(0).CreateField(ogr.FieldDefn('we"ird\'name', ogr.OFTString))
    ds = None
    copies = []
    original = gpkgwriter.copy_with_columns
    monkeypatch.setattr(gpkgwriter, "copy_with_columns", lambda *a, **k: copies.append(a[1]) or original(*a, **k))
    params = {**BASE, "REQUESTS": f"{SAMPLE}|layername=requests", "PRECINCTS": f"{valid}|layername=precincts",
              "TOP_CATEGORIES": 10, "SUPPRESS_BELOW": 3}
    memory = run_alg(ALG, params)
    copied = run_alg(ALG, {**params, "OUTPUT": str(tmp_path / "stats.gpkg")})
    assert copies == [(str(tmp_path / "stats.gpkg"), "stats")]
    for res in (memory, copied):
        assert "Input field Requests is replaced" in "\n".join(res["_feedback"].messages)
    layer = QgsVectorLayer(copied["OUTPUT"], "stats", "ogr")
    ref = memory["OUTPUT"]
    assert [f.name() for f in layer.fields()] == [f.name() for f in ref.fields()]
    assert layer.fields()[0].name() == "OBJECTID" and layer.fields().lookupField('we"ird\'name') >= 0
    assert [f.type() for f in layer.fields()] == [f.type() for f in ref.fields()]
    assert layer.featureCount() == ref.featureCount() == 1289
    nulls = 0
    mine = features(layer)
    for key, want in features(ref).items():
        got = mine[key]
        for name in [f.name() for f in ref.fields()]:
            a, b = got[name], want[name]
            if b is None or str(b) == "NULL":
                nulls += 1
                assert a is None or str(a) == "NULL", (key, name)
            else:
                assert a == pytest.approx(b) if isinstance(b, float) else a == b, (key, name)
        assert got.geometry().equals(want.geometry()), key
    assert nulls > 1000  # suppressed counts and empty precincts' rates: NULL on both paths
    assert layer.renderer() is not None and layer.renderer().type() == "graduatedSymbol"
    # the sample's own precincts: two are repaired, so the output is written feature by feature, as repaired
    repaired = run_alg(ALG, {**params, "PRECINCTS": f"{SAMPLE}|layername=precincts",
                             "OUTPUT": str(tmp_path / "repaired.gpkg")})
    assert len(copies) == 1
    out = features(QgsVectorLayer(repaired["OUTPUT"], "r", "ogr"))
    assert out["41001"].geometry().isGeosValid() and out["41004"].geometry().isGeosValid()
