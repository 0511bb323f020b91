# SPDX-License-Identifier: GPL-2.0-or-later
"""hotspots, localmoran, optimizedhotspots, outreachpriority, turnoutregression through processing.run."""

import json

import numpy as np
import pytest
from qgis.core import QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingException, QgsVectorLayer

from conftest import SAMPLE, TEST_DATA

REF = json.loads((TEST_DATA / "esda_reference.json").read_text())


@pytest.fixture(scope="module")
def precinct_stats(run_alg):
    return run_alg("civic311:precinctstats", {
        "REQUESTS": f"{SAMPLE}|layername=requests", "PRECINCTS": f"{SAMPLE}|layername=precincts",
        "PRECINCT_ID_FIELD": "ward_prec", "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast",
        "OUTPUT": "memory:"})["OUTPUT"]


def column(layer, name):
    return np.array([np.nan if f[name] is None or str(f[name]) == "NULL" else f[name] for f in layer.getFeatures()],
                    dtype=float)


@pytest.mark.parametrize("neighbours,kind", [(0, "queen"), (1, "rook")])
def test_hotspots_match_esda_on_real_precincts(run_alg, precinct_stats, neighbours, kind):
    res = run_alg("civic311:hotspots", {"INPUT": precinct_stats, "FIELD": "turnout", "NEIGHBOURS": neighbours,
                                        "PERMUTATIONS": 999, "SEED": 1, "FDR": True, "OUTPUT": "memory:"})
    out = res["OUTPUT"]
    ref = REF["chicago"][kind]
    np.testing.assert_allclose(column(out, "gi_z"), ref["gi_z"], atol=1e-6)
    np.testing.assert_allclose(column(out, "gi_psim"), ref["gi_psim"], atol=1e-6)
    assert column(out, "n_neighbors").tolist() == ref["cardinalities"]
    z, p, bins = column(out, "gi_z"), column(out, "gi_p"), column(out, "gi_bin")
    from scipy import stats

    np.testing.assert_allclose(p, 2 * stats.norm.sf(np.abs(z)), rtol=1e-9)
    assert set(np.unique(bins)) <= {-3, -2, -1, 0, 1, 2, 3}
    assert (bins == 3).sum() > 50 and (bins == -3).sum() > 50  # turnout is strongly clustered in Chicago
    assert np.all(np.sign(bins[bins != 0]) == np.sign(z[bins != 0]))
    # FDR is stricter than the raw 90 % level
    assert np.abs(z[bins == 0]).max() < 3.3


def test_hotspots_analytic_only_and_no_fdr(run_alg, precinct_stats):
    out = run_alg("civic311:hotspots", {"INPUT": precinct_stats, "FIELD": "turnout", "NEIGHBOURS": 0,
                                        "PERMUTATIONS": 0, "FDR": False, "OUTPUT": "memory:"})["OUTPUT"]
    assert np.isnan(column(out, "gi_psim")).all()
    p, bins = column(out, "gi_p"), column(out, "gi_bin")
    assert ((p < 0.10) == (bins != 0)).all()


def test_local_moran_matches_esda(run_alg, precinct_stats):
    out = run_alg("civic311:localmoran", {"INPUT": precinct_stats, "FIELD": "turnout", "NEIGHBOURS": 0,
                                          "PERMUTATIONS": 999, "SEED": 1, "FDR": True, "OUTPUT": "memory:"})["OUTPUT"]
    ref = REF["chicago"]["queen"]
    np.testing.assert_allclose(column(out, "lisa_i"), ref["lisa_i"], atol=1e-9)
    np.testing.assert_allclose(column(out, "lisa_z"), ref["lisa_z"], atol=1e-6)
    psim = column(out, "lisa_psim")
    np.testing.assert_allclose(psim, ref["lisa_psim"], atol=1e-12)
    labels = [f["lisa_q"] for f in out.getFeatures()]
    names = {1: "HH", 2: "LH", 3: "LL", 4: "HL"}
    sig = psim < ref["fdr_05"]
    expected = [names[q] if s else "Not significant" for q, s in zip(ref["lisa_q"], sig)]
    assert labels == expected
    assert labels.count("HH") > 50 and labels.count("LL") > 50


def test_local_moran_analytic_z_uses_esda_conditional_moments(run_alg, precinct_stats):
    """PERMUTATIONS = 0: z = (I − EIc) / sqrt(VIc), esda's conditional-randomisation moments (the total-
    randomisation z correlated only 0.53 with the permutation z)."""
    from scipy import stats as st

    out = run_alg("civic311:localmoran", {"INPUT": precinct_stats, "FIELD": "turnout", "NEIGHBOURS": 0,
                                          "PERMUTATIONS": 0, "FDR": False, "OUTPUT": "memory:"})["OUTPUT"]
    ref = REF["chicago"]["queen"]
    expected = (np.array(ref["lisa_i"]) - np.array(ref["lisa_eic"])) / np.sqrt(ref["lisa_vic"])
    np.testing.assert_allclose(column(out, "lisa_z"), expected, rtol=1e-9, atol=1e-9)
    assert np.corrcoef(expected, ref["lisa_z"])[0, 1] > 0.9  # agrees with the permutation z
    sig = 2 * st.norm.sf(np.abs(expected)) < 0.05
    labels = [f["lisa_q"] for f in out.getFeatures()]
    assert [lab != "Not significant" for lab in labels] == sig.tolist()


def test_dense_automatic_distance_band_warns_and_names_the_isolated_feature(run_alg, precinct_stats):
    res = run_alg("civic311:hotspots", {"INPUT": precinct_stats, "FIELD": "rate_eb", "NEIGHBOURS": 3,
                                        "DISTANCE": 0, "PERMUTATIONS": 0, "OUTPUT": "memory:"})
    warning = next(m for m in res["_feedback"].messages if "neighbours on average" in m)
    assert "most isolated feature (ward_prec 41001)" in warning and "K nearest neighbours" in warning
    knn = run_alg("civic311:hotspots", {"INPUT": precinct_stats, "FIELD": "rate_eb", "NEIGHBOURS": 2, "K": 8,
                                        "PERMUTATIONS": 0, "OUTPUT": "memory:"})
    assert not any("neighbours on average" in m for m in knn["_feedback"].messages)


def test_p_value_conventions_are_documented(plugin):
    from qgis.core import QgsApplication

    reg = QgsApplication.processingRegistry()
    hot = reg.algorithmById("civic311:hotspots").shortHelpString()
    lisa = reg.algorithmById("civic311:localmoran").shortHelpString()
    assert "gi_p (two-sided" in hot and "folded one-sided pseudo p-value" in hot
    assert "folded one-sided pseudo p-value" in lisa and "never exceeds 0.5" in lisa


def synthetic_points(crs="EPSG:3435"):
    syn = REF["synthetic"]
    layer = QgsVectorLayer(f"Point?crs={crs}&field=value:double", "syn", "memory")
    feats = []
    for x, y, v in zip(syn["x"], syn["y"], syn["counts"]):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x / 0.3048006096, y / 0.3048006096)))  # metres -> US ft
        f.setAttributes([v])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_points_knn_in_feet_crs_match_esda(run_alg):
    # coordinates in US survey feet; neighbours are chosen in metres and KNN is scale-free
    res = run_alg("civic311:hotspots", {"INPUT": synthetic_points(), "FIELD": "value", "NEIGHBOURS": 2, "K": 8,
                                        "PERMUTATIONS": 999, "SEED": 7, "OUTPUT": "memory:"})
    np.testing.assert_allclose(column(res["OUTPUT"], "gi_z"), REF["synthetic"]["knn8"]["gi_z"], atol=1e-6)


def test_distance_band_auto_is_in_metres(run_alg):
    res = run_alg("civic311:hotspots", {"INPUT": synthetic_points(), "FIELD": "value", "NEIGHBOURS": 3,
                                        "DISTANCE": 0, "PERMUTATIONS": 0, "OUTPUT": "memory:"})
    messages = "\n".join(res["_feedback"].messages)
    band = float(messages.split("Distance band: ")[1].split(" m")[0])
    # EPSG:3435's scale factor near Chicago is below 1.0001, so metres on the ground match the planar metres
    assert band == pytest.approx(REF["synthetic"]["min_threshold"], rel=2e-3)
    assert column(res["OUTPUT"], "n_neighbors").min() >= 1


def test_warnings_for_small_layers_islands_and_zero_variance(run_alg):
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=value:double", "few", "memory")
    feats = []
    for x, y in [(-87.6, 41.8), (-87.601, 41.8), (-87.602, 41.8), (-87.0, 41.0)]:
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        f.setAttributes([5.0])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    res = run_alg("civic311:hotspots", {"INPUT": layer, "FIELD": "value", "NEIGHBOURS": 3, "DISTANCE": 500,
                                        "OUTPUT": "memory:"})
    messages = "\n".join(res["_feedback"].messages)
    assert "fewer than 30 features" in messages
    assert "1 feature(s) have no neighbours" in messages
    assert "zero variance" in messages
    assert set(column(res["OUTPUT"], "gi_bin")) == {0}
    with pytest.raises(QgsProcessingException, match="Contiguity neighbours need polygons"):
        run_alg("civic311:hotspots", {"INPUT": layer, "FIELD": "value", "NEIGHBOURS": 0, "OUTPUT": "memory:"})


def test_null_values_are_refused_with_advice(run_alg):
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=value:double", "nulls", "memory")
    feats = []
    for i in range(5):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(-87.6 + i / 1000, 41.8)))
        f.setAttributes([None if i == 2 else float(i)])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    with pytest.raises(QgsProcessingException, match="NULL or non-numeric"):
        run_alg("civic311:localmoran", {"INPUT": layer, "FIELD": "value", "NEIGHBOURS": 2, "K": 2,
                                        "OUTPUT": "memory:"})


def test_outreach_priority_without_polling_distance(run_alg, precinct_stats):
    """Default fields that the layer lacks (poll_m) are left out and said so; the weights of the others are
    renormalised; a field the user names that is absent is an error."""
    res = run_alg("civic311:outreachpriority", {"INPUT": precinct_stats, "OUTPUT": "memory:"})
    out = res["OUTPUT"]
    assert any("No poll_m field" in m for m in res["_feedback"].messages)
    from scipy.stats import rankdata

    def pct(v):
        return (rankdata(v) - 1) / (len(v) - 1)

    nv = column(out, "registered_voters") - column(out, "ballots_cast")
    expected = 100 * (0.5 * pct(nv) + 0.3 * pct(column(out, "rate_eb"))) / 0.8
    np.testing.assert_allclose(column(out, "priority"), expected, atol=1e-9)
    with pytest.raises(QgsProcessingException, match="no field 'nosuch'"):
        run_alg("civic311:outreachpriority", {"INPUT": precinct_stats, "RATE_FIELD": "nosuch", "OUTPUT": "memory:"})


def test_turnout_regression_matches_lstsq_and_reports(run_alg, precinct_stats, tmp_path):
    report = tmp_path / "reg.html"
    res = run_alg("civic311:turnoutregression", {
        "INPUT": precinct_stats, "TURNOUT_FIELD": "turnout", "EXPLANATORY_FIELDS": ["rate_1k"],
        "WEIGHT_FIELD": "registered_voters", "NEIGHBOURS": 0, "PERMUTATIONS": 99, "OUTPUT": "memory:",
        "REPORT": str(report)})
    out = res["OUTPUT"]
    y, x, w = column(out, "turnout"), column(out, "rate_1k"), column(out, "registered_voters")
    design = np.column_stack([np.ones(len(y)), x]) * np.sqrt(w)[:, None]
    coef, *_ = np.linalg.lstsq(design, y * np.sqrt(w), rcond=None)
    assert res["COEFFICIENT"] == pytest.approx(coef[1], abs=1e-9)
    np.testing.assert_allclose(column(out, "predicted"), coef[0] + coef[1] * x, atol=1e-9)
    np.testing.assert_allclose(column(out, "residual"), y - coef[0] - coef[1] * x, atol=1e-9)
    assert 0 <= res["R2"] <= 1 and res["MORAN_I"] > 0.3 and res["MORAN_P"] == pytest.approx(0.01)
    text = report.read_text()
    assert "request per 1,000 voters" in text and "R²" in text and "Moran" in text
    assert f"{abs(coef[1]) * 100:.3g}" in text
    # the residuals cluster (Moran p < 0.05): the sentence says the p-value is unreliable and what to do
    assert "the residuals cluster in space" in text and "is unreliable" in text and "CLUSTER_FIELD" in text


def test_cluster_robust_standard_errors_match_statsmodels(run_alg, tmp_path):
    ref = json.loads((TEST_DATA / "inference_reference.json").read_text())["cluster"]
    layer = QgsVectorLayer("Point?crs=EPSG:32616&field=y:double&field=x1:double&field=x2:double&field=w:double"
                           "&field=ward:string", "reg", "memory")
    rng = np.random.default_rng(0)
    feats = []
    for i in range(len(ref["y"])):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(400_000 + rng.uniform(0, 9000),
                                                         4_630_000 + rng.uniform(0, 9000))))
        f.setAttributes([ref["y"][i], ref["x1"][i], ref["x2"][i], ref["w"][i], ref["groups"][i]])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    for name, weight in (("ols", ""), ("wls", "w")):
        report = tmp_path / f"{name}.html"
        res = run_alg("civic311:turnoutregression", {
            "INPUT": layer, "TURNOUT_FIELD": "y", "EXPLANATORY_FIELDS": ["x1", "x2"], "WEIGHT_FIELD": weight,
            "CLUSTER_FIELD": "ward", "NEIGHBOURS": 2, "K": 8, "PERMUTATIONS": 99, "OUTPUT": "memory:",
            "REPORT": str(report)})
        assert res["COEFFICIENT"] == pytest.approx(ref[name]["params"][1], rel=1e-9)
        assert res["P"] == pytest.approx(ref[name]["p"][1], rel=1e-6)
        assert res["CLUSTER_P"] == pytest.approx(ref[name]["cluster_p"][1], rel=1e-6)
        text = report.read_text()
        for se in ref[name]["cluster_bse"]:
            assert f"{se:.4g}" in text
        assert "robust to clustering by ward (25 clusters)" in text


@pytest.mark.parametrize("values,message", [([0.5] * 40, "dependent variable is constant"),
                                            (None, "fits the data exactly")])
def test_degenerate_regressions_are_refused(run_alg, tmp_path, values, message):
    layer = QgsVectorLayer("Point?crs=EPSG:32616&field=y:double&field=x:double", "deg", "memory")
    feats = []
    for i in range(40):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(400_000 + 100 * i, 4_630_000 + 37 * (i % 7))))
        f.setAttributes([values[i] if values else 0.2 + 0.01 * i, float(i)])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    with pytest.raises(QgsProcessingException, match=message):
        run_alg("civic311:turnoutregression", {"INPUT": layer, "TURNOUT_FIELD": "y", "EXPLANATORY_FIELDS": ["x"],
                                               "NEIGHBOURS": 2, "K": 4, "OUTPUT": "memory:",
                                               "REPORT": str(tmp_path / "r.html")})


def gaussian_points(n_background=1500, n_hot=600, seed=3):
    rng = np.random.default_rng(seed)
    xy = np.vstack([rng.uniform(0, 10_000, size=(n_background, 2)), rng.normal((7_000, 3_000), 400, size=(n_hot, 2))])
    layer = QgsVectorLayer("Point?crs=EPSG:32616", "pts", "memory")  # UTM 16N, metres
    feats = []
    for x, y in xy:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(400_000 + x, 4_630_000 + y)))
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_optimized_hotspots_finds_the_injected_cluster(run_alg):
    res = run_alg("civic311:optimizedhotspots", {"INPUT": gaussian_points(), "OUTPUT": "memory:"})
    out = res["OUTPUT"]
    assert column(out, "requests").sum() == 2100
    assert 100 < res["CELL_SIZE"] < 1000 and res["DISTANCE_BAND"] >= res["CELL_SIZE"]
    hot = [f.geometry().centroid().asPoint() for f in out.getFeatures() if f["gi_bin"] == 3]
    assert len(hot) >= 3
    for p in hot:
        assert np.hypot(p.x() - 407_000, p.y() - 4_633_000) < 1_500
    # cold spots, if any, are far from the cluster
    for f in out.getFeatures():
        if f["gi_bin"] < 0:
            p = f.geometry().centroid().asPoint()
            assert np.hypot(p.x() - 407_000, p.y() - 4_633_000) > 1_500


def test_optimized_hotspots_cell_size_and_boundary(run_alg):
    boundary = QgsVectorLayer("Polygon?crs=EPSG:32616", "b", "memory")
    f = QgsFeature()
    f.setGeometry(QgsGeometry.fromWkt("POLYGON((400000 4630000, 405000 4630000, 405000 4640000, "
                                      "400000 4640000, 400000 4630000))"))
    boundary.dataProvider().addFeatures([f])
    res = run_alg("civic311:optimizedhotspots", {"INPUT": gaussian_points(), "CELL_SIZE": 500,
                                                 "BOUNDARY": boundary, "OUTPUT": "memory:"})
    out = res["OUTPUT"]
    assert res["CELL_SIZE"] == 500
    area = sum(f.geometry().area() for f in out.getFeatures())
    assert area == pytest.approx(5_000 * 10_000, rel=1e-6)  # clipped hexagons tile the boundary exactly
    assert "outside BOUNDARY" in "\n".join(res["_feedback"].messages)
    assert 600 < column(out, "requests").sum() < 800  # about half of the uniform background, none of the cluster
