# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:importrequests — import a portal's export file into the normalised request layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterCrs,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..core.normalise import COORDINATE_KEYS, detect_schema, normalise
from ..requestio import csv_columns, locate_xy, read_csv_columns, read_file, write_outputs
from .base import Civic311Algorithm

OVERRIDES = (("ID_FIELD", "request_id", "Request id column"), ("DATE_FIELD", "created_at", "Creation date column"),
             ("CLOSED_FIELD", "closed_at", "Closing date column"), ("CATEGORY_FIELD", "category", "Category column"),
             ("LAT_FIELD", "latitude", "Latitude column"), ("LON_FIELD", "longitude", "Longitude column"),
             ("X_FIELD", "x", "X column (projected)"), ("Y_FIELD", "y", "Y column (projected)"))
REQUEST_OUTPUT_FIELDS = ("request_id", "created_at", "closed_at", "status", "category", "descriptor", "agency",
                         "address", "source")


def add_count_outputs(alg) -> None:
    for key, label in (("FETCHED", "Rows read"), ("KEPT", "Requests kept"), ("REJECTED_COUNT", "Rows rejected"),
                       ("DUPLICATES", "Duplicate rows")):
        alg.addOutput(QgsProcessingOutputNumber(key, alg.tr(label)))


def add_request_sinks(alg) -> None:
    alg.addParameter(QgsProcessingParameterFeatureSink(
        "OUTPUT", alg.tr("311 requests"), QgsProcessing.SourceType.TypeVectorPoint))
    alg.addParameter(QgsProcessingParameterFeatureSink(
        "REJECTED", alg.tr("Rejected rows"), QgsProcessing.SourceType.TypeVector, optional=True,
        createByDefault=False))


NORMALISED_HELP = (
    "Normalised fields, in this order: request_id (unique in the layer), created_at, closed_at (NULL when open), "
    "status, category, descriptor, agency, address, source (portal host + dataset, or import: + file name). No "
    "other field of the source is carried over. Dates with an offset (Open311, SeeClickFix) or in epoch "
    "milliseconds (ArcGIS) are converted to the city's local time; floating timestamps (Socrata, CKAN, CSV "
    "exports) are kept as published (local time).\n\n"
    "Every row is either kept or listed in REJECTED with reject_reason and its raw id: missing or unparseable "
    "created_at, missing request id, missing, zero or out-of-range coordinates, unusable X/Y, outside the "
    "requested area; a repeated request id keeps the first row and lists the others as 'duplicate request id'. "
    "Latitude and longitude given the wrong way round are detected (against the area, or the data's own centre) "
    "and swapped back. FETCHED = KEPT + REJECTED_COUNT + DUPLICATES, always."
)


class ImportRequests(Civic311Algorithm):
    NAME = "importrequests"
    DISPLAY_NAME = "Import 311 requests from a file"
    GROUP = "fetch"
    OUTPUT_FIELDS = REQUEST_OUTPUT_FIELDS
    HELP = (
        "Imports a 311 export file — CSV, GeoJSON, Socrata JSON (.json rows), Open311 GeoReport JSON, "
        "SeeClickFix, CKAN or Esri JSON — into one normalised point layer (EPSG:4326).\n\n"
        "The column layout is detected from the common export schemas: New York City (erm2-nwe9), Chicago "
        "(v6vf-nfxy and the legacy per-type extracts, with or without column prefixes), San Francisco "
        "(vw6y-z8j6), Boston (CKAN legacy and new system), Open311 GeoReport v2 and SeeClickFix. The *_FIELD "
        "parameters override the detection; X_FIELD/Y_FIELD with XY_CRS use projected coordinates (e.g. "
        "Chicago's state-plane X/Y, EPSG:3435) for rows without latitude/longitude.\n\n" + NORMALISED_HELP
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFile(
            "INPUT", self.tr("Export file (CSV, GeoJSON or JSON)"), behavior=QgsProcessingParameterFile.Behavior.File,
            fileFilter="311 exports (*.csv *.json *.geojson *.txt);;All files (*)"))
        for key, _, label in OVERRIDES:
            self.addParameter(QgsProcessingParameterString(key, self.tr(label), optional=True))
        self.addParameter(QgsProcessingParameterCrs("XY_CRS", self.tr("CRS of the X/Y columns"), optional=True))
        add_request_sinks(self)
        add_count_outputs(self)

    def execute(self, parameters, context, feedback):
        path = self.parameterAsFile(parameters, "INPUT", context)
        columns = csv_columns(path)
        frame = read_file(path) if columns is None else None  # JSON is read whole; CSV after the schema is known
        if frame is not None:
            if frame.empty and len(frame.columns) == 0:
                raise QgsProcessingException(f"{Path(path).name} holds no rows.")
            columns = list(frame.columns)
        elif not columns:
            raise QgsProcessingException(f"{Path(path).name} holds no rows.")
        overrides = {key: self.parameterAsString(parameters, param, context).strip()
                     for param, key, _ in OVERRIDES if self.parameterAsString(parameters, param, context).strip()}
        xy_crs = None
        if parameters.get("XY_CRS"):
            crs = self.parameterAsCrs(parameters, "XY_CRS", context)
            xy_crs = crs.authid() or crs.toWkt() if crs.isValid() else None
        if "_geom_lon" in columns and "longitude" not in overrides:
            overrides.setdefault("longitude", "_geom_lon")
            overrides.setdefault("latitude", "_geom_lat")
        try:
            fmap = detect_schema(columns, overrides, xy_crs)
            feedback.pushInfo(f"Detected schema: {fmap.schema}; columns used: "
                              + ", ".join(f"{k}={v}" for k, v in fmap.columns.items()))
            if frame is None:
                used = [*fmap.columns.values(), *filter(None, [fmap.closed_from])]
                frame = read_csv_columns(path, columns, used,
                                         tuple(fmap.columns[k] for k in COORDINATE_KEYS if k in fmap.columns))
            result = normalise(frame, fmap, f"import:{Path(path).name}")
        except ValueError as err:
            raise QgsProcessingException(f"{err} Columns found: {', '.join(map(str, columns[:40]))}") from err
        del frame
        locate_xy(result, fmap.xy_crs, context)
        if np.any(result.kept["use_xy"]):
            feedback.pushInfo(f"{int(result.kept['use_xy'].sum())} row(s) located from X/Y ({fmap.xy_crs}).")
        return write_outputs(self, parameters, context, feedback, result, f"import:{Path(path).name}")
