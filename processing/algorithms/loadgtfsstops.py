# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:loadgtfsstops — GTFS stops as points with the routes that serve them."""

from __future__ import annotations

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from ..core.gtfs import GtfsError, read_stops
from ..layerio import WGS84
from .base import Civic311Algorithm

FIELDS = (("stop_id", QVariant.String), ("stop_name", QVariant.String), ("location_type", QVariant.Int),
          ("parent_station", QVariant.String), ("wheelchair_boarding", QVariant.Int), ("routes", QVariant.Int),
          ("route_types", QVariant.String))


class LoadGtfsStops(Civic311Algorithm):
    NAME = "loadgtfsstops"
    DISPLAY_NAME = "Load GTFS stops"
    GROUP = "fetch"
    TAGS = ('gtfs', 'transit', 'stops', 'feed')
    OUTPUT_FIELDS = tuple(name for name, _ in FIELDS)
    HELP = (
        "Reads the stops of a GTFS feed (a .zip file or an unzipped folder) into a point layer (EPSG:4326).\n\n"
        "BOARDING_ONLY keeps the stops where passengers board (location_type 0 or empty), leaving out stations, "
        "entrances, generic nodes and boarding areas. Byte-order marks, CRLF line ends, quoted fields, unknown "
        "columns and missing optional files or columns are handled; a feed without stops.txt (or without "
        "stop_id/stop_lat/stop_lon) is refused with a clear error; stops without usable coordinates are counted "
        "and reported (number REJECTED).\n\n"
        "Output fields: stop_id, stop_name, location_type, parent_station, wheelchair_boarding, routes (number of "
        "distinct routes serving the stop, from trips.txt + stop_times.txt; NULL with a warning when the feed "
        "has no stop_times.txt), route_types (the GTFS route_type codes serving the stop, e.g. '1,3').\n\n"
        "Transit data: please credit the agency that publishes the feed (e.g. 'Data provided by CTA')."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFile(
            "INPUT", self.tr("GTFS feed (.zip file or folder)"), behavior=QgsProcessingParameterFile.Behavior.File,
            fileFilter="GTFS feeds (*.zip *.ZIP);;All files (*)"))
        self.addParameter(QgsProcessingParameterBoolean(
            "BOARDING_ONLY", self.tr("Boarding stops only (location_type 0 or empty)"), defaultValue=True))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", self.tr("GTFS stops"), QgsProcessing.SourceType.TypeVectorPoint))
        self.addOutput(QgsProcessingOutputNumber("REJECTED", self.tr("Stops without usable coordinates")))

    def execute(self, parameters, context, feedback):
        path = self.parameterAsFile(parameters, "INPUT", context)
        try:
            result = read_stops(path, self.parameterAsBool(parameters, "BOARDING_ONLY", context))
        except GtfsError as err:
            raise QgsProcessingException(str(err)) from err
        except (OSError, ValueError) as err:
            raise QgsProcessingException(f"Could not read the GTFS feed {path}: {err}") from err
        for message in result.warnings:
            feedback.pushWarning(message)
        fields = QgsFields()
        for name, kind in FIELDS:
            fields.append(QgsField(name, kind))
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields, QgsWkbTypes.Type.Point, WGS84)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        stops = result.stops

        def to_int(value):
            try:
                return int(value)
            except (TypeError, ValueError):
                return None

        feats = []
        for row in stops.itertuples(index=False):
            feat = QgsFeature(fields)
            feat.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(row.lon, row.lat)))
            feat.setAttributes([row.stop_id, row.stop_name or None, to_int(row.location_type) or 0,
                                row.parent_station or None, to_int(row.wheelchair_boarding),
                                None if row.routes != row.routes else int(row.routes), row.route_types])
            feats.append(feat)
        if not sink.addFeatures(feats, QgsFeatureSink.Flag.FastInsert):
            raise QgsProcessingException(f"Could not write the stops: {sink.lastError()}")
        feedback.pushInfo(f"{len(feats)} stops loaded, {result.rejected} rejected.")
        return {"OUTPUT": dest_id, "REJECTED": result.rejected}
