# SPDX-License-Identifier: GPL-2.0-or-later
"""The outreach pipeline on the bundled sample: every intermediate layer, styled, in one GeoPackage."""

import pytest
from qgis.core import QgsVectorLayer

from conftest import SAMPLE


@pytest.fixture(scope="module")
def pipeline(run_alg, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipe") / "pipeline.gpkg"

    def dest(name):
        return f"ogr:dbname='{out}' table=\"{name}\" (geom)"

    res = run_alg("civic311:outreachpipeline", {
        "REQUESTS": f"{SAMPLE}|layername=requests", "PRECINCTS": f"{SAMPLE}|layername=precincts",
        "PRECINCT_ID_FIELD": "ward_prec", "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast",
        "STOPS": f"{SAMPLE}|layername=stops", "POLLING_PLACES": f"{SAMPLE}|layername=polling_places",
        "POLLING_ID_FIELD": "name", "PERMUTATIONS": 99,
        "STATS_OUTPUT": dest("precinct_stats"), "HOTSPOTS_OUTPUT": dest("hotspots"), "ACCESS_OUTPUT": dest("access"),
        "PRIORITY_OUTPUT": dest("priority"), "ZONES_OUTPUT": dest("zone_requests"), "ZONES": dest("zones"),
        "ROUTES": dest("routes")})
    return res, out


def test_pipeline_writes_every_step(pipeline):
    res, out = pipeline
    assert res["MATCHED"] == 8283
    for name, count in (("precinct_stats", 1291), ("hotspots", 1291), ("access", 1291), ("priority", 1291)):
        layer = QgsVectorLayer(f"{out}|layername={name}", name, "ogr")
        assert layer.featureCount() == count, name
    priority = QgsVectorLayer(f"{out}|layername=priority", "p", "ogr")
    names = [f.name() for f in priority.fields()]
    for field in ("requests", "rate_eb", "gi_z", "gi_bin", "stop_m", "poll_m", "access_gap", "priority", "tier"):
        assert field in names
    top = [f for f in priority.getFeatures() if f["tier"] == 5]
    zone_req = QgsVectorLayer(f"{out}|layername=zone_requests", "z", "ogr")
    assert 0 < zone_req.featureCount() < 8304
    zones = QgsVectorLayer(f"{out}|layername=zones", "zones", "ogr")
    assert zones.featureCount() > 0 and max(f["radius_m"] for f in zones.getFeatures()) <= 400
    routes = QgsVectorLayer(f"{out}|layername=routes", "routes", "ogr")
    assert routes.featureCount() == zones.featureCount()
    assert len(top) >= 250


def test_pipeline_outputs_are_styled(pipeline):
    _, out = pipeline
    expected = {"precinct_stats": "quintile", "hotspots": "gi_bin", "access": "access_gap", "priority": "tier",
                "zones": "zone_id", "routes": "zone_id"}
    for name, attribute in expected.items():
        layer = QgsVectorLayer(f"{out}|layername={name}", name, "ogr")
        renderer = layer.renderer()
        if attribute == "zone_id":  # one legend entry, the colour data-defined from zone_id
            from qgis.core import QgsSymbolLayer

            prop = renderer.symbol().symbolLayer(0).dataDefinedProperties().property(
                QgsSymbolLayer.PropertyStrokeColor if name == "routes" else QgsSymbolLayer.PropertyFillColor)
            assert '"zone_id"' in prop.expressionString(), name
        else:
            assert renderer.classAttribute() == attribute, name
        assert "civic311" in layer.metadata().abstract(), name
