# SPDX-License-Identifier: GPL-2.0-or-later
"""Requests assigned to zones (polygons) or to a hexagon grid, with their dates and categories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
)

from .core.geometry import assign_points_to_polygons
from .core.hexgrid import hex_axial, hex_centre, hex_ring
from .core.weights import Neighbours, build_weights
from .layerio import METRIC, read_points, read_polygons

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    from scipy import sparse

HEX_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, -1), (-1, 1))


@dataclass
class ZonedRequests:
    zone_ids: list[str]
    zone_of: np.ndarray  # zone index of each request (-1 = outside every zone)
    times: np.ndarray  # datetime64[ms], NaT when missing
    categories: np.ndarray | None
    features: list[QgsFeature] | None  # input zone features (None for hexagons)
    hex_geometries: list[QgsGeometry] | None  # hexagons in the requests' CRS
    polygons: list | None  # zone rings in metres (for contiguity), None for hexagons
    hex_qr: np.ndarray | None
    centres: np.ndarray  # (n, 2) metres
    crs: object  # CRS of the output geometries
    zone_fields: object | None
    wkb_type: object | None
    unlocated: int = 0
    undated: int = 0


def to_datetimes(values: np.ndarray) -> np.ndarray:
    """created_at values (datetime64, Python datetimes, ISO strings with or without offset) -> datetime64[ms].
    Values with an offset are converted to UTC; floating (zone-less) values are kept as they are. Bytes (an
    Arrow string column) are decoded first."""
    import pandas as pd

    if values.dtype.kind == "S" or (values.dtype == object and len(values) and isinstance(values[0], bytes)):
        values = pd.Series(values, dtype=object).str.decode("utf-8", "replace").to_numpy(dtype=object)
    if values.dtype.kind == "M":
        return values.astype("datetime64[ms]")
    series = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=True)
    return series.dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")


def zone_requests(alg, parameters, context, feedback, category_field: str = "") -> ZonedRequests:
    source = alg.parameterAsSource(parameters, "REQUESTS", context)
    if source is None:
        raise QgsProcessingException(alg.invalidSourceError(parameters, "REQUESTS"))
    if source.fields().lookupField("created_at") < 0:
        raise QgsProcessingException("REQUESTS needs a created_at date field (the output of 'Import 311 requests' "
                                     "or 'Fetch 311 service requests').")
    if category_field and source.fields().lookupField(category_field) < 0:
        raise QgsProcessingException(f"REQUESTS has no field {category_field}: choose the category field.")
    fields = ["created_at"] + ([category_field] if category_field else [])
    zones_given = bool(parameters.get("ZONES"))
    if zones_given:
        id_field = alg.parameterAsString(parameters, "ZONE_ID_FIELD", context)
        zsource = alg.parameterAsSource(parameters, "ZONES", context)
        if zsource is None:
            raise QgsProcessingException(alg.invalidSourceError(parameters, "ZONES"))
        if not id_field or zsource.fields().lookupField(id_field) < 0:
            raise QgsProcessingException("Choose ZONE_ID_FIELD, the field that identifies each zone.")
        table = read_polygons(alg, parameters, "ZONES", context, feedback, dest_crs=METRIC, label_field=id_field)
        if not table.features:
            raise QgsProcessingException("ZONES has no features.")
        pts = read_points(alg, parameters, "REQUESTS", context, feedback, fields, dest_crs=table.crs,
                          converters={"created_at": to_datetimes})
        zone_of = assign_points_to_polygons(pts.x, pts.y, table.polygons)
        ids = [str(f[id_field]) for f in table.features]
        result = ZonedRequests(ids, zone_of, pts.attrs["created_at"],
                               pts.attrs.get(category_field), table.features, None, table.polygons, None,
                               table.centroids, zsource.sourceCrs(), zsource.fields(), zsource.wkbType())
    else:
        width = alg.parameterAsDouble(parameters, "CELL_SIZE", context)
        if width <= 0:
            raise QgsProcessingException("Give ZONES (e.g. precincts) or a positive CELL_SIZE for a hexagon grid.")
        pts = read_points(alg, parameters, "REQUESTS", context, feedback, fields, dest_crs=METRIC,
                          converters={"created_at": to_datetimes})
        if len(pts.x) == 0:
            raise QgsProcessingException("REQUESTS has no located points.")
        size = width / np.sqrt(3)
        x0, y0 = float(pts.x.min()), float(pts.y.min())
        q, r = hex_axial(pts.x, pts.y, size, x0, y0)
        qr, zone_of = np.unique(np.column_stack([q, r]), axis=0, return_inverse=True)
        cx, cy = hex_centre(qr[:, 0], qr[:, 1], size, x0, y0)
        back = QgsCoordinateTransform(pts.crs, alg.parameterAsSource(parameters, "REQUESTS", context).sourceCrs(),
                                      context.transformContext())
        geoms = []
        for a, b in zip(cx, cy):
            g = QgsGeometry.fromPolygonXY([[QgsPointXY(u, v) for u, v in hex_ring(a, b, size)]])
            g.transform(back)
            geoms.append(g)
        ids = [f"hex_{a}_{b}" for a, b in qr]
        result = ZonedRequests(ids, zone_of.ravel().astype(np.int64), pts.attrs["created_at"],
                               pts.attrs.get(category_field), None, geoms, None, qr, np.column_stack([cx, cy]),
                               source.sourceCrs(), None, None)
    result.unlocated = pts.null_geometry + int((result.zone_of < 0).sum())
    result.undated = int(np.isnat(result.times).sum())
    return result


def zone_weights(zoned: ZonedRequests, kind: int, k: int, distance: float) -> tuple[sparse.csr_matrix, float]:
    """Neighbours between zones; on a hexagon grid contiguity means the six adjacent hexagons."""
    from scipy import sparse

    if zoned.hex_qr is not None and kind in (Neighbours.QUEEN, Neighbours.ROOK):
        index = {(int(a), int(b)): i for i, (a, b) in enumerate(zoned.hex_qr)}
        rows, cols = [], []
        for i, (a, b) in enumerate(zoned.hex_qr):
            for dq, dr in HEX_NEIGHBOURS:
                j = index.get((int(a) + dq, int(b) + dr))
                if j is not None:
                    rows.append(i)
                    cols.append(j)
        n = len(zoned.zone_ids)
        return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), 0.0
    return build_weights(kind, zoned.polygons, zoned.centres[:, 0], zoned.centres[:, 1], k=k, distance=distance)
