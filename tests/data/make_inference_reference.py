# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference values for the Mann-Kendall and cluster-robust regression tests (run in a throwaway venv, NOT a
dependency):

    python3 -m venv /tmp/esda-venv && /tmp/esda-venv/bin/pip install pymannkendall statsmodels
    /tmp/esda-venv/bin/python tests/data/make_inference_reference.py

Writes tests/data/inference_reference.json:
- mann_kendall: seeded count series of 11 to 40 periods (ties included) with pymannkendall.original_test's s, z
  and p (normal approximation, tie-corrected variance, continuity correction);
- cluster: a seeded regression with 25 clusters sharing a cluster effect, with statsmodels' OLS and WLS
  fit(cov_type='cluster', use_t=True) parameters, standard errors and p-values (and the classical ones).
"""

import json
from pathlib import Path

import numpy as np
import pymannkendall
import statsmodels.api as sm

HERE = Path(__file__).resolve().parent


def main():
    rng = np.random.default_rng(11)
    series = []
    for n in (11, 12, 15, 20, 26, 40):
        for trend in (0.0, 0.15):
            series.append((rng.poisson(3 + trend * np.arange(n))).tolist())
    mk = []
    for row in series:
        res = pymannkendall.original_test(np.asarray(row, dtype=float))
        mk.append({"series": row, "s": float(res.s), "z": float(res.z), "p": float(res.p)})

    n, groups = 300, 25
    g = rng.integers(0, groups, n)
    effect = rng.normal(0, 0.05, groups)[g]
    x1 = rng.gamma(2, 10, n) + 5 * effect
    x2 = rng.normal(0, 1, n)
    y = 0.5 - 0.004 * x1 + 0.01 * x2 + effect + rng.normal(0, 0.03, n)
    w = rng.integers(200, 2000, n).astype(float)
    design = sm.add_constant(np.column_stack([x1, x2]))
    cluster = {"y": y.tolist(), "x1": x1.tolist(), "x2": x2.tolist(), "w": w.tolist(),
               "groups": [f"ward {k}" for k in g]}
    for name, model in (("ols", sm.OLS(y, design)), ("wls", sm.WLS(y, design, weights=w))):
        plain = model.fit()
        robust = model.fit(cov_type="cluster", cov_kwds={"groups": g}, use_t=True)
        cluster[name] = {"params": plain.params.tolist(), "bse": plain.bse.tolist(), "p": plain.pvalues.tolist(),
                         "cluster_bse": robust.bse.tolist(), "cluster_p": robust.pvalues.tolist()}
    (HERE / "inference_reference.json").write_text(json.dumps({"mann_kendall": mk, "cluster": cluster}))
    print("wrote", HERE / "inference_reference.json")


if __name__ == "__main__":
    main()
