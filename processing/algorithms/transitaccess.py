# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:transitaccess — distance to transit stops and polling places, and access gaps."""

from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)

from ..core.geometry import assign_points_to_polygons
from ..core.proximity import Facilities
from ..layerio import METRIC, metric_crs_for, read_points, read_polygons, transform_xy, write_copy_with_columns
from .base import Civic311Algorithm

PIECE = 125_000  # places computed per piece; the next piece is computed while this one is written
NEW_FIELDS = [("stop_id", "string"), ("stop_m", "double"), ("stops_walk", "int"), ("poll_id", "string"),
              ("poll_m", "double"), ("access_gap", "int")]


def id_values(alg, parameters, key, field_key, context, fids, default_to_fid: bool = True):
    """Ids of a facility layer aligned with ``fids`` (the field's values as text, or the feature id)."""
    source = alg.parameterAsSource(parameters, key, context)
    field = alg.parameterAsString(parameters, field_key, context)
    if field and source.fields().lookupField(field) < 0:
        names = ", ".join(f.name() for f in source.fields())
        raise QgsProcessingException(f"{key} has no field {field!r} ({field_key}). Its fields: {names}.")
    if not field:
        return np.array([str(f) for f in fids], dtype=object) if default_to_fid else None
    request = QgsFeatureRequest().setSubsetOfAttributes([field], source.fields()).setFlags(
        QgsFeatureRequest.Flag.NoGeometry)
    values = {f.id(): f[field] for f in source.getFeatures(request)}
    return np.array([None if values.get(int(f)) in (None, "") or str(values.get(int(f))) == "NULL"
                     else str(values[int(f)]) for f in fids], dtype=object)


def assigned_places(place_precincts: np.ndarray, precinct_ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Index of the polling place assigned to each precinct (-1 when none serves it), and how many precincts
    more than one place claims (the first place is used)."""
    first: dict = {}
    claimed: dict = {}
    for i, pid in enumerate(place_precincts.tolist()):
        if pid is None:
            continue
        first.setdefault(pid, i)
        claimed[pid] = claimed.get(pid, 0) + 1
    index = np.array([first.get(p, -1) if p is not None else -1 for p in precinct_ids.tolist()], dtype=np.int64)
    return index, sum(1 for c in claimed.values() if c > 1)


class TransitAccess(Civic311Algorithm):
    NAME = "transitaccess"
    DISPLAY_NAME = "Transit and polling-place access"
    GROUP = "fieldops"
    TAGS = ('gtfs', 'stops', 'distance', 'nearest', 'polling place')
    OUTPUT_FIELDS = tuple(name for name, _ in NEW_FIELDS)
    HELP = (
        "For each feature of INPUT (points, or polygons measured from a point on their surface): the nearest "
        "transit stop and its distance, the number of stops within WALK_DISTANCE, the polling place and its "
        "distance, and whether the place has an access gap.\n\n"
        "Polling place: with POLLING_PRECINCT_FIELD (the field of POLLING_PLACES naming the precinct each place "
        "serves) and PRECINCT_FIELD (the matching id field of INPUT), poll_id/poll_m are the place the precinct's "
        "voters are assigned to and the distance to it; precincts no place serves fall back to the nearest place "
        "(counted in the log). Without them, the nearest polling place (which for many precincts is not the one "
        "their voters use).\n\n"
        "For precinct polygons with REQUESTS (311 request points), poll_m is the mean distance from the "
        "precinct's request locations to its polling place: requests mark where residents live and complain, "
        "which a point on the polygon's surface does not (an airport precinct's point may lie on the airfield). "
        "Precincts without requests, and every distance without REQUESTS, are measured from a point on the "
        "polygon's surface; the log says how many precincts were measured each way. Invalid polygons are "
        "repaired (makeValid) and reported.\n\n"
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
        self.addParameter(QgsProcessingParameterField(
            "POLLING_PRECINCT_FIELD", self.tr("Precinct served by each polling place (field of the polling places)"),
            parentLayerParameterName="POLLING_PLACES", optional=True))
        self.addParameter(QgsProcessingParameterField(
            "PRECINCT_FIELD", self.tr("Precinct id field of the places (matches the polling places' precinct)"),
            parentLayerParameterName="INPUT", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REQUESTS", self.tr("311 requests (polling distance measured from where residents are)"),
            [QgsProcessing.SourceType.TypeVectorPoint], optional=True))
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
        polygons = QgsWkbTypes.geometryType(source.wkbType()) == QgsWkbTypes.GeometryType.PolygonGeometry
        table = None
        if polygons:
            table = read_polygons(self, parameters, "INPUT", context, feedback)  # invalid ones repaired
            xs, ys, ids = [], [], []
            for feat in table.features:
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
            if parameters.get("REQUESTS"):
                feedback.pushInfo("INPUT holds points: REQUESTS is used only for precinct polygons.")
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
        poll_index_of = np.full(len(x), -1, dtype=np.int64)  # the polling place of each INPUT feature
        poll_dist = np.full(len(x), np.nan)
        if parameters.get("POLLING_PLACES"):
            polls = read_points(self, parameters, "POLLING_PLACES", context, feedback, (), dest_crs=metric)
            if len(polls.x) == 0:
                raise QgsProcessingException("POLLING_PLACES has no located features.")
            poll_ids = id_values(self, parameters, "POLLING_PLACES", "POLLING_ID_FIELD", context, polls.fids)
            poll_index_of, poll_dist = self.polling_places(parameters, context, feedback, source, fids, x, y, ok,
                                                           polls, metric, table)
        stop_index = Facilities(stops.x, stops.y)
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
                if polls is not None:
                    where = poll_index_of[part][has]
                    dist = poll_dist[part][has]
                    gap = (near_stop.distance <= walk) & (dist > poll_far)
                    columns["poll_id"][has] = np.where(where >= 0, poll_ids[np.maximum(where, 0)], None)
                    columns["poll_m"][has] = dist
                    columns["access_gap"][has] = gap
                    gaps[0] += int(gap.sum())
                yield [columns[name] for name, _ in NEW_FIELDS]

        dest_id = write_copy_with_columns(self, parameters, "INPUT", "OUTPUT", context, feedback, source, fids,
                                          NEW_FIELDS, pieces())
        if polls is not None:
            feedback.pushInfo(f"{gaps[0]} feature(s) have an access gap.")
        return {"OUTPUT": dest_id}

    def polling_places(self, parameters, context, feedback, source, fids, x, y, ok, polls, metric, table):
        """(index of each INPUT feature's polling place, distance to it in metres): the assigned place with
        POLLING_PRECINCT_FIELD and PRECINCT_FIELD, else the nearest; for precinct polygons with REQUESTS, the
        mean distance from the precinct's requests (and the place nearest to them), else from the point on
        surface."""
        n = len(x)
        place_precinct = id_values(self, parameters, "POLLING_PLACES", "POLLING_PRECINCT_FIELD", context, polls.fids,
                                   default_to_fid=False)
        precinct_field = self.parameterAsString(parameters, "PRECINCT_FIELD", context)
        if (place_precinct is None) != (not precinct_field):
            raise QgsProcessingException("Give both POLLING_PRECINCT_FIELD (on POLLING_PLACES) and PRECINCT_FIELD "
                                         "(on INPUT) to use assigned polling places, or neither for the nearest.")
        index = Facilities(polls.x, polls.y)
        assigned = np.full(n, -1, dtype=np.int64)
        if place_precinct is not None:
            own = id_values(self, parameters, "INPUT", "PRECINCT_FIELD", context, fids, default_to_fid=False)
            assigned, doubles = assigned_places(place_precinct, own)
            unserved = int((assigned < 0).sum())
            feedback.pushInfo(f"{n - unserved} feature(s) measured to their assigned polling place"
                              + (f"; {unserved} no place serves use the nearest one" if unserved else "") + ".")
            if doubles:
                feedback.pushWarning(f"{doubles} precinct(s) are claimed by more than one polling place: the first "
                                     "place is used.")
        # where the residents are: the requests inside each precinct
        rx = ry = owner = None
        if table is not None and parameters.get("REQUESTS"):
            reqs = read_points(self, parameters, "REQUESTS", context, feedback, (), dest_crs=source.sourceCrs())
            owner = assign_points_to_polygons(reqs.x, reqs.y, table.polygons)
            rx, ry = transform_xy(reqs.x, reqs.y, source.sourceCrs(), metric, context)
            inside = owner >= 0
            rx, ry, owner = rx[inside], ry[inside], owner[inside]
        has_requests = np.zeros(n, dtype=bool)
        if owner is not None and len(owner):
            counts = np.bincount(owner, minlength=n)
            has_requests = counts > 0
            # the place of a precinct without an assignment: the nearest to its requests' mean location
            cx = np.bincount(owner, weights=rx, minlength=n) / np.maximum(counts, 1)
            cy = np.bincount(owner, weights=ry, minlength=n) / np.maximum(counts, 1)
            free = has_requests & (assigned < 0)
            if free.any():
                assigned[free] = index.nearest(cx[free], cy[free]).index
        rest = ok & (assigned < 0)
        if rest.any():
            assigned[rest] = index.nearest(x[rest], y[rest]).index
        dist = np.full(n, np.nan)
        at = ok & (assigned >= 0)
        dist[at] = np.hypot(x[at] - polls.x[assigned[at]], y[at] - polls.y[assigned[at]])
        if has_requests.any():
            place = assigned[owner]
            each = np.hypot(rx - polls.x[place], ry - polls.y[place])
            counts = np.bincount(owner, minlength=n)
            mean = np.bincount(owner, weights=each, minlength=n) / np.maximum(counts, 1)
            dist[has_requests] = mean[has_requests]
        if table is not None:
            how = f"{int(has_requests.sum())} precinct(s) from their requests' locations (mean distance), " \
                  f"{int((ok & ~has_requests).sum())} from a point on their surface"
            feedback.pushInfo(f"Polling-place distance measured: {how}.")
        return assigned, dist
