# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference values from PySAL esda for the statistics tests (run in a throwaway venv, NOT a dependency):

    python3 -m venv /tmp/esda-venv && /tmp/esda-venv/bin/pip install esda==2.9.0 libpysal shapely
    /tmp/esda-venv/bin/python tests/data/make_esda_reference.py

Writes tests/data/esda_reference.json: Gi* (star, binary) and Local Moran (row-standardised) values with 999
seeded permutations on (a) the real 2023 Chicago precincts (turnout, Queen and Rook contiguity) and (b) a
synthetic point layer with a hot spot (K nearest neighbours and the minimum distance band), plus esda.fdr.
numba must NOT be installed: esda then draws its permutations with numpy's legacy RandomState.
"""

import json
import warnings
from pathlib import Path

import esda
import libpysal
import numpy as np
from shapely.geometry import shape

warnings.simplefilter("ignore")
HERE = Path(__file__).resolve().parent
GEOJSON = HERE.parents[2] / "shared" / "data" / "chicago_precincts_2023" / \
    "DERIVED_precincts_2023_with_feb2023_turnout.geojson"


def stats(y, w, seed=1):
    g = esda.G_Local(y, w, transform="B", star=True, permutations=999, seed=seed)
    m = esda.Moran_Local(y, w, transformation="r", permutations=999, seed=seed)
    return {
        "gi_z": g.Zs.tolist(), "gi_psim": np.asarray(g.p_sim, dtype=float).tolist(),
        "lisa_i": m.Is.tolist(), "lisa_z": m.z_sim.tolist(), "lisa_psim": m.p_sim.tolist(), "lisa_q": m.q.tolist(),
        "lisa_eic": m.EIc.tolist(), "lisa_vic": m.VIc.tolist(),  # conditional-randomisation moments
        "fdr_05": float(esda.fdr(m.p_sim, 0.05)), "fdr_10": float(esda.fdr(m.p_sim, 0.10)),
        "cardinalities": [int(w.cardinalities[i]) for i in w.id_order],
    }


def main():
    gj = json.loads(GEOJSON.read_text())
    geoms = [shape(f["geometry"]) for f in gj["features"]]
    props = [f["properties"] for f in gj["features"]]
    turnout = np.array([p["ballots_cast"] / p["registered_voters"] for p in props])
    out = {"chicago": {"ward_prec_label": [p["ward_prec_label"] for p in props], "turnout": turnout.tolist()}}
    out["chicago"]["queen"] = stats(turnout, libpysal.weights.Queen.from_iterable(geoms))
    out["chicago"]["rook"] = stats(turnout, libpysal.weights.Rook.from_iterable(geoms))

    rng = np.random.default_rng(42)
    xy = rng.uniform(0, 10_000, size=(400, 2))
    d = np.hypot(xy[:, 0] - 3_000, xy[:, 1] - 7_000)
    # continuous values (counts per unit exposure): no exact ties, so pseudo p-values compare exactly
    counts = rng.poisson(2 + 20 * np.exp(-(d / 1_200) ** 2)) / rng.uniform(0.8, 1.2, size=400)
    knn = libpysal.weights.KNN.from_array(xy, k=8)
    band = libpysal.weights.min_threshold_distance(xy)
    dist = libpysal.weights.DistanceBand.from_array(xy, threshold=band, binary=True, silence_warnings=True)
    out["synthetic"] = {"x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(), "counts": counts.tolist(),
                        "min_threshold": float(band), "knn8": stats(counts, knn, seed=7),
                        "band": stats(counts, dist, seed=7)}
    (HERE / "esda_reference.json").write_text(json.dumps(out))
    print("wrote", HERE / "esda_reference.json")


if __name__ == "__main__":
    main()
