# SPDX-License-Identifier: GPL-2.0-or-later
"""Gi*, Local Moran, FDR and contiguity against PySAL esda/libpysal reference values (tests/data)."""

import json

import numpy as np
import pytest

from civic311.processing.core import spatialstats as ss
from civic311.processing.core import weights as wt
from civic311.processing.core.geometry import polygon_rings_from_wkb  # noqa: F401 - import check
from conftest import SHARED, TEST_DATA

REF = json.loads((TEST_DATA / "esda_reference.json").read_text())
GEOJSON = SHARED / "chicago_precincts_2023" / "DERIVED_precincts_2023_with_feb2023_turnout.geojson"


def geojson_rings():
    polys = []
    for feat in json.loads(GEOJSON.read_text())["features"]:
        geom = feat["geometry"]
        parts = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
        polys.append([np.asarray(ring, dtype=float) for part in parts for ring in part])
    return polys


@pytest.fixture(scope="module")
def chicago():
    return geojson_rings(), np.asarray(REF["chicago"]["turnout"])


@pytest.mark.parametrize("kind", ["queen", "rook"])
def test_contiguity_matches_libpysal(chicago, kind):
    polys, _ = chicago
    w = wt.contiguity(polys, rook=kind == "rook")
    assert np.diff(w.indptr).tolist() == REF["chicago"][kind]["cardinalities"]


@pytest.mark.parametrize("kind", ["queen", "rook"])
def test_gi_star_matches_esda_on_chicago(chicago, kind):
    polys, y = chicago
    ref = REF["chicago"][kind]
    res = ss.gi_star(y, wt.contiguity(polys, rook=kind == "rook"), permutations=999, seed=1)
    np.testing.assert_allclose(res.z, ref["gi_z"], atol=1e-6)
    np.testing.assert_allclose(res.p_sim, ref["gi_psim"], atol=1e-6)  # esda stores p_sim as float32
    assert np.abs(res.z).max() > 3  # turnout really clusters in Chicago


@pytest.mark.parametrize("kind", ["queen", "rook"])
def test_local_moran_matches_esda_on_chicago(chicago, kind):
    polys, y = chicago
    ref = REF["chicago"][kind]
    res = ss.local_moran(y, wt.contiguity(polys, rook=kind == "rook"), permutations=999, seed=1)
    np.testing.assert_allclose(res.i, ref["lisa_i"], atol=1e-9)
    np.testing.assert_allclose(res.z_sim, ref["lisa_z"], atol=1e-6)
    np.testing.assert_allclose(res.p_sim, ref["lisa_psim"], atol=1e-12)
    assert res.quadrant.tolist() == ref["lisa_q"]


@pytest.mark.parametrize("weights", ["knn8", "band"])
def test_synthetic_points_match_esda(weights):
    syn = REF["synthetic"]
    x, y, counts = (np.asarray(syn[k]) for k in ("x", "y", "counts"))
    if weights == "knn8":
        w = wt.knn(x, y, 8)
    else:
        assert wt.min_threshold_distance(x, y) == pytest.approx(syn["min_threshold"], rel=1e-12)
        w = wt.distance_band(x, y, syn["min_threshold"])
    ref = syn[weights]
    assert np.diff(w.indptr).tolist() == ref["cardinalities"]
    gi = ss.gi_star(counts, w, permutations=999, seed=7)
    np.testing.assert_allclose(gi.z, ref["gi_z"], atol=1e-6)
    lm = ss.local_moran(counts, w, permutations=999, seed=7)
    np.testing.assert_allclose(lm.z_sim, ref["lisa_z"], atol=1e-6)
    for mine, theirs in ((gi.p_sim, ref["gi_psim"]), (lm.p_sim, ref["lisa_psim"])):
        diff = np.abs(mine - np.asarray(theirs))
        if weights == "knn8":
            assert diff.max() < 1e-6
        else:
            # with one or two neighbours a draw can pick the real neighbour again: an exact tie that esda decides
            # by rounding noise and civic311 counts as at least as extreme (see _folded_pseudo_p)
            assert (diff > 1e-6).sum() <= 8 and diff.max() <= 0.01
    # the injected hot spot around (3000, 7000) is found
    near = np.hypot(x - 3000, y - 7000) < 800
    assert (gi.bins[near] == 3).mean() > 0.8
    assert (gi.bins[np.hypot(x - 3000, y - 7000) > 5000] > 0).sum() == 0


def test_fdr_threshold_matches_esda():
    p = np.asarray(REF["chicago"]["queen"]["lisa_psim"])
    assert ss.fdr_threshold(p, 0.05) == pytest.approx(REF["chicago"]["queen"]["fdr_05"], abs=0)
    assert ss.fdr_threshold(p, 0.10) == pytest.approx(REF["chicago"]["queen"]["fdr_10"], abs=0)
    # no p-value passes: esda returns the Bonferroni bound alpha / n
    assert ss.fdr_threshold(np.full(20, 0.5), 0.05) == pytest.approx(0.05 / 20)


def test_confidence_bins_levels_and_fdr():
    z = np.array([3.0, -2.2, 1.7, 0.5, -3.5])
    p = np.array([0.0027, 0.0278, 0.089, 0.6, 0.0005])
    assert ss.confidence_bins(z, p, use_fdr=False).tolist() == [3, -2, 1, 0, -3]
    # Benjamini-Hochberg by hand, sorted p = 0.0005, 0.0027, 0.0278, 0.089, 0.6:
    #  90 %: k*0.10/5 = 0.02, 0.04, 0.06, 0.08, 0.10 -> largest k with p(k) < bound is 3 -> threshold 0.06
    #  95 %: 0.01, 0.02, 0.03, 0.04, 0.05 -> k = 3 -> threshold 0.03 ; 99 %: 0.002, 0.004, ... -> k = 2 -> 0.004
    fdr_bins = ss.confidence_bins(z, p, use_fdr=True)
    assert fdr_bins.tolist() == [3, -2, 0, 0, -3]


def test_gi_star_zero_variance_is_not_significant():
    w = wt.knn(np.arange(40.0), np.zeros(40), 4)
    res = ss.gi_star(np.full(40, 3.0), w, permutations=99, seed=1)
    assert (res.bins == 0).all()
    assert not np.isfinite(res.z).any()


def test_islands_have_null_pseudo_p():
    w = wt.distance_band(np.array([0.0, 1, 2, 100]), np.zeros(4), 1.5)
    res = ss.gi_star(np.array([1.0, 2, 3, 4]), w, permutations=99, seed=1)
    assert res.n_neighbors.tolist() == [1, 2, 1, 0]
    assert np.isnan(res.p_sim[3]) and np.isfinite(res.p_sim[:3]).all()


def test_pseudo_p_ties_count_as_at_least_as_extreme():
    # every simulated value equals the observed one up to rounding noise -> p = 1 (not decided by noise)
    observed = np.array([0.3])
    sims = np.array([[0.1 + 0.2] * 99])  # 0.30000000000000004
    assert ss._folded_pseudo_p(observed, sims)[0] == 1.0
    # a zero-count feature among zero-count neighbours is not a significant cold spot
    y = np.array([0.0] * 30 + [5.0] * 10)
    w = wt.knn(np.arange(40.0), np.zeros(40), 2)
    res = ss.gi_star(y, w, permutations=199, seed=1)
    assert res.p_sim[0] > 0.05
    # without ties the fold is esda's: 3 of 99 draws above -> (3 + 1) / 100
    assert ss._folded_pseudo_p(np.array([1.0]), np.r_[np.zeros(96), np.full(3, 2.0)][None])[0] == 0.04
