# SPDX-License-Identifier: GPL-2.0-or-later
"""categorytrends and emerginghotspots through processing.run, with a webhook on a local server."""

import json
import time

import numpy as np
import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingException, QgsRectangle, QgsVectorLayer
from qgis.PyQt.QtCore import QDateTime

from conftest import SAMPLE

X0, Y0, SIDE = 440_000.0, 4_630_000.0, 1_000.0


def grid_zones(n=5):
    layer = QgsVectorLayer("Polygon?crs=EPSG:32616&field=zone:string", "zones", "memory")
    feats = []
    for j in range(n):
        for i in range(n):
            f = QgsFeature(layer.fields())
            f.setGeometry(QgsGeometry.fromRect(QgsRectangle(X0 + i * SIDE, Y0 + j * SIDE, X0 + (i + 1) * SIDE,
                                                            Y0 + (j + 1) * SIDE)))
            f.setAttributes([f"Z{j}{i}"])
            feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def requests_layer(weekly_rate, weeks=20, seed=0, extra=()):
    """weekly_rate(zone_i, zone_j, week) -> Poisson mean; extra = [(i, j, week, n, category)]."""
    rng = np.random.default_rng(seed)
    layer = QgsVectorLayer("Point?crs=EPSG:32616&field=created_at:datetime&field=category:string", "req", "memory")
    start = QDateTime.fromString("2024-01-01T09:00:00", "yyyy-MM-ddTHH:mm:ss")  # a Monday
    feats = []

    def add(i, j, week, n, category=None):
        for _ in range(n):
            f = QgsFeature(layer.fields())
            x, y = X0 + (i + rng.uniform(0.05, 0.95)) * SIDE, Y0 + (j + rng.uniform(0.05, 0.95)) * SIDE
            f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
            f.setAttributes([start.addDays(int(week * 7 + rng.integers(0, 7))),
                             category or ("Noise" if rng.random() < 0.5 else "Pothole")])
            feats.append(f)

    for week in range(weeks):
        for j in range(5):
            for i in range(5):
                add(i, j, week, rng.poisson(weekly_rate(i, j, week)))
    for i, j, week, n, cat in extra:
        add(i, j, week, n, cat)
    layer.dataProvider().addFeatures(feats)
    return layer


@pytest.fixture(scope="module")
def spiky():
    return requests_layer(lambda i, j, w: 6, extra=[(2, 1, 19, 30, "Rodent")])


def trends(run_alg, layer, **extra):
    params = {"REQUESTS": layer, "ZONES": grid_zones(), "ZONE_ID_FIELD": "zone", "INTERVAL": 1, "BASELINE": 8,
              "SPIKE_Z": 3, "OUTPUT": "memory:", "TABLE": "memory:"}
    params.update(extra)
    return run_alg("civic311:categorytrends", params)


def test_injected_spike_is_found_with_its_category(run_alg, spiky):
    res = trends(run_alg, spiky)
    rows = {f["zone"]: f for f in res["OUTPUT"].getFeatures()}
    assert res["PERIODS"] == 20
    assert rows["Z12"]["spike"] == 1 and rows["Z12"]["spike_category"] == "Rodent"
    assert rows["Z12"]["last_count"] >= 30 and rows["Z12"]["spike_z"] > 3
    assert res["SPIKES"] == sum(f["spike"] for f in rows.values()) <= 2
    assert all(str(f["spike_category"]) == "NULL" for f in rows.values() if f["spike"] == 0)
    # the table holds every request exactly once
    table = list(res["TABLE"].getFeatures())
    assert sum(f["count"] for f in table) == spiky.featureCount()
    assert {f["category"] for f in table} == {"Noise", "Pothole", "Rodent"}
    assert min(f["period_start"] for f in table).toString("yyyy-MM-dd") == "2024-01-01"


def test_trend_matches_scipy(run_alg):
    from scipy import stats

    rising = requests_layer(lambda i, j, w: 2 + (w if (i, j) == (0, 0) else 0), seed=3)
    res = trends(run_alg, rising)
    rows = {f["zone"]: f for f in res["OUTPUT"].getFeatures()}
    assert rows["Z00"]["trend_tau"] > 0.6 and rows["Z00"]["trend_p"] < 0.001
    table = list(res["TABLE"].getFeatures())
    weeks = sorted({f["period_start"].toString("yyyy-MM-dd") for f in table})
    assert len(weeks) == 20
    weekly = dict.fromkeys(weeks, 0)
    for f in table:
        if f["zone_id"] == "Z00":
            weekly[f["period_start"].toString("yyyy-MM-dd")] += f["count"]
    series = [weekly[k] for k in weeks]
    ref = stats.kendalltau(np.arange(len(series)), series, method="asymptotic")
    assert rows["Z00"]["trend_tau"] == pytest.approx(ref.statistic, abs=1e-9)


def test_webhook_posts_one_alert_without_personal_data(run_alg, spiky, http_server):
    received = []

    def handler(req):
        received.append((req.command, req.headers.get("Content-Type"),
                         json.loads(req.rfile.read(int(req.headers["Content-Length"])))))
        return 200, {"Content-Type": "application/json"}, b'{"ok": true}'

    url = http_server(handler) + "/hooks/secret-path-123"
    res = trends(run_alg, spiky, WEBHOOK_URL=url)
    assert len(received) == 1
    method, ctype, body = received[0]
    assert method == "POST" and ctype == "application/json"
    assert body["source"] == "civic311:categorytrends" and body["interval"] == "week"
    assert [s["zone_id"] for s in body["spikes"]][0] == "Z12" and len(body["spikes"]) == res["SPIKES"]
    assert set(body["spikes"][0]) == {"zone_id", "last_count", "baseline_mean", "spike_z", "spike_category"}
    assert "Spike alert sent" in "\n".join(res["_feedback"].messages)


def test_webhook_that_hangs_is_a_warning_not_a_lost_analysis(run_alg, spiky, http_server):
    def hang(req):
        time.sleep(3)
        return 200, {}, b""

    url = http_server(hang) + "/hooks/secret-path-123"
    t0 = time.monotonic()
    res = trends(run_alg, spiky, WEBHOOK_URL=url, WEBHOOK_TIMEOUT=0.3)
    assert time.monotonic() - t0 < 15
    messages = "\n".join(res["_feedback"].messages)
    assert "could not be delivered" in messages and "secret-path-123" not in messages
    assert res["OUTPUT"].featureCount() == 25 and res["SPIKES"] >= 1


def test_hexagons_when_no_zones_and_bad_input(run_alg, spiky):
    res = run_alg("civic311:categorytrends", {"REQUESTS": spiky, "CELL_SIZE": 800, "INTERVAL": 1,
                                              "OUTPUT": "memory:", "TABLE": "memory:"})
    out = res["OUTPUT"]
    assert out.featureCount() > 5 and out.fields().lookupField("zone_id") == 0
    assert sum(f["count"] for f in res["TABLE"].getFeatures()) == spiky.featureCount()
    no_dates = QgsVectorLayer("Point?crs=EPSG:4326&field=category:string", "x", "memory")
    with pytest.raises(QgsProcessingException, match="created_at"):
        run_alg("civic311:categorytrends", {"REQUESTS": no_dates, "CELL_SIZE": 500, "OUTPUT": "memory:"})


def test_sample_requests_weekly_by_precinct(run_alg):
    res = run_alg("civic311:categorytrends", {
        "REQUESTS": f"{SAMPLE}|layername=requests", "ZONES": f"{SAMPLE}|layername=precincts",
        "ZONE_ID_FIELD": "ward_prec", "INTERVAL": 1, "BASELINE": 3, "OUTPUT": "memory:", "TABLE": "memory:"})
    assert res["PERIODS"] == 4  # the sample holds four full weeks
    assert res["OUTPUT"].featureCount() == 1291
    assert sum(f["count"] for f in res["TABLE"].getFeatures()) == 8283  # the requests inside a precinct


def table_rows(layer, names):
    return sorted(tuple(str(f[n]) if hasattr(f[n], "toString") or str(f[n]) == "NULL" else f[n] for n in names)
                  for f in layer.getFeatures())


def test_tables_written_in_bulk_to_geopackage_match_the_sink_path(run_alg, tmp_path):
    """A new GeoPackage TABLE is written inside SQLite: same rows, types and NULLs as the feature sink."""
    from qgis.core import QgsVectorLayer

    params = {"REQUESTS": f"{SAMPLE}|layername=requests", "ZONES": f"{SAMPLE}|layername=precincts",
              "ZONE_ID_FIELD": "ward_prec", "INTERVAL": 1, "BASELINE": 3, "OUTPUT": "memory:"}
    memory = run_alg("civic311:categorytrends", {**params, "TABLE": "memory:"})["TABLE"]
    run_alg("civic311:categorytrends", {**params, "TABLE": str(tmp_path / "ct.gpkg")})
    bulk = QgsVectorLayer(str(tmp_path / "ct.gpkg"), "t", "ogr")
    assert [(f.name(), f.type()) for f in bulk.fields()][1:] == [(f.name(), f.type()) for f in memory.fields()]
    assert bulk.featureCount() == memory.featureCount() > 1000
    names = memory.fields().names()
    assert table_rows(bulk, names) == table_rows(memory, names)
    ehsa_params = {**params, "PERMUTATIONS": 9}
    memory = run_alg("civic311:emerginghotspots", {**ehsa_params, "TABLE": "memory:"})["TABLE"]
    run_alg("civic311:emerginghotspots", {**ehsa_params, "TABLE": str(tmp_path / "eh.gpkg")})
    bulk = QgsVectorLayer(str(tmp_path / "eh.gpkg"), "t", "ogr")
    assert bulk.featureCount() == memory.featureCount() == 1291 * 4
    names = memory.fields().names()
    assert table_rows(bulk, names) == table_rows(memory, names)


def ehsa(run_alg, rate, seed=7):
    return run_alg("civic311:emerginghotspots", {
        "REQUESTS": requests_layer(rate, seed=seed), "ZONES": grid_zones(), "ZONE_ID_FIELD": "zone",
        "INTERVAL": 1, "NEIGHBOURS": 0, "TIME_WINDOW": 1, "PERMUTATIONS": 19, "OUTPUT": "memory:",
        "TABLE": "memory:"})


def test_emerging_hot_spots_find_a_cluster_that_emerges(run_alg):
    cluster = {(3, 3), (3, 4), (4, 3), (4, 4)}
    res = ehsa(run_alg, lambda i, j, w: 3 + 1.2 * w if (i, j) in cluster else 3)
    rows = {f["zone"]: f for f in res["OUTPUT"].getFeatures()}
    # hot only in an uninterrupted run up to the last week (Z44 has one early hot week, then a gap)
    assert rows["Z34"]["ehs_category"] == "Consecutive Hot Spot"
    assert rows["Z44"]["ehs_category"] in {"Consecutive Hot Spot", "Sporadic Hot Spot"}
    assert rows["Z44"]["trend_tau"] > 0.5 and rows["Z44"]["last_z"] > 2
    assert rows["Z00"]["hot_steps"] == 0
    table = list(res["TABLE"].getFeatures())
    assert len(table) == 25 * 20
    z44 = [f for f in table if f["zone_id"] == "Z44"]
    assert sum(1 for f in z44 if f["gi_bin"] > 0) == rows["Z44"]["hot_steps"]


def test_emerging_hot_spots_find_an_intensifying_cluster(run_alg):
    cluster = {(0, 0), (0, 1), (1, 0), (1, 1)}
    res = ehsa(run_alg, lambda i, j, w: 30 + 2.0 * w if (i, j) in cluster else 3)
    rows = {f["zone"]: f for f in res["OUTPUT"].getFeatures()}
    assert rows["Z00"]["ehs_category"] == "Intensifying Hot Spot" and rows["Z00"]["hot_steps"] >= 18
    assert rows["Z00"]["trend_p"] < 0.05 < rows["Z00"]["trend_tau"] + 1
    assert all("Hot" not in rows[z]["ehs_category"] for z in ("Z44", "Z43", "Z34"))


def test_few_periods_warn_and_trend_p_is_exact(run_alg):
    """The sample's weeks are fewer than 10: the log says the trend test needs about 10 periods, and no p-value
    is smaller than the exact test allows (2 / n! for n periods; the normal approximation went below it)."""
    from math import factorial

    from conftest import SAMPLE

    res = run_alg("civic311:categorytrends", {"REQUESTS": f"{SAMPLE}|layername=requests",
                                              "ZONES": f"{SAMPLE}|layername=precincts", "ZONE_ID_FIELD": "ward_prec",
                                              "INTERVAL": 1, "BASELINE": 3, "OUTPUT": "memory:"})
    n = res["PERIODS"]
    assert 3 <= n < 10
    assert any(f"Only {n} periods: the trend test needs about 10" in m for m in res["_feedback"].messages)
    p = [f["trend_p"] for f in res["OUTPUT"].getFeatures() if str(f["trend_p"]) != "NULL"]
    assert p and min(p) >= 2 / factorial(n) - 1e-15
