# SPDX-License-Identifier: GPL-2.0-or-later
"""Deterministic synthetic city for `make bench` (cached in tests/bench/cache/).

A 40 km x 30 km city in UTM zone 16N (EPSG:32616): requests = 70 % uniform background + 30 % in 12 Gaussian
hot spots, spread over one year (10M: five years); 4,000 Voronoi precincts (seeded points, QGIS's Voronoi polygons
clipped to the city) with registered voters and ballots; 12,000 transit stops. Scales: 10k, 100k, 1M and 10M
requests. The 10M city is generated and written a million rows at a time (bounded memory).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

CACHE = Path(__file__).resolve().parent / "cache"
CRS = "EPSG:32616"
X0, Y0, WIDTH, HEIGHT = 420_000.0, 4_620_000.0, 40_000.0, 30_000.0
SCALES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
YEARS = {"10M": 5}  # other scales: one year (2025)
CHUNK = 1_000_000
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


def requests_chunks(scale: str):
    """The requests of a scale as frames of at most CHUNK rows: the one frame of requests_frame up to 1M; for 10M,
    chunks from their own seeds around the same hot spots, over YEARS[scale] years from 2021, ids unique."""
    n = SCALES[scale]
    if n <= CHUNK:
        yield requests_frame(n)
        return
    centres = np.random.default_rng(311).uniform((X0 + 3000, Y0 + 3000), (X0 + WIDTH - 3000, Y0 + HEIGHT - 3000),
                                                 size=(12, 2))
    days = 365 * YEARS[scale] + 1
    for k, lo in enumerate(range(0, n, CHUNK)):
        m = min(CHUNK, n - lo)
        rng = np.random.default_rng((311, k))
        n_hot = int(m * 0.3)
        hot = centres[rng.integers(0, 12, n_hot)] + rng.normal(0, 900, size=(n_hot, 2))
        background = rng.uniform((X0, Y0), (X0 + WIDTH, Y0 + HEIGHT), size=(m - n_hot, 2))
        xy = np.clip(np.vstack([hot, background]), (X0, Y0), (X0 + WIDTH - 1e-6, Y0 + HEIGHT - 1e-6))
        created = np.datetime64("2021-01-01T00:00:00") + rng.integers(0, days * 86400, m).astype("timedelta64[s]")
        yield pd.DataFrame({
            "request_id": [f"SR{i:08d}" for i in range(lo, lo + m)],
            "created_at": pd.to_datetime(created).strftime("%Y-%m-%dT%H:%M:%S"),
            "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), m)],
            "x": xy[:, 0], "y": xy[:, 1]})


def date_range(scale: str) -> tuple[str, str]:
    """First and last day of the requests of a scale."""
    years = YEARS.get(scale, 1)
    return ("2021-01-01", "2025-12-31") if years == 5 else ("2025-01-01", "2025-12-31")


def write_requests_streamed(scale: str, path: Path) -> None:
    """The 10M requests layer, a chunk at a time, with civic311's own bulk GeoPackage writer (and its packed
    spatial index): GDAL's row-by-row R-tree updates would take many minutes."""
    import importlib
    import tempfile

    root = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "civic311").symlink_to(root, target_is_directory=True)
        sys.path.insert(0, tmp)
        try:
            gpkgwriter = importlib.import_module("civic311.processing.gpkgwriter")
            writer = gpkgwriter.LayerWriter(str(path), "requests", {"request_id": "string", "created_at": "string",
                                                                    "category": "string"}, epsg=32616)
            for frame in requests_chunks(scale):
                writer.append({c: frame[c].to_numpy(object) for c in ("request_id", "created_at", "category")},
                              frame["x"].to_numpy(), frame["y"].to_numpy())
            writer.close()
        finally:
            sys.path.remove(tmp)


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
    if SCALES[scale] > CHUNK:
        write_requests_streamed(scale, tmp)
    else:
        write_points_gpkg(requests_frame(SCALES[scale]), tmp, "requests", ["request_id", "created_at", "category"])
    rng = np.random.default_rng(12)
    stops = pd.DataFrame({"stop_id": [f"S{i:05d}" for i in range(12_000)],
                          "x": rng.uniform(X0, X0 + WIDTH, 12_000), "y": rng.uniform(Y0, Y0 + HEIGHT, 12_000)})
    write_points_gpkg(stops, tmp, "stops", ["stop_id"])
    precincts(tmp)
    tmp.rename(path)
    return path
