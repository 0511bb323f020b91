# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:transitaccess — distance to transit stops and polling places, and access gaps."""

from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)

from ..core.proximity import Facilities
from ..layerio import METRIC, metric_crs_for, read_points, transform_xy, write_copy_with_columns
from .base import Civic311Algorithm

PIECE = 125_000  # places computed per piece; the next piece is computed while this one is written
NEW_FIELDS = [("stop_id", "string"), ("stop_m", "double"), ("stops_walk", "int"), ("poll_id", "string"),
              ("poll_m", "double"), ("access_gap", "int")]


def id_values(alg, parameters, key, field_key, context, fids):
    """Ids of a facility layer aligned with ``fids`` (the field's values as text, or the feature id)."""
    source = alg.parameterAsSource(parameters, key, context)
    field = alg.parameterAsString(parameters, field_key, context)
    if field and source.fields().lookupField(field) < 0:
        raise QgsProcessingException(f"{key} has no field {field}: choose the id field.")
    if not field:
        return np.array([str(f) for f in fids], dtype=object)
    values = {f.id(): f[field] for f in source.getFeatures()}
    return np.array([None if values.get(int(f)) is None else str(values[int(f)]) for f in fids], dtype=object)


class TransitAccess(Civic311Algorithm):
    NAME = "transitaccess"
    DISPLAY_NAME = "Transit and polling-place access"
    GROUP = "fieldops"
    OUTPUT_FIELDS = tuple(name for name, _ in NEW_FIELDS)
    HELP = (
        "For each feature of INPUT (points, or polygons measured from a point on their surface): the nearest "
        "transit stop and its distance, the number of stops within WALK_DISTANCE, the nearest polling place "
        "and its distance, and whether the place has an access gap.\n\n"
        "Distances are true ground distances in metres whatever the layers' CRS (geographic included), within "
        "0.1 % of the ellipsoidal (geodesic) distance: a layer in a metre CRS whose scale stays that close to 1 "
        "over the data (UTM, state planes in metres) is measured as it is; anything else (geographic, Web "
        "Mercator, US feet) is projected to an azimuthal equidistant projection centred on the data. Nearest "
        "neighbours come from a KD-tree, so a million points take seconds.\n\n"
        "Output fields: stop_id (STOP_ID_FIELD of the nearest stop), stop_m (metres to it), stops_walk (stops "
        "within WALK_DISTANCE), poll_id and poll_m (nearest polling place; NULL without POLLING_PLACES), "
        "access_gap (1 when the feature is within WALK_DISTANCE of a stop but farther than POLL_DISTANCE from "
        "every polling place, else 0; NULL without POLLING_PLACES). Features without geometry get NULLs and "
        "are reported."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFeatureSource(
            "INPUT", self.tr("Places (points or polygons)"),
            [QgsProcessing.SourceType.TypeVectorPoint, QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "STOPS", self.tr("Transit stops"), [QgsProcessing.SourceType.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            "STOP_ID_FIELD", self.tr("Stop id field"), defaultValue="stop_id", parentLayerParameterName="STOPS",
            optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "POLLING_PLACES", self.tr("Polling places"), [QgsProcessing.SourceType.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterField(
            "POLLING_ID_FIELD", self.tr("Polling place id field"), parentLayerParameterName="POLLING_PLACES",
            optional=True))
        for key, label, default in (("WALK_DISTANCE", "Walking distance to a stop (metres)", 400.0),
                                    ("POLL_DISTANCE", "Distance to a polling place that counts as far (metres)",
                                     800.0)):
            self.addParameter(QgsProcessingParameterNumber(
                key, self.tr(label), QgsProcessingParameterNumber.Type.Double, default, minValue=0.0))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Transit access")))

    def execute(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, "INPUT", context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "INPUT"))
        walk = self.parameterAsDouble(parameters, "WALK_DISTANCE", context)
        poll_far = self.parameterAsDouble(parameters, "POLL_DISTANCE", context)
        if QgsWkbTypes.geometryType(source.wkbType()) == QgsWkbTypes.GeometryType.PolygonGeometry:
            xs, ys, ids = [], [], []
            for feat in source.getFeatures():
                geom = feat.geometry()
                ids.append(feat.id())
                pt = geom.pointOnSurface() if not (geom.isNull() or geom.isEmpty()) else None
                xs.append(pt.asPoint().x() if pt is not None and not pt.isNull() else np.nan)
                ys.append(pt.asPoint().y() if pt is not None and not pt.isNull() else np.nan)
            x, y, fids = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), np.asarray(ids, dtype=np.int64)
            metric = metric_crs_for(x, y, source.sourceCrs(), context)
            x, y = transform_xy(x, y, source.sourceCrs(), metric, context)
            nulls = int((~np.isfinite(x)).sum())
        else:
            pts = read_points(self, parameters, "INPUT", context, feedback, (), dest_crs=METRIC, keep_null=True)
            x, y, fids, nulls, metric = pts.x, pts.y, pts.fids, pts.null_geometry, pts.crs
        if nulls:
            feedback.pushWarning(f"{nulls} feature(s) of INPUT have no geometry: their access fields are NULL.")
        ok = np.isfinite(x)

        stops = read_points(self, parameters, "STOPS", context, feedback, (), dest_crs=metric)
        if len(stops.x) == 0:
            raise QgsProcessingException("STOPS has no located features: choose a layer of transit stops.")
        stop_ids = id_values(self, parameters, "STOPS", "STOP_ID_FIELD", context, stops.fids)
        polls, poll_ids = None, None
        if parameters.get("POLLING_PLACES"):
            polls = read_points(self, parameters, "POLLING_PLACES", context, feedback, (), dest_crs=metric)
            if len(polls.x) == 0:
                raise QgsProcessingException("POLLING_PLACES has no located features.")
            poll_ids = id_values(self, parameters, "POLLING_PLACES", "POLLING_ID_FIELD", context, polls.fids)
        stop_index = Facilities(stops.x, stops.y)
        poll_index = Facilities(polls.x, polls.y) if polls is not None else None
        gaps = [0]

        def pieces():  # computed a piece at a time, each while the previous one is being written
            for start in range(0, len(x), PIECE):
                if feedback.isCanceled():
                    raise QgsProcessingException("Cancelled before the output was complete.")
                part = slice(start, start + PIECE)
                has = ok[part]
                px, py = x[part][has], y[part][has]  # the located places of this piece
                # text columns hold None, numeric ones NaN where there is no value (NULL in the output)
                size = len(has)
                columns = {name: np.full(size, None, dtype=object) if kind == "string" else np.full(size, np.nan)
                           for name, kind in NEW_FIELDS}
                near_stop = stop_index.nearest(px, py, radius=walk)
                columns["stop_id"][has] = stop_ids[near_stop.index]
                columns["stop_m"][has] = near_stop.distance
                columns["stops_walk"][has] = near_stop.within
                if poll_index is not None:
                    near_poll = poll_index.nearest(px, py)
                    gap = (near_stop.distance <= walk) & (near_poll.distance > poll_far)
                    columns["poll_id"][has] = poll_ids[near_poll.index]
                    columns["poll_m"][has] = near_poll.distance
                    columns["access_gap"][has] = gap
                    gaps[0] += int(gap.sum())
                yield [columns[name] for name, _ in NEW_FIELDS]

        dest_id = write_copy_with_columns(self, parameters, "INPUT", "OUTPUT", context, feedback, source, fids,
                                          NEW_FIELDS, pieces())
        if poll_index is not None:
            feedback.pushInfo(f"{gaps[0]} feature(s) have an access gap.")
        return {"OUTPUT": dest_id}
