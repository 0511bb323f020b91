# SPDX-License-Identifier: GPL-2.0-or-later
"""Reference timing for `make bench`: esda's G_Local (999 permutations, Queen) on a precinct GeoPackage.
Run with a Python that has esda, libpysal and shapely (never a civic311 dependency)."""

import sqlite3
import sys
import time

import esda
import libpysal
import numpy as np
from shapely import wkb

ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}
con = sqlite3.connect(sys.argv[1])
table = con.execute("select table_name from gpkg_contents where data_type = 'features'").fetchone()[0]
geom_col = con.execute("select column_name from gpkg_geometry_columns where table_name = ?", (table,)).fetchone()[0]
geoms, values = [], []
for blob, value in con.execute(f'select "{geom_col}", rate_eb from "{table}"'):
    start = 8 + ENVELOPE_BYTES[(blob[3] >> 1) & 7]
    geoms.append(wkb.loads(bytes(blob[start:])))
    values.append(value)
t0 = time.perf_counter()
w = libpysal.weights.Queen.from_iterable(geoms)
t1 = time.perf_counter()
g = esda.G_Local(np.asarray(values, dtype=float), w, transform="B", star=True, permutations=999, seed=1)
t2 = time.perf_counter()
print(f'{{"results": {{"weights_s": {t1 - t0:.3f}, "g_local_s": {t2 - t1:.3f}}}}}')
