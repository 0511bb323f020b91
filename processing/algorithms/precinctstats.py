# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:precinctstats — summarise requests by precinct."""

from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
)

from ..core.geometry import assign_points_to_polygons
from ..core.precincts import summarise
from ..layerio import output_fields, read_points, read_polygons, write_rows
from ..zoning import to_datetimes
from .base import Civic311Algorithm


def date_bounds(alg, parameters, context):
    """(start, end_exclusive) numpy datetimes from the optional START_DATE / END_DATE (whole days)."""
    out = []
    for key, shift in (("START_DATE", 0), ("END_DATE", 1)):
        value = parameters.get(key)
        qd = alg.parameterAsDateTime(parameters, key, context) if value not in (None, "") else None
        if qd is None or not qd.isValid():
            out.append(None)
            continue
        day = np.datetime64(qd.date().toString("yyyy-MM-dd"), "D") + np.timedelta64(shift, "D")
        out.append(day.astype("datetime64[ms]"))
    return out[0], out[1]


def date_mask(values: np.ndarray, start, end) -> np.ndarray:
    """True where created_at is inside [start, end); missing dates are outside any explicit range."""
    times = to_datetimes(np.asarray(values))
    mask = np.ones(len(times), dtype=bool)
    if start is not None:
        mask &= times >= start
    if end is not None:
        mask &= times < end
    return mask


class PrecinctStats(Civic311Algorithm):
    NAME = "precinctstats"
    DISPLAY_NAME = "Summarise requests by precinct"
    GROUP = "precincts"
    OUTPUT_FIELDS = ("requests", "rate_1k", "rate_eb", "quintile", "turnout", "top_category", "cat_<slug>")
    HELP = (
        "Counts 311 requests in each precinct and turns them into rates an analyst can compare.\n\n"
        "Each request point is assigned to exactly one precinct (even-odd point-in-polygon test with half-open "
        "edges: a point on a boundary shared by two precincts is counted once, in one of them). QGIS's "
        "'Count points in polygon' tests 'contains', so it counts a point lying exactly on a precinct boundary "
        "in no precinct: its total can fall short of MATCHED by the number of such boundary points. Requests and "
        "precincts may be in different CRSs. Invalid "
        "precinct geometries are repaired (makeValid) with a warning naming them, never dropped.\n\n"
        "Output fields added to the precincts:\n"
        "• requests: number of requests in the precinct (sum = MATCHED)\n"
        "• rate_1k: requests per 1,000 registered voters (VOTERS_FIELD)\n"
        "• rate_eb: global empirical-Bayes smoothed rate per 1,000 (Marshall 1991): the raw rate shrunk towards "
        "the city rate b = ΣO/Σn by a/(a + b/n_i), with s² = Σn_i(r_i − b)²/Σn and a = max(s² − b/n̄, 0), so "
        "small precincts do not dominate the map\n"
        "• quintile: 1–5 (5 = highest) on rate_eb when voters are given, else on requests; ties share the lower "
        "class\n"
        "• turnout: ballots / registered voters (when both fields are given)\n"
        "• top_category: the most frequent category in the precinct\n"
        "• cat_<slug>: counts for the city-wide top categories (NULL when below SUPPRESS_BELOW)\n\n"
        "START_DATE / END_DATE keep requests created on or after the start day and on or before the end day "
        "(field created_at). MATCHED counts requests inside a precinct, UNMATCHED those outside every precinct "
        "or without a location."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REQUESTS", self.tr("Service requests"), [QgsProcessing.SourceType.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "PRECINCTS", self.tr("Precincts"), [QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            "PRECINCT_ID_FIELD", self.tr("Precinct id field"), parentLayerParameterName="PRECINCTS"))
        self.addParameter(QgsProcessingParameterField(
            "VOTERS_FIELD", self.tr("Registered voters field"), parentLayerParameterName="PRECINCTS",
            type=QgsProcessingParameterField.DataType.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterField(
            "BALLOTS_FIELD", self.tr("Ballots cast field"), parentLayerParameterName="PRECINCTS",
            type=QgsProcessingParameterField.DataType.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterField(
            "CATEGORY_FIELD", self.tr("Category field"), defaultValue="category",
            parentLayerParameterName="REQUESTS", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "TOP_CATEGORIES", self.tr("Number of top categories to count"),
            QgsProcessingParameterNumber.Type.Integer, 5, minValue=0, maxValue=50))
        for key, label in (("START_DATE", "Start date (created_at on or after)"),
                           ("END_DATE", "End date (created_at on or before)")):
            self.addParameter(QgsProcessingParameterDateTime(
                key, self.tr(label), QgsProcessingParameterDateTime.Type.Date, optional=True))
        suppress = QgsProcessingParameterNumber(
            "SUPPRESS_BELOW", self.tr("Suppress category counts below (privacy)"),
            QgsProcessingParameterNumber.Type.Integer, 0, minValue=0)
        suppress.setFlags(suppress.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        self.addParameter(suppress)
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", self.tr("Precinct statistics"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("MATCHED", self.tr("Requests inside a precinct")))
        self.addOutput(QgsProcessingOutputNumber("UNMATCHED", self.tr("Requests outside every precinct")))

    def execute(self, parameters, context, feedback):
        import pandas as pd

        id_field = self.parameterAsString(parameters, "PRECINCT_ID_FIELD", context)
        voters_field = self.parameterAsString(parameters, "VOTERS_FIELD", context)
        ballots_field = self.parameterAsString(parameters, "BALLOTS_FIELD", context)
        category_field = self.parameterAsString(parameters, "CATEGORY_FIELD", context)
        top_n = self.parameterAsInt(parameters, "TOP_CATEGORIES", context)
        suppress = self.parameterAsInt(parameters, "SUPPRESS_BELOW", context)
        start, end = date_bounds(self, parameters, context)
        if ballots_field and not voters_field:
            raise QgsProcessingException("Turnout needs registered voters: set VOTERS_FIELD as well as BALLOTS_FIELD.")

        precinct_source = self.parameterAsSource(parameters, "PRECINCTS", context)
        if precinct_source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "PRECINCTS"))
        request_source = self.parameterAsSource(parameters, "REQUESTS", context)
        if request_source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "REQUESTS"))
        if category_field and request_source.fields().lookupField(category_field) < 0:
            if parameters.get("CATEGORY_FIELD") in (None, "", "category"):
                feedback.pushWarning("REQUESTS has no 'category' field: category counts are skipped.")
                category_field = ""
            else:
                raise QgsProcessingException(f"REQUESTS has no field {category_field}: choose the category field.")
        wanted = [f for f in (category_field,) if f]
        if start is not None or end is not None:
            if request_source.fields().lookupField("created_at") < 0:
                raise QgsProcessingException("A date filter needs a created_at field on REQUESTS (run "
                                             "'Import 311 requests' first, or leave the dates empty).")
            wanted.append("created_at")

        feedback.setProgressText(self.tr("Reading requests"))
        points = read_points(self, parameters, "REQUESTS", context, feedback, wanted)
        feedback.setProgressText(self.tr("Reading precincts"))
        precincts = read_polygons(self, parameters, "PRECINCTS", context, feedback, dest_crs=points.crs,
                                  label_field=id_field)
        n = len(precincts.features)
        if n == 0:
            raise QgsProcessingException("PRECINCTS has no features: choose a layer with precinct polygons.")
        x, y = points.x, points.y
        categories = points.attrs.get(category_field) if category_field else None
        out_of_range = 0
        if "created_at" in wanted:
            keep = date_mask(points.attrs["created_at"], start, end)
            out_of_range = int((~keep).sum())
            x, y = x[keep], y[keep]
            if categories is not None:
                categories = categories[keep]

        feedback.setProgressText(self.tr("Assigning requests to precincts"))
        assignment = assign_points_to_polygons(
            x, y, precincts.polygons,
            progress=lambda f: (feedback.setProgress(20 + 60 * f), not feedback.isCanceled())[1])
        if feedback.isCanceled():
            return {}

        def numbers(field):
            if not field:
                return None
            idx = precinct_source.fields().lookupField(field)
            vals = [f.attributes()[idx] for f in precincts.features]
            return pd.to_numeric(pd.Series([None if v is None or str(v) == "NULL" else v for v in vals],
                                           dtype=object), errors="coerce").to_numpy(dtype=float)

        summary = summarise(assignment, categories, n, numbers(voters_field), numbers(ballots_field),
                            top_n=top_n, suppress_below=suppress)
        for message in summary.warnings:
            feedback.pushWarning(message)
        unmatched = summary.unmatched + points.null_geometry
        feedback.pushInfo(f"{summary.matched} requests matched a precinct; {summary.unmatched} fell outside every "
                          f"precinct; {points.null_geometry} had no location; {out_of_range} were outside the "
                          "date range and not counted.")

        new = [("requests", "int"), ("rate_1k", "double"), ("rate_eb", "double"), ("quintile", "int"),
               ("turnout", "double"), ("top_category", "string")]
        new += [(name, "int") for name in summary.category_fields]
        fields, keep_idx = output_fields(precinct_source.fields(), new, feedback)
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields,
                                             precinct_source.wkbType(), precinct_source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        columns = [summary.requests, summary.rate_1k, summary.rate_eb,
                   np.where(summary.quintile > 0, summary.quintile, np.nan), summary.turnout, summary.top_category]
        columns += [summary.category_counts[:, j] for j in range(len(summary.category_fields))]
        write_rows(sink, precincts.features, keep_idx, columns, feedback)
        return {"OUTPUT": dest_id, "MATCHED": summary.matched, "UNMATCHED": unmatched}
