# SPDX-License-Identifier: GPL-2.0-or-later
"""The GeoPackage copy-and-join writer: computed columns delivered in pieces, in or out of feature-id order."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
from osgeo import ogr, osr

from civic311.processing.gpkgwriter import BULK_PAGE_SIZE, computed_ahead, copy_with_columns
from conftest import SAMPLE, SHARED

NEW = [("label", "string"), ("metres", "double"), ("count", "int")]


@pytest.fixture()
def source(tmp_path):
    """1,000 points with gaps in their feature ids, and two features without geometry."""
    path = str(tmp_path / "src.gpkg")
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32616)
    lyr = ds.CreateLayer("places", srs, ogr.wkbPoint, options=["FID=fid"])
    lyr.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for i in range(1000):
        feat = ogr.Feature(lyr.GetLayerDefn())
        feat.SetFID(1 + 3 * i)
        feat.SetField("name", f"place {i}")
        if i not in (10, 500):
            feat.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({440000 + i} {4640000 + 2 * i})"))
        lyr.CreateFeature(feat)
    ds = None
    return path


def computed(fids):
    rng = np.random.default_rng(len(fids))
    label = np.array([f"s{f % 7}" for f in fids], dtype=object)
    label[::11] = None
    metres = rng.uniform(0, 900, len(fids))
    metres[::13] = np.nan
    return [label, metres, (fids % 5).astype(float)]


def rows(path, layer):
    con = sqlite3.connect(path)
    try:
        return con.execute(f'SELECT fid, geom, name, label, metres, "count" FROM "{layer}" ORDER BY fid').fetchall()
    finally:
        con.close()


def in_pieces(columns, sizes):
    start = 0
    for size in sizes:
        yield [col[start:start + size] for col in columns]
        start += size


def test_pieces_in_and_out_of_fid_order_write_what_one_piece_writes(source, tmp_path):
    fids = np.arange(1, 3000, 3)
    fids = np.delete(fids, [3, 700])  # two features get no computed values: their columns stay NULL
    columns = computed(fids)
    whole = str(tmp_path / "whole.gpkg")
    assert copy_with_columns((source, "places"), (whole, "whole"), fids, NEW, [columns]) == 1000
    expected = rows(whole, "whole")
    assert len(expected) == 1000 and expected[3][3:] == (None, None, None)
    written = dict(zip(fids.tolist(), zip(columns[0].tolist(), columns[1].tolist(), columns[2].tolist())))
    for fid, _, _, label, metres, count in expected:
        want = written.get(fid, (None, np.nan, None))
        assert label == want[0] and count == (None if want[2] is None else int(want[2]))
        assert (metres is None and np.isnan(want[1])) or metres == pytest.approx(want[1])

    pieces = str(tmp_path / "pieces.gpkg")
    assert copy_with_columns((source, "places"), (pieces, "pieces"), fids, NEW,
                             in_pieces(columns, [0, 1, 300, 0, 350, 347])) == 1000
    assert rows(pieces, "pieces") == expected
    order = np.random.default_rng(3).permutation(len(fids))  # not ascending: everything is joined at the end
    shuffled = str(tmp_path / "shuffled.gpkg")
    assert copy_with_columns((source, "places"), (shuffled, "shuffled"), fids[order], NEW,
                             in_pieces([c[order] for c in columns], [400, 598])) == 1000
    assert rows(shuffled, "shuffled") == expected
    con = sqlite3.connect(pieces)
    assert con.execute("PRAGMA page_size").fetchone()[0] == BULK_PAGE_SIZE
    assert con.execute("SELECT feature_count FROM gpkg_ogr_contents WHERE table_name = 'pieces'").fetchone()[0] == 1000
    con.close()


def test_a_failing_or_short_computation_raises_instead_of_writing_partial_columns(source, tmp_path):
    fids = np.arange(1, 3000, 3)
    columns = computed(fids)

    def failing():
        yield [c[:500] for c in columns]
        raise RuntimeError("KD-tree failed")

    with pytest.raises(RuntimeError, match="KD-tree failed"):
        copy_with_columns((source, "places"), (str(tmp_path / "a.gpkg"), "a"), fids, NEW, failing())
    with pytest.raises(ValueError, match="cover 500 of 1000"):
        copy_with_columns((source, "places"), (str(tmp_path / "b.gpkg"), "b"), fids, NEW,
                          in_pieces(columns, [500]))


def test_computed_ahead_keeps_order_and_stops_its_worker_when_the_consumer_stops():
    assert list(computed_ahead(range(50), lambda i: i * i)) == [i * i for i in range(50)]
    before = threading.active_count()
    ahead = computed_ahead(iter(range(1_000_000)), lambda i: i)
    assert [next(ahead) for _ in range(3)] == [0, 1, 2]
    ahead.close()  # the consumer gives up: the worker must not stay blocked on its hand-over
    assert threading.active_count() == before


def test_every_bulk_output_has_a_valid_packed_spatial_index(run_alg, tmp_path):
    """Outputs above 200,000 features used to go without a spatial index. Now every GeoPackage the plugin
    writes in bulk carries one, packed in one sorted pass: SQLite's rtreecheck() accepts it, QGIS sees it, and
    a window query through it returns exactly the features in the window."""
    import sqlite3

    import numpy as np
    from qgis.core import QgsFeatureRequest, QgsFeatureSource, QgsRectangle, QgsVectorLayer

    from civic311.processing.gpkgwriter import write_points

    rng = np.random.default_rng(5)
    n = 30_000
    x, y = -87.9 + rng.random(n) * 0.4, 41.6 + rng.random(n) * 0.4
    path = tmp_path / "points.gpkg"
    write_points(str(path), "pts", x, y, {"k": np.arange(n).astype(str)}, {"k": "string"})
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT rtreecheck('rtree_pts_geom')").fetchone()[0] == "ok"
        assert con.execute("SELECT count(*) FROM rtree_pts_geom").fetchone()[0] == n
    layer = QgsVectorLayer(f"{path}|layername=pts", "p", "ogr")
    assert layer.hasSpatialIndex() == QgsFeatureSource.SpatialIndexPresence.SpatialIndexPresent
    box = QgsRectangle(-87.7, 41.75, -87.65, 41.8)
    got = sorted(int(f["k"]) for f in layer.getFeatures(QgsFeatureRequest().setFilterRect(box)))
    want = np.flatnonzero((x >= -87.7) & (x <= -87.65) & (y >= 41.75) & (y <= 41.8)).tolist()
    assert got == want
    # a copy with computed columns (transitaccess GeoPackage to GeoPackage), and an import
    out = tmp_path / "access.gpkg"
    run_alg("civic311:transitaccess", {"INPUT": f"{path}|layername=pts", "STOPS": f"{SAMPLE}|layername=stops",
                                       "OUTPUT": str(out)})
    imported = tmp_path / "imported.gpkg"
    run_alg("civic311:importrequests", {"INPUT": str(SHARED / "external_exports" / "losangeles_myla311-2017.csv"),
                                        "OUTPUT": str(imported)})
    # a source without an index: the copy's index is built from the geometry blobs
    bare = tmp_path / "bare.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(bare))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    lyr = ds.CreateLayer("bare", srs, ogr.wkbPoint, options=["SPATIAL_INDEX=NO"])
    for i in range(500):
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({x[i]} {y[i]})"))
        lyr.CreateFeature(f)
    ds = None
    bare_out = tmp_path / "bare_access.gpkg"
    run_alg("civic311:transitaccess", {"INPUT": f"{bare}|layername=bare", "STOPS": f"{SAMPLE}|layername=stops",
                                       "OUTPUT": str(bare_out)})
    for gpkg, table, count in ((out, "access", n), (imported, "imported", 4216), (bare_out, "bare_access", 500)):
        with sqlite3.connect(gpkg) as con:
            assert con.execute(f"SELECT rtreecheck('rtree_{table}_geom')").fetchone()[0] == "ok"
            assert con.execute(f"SELECT count(*) FROM rtree_{table}_geom").fetchone()[0] == count
            triggers = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
            assert f"rtree_{table}_geom_insert" in triggers  # kept current by GDAL's triggers afterwards


@pytest.mark.parametrize("limit", [None, 999])
def test_rows_go_in_few_large_statements_in_order(monkeypatch, limit):
    """Regression for #16: 90 rows a statement let go of the GIL (and waited to get it back behind a busy thread)
    some 11,000 times a million rows; a statement now takes as many rows as SQLite's host-parameter limit allows,
    and the rest of a batch goes in one more. Values, NULLs and row order are kept, with 999 parameters too."""
    from civic311.processing import gpkgwriter

    if limit is not None:
        monkeypatch.setattr(gpkgwriter, "host_parameters", lambda con: limit)
    con = sqlite3.connect(":memory:")
    con.execute('CREATE TABLE "t q" (k INTEGER PRIMARY KEY, a TEXT, b REAL, c TEXT)')
    statements: list[str] = []
    con.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT") else None)
    n = 10_007
    a = [None if i % 7 == 0 else f"O'Brien \"{i}\"" for i in range(n)]
    b = [float(i) / 3 if i % 5 else None for i in range(n)]
    gpkgwriter.insert_rows(con, '"t q"', ["a", "b"], [a, b], {"c": "it's"})
    rows = con.execute('SELECT a, b, c FROM "t q" ORDER BY k').fetchall()
    assert rows == [(x, y, "it's") for x, y in zip(a, b)]
    per = gpkgwriter.host_parameters(con) // 2 if limit is None else 999 // 2
    assert len(statements) == -(-n // min(per, 4_000))
    if limit is None:
        assert gpkgwriter.host_parameters(con) >= 999 and len(statements) <= 3
    # a long text that every row shares goes into the statement as a literal: statements stay near a megabyte
    statements.clear()
    long = "x" * 20_000
    gpkgwriter.insert_rows(con, '"t q"', ["a"], [["y"] * 5_000], {"c": long})
    assert con.execute('SELECT count(*) FROM "t q" WHERE c = ?', (long,)).fetchone()[0] == 5_000
    assert max(len(sql) for sql in statements) < 1_100_000


def test_a_table_whose_columns_are_all_constant_or_null_keeps_its_rows(tmp_path):
    """Regression: a table chunk in which every column was one repeated text (a literal) or NULL throughout had
    no bound value left, and its rows were silently not written."""
    from civic311.processing.gpkgwriter import write_table

    path = str(tmp_path / "t.gpkg")
    rows = write_table(path, "t", {"zone": np.array(["Z'1"] * 3, dtype=object),
                                   "note": np.array([None] * 3, dtype=object)}, {"zone": "string", "note": "string"})
    con = sqlite3.connect(path)
    assert rows == 3 and con.execute('SELECT zone, note FROM "t"').fetchall() == [("Z'1", None)] * 3
    write_table(path, "u", {"n": np.array([np.nan, np.nan])}, {"n": "double"})
    assert con.execute('SELECT n FROM "u"').fetchall() == [(None,), (None,)]


def test_outputs_in_other_formats_get_a_spatial_index_too(run_alg, tmp_path):
    """Regression for #16 ("every layer civic311 writes carries a spatial index"): a Shapefile output used to be
    written without a .qix, and a memory output without an index. Both now get one; a GeoJSON output, which
    cannot hold one, is said in the log."""
    from qgis.core import QgsFeatureRequest, QgsFeatureSource, QgsRectangle, QgsVectorLayer

    present = QgsFeatureSource.SpatialIndexPresence.SpatialIndexPresent
    params = {"INPUT": f"{SAMPLE}|layername=requests", "STOPS": f"{SAMPLE}|layername=stops"}
    shp = tmp_path / "access.shp"
    run_alg("civic311:transitaccess", {**params, "OUTPUT": str(shp)})
    assert (tmp_path / "access.qix").exists()
    layer = QgsVectorLayer(str(shp), "a", "ogr")
    assert layer.hasSpatialIndex() == present
    # the index answers window queries exactly as a full scan does
    box = layer.extent()
    box = QgsRectangle(box.xMinimum(), box.yMinimum(), box.center().x(), box.center().y())
    by_index = sorted(f.id() for f in layer.getFeatures(QgsFeatureRequest().setFilterRect(box)))
    by_scan = sorted(f.id() for f in layer.getFeatures() if box.contains(f.geometry().asPoint()))
    assert by_index == by_scan and 0 < len(by_index) < layer.featureCount()
    memory = run_alg("civic311:transitaccess", {**params, "OUTPUT": "memory:"})["OUTPUT"]
    assert memory.featureCount() == layer.featureCount() and memory.hasSpatialIndex() == present
    res = run_alg("civic311:transitaccess", {**params, "OUTPUT": str(tmp_path / "access.geojson")})
    assert any("format without a spatial index" in m for m in res["_feedback"].messages)
