# SPDX-License-Identifier: GPL-2.0-or-later
"""The outreach priority an organiser can trust: percentile-rank score, drivers and stability on the real sample;
assigned polling places measured from where residents are; resident-only precinct counts."""

from __future__ import annotations

import numpy as np
import pytest
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsDistanceArea,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProject,
    QgsVectorLayer,
)
from scipy.stats import rankdata

from conftest import SAMPLE, sample_layer

REQ, PREC = f"{SAMPLE}|layername=requests", f"{SAMPLE}|layername=precincts"
POLLS, STOPS = f"{SAMPLE}|layername=polling_places", f"{SAMPLE}|layername=stops"


def column(layer, name):
    return np.array([np.nan if f[name] is None or str(f[name]) == "NULL" else f[name] for f in layer.getFeatures()],
                    dtype=float)


@pytest.fixture(scope="module")
def chain(run_alg):
    """precinctstats -> hotspots -> transitaccess (assigned places, from requests) -> outreachpriority."""
    stats = run_alg("civic311:precinctstats", {
        "REQUESTS": REQ, "PRECINCTS": PREC, "PRECINCT_ID_FIELD": "ward_prec", "VOTERS_FIELD": "registered_voters",
        "BALLOTS_FIELD": "ballots_cast", "OUTPUT": "memory:"})["OUTPUT"]
    gi = run_alg("civic311:hotspots", {"INPUT": stats, "FIELD": "rate_eb", "NEIGHBOURS": 0, "PERMUTATIONS": 0,
                                       "OUTPUT": "memory:"})["OUTPUT"]
    access = run_alg("civic311:transitaccess", {
        "INPUT": gi, "STOPS": STOPS, "POLLING_PLACES": POLLS, "POLLING_ID_FIELD": "name",
        "POLLING_PRECINCT_FIELD": "ward_prec", "PRECINCT_FIELD": "ward_prec", "REQUESTS": REQ, "OUTPUT": "memory:"})
    priority = run_alg("civic311:outreachpriority", {"INPUT": access["OUTPUT"], "OUTPUT": "memory:"})
    return access, priority


def test_priority_formula_drivers_and_stability(chain):
    _, res = chain
    out = res["OUTPUT"]
    nv = column(out, "registered_voters") - column(out, "ballots_cast")
    np.testing.assert_allclose(column(out, "non_voters"), nv)

    def pct(v):
        return (rankdata(v) - 1) / (len(v) - 1)

    p = np.column_stack([pct(nv), pct(column(out, "rate_eb")), pct(np.minimum(column(out, "poll_m"), 1609.0))])
    score = p @ np.array([0.5, 0.3, 0.2])
    np.testing.assert_allclose(column(out, "priority"), 100 * score, atol=1e-9)
    rank = column(out, "priority_rank")
    assert rank[np.argmax(score)] == 1 and sorted(rank) == list(range(1, 1292))
    drivers = np.array(["non_voters", "rate_eb", "poll_m"])[np.argmax(p * [0.5, 0.3, 0.2], axis=1)]
    assert [f["top_driver"] for f in out.getFeatures()] == drivers.tolist()
    stability = column(out, "rank_stability")
    assert ((stability >= 0) & (stability <= 1)).all() and 0.5 < stability.mean() < 1
    tier = column(out, "tier")
    log = "\n".join(res["_feedback"].messages)
    stable = int(((tier == 5) & (stability >= 0.8)).sum())
    assert f"{stable} of {int((tier == 5).sum())} top-tier precincts are stable" in log
    assert "Score = 0.50·p(non_voters) + 0.30·p(rate_eb) + 0.20·p(poll_m)" in log


def test_the_airport_and_the_tree_trim_sweep_no_longer_lead(chain):
    """Old score: rank 1 was 41001 (O'Hare, a 5.3 km nearest-place distance from the airfield), ranks 2-3 two
    precincts of one Tree Trim sweep. Now the top 20 holds none of them and none ranks there by distance."""
    _, res = chain
    feats = sorted(res["OUTPUT"].getFeatures(), key=lambda f: f["priority_rank"])
    top = feats[:20]
    ids = {f["ward_prec"] for f in top}
    assert not ids & {"41001", "30010", "30025"}
    assert all(f["top_driver"] != "poll_m" for f in top)
    airport = next(f for f in feats if f["ward_prec"] == "41001")
    assert airport["poll_m"] < 5000 and airport["priority_rank"] > 20


def test_assigned_polling_place_measured_from_the_requests(chain):
    access, _ = chain
    out = {f["ward_prec"]: f for f in access["OUTPUT"].getFeatures()}
    places = {f["ward_prec"]: f for f in sample_layer("polling_places").getFeatures()}
    assert all(out[k]["poll_id"] == places[k]["name"] for k in out)  # the assigned place, for every precinct
    log = "\n".join(access["_feedback"].messages)
    assert "1291 feature(s) measured to their assigned polling place." in log
    assert "from their requests' locations (mean distance)" in log
    # by hand, geodesically: the mean distance from a precinct's requests to its polling place
    d = QgsDistanceArea()
    d.setSourceCrs(QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance().transformContext())
    d.setEllipsoid("WGS84")
    precincts = {f["ward_prec"]: f.geometry() for f in sample_layer("precincts").getFeatures()}
    requests = [f.geometry().asPoint() for f in sample_layer("requests").getFeatures()]
    for key in ("36010", "21005", "41001"):
        poly = precincts[key].makeValid()
        inside = [p for p in requests if poly.contains(QgsGeometry.fromPointXY(p))]
        assert inside
        mean = np.mean([d.measureLine(p, places[key].geometry().asPoint()) for p in inside])
        assert out[key]["poll_m"] == pytest.approx(mean, rel=0.005)


def test_nearest_place_without_the_precinct_fields_and_both_fields_required(run_alg):
    res = run_alg("civic311:transitaccess", {"INPUT": PREC, "STOPS": STOPS, "POLLING_PLACES": POLLS,
                                             "POLLING_ID_FIELD": "name", "OUTPUT": "memory:"})
    feats = {f["ward_prec"]: f for f in res["OUTPUT"].getFeatures()}
    assert feats["41001"]["poll_m"] > 5000  # the nearest place from a point on the airfield, as documented
    with pytest.raises(QgsProcessingException, match="Give both POLLING_PRECINCT_FIELD"):
        run_alg("civic311:transitaccess", {"INPUT": PREC, "STOPS": STOPS, "POLLING_PLACES": POLLS,
                                           "POLLING_PRECINCT_FIELD": "ward_prec", "OUTPUT": "memory:"})


def test_a_misspelt_field_is_an_error_naming_it(chain, run_alg):
    access, _ = chain
    with pytest.raises(QgsProcessingException, match=r"INPUT has no field 'voters' \(VOTERS_FIELD\)\. Its fields:"):
        run_alg("civic311:outreachpriority", {"INPUT": access["OUTPUT"], "VOTERS_FIELD": "voters",
                                              "OUTPUT": "memory:"})


def requests_layer(rows):
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=category:string&field=city_initiated:integer", "r", "memory")
    feats = []
    for x, y, category, city in rows:
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        f.setAttributes([category, city])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_resident_only_and_excluded_categories(run_alg):
    prec = sample_layer("precincts")
    inside = next(f for f in prec.getFeatures() if f["ward_prec"] == "36010").geometry().pointOnSurface().asPoint()
    rows = [(inside.x(), inside.y(), "Pothole", 0)] * 3 + [(inside.x(), inside.y(), "Tree Trim", 1)] * 4 + \
        [(inside.x(), inside.y(), "tree trim", 0), (inside.x(), inside.y(), "Graffiti", None)]
    layer = requests_layer(rows)
    base = {"REQUESTS": layer, "PRECINCTS": PREC, "PRECINCT_ID_FIELD": "ward_prec",
            "VOTERS_FIELD": "registered_voters", "OUTPUT": "memory:"}

    def row(res):
        return next(f for f in res["OUTPUT"].getFeatures() if f["ward_prec"] == "36010")

    resident = run_alg("civic311:precinctstats", base)
    assert (row(resident)["requests"], row(resident)["city_initiated"]) == (5, 4)  # NULL channel counts as resident
    everyone = run_alg("civic311:precinctstats", {**base, "RESIDENT_ONLY": False})
    assert (row(everyone)["requests"], row(everyone)["city_initiated"]) == (9, 4)
    excluded = run_alg("civic311:precinctstats", {**base, "EXCLUDE_CATEGORIES": "TREE TRIM, graffiti"})
    assert (row(excluded)["requests"], row(excluded)["city_initiated"]) == (3, 0)
    assert any("EXCLUDE_CATEGORIES left out 6 request(s)" in m for m in excluded["_feedback"].messages)
    # requests without the field: every request counted, city_initiated NULL
    plain = run_alg("civic311:precinctstats", {**base, "REQUESTS": REQ})
    assert str(next(plain["OUTPUT"].getFeatures())["city_initiated"]) == "NULL"
