# SPDX-License-Identifier: GPL-2.0-or-later
"""The physical floor of a benchmark row: read the same points through GDAL's Arrow stream (only the columns the
algorithm reads) and write the algorithm's output again with GDAL (GeoPackage, spatial index included). Plain
Python + GDAL, no QGIS: what any tool must at least spend on the same input and output.

Usage: python3 floor.py SOURCE LAYER COLUMNS(comma-separated) OUTPUT [OUTPUT …]   (LAYER '-' = the first layer)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from osgeo import gdal, ogr

gdal.UseExceptions()


def main() -> None:
    source, layer_name, columns, outputs = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4:]
    start = time.perf_counter()
    ds = ogr.Open(source)
    layer = ds.GetLayer(0) if layer_name == "-" else ds.GetLayerByName(layer_name)
    defn = layer.GetLayerDefn()
    layer.SetIgnoredFields([defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())
                            if defn.GetFieldDefn(i).GetName() not in columns])
    rows = 0
    for batch in layer.GetArrowStreamAsNumPy(options=["USE_MASKED_ARRAYS=NO"]):
        rows += len(next(iter(batch.values())))
    read = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        for i, out in enumerate(outputs):
            gdal.VectorTranslate(str(Path(tmp) / f"copy{i}.gpkg"), out, format="GPKG")
    print(f"FLOOR rows={rows} read={read:.2f} total={time.perf_counter() - start:.2f}", flush=True)


if __name__ == "__main__":
    main()
