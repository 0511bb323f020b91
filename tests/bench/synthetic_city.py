# SPDX-License-Identifier: GPL-2.0-or-later
"""Deterministic synthetic city for `make bench` (cached in tests/bench/cache/).

A 40 km x 30 km city in UTM zone 16N (EPSG:32616): requests = 70 % uniform background + 30 % in 12 Gaussian
hot spots, spread over one year; 4,000 Voronoi precincts (seeded points, QGIS's Voronoi polygons clipped to the
city) with registered voters and ballots; 12,000 transit stops. Scales: 10k, 100k and 1M requests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CACHE = Path(__file__).resolve().parent / "cache"
CRS = "EPSG:32616"
X0, Y0, WIDTH, HEIGHT = 420_000.0, 4_620_000.0, 40_000.0, 30_000.0
SCALES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
CATEGORIES = ["Pothole in Street", "Rodent Baiting", "Graffiti Removal", "Street Light Out", "Noise",
              "Abandoned Vehicle", "Tree Trim", "Sanitation Code Violation"]


def requests_frame(n: int, seed: int = 311) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_hot = int(n * 0.3)
    centres = rng.uniform((X0 + 3000, Y0 + 3000), (X0 + WIDTH - 3000, Y0 + HEIGHT - 3000), size=(12, 2))
    which = rng.integers(0, 12, n_hot)
    hot = centres[which] + rng.normal(0, 900, size=(n_hot, 2))
    background = rng.uniform((X0, Y0), (X0 + WIDTH, Y0 + HEIGHT), size=(n - n_hot, 2))
    xy = np.clip(np.vstack([hot, background]), (X0, Y0), (X0 + WIDTH - 1e-6, Y0 + HEIGHT - 1e-6))
    start = np.datetime64("2025-01-01T00:00:00")
    created = start + rng.integers(0, 365 * 86400, n).astype("timedelta64[s]")
    return pd.DataFrame({
        "request_id": [f"SR{i:08d}" for i in range(n)],
        "created_at": pd.to_datetime(created).strftime("%Y-%m-%dT%H:%M:%S"),
        "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)],
        "x": xy[:, 0], "y": xy[:, 1]})


def write_points_gpkg(frame: pd.DataFrame, path: Path, layer: str, fields: list[str]) -> None:
    from osgeo import gdal

    csv = path.with_suffix(f".{layer}.csv")
    out = frame[fields].copy()
    # the CSV driver reads a column named WKT as the geometry
    out["WKT"] = "POINT (" + frame["x"].map("{:.3f}".format) + " " + frame["y"].map("{:.3f}".format) + ")"
    out.to_csv(csv, index=False)
    gdal.UseExceptions()
    gdal.VectorTranslate(
        str(path), str(csv), layerName=layer, accessMode="append" if path.exists() else None,
        options=["-a_srs", CRS, "-nlt", "POINT"])
    csv.unlink()


def precincts(path: Path, n: int = 4000, seed: int = 2023) -> None:
    """Voronoi precincts (QGIS native:voronoipolygons clipped to the city) with voters and ballots."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsPointXY, QgsVectorFileWriter, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    rng = np.random.default_rng(seed)
    seeds = rng.uniform((X0, Y0), (X0 + WIDTH, Y0 + HEIGHT), size=(n, 2))
    pts = QgsVectorLayer(f"Point?crs={CRS}", "seeds", "memory")
    feats = []
    for x, y in seeds:
        f = QgsFeature()
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        feats.append(f)
    pts.dataProvider().addFeatures(feats)
    from qgis.core import QgsApplication

    import processing

    alg = "native:voronoipolygons"  # QGIS >= 3.28; the Python version before
    if QgsApplication.processingRegistry().algorithmById(alg) is None:
        alg = "qgis:voronoipolygons"
    vor = processing.run(alg, {"INPUT": pts, "BUFFER": 0, "OUTPUT": "memory:"})["OUTPUT"]
    city = QgsGeometry.fromWkt(f"POLYGON(({X0} {Y0},{X0 + WIDTH} {Y0},{X0 + WIDTH} {Y0 + HEIGHT},"
                               f"{X0} {Y0 + HEIGHT},{X0} {Y0}))")
    out = QgsVectorLayer(f"MultiPolygon?crs={CRS}", "precincts", "memory")
    prov = out.dataProvider()
    prov.addAttributes([QgsField("precinct_id", QVariant.String), QgsField("registered_voters", QVariant.Int),
                        QgsField("ballots_cast", QVariant.Int)])
    out.updateFields()
    feats = []
    for i, f in enumerate(vor.getFeatures()):
        g = f.geometry().intersection(city)
        g.convertToMultiType()
        voters = int(rng.integers(200, 3000))
        nf = QgsFeature(out.fields())
        nf.setGeometry(g)
        nf.setAttributes([f"P{i:05d}", voters, int(voters * rng.uniform(0.15, 0.75))])
        feats.append(nf)
    prov.addFeatures(feats)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.layerName = "precincts"
    options.actionOnExistingFile = QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteLayer \
        if path.exists() else QgsVectorFileWriter.ActionOnExistingFile.CreateOrOverwriteFile
    from qgis.core import QgsCoordinateTransformContext

    QgsVectorFileWriter.writeAsVectorFormatV2(out, str(path), QgsCoordinateTransformContext(), options)


def build(scale: str) -> Path:
    """Path to the cached GeoPackage of a scale, built on first use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"city_{scale}.gpkg"
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp.gpkg")
    if tmp.exists():
        tmp.unlink()
    write_points_gpkg(requests_frame(SCALES[scale]), tmp, "requests", ["request_id", "created_at", "category"])
    rng = np.random.default_rng(12)
    stops = pd.DataFrame({"stop_id": [f"S{i:05d}" for i in range(12_000)],
                          "x": rng.uniform(X0, X0 + WIDTH, 12_000), "y": rng.uniform(Y0, Y0 + HEIGHT, 12_000)})
    write_points_gpkg(stops, tmp, "stops", ["stop_id"])
    precincts(tmp)
    tmp.rename(path)
    return path
