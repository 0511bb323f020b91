# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:optimizedhotspots — optimised hot spots for request points on a hexagon grid."""

from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)

from ..core.geometry import assign_points_to_polygons, polygon_rings_from_wkb
from ..core.hexgrid import cell_size_from_points, hex_axial, hex_centre, hex_counts, hex_ring, incremental_band
from ..core.spatialstats import gi_star
from ..core.weights import distance_band
from ..layerio import METRIC, QT_TYPES, py_value, read_points
from .base import Civic311Algorithm
from .hotspots import GI_FIELDS


class OptimizedHotSpots(Civic311Algorithm):
    NAME = "optimizedhotspots"
    DISPLAY_NAME = "Optimised hot spots for request points"
    GROUP = "precincts"
    TAGS = ('hot spot', 'getis-ord', 'hexagon', 'optimized')
    OUTPUT_FIELDS = ("requests",) + tuple(name for name, _ in GI_FIELDS)
    HELP = (
        "Hot spots for analysts without precincts, in the spirit of ArcGIS's Optimized Hot Spot Analysis:\n"
        "1. Requests are counted in a hexagon grid. CELL_SIZE (hexagon width in metres, flat side to flat side) "
        "defaults to twice the mean nearest-neighbour distance between distinct request locations (never "
        "finer than about 20,000 hexagons over the study area). Without BOUNDARY, empty hexagons inside the "
        "convex hull of the requests are kept (they matter for Gi*); with BOUNDARY, the hexagons that "
        "intersect it, clipped to it, and requests outside it are left out.\n"
        "2. The distance band is the first peak of incremental spatial autocorrelation: global Moran's I "
        "z-scores (binary weights, normality assumption) for 10 bands starting at the distance that gives "
        "every hexagon a neighbour, growing by the mean nearest-neighbour distance; without a peak, the mean "
        "distance to the k nearest neighbours (k = 5 % of the hexagons, 3–30).\n"
        "3. Gi* (binary weights including the hexagon itself, 999 permutations, seed 1) with the False "
        "Discovery Rate correction.\n\n"
        "Output: hexagons with requests, gi_z, gi_p, gi_psim, gi_bin, n_neighbors (see Hot spot analysis). "
        "Numbers CELL_SIZE and DISTANCE_BAND (metres). Distances are true metres whatever the CRS."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFeatureSource(
            "INPUT", self.tr("Request points"), [QgsProcessing.SourceType.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterNumber(
            "CELL_SIZE", self.tr("Hexagon width (metres, 0 = automatic)"), QgsProcessingParameterNumber.Type.Double,
            0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "BOUNDARY", self.tr("Study area boundary"), [QgsProcessing.SourceType.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", self.tr("Optimised hot spots"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("CELL_SIZE", self.tr("Hexagon width used (m)")))
        self.addOutput(QgsProcessingOutputNumber("DISTANCE_BAND", self.tr("Distance band used (m)")))

    def execute(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, "INPUT", context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "INPUT"))
        pts = read_points(self, parameters, "INPUT", context, feedback, (), dest_crs=METRIC)
        metric = pts.crs
        if pts.null_geometry:
            feedback.pushWarning(f"{pts.null_geometry} request(s) without a location are left out.")
        x, y = pts.x, pts.y
        boundary = None
        if parameters.get("BOUNDARY"):
            bsource = self.parameterAsSource(parameters, "BOUNDARY", context)
            if bsource is not None:
                to_metric = QgsCoordinateTransform(bsource.sourceCrs(), metric, context.transformContext())
                geoms = []
                for f in bsource.getFeatures():
                    g = f.geometry()
                    if not g.isNull():
                        g = g.makeValid() if not g.isGeosValid() else g
                        g.transform(to_metric)
                        geoms.append(g)
                boundary = QgsGeometry.unaryUnion(geoms) if geoms else None
        if boundary is not None:
            rings = polygon_rings_from_wkb(bytes(boundary.asWkb()))
            inside = assign_points_to_polygons(x, y, [rings]) >= 0
            if (~inside).any():
                feedback.pushInfo(f"{int((~inside).sum())} request(s) outside BOUNDARY are left out.")
            x, y = x[inside], y[inside]
        if len(x) < 3:
            raise QgsProcessingException(f"Optimised hot spots need at least 3 located requests; found {len(x)}.")
        width = self.parameterAsDouble(parameters, "CELL_SIZE", context) or cell_size_from_points(x, y)
        if boundary is None:
            grid = hex_counts(x, y, width)
            q, r, cx, cy, counts, size = grid.q, grid.r, grid.cx, grid.cy, grid.counts, grid.size
            polys = [QgsGeometry.fromPolygonXY([[QgsPointXY(a, b) for a, b in hex_ring(ccx, ccy, size)]])
                     for ccx, ccy in zip(cx, cy)]
        else:
            size = width / np.sqrt(3)
            bb = boundary.boundingBox()
            x0, y0 = bb.xMinimum(), bb.yMinimum()
            corner_q, corner_r = hex_axial(np.array([bb.xMinimum(), bb.xMaximum(), bb.xMinimum(), bb.xMaximum()]),
                                           np.array([bb.yMinimum(), bb.yMinimum(), bb.yMaximum(), bb.yMaximum()]),
                                           size, x0, y0)
            rr = np.arange(corner_r.min() - 1, corner_r.max() + 2)
            qq = np.arange(corner_q.min() - (rr.max() - rr.min()) - 1, corner_q.max() + 2)
            gq, gr = (a.ravel() for a in np.meshgrid(qq, rr))
            gx, gy = hex_centre(gq, gr, size, x0, y0)
            inside_bb = (gx > bb.xMinimum() - width) & (gx < bb.xMaximum() + width) & \
                        (gy > bb.yMinimum() - width) & (gy < bb.yMaximum() + width)
            gq, gr, gx, gy = gq[inside_bb], gr[inside_bb], gx[inside_bb], gy[inside_bb]
            engine = QgsGeometry.createGeometryEngine(boundary.constGet())
            engine.prepareGeometry()
            polys, keep = [], []
            for i, (ccx, ccy) in enumerate(zip(gx, gy)):
                hexagon = QgsGeometry.fromPolygonXY([[QgsPointXY(a, b) for a, b in hex_ring(ccx, ccy, size)]])
                if engine.intersects(hexagon.constGet()):
                    # keep only the areal part: a hexagon touching the boundary along an edge gives a line
                    piece = hexagon.intersection(boundary)
                    piece.convertGeometryCollectionToSubclass(QgsWkbTypes.GeometryType.PolygonGeometry)
                    if piece.type() == QgsWkbTypes.GeometryType.PolygonGeometry and piece.area() > 0:
                        polys.append(piece)
                        keep.append(i)
            q, r, cx, cy = gq[keep], gr[keep], gx[keep], gy[keep]
            pq, pr = hex_axial(x, y, size, x0, y0)
            lookup = {(a, b): i for i, (a, b) in enumerate(zip(q, r))}
            cells = np.array([lookup.get((a, b), -1) for a, b in zip(pq, pr)], dtype=np.int64)
            counts = np.bincount(cells[cells >= 0], minlength=len(q))
        if len(counts) < 3:
            raise QgsProcessingException("Fewer than 3 hexagons: give a smaller CELL_SIZE.")
        band, profile = incremental_band(cx, cy, counts.astype(float))
        feedback.pushInfo("Incremental spatial autocorrelation (distance m: z): "
                          + ", ".join(f"{d:.0f}: {z:.2f}" for d, z in profile))
        feedback.pushInfo(f"Hexagon width {width:.1f} m, {len(counts)} hexagons, distance band {band:.1f} m.")
        result = gi_star(counts.astype(float), distance_band(cx, cy, band), permutations=999, seed=1, use_fdr=True,
                         cancelled=feedback.isCanceled)
        fields = QgsFields()
        for name, kind in [("requests", "int")] + GI_FIELDS:
            fields.append(QgsField(name, QT_TYPES[kind]))
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields, QgsWkbTypes.Type.MultiPolygon,
                                             source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        back = QgsCoordinateTransform(metric, source.sourceCrs(), context.transformContext())
        for i, geom in enumerate(polys):
            geom = QgsGeometry(geom)
            geom.transform(back)
            geom.convertToMultiType()
            feat = QgsFeature(fields)
            feat.setGeometry(geom)
            feat.setAttributes([int(counts[i])] + [py_value(v[i]) for v in (
                result.z, result.p, result.p_sim, result.bins, result.n_neighbors)])
            if not sink.addFeature(feat, QgsFeatureSink.Flag.FastInsert):
                raise QgsProcessingException(f"Could not write hexagon {i} to the output: {sink.lastError()}")
        return {"OUTPUT": dest_id, "CELL_SIZE": float(width), "DISTANCE_BAND": float(band)}
