# SPDX-License-Identifier: GPL-2.0-or-later
"""Every output opens styled (memory layers, GeoPackages written headless, other formats) with metadata."""

import json

import pytest
from portal_mock import Portal
from qgis.core import QgsCategorizedSymbolRenderer, QgsGraduatedSymbolRenderer, QgsVectorLayer

from conftest import SAMPLE


@pytest.fixture(scope="module")
def stats_gpkg(run_alg, tmp_path_factory):
    path = tmp_path_factory.mktemp("styles") / "stats.gpkg"
    run_alg("civic311:precinctstats", {
        "REQUESTS": f"{SAMPLE}|layername=requests", "PRECINCTS": f"{SAMPLE}|layername=precincts",
        "PRECINCT_ID_FIELD": "ward_prec", "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast",
        "OUTPUT": str(path)})
    return path


def test_headless_geopackage_opens_styled_with_metadata(stats_gpkg):
    layer = QgsVectorLayer(str(stats_gpkg), "stats", "ogr")
    assert layer.isValid()
    renderer = layer.renderer()
    assert isinstance(renderer, QgsGraduatedSymbolRenderer) and renderer.classAttribute() == "quintile"
    assert [r.label() for r in renderer.ranges()][-1] == "5 – highest fifth"
    md = layer.metadata()
    assert "civic311:precinctstats" in md.abstract() and "Board of Election" in " ".join(md.rights())
    assert md.licenses()


def test_gi_bins_style_matches_the_data(run_alg, stats_gpkg, tmp_path):
    out = tmp_path / "gi.gpkg"
    run_alg("civic311:hotspots", {"INPUT": str(stats_gpkg), "FIELD": "rate_eb", "NEIGHBOURS": 0,
                                  "PERMUTATIONS": 0, "OUTPUT": str(out)})
    layer = QgsVectorLayer(str(out), "gi", "ogr")
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "gi_bin"
    labels = {str(c.value()): c.label() for c in renderer.categories()}
    assert labels["3"] == "Hot spot – 99 % confidence" and labels["-3"] == "Cold spot – 99 % confidence"
    present = {str(v) for v in layer.uniqueValues(layer.fields().lookupField("gi_bin"))}
    assert present <= set(labels)  # every value in the data has a class
    categories = renderer.categories()  # keep the copies alive while reading their symbols
    colours = {str(c.value()): c.symbol().color().name() for c in categories}
    assert colours["3"] == "#b2182b" and colours["-3"] == "#2166ac"


def test_memory_outputs_are_styled_and_shapefile_gets_a_qml(run_alg, stats_gpkg, tmp_path):
    res = run_alg("civic311:localmoran", {"INPUT": str(stats_gpkg), "FIELD": "rate_eb", "NEIGHBOURS": 0,
                                          "PERMUTATIONS": 99, "OUTPUT": "memory:"})
    renderer = res["OUTPUT"].renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "lisa_q"
    shp = tmp_path / "priority.shp"
    run_alg("civic311:outreachpriority", {"INPUT": str(stats_gpkg), "OUTPUT": str(shp)})
    assert (tmp_path / "priority.qml").exists() and (tmp_path / "priority.qmd").exists()
    layer = QgsVectorLayer(str(shp), "p", "ogr")
    assert layer.renderer().classAttribute() == "tier"


def test_fetch_metadata_names_the_portal_and_never_the_token(run_alg, http_server, tmp_path):
    from qgis.PyQt.QtCore import QDate

    portal = Portal()
    url = http_server(portal.handle)
    out = tmp_path / "requests.gpkg"
    run_alg("civic311:fetchrequests", {
        "PRESET": 0, "API": 0, "BASE_URL": url, "DATASET": "test-0311", "START_DATE": QDate(2024, 1, 1),
        "END_DATE": QDate(2024, 1, 31), "CACHE_DIR": str(tmp_path / "c"), "OUTPUT": str(out),
        "FIELD_MAP": json.dumps({"request_id": "sr_number", "created_at": "created_date", "category": "sr_type",
                                 "latitude": "latitude", "longitude": "longitude"})})
    layer = QgsVectorLayer(str(out), "r", "ogr")
    md = layer.metadata()
    assert "Socrata SODA 127.0.0.1" in md.abstract() and "Fetched at" in md.abstract()
    assert "created 2024-01-01 to 2024-01-31" in md.abstract()
    assert isinstance(layer.renderer(), QgsCategorizedSymbolRenderer)
    assert layer.renderer().classAttribute() == "category"


def test_two_outputs_and_two_runs_in_one_geopackage_keep_their_metadata(run_alg, tmp_path):
    """gpkg_contents.identifier is unique: each layer gets its own (the metadata used to be lost with 'UNIQUE
    constraint failed')."""
    import sqlite3

    gpkg = tmp_path / "all.gpkg"
    base = {"REQUESTS": f"{SAMPLE}|layername=requests", "ZONES": f"{SAMPLE}|layername=precincts",
            "ZONE_ID_FIELD": "ward_prec", "INTERVAL": 1, "BASELINE": 3}
    runs = [run_alg("civic311:categorytrends", {**base, "OUTPUT": f"ogr:dbname='{gpkg}' table=\"trends\" (geom)",
                                                "TABLE": f"ogr:dbname='{gpkg}' table=\"trend_table\""}),
            run_alg("civic311:categorytrends", {**base, "OUTPUT": f"ogr:dbname='{gpkg}' table=\"again\" (geom)"})]
    assert not any("Could not store" in m for r in runs for m in r["_feedback"].messages)
    with sqlite3.connect(gpkg) as con:
        ids = dict(con.execute("select table_name, identifier from gpkg_contents"))
    assert ids["trends"] == "civic311:categorytrends:OUTPUT:trends"
    assert ids["trend_table"] == "civic311:categorytrends:TABLE:trend_table"
    assert ids["again"] == "civic311:categorytrends:OUTPUT:again"
    for table in ("trends", "trend_table", "again"):
        layer = QgsVectorLayer(f"{gpkg}|layername={table}", table, "ogr")
        assert "civic311:categorytrends" in layer.metadata().abstract(), table
