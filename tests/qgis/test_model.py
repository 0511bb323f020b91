# SPDX-License-Identifier: GPL-2.0-or-later
"""The shipped Model Builder model (resources/models/civic311_outreach.model3): listed by the provider, valid,
editable, and run through processing.run and qgis_process; batch runs of precinctstats add up."""

from __future__ import annotations

import json
import subprocess

from qgis.core import QgsApplication, QgsProcessingModelAlgorithm
from test_qgis_process import qgis_process_with_plugin

from conftest import ROOT, SAMPLE, SHARED

EXPORT = SHARED / "chicago_311_legacy_2018_saikrishnan" / "Potholes_Data.csv"
PARAMS = {"INPUT": str(EXPORT), "PRECINCTS": f"{SAMPLE}|layername=precincts", "PRECINCT_ID_FIELD": "ward_prec",
          "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast",
          "STOPS": f"{SAMPLE}|layername=stops", "POLLING_PLACES": f"{SAMPLE}|layername=polling_places",
          "POLLING_PRECINCT_FIELD": "ward_prec", "ZONE_COUNT": 4}


def test_model_is_listed_valid_and_editable(plugin):
    model = QgsApplication.processingRegistry().algorithmById("civic311:outreachmodel")
    assert isinstance(model, QgsProcessingModelAlgorithm)
    assert model.displayName() == "Outreach pipeline (editable model)"
    ok, issues = model.validate()
    assert ok, issues
    children = {c.algorithmId() for c in model.childAlgorithms().values()}
    assert {"civic311:importrequests", "civic311:precinctstats", "civic311:hotspots", "civic311:transitaccess",
            "civic311:outreachpriority", "civic311:canvasszones"} <= children
    copy = QgsProcessingModelAlgorithm()  # what the Model Designer opens
    assert copy.fromFile(str(ROOT / "resources" / "models" / "civic311_outreach.model3"))
    assert copy.childAlgorithms().keys() == model.childAlgorithms().keys()


def test_model_runs_through_processing(run_alg):
    res = run_alg("civic311:outreachmodel", {**PARAMS, "priority:Outreach priority": "memory:",
                                              "zones:Canvassing zones": "memory:", "zones:Walking routes": "memory:"})
    priority = res["priority:Outreach priority"]
    assert priority.featureCount() == 1291
    tiers = [f["tier"] for f in priority.getFeatures()]
    assert tiers.count(5) > 200 and {f.name() for f in priority.fields()} >= {"non_voters", "top_driver",
                                                                               "rank_stability", "poll_m"}
    assert res["zones:Canvassing zones"].featureCount() == 4


def test_model_runs_through_qgis_process(tmp_path):
    exe, env = qgis_process_with_plugin(tmp_path)
    out = tmp_path / "priority.gpkg"
    args = [exe, "--json", "run", "civic311:outreachmodel", "--"] + [f"{k}={v}" for k, v in PARAMS.items()] + \
        [f"priority:Outreach priority={out}"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    assert str(out) in str(results["priority:Outreach priority"])
    from qgis.core import QgsVectorLayer

    assert QgsVectorLayer(str(out), "p", "ogr").featureCount() == 1291


def test_batch_of_precinctstats_over_date_ranges_adds_up(run_alg):
    base = {"REQUESTS": f"{SAMPLE}|layername=requests", "PRECINCTS": f"{SAMPLE}|layername=precincts",
            "PRECINCT_ID_FIELD": "ward_prec", "OUTPUT": "memory:"}
    whole = run_alg("civic311:precinctstats", {**base, "START_DATE": "2018-10-01", "END_DATE": "2018-12-31"})
    parts = [run_alg("civic311:precinctstats", {**base, "START_DATE": a, "END_DATE": b})
             for a, b in (("2018-10-01", "2018-10-31"), ("2018-11-01", "2018-11-30"), ("2018-12-01", "2018-12-31"))]
    assert sum(p["MATCHED"] for p in parts) == whole["MATCHED"] > 8000
    totals: dict = {}
    for p in parts:
        for f in p["OUTPUT"].getFeatures():
            totals[f["ward_prec"]] = totals.get(f["ward_prec"], 0) + f["requests"]
    assert totals == {f["ward_prec"]: f["requests"] for f in whole["OUTPUT"].getFeatures()}
