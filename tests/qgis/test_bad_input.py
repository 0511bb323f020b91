# SPDX-License-Identifier: GPL-2.0-or-later
"""Bad input and the desktop's settings: misspelt fields, invalid polygons under the default invalid-geometry
check, reversed date ranges (issue #15, first part)."""

from __future__ import annotations

import pytest
from qgis.core import (
    QgsApplication,
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterVectorLayer,
)

from conftest import SAMPLE

TEST_EXPORT = SAMPLE.parents[2] / "tests" / "data" / "imports" / "boston_wkt.csv"
LAYERS = {"point": f"{SAMPLE}|layername=requests", "polygon": f"{SAMPLE}|layername=precincts"}


def parent_layer(definition) -> str:
    types = definition.dataTypes() if hasattr(definition, "dataTypes") else []
    polygon = {QgsProcessing.SourceType.TypeVectorPolygon}
    return LAYERS["polygon"] if set(types) == polygon else LAYERS["point"]


def field_parameters(plugin):
    reg = QgsApplication.processingRegistry()
    for alg in reg.providerById("civic311").algorithms():
        if not hasattr(alg, "check_field_parameters"):
            continue  # the shipped model: its children check their own fields
        for definition in alg.parameterDefinitions():
            if isinstance(definition, QgsProcessingParameterField) and definition.parentLayerParameterName():
                parent = alg.parameterDefinition(definition.parentLayerParameterName())
                if isinstance(parent, (QgsProcessingParameterFeatureSource, QgsProcessingParameterVectorLayer)):
                    yield alg, definition, parent


def test_every_field_parameter_of_every_algorithm_refuses_an_absent_field(plugin):
    """lookupField returned −1 and attributes()[-1] read the last column: VOTERS_FIELD=voters computed rates per
    1,000 ballots. Now every field parameter naming an absent field stops the run, naming it."""
    checked = []
    for alg, definition, parent in field_parameters(plugin):
        instance = alg.create()
        context = QgsProcessingContext()
        params = {parent.name(): parent_layer(parent),
                  definition.name(): ["no_such_field"] if definition.allowMultiple() else "no_such_field"}
        with pytest.raises(QgsProcessingException, match=rf"{parent.name()} has no field 'no_such_field' "
                                                         rf"\({definition.name()}\)\. Its fields: "):
            instance.check_field_parameters(params, context)
        checked.append(f"{alg.id()}:{definition.name()}")
    assert len(checked) >= 25 and "civic311:precinctstats:PRECINCT_ID_FIELD" in checked


def test_absent_precinct_id_and_voters_fields_through_processing(run_alg):
    base = {"REQUESTS": LAYERS["point"], "PRECINCTS": LAYERS["polygon"], "PRECINCT_ID_FIELD": "ward_prec",
            "OUTPUT": "memory:"}
    with pytest.raises(QgsProcessingException, match=r"PRECINCTS has no field 'precinct_no' \(PRECINCT_ID_FIELD\)"):
        run_alg("civic311:precinctstats", {**base, "PRECINCT_ID_FIELD": "precinct_no"})
    with pytest.raises(QgsProcessingException, match=r"has no field 'voters' \(VOTERS_FIELD\).*registered_voters"):
        run_alg("civic311:precinctstats", {**base, "VOTERS_FIELD": "voters"})


def test_end_date_before_start_date_is_refused(run_alg):
    with pytest.raises(QgsProcessingException, match="END_DATE is before START_DATE"):
        run_alg("civic311:precinctstats", {"REQUESTS": LAYERS["point"], "PRECINCTS": LAYERS["polygon"],
                                           "PRECINCT_ID_FIELD": "ward_prec", "START_DATE": "2018-12-01",
                                           "END_DATE": "2018-10-01", "OUTPUT": "memory:"})


@pytest.mark.parametrize("alg,params", [
    ("civic311:transitaccess", {"INPUT": LAYERS["polygon"], "STOPS": f"{SAMPLE}|layername=stops",
                                "OUTPUT": "memory:"}),
    ("civic311:outreachpriority", {"INPUT": LAYERS["polygon"], "OUTPUT": "memory:"}),
    ("civic311:optimizedhotspots", {"INPUT": LAYERS["point"], "BOUNDARY": LAYERS["polygon"], "PERMUTATIONS": 0,
                                    "OUTPUT": "memory:"}),
])
def test_the_desktop_invalid_geometry_check_does_not_stop_the_run(plugin, alg, params):
    """The sample has two invalid precincts (41001, 41004). With the desktop's 'stop on invalid geometry' these
    algorithms aborted (and on 3.22's main thread corrupted the interpreter); now they run, and the context's
    setting is restored afterwards."""
    import processing

    context = QgsProcessingContext()
    context.setInvalidGeometryCheck(QgsFeatureRequest.GeometryAbortOnInvalid)
    result = processing.run(alg, params, context=context, feedback=QgsProcessingFeedback())
    layer = result["OUTPUT"] if not isinstance(result["OUTPUT"], str) else context.getMapLayer(result["OUTPUT"])
    assert layer is not None and layer.featureCount() > 0
    assert context.invalidGeometryCheck() == QgsFeatureRequest.GeometryAbortOnInvalid


def gpkg_with_nulls(path):
    """40 sample requests in a GeoPackage, 8 with a NULL created_at and a NULL weight."""
    from osgeo import ogr, osr

    sample = ogr.Open(str(SAMPLE))  # kept: a layer dies with its dataset
    src = sample.GetLayer("requests")
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    sr = osr.SpatialReference()
    sr.ImportFromEPSG(4326)
    out = ds.CreateLayer("requests", sr, ogr.wkbPoint)
    for name, kind in (("request_id", ogr.OFTString), ("created_at", ogr.OFTDateTime), ("category", ogr.OFTString),
                       ("weight", ogr.OFTReal)):
        out.CreateField(ogr.FieldDefn(name, kind))
    for i, feat in enumerate(src):
        if i == 40:
            break
        f = ogr.Feature(out.GetLayerDefn())
        f["request_id"], f["category"] = feat["request_id"], feat["category"]
        if i % 5:
            f["created_at"] = feat["created_at"]
            f["weight"] = 2.0
        f.SetGeometry(feat.GetGeometryRef().Clone())
        out.CreateFeature(f)
    ds = None
    return f"{path}|layername=requests"


def test_null_dates_and_numbers_stay_null_through_the_bulk_reader(run_alg, tmp_path):
    """GDAL's Arrow stream without masks read a NULL created_at as 1970-01-01 (categorytrends spanned 2,555
    periods; precinctstats' date filter kept null-dated rows) and a NULL number as 0."""
    import numpy as np

    from civic311.processing.layerio import _read_points_ogr

    uri = gpkg_with_nulls(tmp_path / "nulls.gpkg")
    x, _, attrs, _ = _read_points_ogr(str(tmp_path / "nulls.gpkg"), "requests", ["created_at", "weight"])
    assert len(x) == 40
    assert int(np.isnat(attrs["created_at"]).sum()) == 8 and int(np.isnan(attrs["weight"]).sum()) == 8
    trends = run_alg("civic311:categorytrends", {"REQUESTS": uri, "CELL_SIZE": 2000, "INTERVAL": 2,
                                                 "OUTPUT": "memory:"})
    assert trends["PERIODS"] <= 3
    stats = run_alg("civic311:precinctstats", {"REQUESTS": uri, "PRECINCTS": LAYERS["polygon"],
                                               "PRECINCT_ID_FIELD": "ward_prec", "START_DATE": "2018-01-01",
                                               "END_DATE": "2018-12-31", "OUTPUT": "memory:"})
    assert stats["MATCHED"] == 32  # the 8 undated requests are outside an explicit date range


def test_distances_across_the_antimeridian(run_alg):
    """Fiji-like places on both sides of ±180°: the metric CRS was centred on the min/max extent (longitude 0),
    off by up to 177 %; it is now centred on the data's circular mean longitude."""
    from qgis.core import QgsDistanceArea, QgsFeature, QgsGeometry, QgsPointXY, QgsProject, QgsVectorLayer

    places = QgsVectorLayer("Point?crs=EPSG:4326&field=name:string", "p", "memory")
    stops = QgsVectorLayer("Point?crs=EPSG:4326&field=stop_id:string", "s", "memory")
    for layer, rows in ((places, [("a", 179.98, -16.5), ("b", -179.98, -16.51), ("c", 179.5, -16.8)]),
                        (stops, [("s1", -179.99, -16.5), ("s2", 179.9, -16.9)])):
        feats = []
        for name, lon, lat in rows:
            f = QgsFeature(layer.fields())
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(lon, lat)))
            f.setAttributes([name])
            feats.append(f)
        layer.dataProvider().addFeatures(feats)
    out = {f["name"]: f for f in run_alg("civic311:transitaccess", {"INPUT": places, "STOPS": stops,
                                                                    "OUTPUT": "memory:"})["OUTPUT"].getFeatures()}
    d = QgsDistanceArea()
    d.setSourceCrs(places.crs(), QgsProject.instance().transformContext())
    d.setEllipsoid("WGS84")
    stop_at = {f["stop_id"]: f.geometry().asPoint() for f in stops.getFeatures()}
    for f in places.getFeatures():
        got = out[f["name"]]
        expected = d.measureLine(f.geometry().asPoint(), stop_at[got["stop_id"]])
        assert got["stop_m"] == pytest.approx(expected, rel=0.005), f["name"]
    assert out["a"]["stop_id"] == "s1" and out["a"]["stop_m"] < 5000  # the stop across the line is the nearest


def test_bad_user_preset_entries_are_skipped_and_named(plugin, tmp_path, monkeypatch):
    """One malformed entry made `qgis_process list` show no civic311 algorithm: it is now skipped with a
    message naming it, and the good entries (and the built-in presets) stay."""
    import json

    from civic311.processing import presets
    from civic311.processing.algorithms.fetchrequests import FetchRequests

    path = tmp_path / "presets.json"
    good = {"name": "My town", "api": "socrata", "base_url": "https://data.example.org", "dataset": "abcd-1234"}
    path.write_text(json.dumps({"presets": [{"api": "socrata"}, ["a", "b"], good,
                                            {"name": "Bad map", "api": "ckan", "base_url": "https://x",
                                             "field_map": ["request_id"]}]}))
    monkeypatch.setattr(presets, "user_presets_path", lambda: path)
    loaded = presets.load_presets()
    bundled = json.loads(presets.BUNDLED.read_text())["presets"]
    assert loaded == bundled + [good]
    assert presets.PROBLEMS == [f"{path}: preset 1 is skipped: no text 'name'.",
                                f"{path}: preset 2 is skipped: list instead of an object.",
                                f"{path}: preset 4 ('Bad map') is skipped: 'field_map' is not an object of text "
                                "values."]
    alg = FetchRequests()
    alg.initAlgorithm()
    assert alg.parameterDefinition("PRESET").options()[-1] == "My town"
    path.write_text("{not json")
    assert presets.load_presets() == bundled and "could not be read" in presets.PROBLEMS[0]


def test_duplicate_precinct_ids_are_named(run_alg):
    res = run_alg("civic311:precinctstats", {"REQUESTS": LAYERS["point"], "PRECINCTS": LAYERS["polygon"],
                                             "PRECINCT_ID_FIELD": "ward", "OUTPUT": "memory:"})
    warning = next(m for m in res["_feedback"].messages if "appear more than once" in m)
    assert warning.startswith("WARNING 50 precinct id(s) of ward appear more than once") and " 1, 2, 3" in warning


HOSTILE = ['a"b', 'x", (SELECT group_concat(name) FROM sqlite_master) AS "y', "O'Brien"]


def test_hostile_field_layer_and_file_names_are_identifiers_not_sql(run_alg, tmp_path):
    """A field named a"b gave OperationalError; a crafted name injected a sub-select into the copy; an output
    called O'Hare.gpkg silently lost its spatial index. Every identifier is now quoted."""
    import sqlite3

    from osgeo import ogr, osr
    from qgis.core import QgsVectorLayer

    src = tmp_path / "places.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(src))
    sr = osr.SpatialReference()
    sr.ImportFromEPSG(4326)
    layer = ds.CreateLayer('pl"aces', sr, ogr.wkbPoint)
    for name in HOSTILE:
        layer.CreateField(ogr.FieldDefn(name, ogr.OFTString))
    for i in range(20):
        f = ogr.Feature(layer.GetLayerDefn())
        for name in HOSTILE:
            f[name] = f"{name}-{i}"
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({-87.65 + i / 1000} {41.88 + i / 2000})"))
        layer.CreateFeature(f)
    ds = None
    out = tmp_path / "O'Hare.gpkg"
    run_alg("civic311:transitaccess", {"INPUT": f"{src}|layername=pl\"aces", "STOPS": f"{SAMPLE}|layername=stops",
                                       "OUTPUT": str(out)})
    result = QgsVectorLayer(str(out), "o", "ogr")
    assert result.isValid() and result.featureCount() == 20
    names = [f.name() for f in result.fields()]
    assert all(name in names for name in HOSTILE)
    for feat in result.getFeatures():
        assert all(feat[name].startswith(name + "-") for name in HOSTILE)  # the values, not sqlite_master
    with sqlite3.connect(out) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert any(t.startswith("rtree_") for t in tables)  # the spatial index is there
    quoted = tmp_path / 'a"b.gpkg'
    run_alg("civic311:importrequests", {"INPUT": str(TEST_EXPORT), "OUTPUT": str(quoted)})
    assert QgsVectorLayer(str(quoted), "q", "ogr").featureCount() == 10
    imported = tmp_path / "O'Hare requests.gpkg"
    run_alg("civic311:importrequests", {"INPUT": str(TEST_EXPORT), "OUTPUT": str(imported)})
    with sqlite3.connect(imported) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert "O'Hare requests" in tables and any(t.startswith("rtree_") for t in tables)


@pytest.mark.parametrize("key,alg", [("OUTPUT", "civic311:precinctstats"), ("REPORT", "civic311:turnoutregression")])
def test_an_output_in_a_missing_folder_fails_before_any_work(run_alg, tmp_path, key, alg):
    missing = tmp_path / "no" / "such" / "folder"
    params = {"precinctstats": {"REQUESTS": LAYERS["point"], "PRECINCTS": LAYERS["polygon"],
                                "PRECINCT_ID_FIELD": "ward_prec", "OUTPUT": "memory:"},
              "turnoutregression": {"INPUT": LAYERS["polygon"], "TURNOUT_FIELD": "registered_voters",
                                    "EXPLANATORY_FIELDS": ["ballots_cast"], "OUTPUT": "memory:",
                                    "REPORT": str(tmp_path / "r.html")}}[alg.split(":")[1]]
    params[key] = str(missing / ("out.gpkg" if key == "OUTPUT" else "report.html"))
    with pytest.raises(QgsProcessingException, match=rf"{key}: the folder .*folder does not exist"):
        run_alg(alg, params)


def test_precincts_without_geometry_are_left_out_and_named(run_alg):
    """A precinct without geometry got requests = 0, quintile 1 and entered the EB estimate; hot spots with K
    nearest neighbours raised ValueError. Now it is named, left out, and its fields are NULL."""
    from qgis.core import QgsFeature, QgsVectorLayer

    prec = QgsVectorLayer(LAYERS["polygon"], "p", "ogr").materialize(QgsFeatureRequest())
    hole = QgsFeature(prec.fields())
    hole.setAttributes([None, "99999", 99, 999, 1000, 400])
    prec.dataProvider().addFeatures([hole])
    base = {"REQUESTS": LAYERS["point"], "PRECINCTS": prec, "PRECINCT_ID_FIELD": "ward_prec",
            "VOTERS_FIELD": "registered_voters", "OUTPUT": "memory:"}
    with_hole = run_alg("civic311:precinctstats", base)
    without = run_alg("civic311:precinctstats", {**base, "PRECINCTS": LAYERS["polygon"]})
    assert any("1 precinct(s) have no geometry" in m and "99999" in m for m in with_hole["_feedback"].messages)
    rows = {f["ward_prec"]: f for f in with_hole["OUTPUT"].getFeatures()}
    assert all(str(rows["99999"][k]) == "NULL" for k in ("requests", "rate_1k", "rate_eb", "quintile"))
    same = {f["ward_prec"]: f["rate_eb"] for f in without["OUTPUT"].getFeatures()}
    assert all(rows[k]["rate_eb"] == pytest.approx(v) for k, v in same.items())  # the EB estimate is untouched
    hot = run_alg("civic311:hotspots", {"INPUT": with_hole["OUTPUT"], "FIELD": "rate_eb", "NEIGHBOURS": 2, "K": 8,
                                        "PERMUTATIONS": 0, "OUTPUT": "memory:"})
    out = {f["ward_prec"]: f for f in hot["OUTPUT"].getFeatures()}
    assert len(out) == 1292 and str(out["99999"]["gi_z"]) == "NULL"
    assert any("without geometry are left out of the statistics" in m and "99999" in m
               for m in hot["_feedback"].messages)


def test_cancel_during_permutations_is_honoured_quickly(plugin):
    """A 25 s permutation run ignored Cancel; it now stops between blocks."""
    import threading
    import time

    import processing

    feedback = QgsProcessingFeedback()
    threading.Timer(0.5, feedback.cancel).start()
    start = time.monotonic()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        processing.run("civic311:localmoran", {"INPUT": LAYERS["polygon"], "FIELD": "registered_voters",
                                               "NEIGHBOURS": 3, "DISTANCE": 20_000, "PERMUTATIONS": 99_999,
                                               "OUTPUT": "memory:"}, feedback=feedback)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("coords,ok", [((-87.63, 41.88), True), ((1_176_000.0, 1_900_000.0), False)])
def test_layers_without_crs(run_alg, coords, ok):
    """No CRS used to mean 'lon/lat' silently: now assumed only when the coordinates fit, with a warning."""
    from qgis.core import QgsCoordinateReferenceSystem, QgsFeature, QgsGeometry, QgsPointXY, QgsVectorLayer

    layer = QgsVectorLayer("Point?field=name:string", "nocrs", "memory")
    layer.setCrs(QgsCoordinateReferenceSystem())  # memory layers default to EPSG:4326
    assert not layer.crs().isValid()
    feats = []
    for i in range(5):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(coords[0] + i * 0.001, coords[1])))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    params = {"INPUT": layer, "STOPS": f"{SAMPLE}|layername=stops", "OUTPUT": "memory:"}
    if ok:
        res = run_alg("civic311:transitaccess", params)
        assert any("INPUT has no CRS" in m and "EPSG:4326 is assumed" in m for m in res["_feedback"].messages)
        assert all(f["stop_m"] < 1000 for f in res["OUTPUT"].getFeatures())  # downtown Chicago
    else:
        with pytest.raises(QgsProcessingException, match="INPUT has no CRS and its coordinates are not "
                                                         "longitude/latitude"):
            run_alg("civic311:transitaccess", params)


def test_cache_dir_that_is_a_file_or_unwritable_fails_before_any_download(run_alg, http_server, tmp_path):
    import os

    from portal_mock import Portal

    portal = Portal()
    url = http_server(portal.handle)
    a_file = tmp_path / "cache.txt"
    a_file.write_text("x")
    base = {"API": 0, "BASE_URL": url, "DATASET": "test-0311", "START_DATE": "2024-01-01", "END_DATE": "2024-01-31",
            "OUTPUT": "memory:"}
    with pytest.raises(QgsProcessingException, match="is a file, not a folder"):
        run_alg("civic311:fetchrequests", {**base, "CACHE_DIR": str(a_file)})
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: a folder under a file cannot be created either
            locked = a_file / "sub"
        with pytest.raises(QgsProcessingException, match="cannot be written|is a file"):
            run_alg("civic311:fetchrequests", {**base, "CACHE_DIR": str(locked)})
    finally:
        os.chmod(tmp_path / "locked", 0o700)
    assert not portal.log  # nothing was downloaded


def test_text_columns_decode_exactly_even_when_their_folded_keys_collide():
    """#16: text columns are coded through their bytes folded into one integer per row. Two different values
    built to fold to the same integer must still decode to themselves (each row is compared with the value its
    key found); masked rows are NULL, '' is NULL; codes hold from batch to batch whatever the batch's width."""
    import numpy as np

    from civic311.processing.core.textcodes import _MULTIPLIERS, TextCodes
    from civic311.processing.layerio import _decode_strings, _string_codes

    m0, m1 = int(_MULTIPLIERS[0]), int(_MULTIPLIERS[1])
    w1 = 0x0101010101010101  # (no trailing zero byte: numpy's bytes strip them)
    w0 = (-w1 * m1 * pow(m0, -1, 2**64)) % 2**64  # w0 * m0 + w1 * m1 == 0 (mod 2**64): the key of 16 zero bytes
    a, b = b"", w0.to_bytes(8, "little") + w1.to_bytes(8, "little")
    values = np.array([a, b, b"caf\xc3\xa9", b, a, b"caf\xc3\xa9 ", b"x" * 16], dtype="S16")
    text_b = b.decode("utf-8", "replace")
    decoded = _decode_strings(np.ma.masked_array(values, [0, 0, 1, 0, 0, 0, 0]))
    assert decoded.tolist() == [None, text_b, None, text_b, None, "café ", "x" * 16]
    table = TextCodes()
    first = _string_codes(values, table)
    second = _string_codes(np.array([b"x" * 16, b"new"], dtype="S5"), table)  # widths differ per batch
    again = _string_codes(values, table)  # now through the table of values seen, the shared key included

    def labelled(codes):
        return [table.labels[c] if c >= 0 else None for c in codes]

    assert labelled(first) == [None, text_b, "café", text_b, None, "café ", "x" * 16]
    assert list(again) == list(first) and len(table.labels) == 6 == len(set(table.labels))
    assert labelled(second) == ["xxxxx", "new"]
