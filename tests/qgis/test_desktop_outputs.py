# SPDX-License-Identifier: GPL-2.0-or-later
"""As in the desktop: every algorithm with temporary (and file) outputs in a context with a project. Exactly one
layer to load per requested output, each one valid and styled by the plugin — no extra 'memory:…' entry that
the dialog reports as 'not correctly generated', no file output added twice."""

from __future__ import annotations

import pytest
from portal_mock import Portal
from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterVectorDestination,
    QgsProject,
    QgsVectorLayer,
)

from conftest import SAMPLE, SHARED, TEST_DATA

REQ, PREC = f"{SAMPLE}|layername=requests", f"{SAMPLE}|layername=precincts"
STOPS, POLLS = f"{SAMPLE}|layername=stops", f"{SAMPLE}|layername=polling_places"
T = QgsProcessing.TEMPORARY_OUTPUT
STATS = {"REQUESTS": REQ, "PRECINCTS": PREC, "PRECINCT_ID_FIELD": "ward_prec", "VOTERS_FIELD": "registered_voters",
         "BALLOTS_FIELD": "ballots_cast"}

CASES = {
    "importrequests": {"INPUT": str(TEST_DATA / "imports" / "boston_wkt.csv"), "REJECTED": T},
    "precinctstats": STATS,
    "hotspots": {"INPUT": PREC, "FIELD": "registered_voters", "PERMUTATIONS": 0},
    "localmoran": {"INPUT": PREC, "FIELD": "registered_voters", "PERMUTATIONS": 9},
    "optimizedhotspots": {"INPUT": REQ, "PERMUTATIONS": 0},
    "outreachpriority": {"INPUT": PREC},
    "turnoutregression": {"INPUT": PREC, "TURNOUT_FIELD": "ballots_cast", "EXPLANATORY_FIELDS": ["registered_voters"],
                          "PERMUTATIONS": 9},
    "transitaccess": {"INPUT": REQ, "STOPS": STOPS, "POLLING_PLACES": POLLS},
    "canvasszones": {"INPUT": REQ, "METHOD": 0, "ZONE_COUNT": 10, "ZONES": T, "ROUTES": T},
    "categorytrends": {"REQUESTS": REQ, "ZONES": PREC, "ZONE_ID_FIELD": "ward_prec", "INTERVAL": 1, "BASELINE": 3,
                       "TABLE": T},
    "emerginghotspots": {"REQUESTS": REQ, "ZONES": PREC, "ZONE_ID_FIELD": "ward_prec", "INTERVAL": 1,
                         "PERMUTATIONS": 9, "TABLE": T},
    "loadgtfsstops": {"INPUT": str(SHARED / "chicago_cta_gtfs_2024")},
    "outreachpipeline": {**STATS, "STOPS": STOPS, "POLLING_PLACES": POLLS, "POLLING_ID_FIELD": "name",
                         "PERMUTATIONS": 9},
}


def run_in_project(alg_id: str, params: dict, tmp_path):
    """As the toolbox dialog runs an algorithm: QgsProcessingAlgorithm.run, then the layers it asks to load."""
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    alg = QgsApplication.processingRegistry().algorithmById(alg_id)
    outputs = [d.name() for d in alg.destinationParameterDefinitions()
               if isinstance(d, (QgsProcessingParameterFeatureSink, QgsProcessingParameterVectorDestination))]
    full = {key: T for key in outputs if key not in params}
    full.update(params)
    # as the dialog passes them: output definitions that name the project to load into
    wanted = {key: value for key, value in full.items() if key in outputs}
    for key, value in wanted.items():
        full[key] = QgsProcessingOutputLayerDefinition(value, QgsProject.instance())
    if alg_id.endswith("turnoutregression"):
        full["REPORT"] = str(tmp_path / "report.html")
    instance = alg.create()
    result, ok = instance.run(full, context, QgsProcessingFeedback())
    assert ok, alg_id
    return alg, full, context, result


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_valid_styled_layer_to_load_per_output(plugin, tmp_path, name):
    alg, params, context, result = run_in_project(f"civic311:{name}", CASES[name], tmp_path)
    to_load = context.layersToLoadOnCompletion()
    names = sorted(details.outputName for details in to_load.values())
    requested = sorted(k for k, v in params.items() if isinstance(v, QgsProcessingOutputLayerDefinition))
    produced = [k for k in requested if result.get(k if name != "outreachpipeline" else k)]
    assert names == sorted(produced), (names, produced)
    for layer_id, details in to_load.items():
        layer = context.getMapLayer(layer_id)
        assert isinstance(layer, QgsVectorLayer) and layer.isValid(), (details.outputName, layer_id)
        assert details.postProcessor() is not None, details.outputName  # styled and described by the plugin


def test_fetch_with_temporary_output_loads_one_layer(plugin, http_server, tmp_path):
    url = http_server(Portal().handle)
    params = {"API": 0, "BASE_URL": url, "DATASET": "test-0311", "START_DATE": "2024-01-01",
              "END_DATE": "2024-03-31", "CACHE_DIR": str(tmp_path / "cache"), "XY_CRS": "EPSG:3435",
              "FIELD_MAP": '{"request_id": "sr_number", "created_at": "created_date"}', "OUTPUT": T, "REJECTED": T}
    _, _, context, _ = run_in_project("civic311:fetchrequests", params, tmp_path)
    to_load = context.layersToLoadOnCompletion()
    assert sorted(d.outputName for d in to_load.values()) == ["OUTPUT", "REJECTED"]
    assert all(context.getMapLayer(i) is not None for i in to_load)


def test_file_outputs_of_canvasszones_are_added_once(plugin, tmp_path):
    params = {"INPUT": REQ, "METHOD": 0, "ZONE_COUNT": 5, "OUTPUT": str(tmp_path / "z.gpkg"),
              "ZONES": str(tmp_path / "zones.gpkg"), "ROUTES": str(tmp_path / "routes.gpkg")}
    _, _, context, _ = run_in_project("civic311:canvasszones", params, tmp_path)
    to_load = context.layersToLoadOnCompletion()
    assert sorted(d.outputName for d in to_load.values()) == ["OUTPUT", "ROUTES", "ZONES"]
