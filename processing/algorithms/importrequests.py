# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:importrequests — import any city's 311 export file into the normalised request layer."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterCrs,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFile,
    QgsProcessingParameterString,
)

from ..core.infer import SAMPLE_ROWS
from ..core.normalise import COORDINATE_KEYS, MissingRoleError, SeenIds, detect_schema, normalise
from ..gpkgwriter import computed_ahead
from ..requestio import (
    STREAM_CHUNK,
    RequestStream,
    check_timezone,
    columns_with_samples,
    csv_columns,
    csv_sample,
    detect_encoding,
    is_csv,
    locate_xy,
    parse_field_map,
    read_csv_columns,
    read_file,
)
from .base import Civic311Algorithm

OVERRIDES = (("ID_FIELD", "request_id", "Request id column"), ("DATE_FIELD", "created_at", "Creation date column"),
             ("CLOSED_FIELD", "closed_at", "Closing date column"), ("CATEGORY_FIELD", "category", "Category column"),
             ("LAT_FIELD", "latitude", "Latitude column"), ("LON_FIELD", "longitude", "Longitude column"),
             ("X_FIELD", "x", "X column (projected)"), ("Y_FIELD", "y", "Y column (projected)"))
REQUEST_OUTPUT_FIELDS = ("request_id", "created_at", "closed_at", "status", "category", "descriptor", "agency",
                         "address", "source", "channel", "city_initiated")
# what to set when a role cannot be inferred, per algorithm
IMPORT_HINTS = {"request_id": "Set ID_FIELD (or 'request_id' in FIELD_MAP) to the column holding the request id.",
                "created_at": "Set DATE_FIELD (or 'created_at' in FIELD_MAP) to the column holding the creation "
                              "date.",
                "location": "Set LAT_FIELD and LON_FIELD, 'point' in FIELD_MAP (a text column of points), or "
                            "X_FIELD and Y_FIELD with XY_CRS."}


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


def advanced(param):
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return param


NORMALISED_HELP = (
    "Normalised fields, in this order: request_id (unique in the layer), created_at, closed_at (NULL when open), "
    "status, category, descriptor, agency, address, source (portal host + dataset, or import: + file name), "
    "channel (the intake channel as published, e.g. Phone, Internal, Constituent Call; NULL when the source has "
    "none) and city_initiated (1 when the channel says city staff generated the request — Internal, Employee "
    "Generated, City Worker App…; 0 when it says a resident reported it — call, web, app, e-mail…; NULL when "
    "unknown). No other field of the source is carried over. created_at and closed_at are the city's local "
    "wall-clock time: times written without an offset (Socrata, CKAN, most CSV exports) are kept as written; "
    "times with an offset or 'Z', and epoch numbers (ArcGIS, SeeClickFix), are converted to the city's zone "
    "(TIMEZONE; kept in UTC with a warning when no zone is known).\n\n"
    "Every row is either kept or listed in REJECTED with reject_reason and its raw id: missing or unparseable "
    "created_at, missing request id, missing, zero or out-of-range coordinates, unusable X/Y, outside the "
    "requested area; a repeated request id keeps the first row and lists the others as 'duplicate request id'. "
    "Latitude and longitude given the wrong way round are detected (against the area, or the data's own centre) "
    "and swapped back. FETCHED = KEPT + REJECTED_COUNT + DUPLICATES, always.\n\n"
    "Large inputs stream: rows are read (a CSV a chunk at a time; JSON is parsed whole), normalised and written "
    "200,000 at a time, so memory does not grow with the input (about 2 GB at 10 million rows, most of it while "
    "the spatial index is packed at the end). Repeated request ids are found across the whole input from two "
    "64-bit hashes of each id, never the ids themselves. The output GeoPackage always has a spatial index."
)


class ImportRequests(Civic311Algorithm):
    NAME = "importrequests"
    DISPLAY_NAME = "Import 311 requests from a file"
    GROUP = "fetch"
    TAGS = ('csv', 'geojson', 'export', 'schema')
    OUTPUT_FIELDS = REQUEST_OUTPUT_FIELDS
    HELP = (
        "Imports a 311 export file of any city — CSV (UTF-8, UTF-16 or Windows-1252, detected), GeoJSON, Socrata "
        "JSON rows, Open311 GeoReport JSON, SeeClickFix, CKAN or Esri JSON — into one normalised point layer "
        "(EPSG:4326).\n\n"
        "Which column holds what is inferred for each field on its own, from the column's name and its values "
        "(known city schemas only raise a name's score): the request id is an id-like column whose values are "
        "unique; created_at the creation-date column whose values parse as dates (of several, the one almost "
        "always present that is earliest in most rows); category the best type/category column, a row whose "
        "category is empty taking the next candidate column; and so on. A row's location is the first usable of: "
        "latitude/longitude columns, nested coordinates (Socrata location, GeoJSON or Esri geometry, SeeClickFix "
        "lat/lng), a text column of points ('(lat, lon)' or 'POINT (lon lat)'), projected X/Y with XY_CRS (also "
        "latitude/longitude columns that hold projected numbers). A multipoint takes its first point, a polygon "
        "its point on surface (counted in a warning). The log shows the mapping as a table (field <- column, and "
        "why) with the rows each field could not read; the same table is in the output layer's metadata.\n\n"
        "The *_FIELD parameters and FIELD_MAP (JSON, normalised field -> column, including latitude, longitude, x, "
        "y, point and channel) override the inference. Time zones and CRSs are never taken from a city schema "
        "because column names resemble it: give TIMEZONE and XY_CRS.\n\n"
        "Placeholder locations: cities put requests they cannot locate on a default point (often City Hall). A "
        "coordinate (to 1e-6°) shared by at least 5 requests whose addresses name at least 4 unrelated streets "
        "(streets sharing no name word, after house numbers, street types and the city's own name are set aside), "
        "in at least 30 % of its requests, is such a point: its rows go to REJECTED as 'placeholder location' "
        "(KEEP_PLACEHOLDERS keeps them), and the log names each point. A building with many requests is kept "
        "however its address is spelt, and so is a housing estate geocoded to one point (two or three "
        "streets).\n\n"
        + NORMALISED_HELP
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFile(
            "INPUT", self.tr("Export file (CSV, GeoJSON or JSON)"), behavior=QgsProcessingParameterFile.Behavior.File,
            fileFilter="311 exports (*.csv *.json *.geojson *.txt);;All files (*)"))
        for key, _, label in OVERRIDES:
            self.addParameter(QgsProcessingParameterString(key, self.tr(label), optional=True))
        self.addParameter(QgsProcessingParameterCrs("XY_CRS", self.tr("CRS of the X/Y columns"), optional=True))
        self.addParameter(QgsProcessingParameterString(
            "TIMEZONE", self.tr("Time zone of the city (IANA name, e.g. America/New_York)"), optional=True))
        self.addParameter(advanced(QgsProcessingParameterString(
            "FIELD_MAP", self.tr("Field map (JSON: normalised field -> column)"), optional=True)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            "KEEP_PLACEHOLDERS", self.tr("Keep requests at placeholder locations"), defaultValue=False)))
        add_request_sinks(self)
        add_count_outputs(self)

    def execute(self, parameters, context, feedback):
        path = self.parameterAsFile(parameters, "INPUT", context)
        name = Path(path).name
        overrides = parse_field_map(self.parameterAsString(parameters, "FIELD_MAP", context))
        for param, key, _ in OVERRIDES:
            value = self.parameterAsString(parameters, param, context).strip()
            if value:
                overrides[key] = value
        xy_crs = None
        if parameters.get("XY_CRS"):
            crs = self.parameterAsCrs(parameters, "XY_CRS", context)
            xy_crs = crs.authid() or crs.toWkt() if crs.isValid() else None
        tz = self.parameterAsString(parameters, "TIMEZONE", context).strip() or None
        if tz:
            check_timezone(tz)
        encoding = None
        if not is_csv(path):  # JSON is read whole
            frame = read_file(path)
            columns = [str(c) for c in frame.columns]
            sample = frame.head(SAMPLE_ROWS)
            if frame.attrs.get("xy_crs") and not xy_crs:  # the file's own CRS (Esri spatialReference)
                xy_crs = frame.attrs["xy_crs"]
                feedback.pushInfo(f"The file's geometries are in {xy_crs} (its spatialReference).")
            if "_geom_x" in columns:
                overrides.setdefault("x", "_geom_x")
                overrides.setdefault("y", "_geom_y")
            if frame.attrs.get("polygons"):
                feedback.pushWarning(f"{frame.attrs['polygons']} request(s) have a polygon geometry: each is located "
                                     "at its polygon's point on surface.")
        else:
            encoding, bad_bytes = detect_encoding(Path(path))
            columns = csv_columns(path, encoding)
            feedback.pushInfo(f"Encoding: {encoding}" + (f" ({bad_bytes} byte(s) that do not decode are shown as "
                                                         "'\ufffd' in their own values)" if bad_bytes else ""))
            sample = csv_sample(path, encoding, SAMPLE_ROWS)
            if sample.empty:
                raise QgsProcessingException(f"{name} has a header but no rows: there is nothing to import.")
            frame = None
        if "_geom_lon" in columns and "longitude" not in overrides:
            overrides.setdefault("longitude", "_geom_lon")
            overrides.setdefault("latitude", "_geom_lat")
        try:
            fmap = detect_schema(columns, overrides, xy_crs, sample=sample)
            fmap.tz = tz
        except MissingRoleError as err:
            raise QgsProcessingException(
                f"{err} {IMPORT_HINTS[err.role]} Columns in {name}: {columns_with_samples(sample)}") from None
        except ValueError as err:
            raise QgsProcessingException(f"{err} Columns in {name}: {columns_with_samples(sample)}") from None
        if frame is None:  # a CSV is streamed a chunk at a time
            numeric = (*(fmap.columns[k] for k in COORDINATE_KEYS if k in fmap.columns),
                       *(c for pair in fmap.pairs for c in pair))
            chunks = read_csv_columns(path, columns, fmap.used(), numeric, encoding or "utf-8", chunk=STREAM_CHUNK)
        else:  # JSON is parsed whole; it is normalised and written a chunk at a time all the same
            chunks = (frame.iloc[i:i + STREAM_CHUNK] for i in range(0, len(frame), STREAM_CHUNK))
        stream = RequestStream(self, parameters, context, feedback, f"import:{name}",
                               placeholders=self.parameterAsBoolean(parameters, "KEEP_PLACEHOLDERS", context), tz=tz)
        seen, state, from_xy = SeenIds(), {"first": 1, "area": None}, 0

        def normalised(chunk):  # in a worker thread, a chunk ahead of the SQLite writes (both release the GIL)
            chunk = chunk.reset_index(drop=True)
            result = normalise(chunk, fmap, f"import:{name}", seen=seen, first_row=state["first"], area=state["area"])
            state["first"] += len(chunk)
            state["area"] = result.area
            return result

        try:
            for result in computed_ahead(chunks, normalised):
                if feedback.isCanceled():
                    raise QgsProcessingException("Cancelled.")
                locate_xy(result, fmap.xy_crs, context)
                from_xy += int(result.kept["use_xy"].sum())
                stream.add(result)
                feedback.setProgressText(f"{stream.read} rows read")
        except MissingRoleError as err:
            stream.abort()
            raise QgsProcessingException(
                f"{err} {IMPORT_HINTS[err.role]} Columns in {name}: {columns_with_samples(sample)}") from None
        except ValueError as err:
            stream.abort()
            raise QgsProcessingException(f"{err} Columns in {name}: {columns_with_samples(sample)}") from None
        except BaseException:
            stream.abort()
            raise
        del frame
        seen.clear()  # before the spatial index is packed: the peak of memory
        report_mapping(feedback, fmap, stream.unread)
        if from_xy:
            feedback.pushInfo(f"{from_xy} row(s) located from X/Y ({fmap.xy_crs}).")
        elif "x" in fmap.columns and not fmap.xy_crs:
            feedback.pushInfo(f"X/Y columns {fmap.columns['x']!r}/{fmap.columns['y']!r} were not used: set XY_CRS to "
                              "locate rows that only have them.")
        self.metadata_extra = {"Imported from": name, "Encoding": encoding or "JSON",
                               "Time zone": tz or "none given (instants kept in UTC)",
                               "Column mapping": "; ".join(fmap.table())}
        return stream.finish()


def report_mapping(feedback, fmap, unread: dict) -> None:
    """The column mapping as a table, and the rows each field could not read."""
    feedback.pushInfo("Columns used (field <- column, why):")
    for line in fmap.table():
        feedback.pushInfo(f"  {line}")
    unread = {k: v for k, v in unread.items() if v}
    if unread:
        feedback.pushInfo("Rows whose value could not be read: " + ", ".join(f"{k} {v}" for k, v in unread.items()))
