# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:precinctstats — summarise requests by precinct."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core.geometry import PolygonLookup
from ..core.precincts import Tally, summarise_tally
from ..layerio import (
    PointStream,
    can_copy_with_columns,
    output_fields,
    read_polygons,
    write_copy_with_columns,
    write_rows,
)
from ..neighbours import numeric_values
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
    if out[0] is not None and out[1] is not None and out[1] <= out[0]:
        raise QgsProcessingException("END_DATE is before START_DATE: swap them.")
    return out[0], out[1]


MAX_CATEGORIES = 5_000  # distinct values of CATEGORY_FIELD: counts per precinct and category stay a few 100 MB


def city_flags(values: np.ndarray) -> np.ndarray:
    """True where city_initiated is 1 (a number, or text as written by another tool); NULL is not."""
    if values.dtype != object:
        return np.asarray(values, dtype=float) == 1
    return np.array([v is not None and str(v) not in ("NULL", "") and float(v) == 1 for v in values.tolist()],
                    dtype=bool)


def excluded_by_code(labels: list, exclude: set[str], known: np.ndarray) -> np.ndarray:
    """Per category code, whether EXCLUDE_CATEGORIES names its label (stripped, lower-cased): ``known`` holds
    the answer for the first codes and grows with the labels that appeared since."""
    if len(known) == len(labels):
        return known
    return np.append(known, [str(c).strip().lower() in exclude for c in labels[len(known):]]).astype(bool)


def date_mask(values: np.ndarray, start, end) -> np.ndarray:
    """True where created_at is inside [start, end); missing dates are outside any explicit range."""
    times = to_datetimes(np.asarray(values))
    mask = np.ones(len(times), dtype=bool)
    if start is not None:
        mask &= times >= start
    if end is not None:
        mask &= times < end
    return mask


@dataclass
class Filters:
    """Which requests count: CATEGORY_FIELD, EXCLUDE_CATEGORIES, the date range, RESIDENT_ONLY."""

    category_field: str
    exclude: set[str]
    start: np.datetime64 | None
    end: np.datetime64 | None
    has_city: bool
    resident_only: bool


@dataclass
class Counted:
    tally: Tally
    city_tally: Tally
    excluded: int = 0
    city_total: int = 0
    out_of_range: int = 0


def count_requests(stream: PointStream, polygons: list, filters: Filters, feedback) -> Counted | None:
    """Tally the stream's requests by precinct (None when cancelled). The precincts' lookup is built in a worker
    thread while the first blocks are read."""
    f = filters
    counted = Counted(Tally(len(polygons)), Tally(len(polygons)))
    excluded_code = np.zeros(0, dtype=bool)  # per category code: named in EXCLUDE_CATEGORIES
    seen = 0
    with ThreadPoolExecutor(1) as pool:
        building = pool.submit(PolygonLookup, polygons, max(stream.expected, 0))
        lookup = None
        for block in stream:
            if lookup is None:
                lookup = building.result()
                stream.locate = lookup.assign
            seen += len(block.x)
            keep = np.ones(len(block.x), dtype=bool)
            if f.start is not None or f.end is not None:
                keep = date_mask(block.attrs["created_at"], f.start, f.end)
                counted.out_of_range += int((~keep).sum())
            codes = block.attrs[f.category_field] if f.category_field else None
            if codes is not None and len(stream.labels[f.category_field]) > MAX_CATEGORIES:
                raise QgsProcessingException(
                    f"{f.category_field} has more than {MAX_CATEGORIES:,} distinct values, so it is no category "
                    "(an id, an address or free text?): choose the category field for CATEGORY_FIELD, or leave it "
                    "empty.")
            if f.exclude:
                excluded_code = excluded_by_code(stream.labels[f.category_field], f.exclude, excluded_code)
                out = keep & np.append(excluded_code, False)[codes]  # code -1 (no category) is never excluded
                counted.excluded += int(out.sum())
                keep &= ~out
            every = bool(keep.all())  # (then no copies)
            if block.located is not None:  # located by the reader already
                assignment = block.located if every else block.located[keep]
            else:
                assignment = lookup.assign(*((block.x, block.y) if every else (block.x[keep], block.y[keep])))
            if not every and codes is not None:
                codes = codes[keep]
            if f.has_city:
                city = city_flags(block.attrs["city_initiated"])[keep]
                counted.city_total += int(city.sum())
                counted.city_tally.add(assignment[city])
                if f.resident_only:
                    assignment = assignment[~city]
                    codes = None if codes is None else codes[~city]
            counted.tally.add(assignment, codes)
            feedback.setProgress(20 + 60 * min(seen / max(stream.expected, 1), 1))
            if feedback.isCanceled():
                return None
    return counted


def write_output(alg, parameters, context, feedback, source, precincts, new: list, columns: list) -> str:
    """OUTPUT: the precincts with the computed columns. A GeoPackage of valid precincts to a new GeoPackage is
    copied inside SQLite with the columns joined by fid (infinities NULL, as on the feature path); repaired
    precincts (written as repaired) and other formats go feature by feature."""
    if not precincts.repaired and can_copy_with_columns(alg, parameters, "PRECINCTS", "OUTPUT", context):
        output_fields(source.fields(), new, feedback)  # (it says which input fields are replaced)
        fids = np.array([f.id() for f in precincts.features], dtype=np.int64)
        finite = [np.where(np.isfinite(c), c, np.nan) if np.asarray(c).dtype.kind == "f" else c for c in columns]
        return write_copy_with_columns(alg, parameters, "PRECINCTS", "OUTPUT", context, feedback, source, fids, new,
                                       [finite])
    fields, keep_idx = output_fields(source.fields(), new, feedback)
    sink, dest_id = alg.parameterAsSink(parameters, "OUTPUT", context, fields, source.wkbType(), source.sourceCrs())
    if sink is None:
        raise QgsProcessingException(alg.invalidSinkError(parameters, "OUTPUT"))
    write_rows(sink, precincts.features, keep_idx, columns, feedback)
    return dest_id


class PrecinctStats(Civic311Algorithm):
    NAME = "precinctstats"
    DISPLAY_NAME = "Summarise requests by precinct"
    GROUP = "precincts"
    TAGS = ('count points in polygon', 'rate', 'empirical bayes', 'quintile')
    OUTPUT_FIELDS = ("requests", "rate_1k", "rate_eb", "quintile", "turnout", "top_category", "city_initiated",
                     "cat_<slug>")
    HELP = (
        "Counts 311 requests in each precinct and turns them into rates an analyst can compare.\n\n"
        "Each request point is assigned to exactly one precinct (even-odd point-in-polygon test with half-open "
        "edges: a point on a boundary shared by two precincts is counted once, in one of them). QGIS's "
        "'Count points in polygon' tests 'contains', so it counts a point lying exactly on a precinct boundary "
        "in no precinct: its total can fall short of MATCHED by the number of such boundary points. Requests and "
        "precincts may be in different CRSs. The test runs on a grid rasterised once over all precincts: points "
        "in cells no boundary crosses take their cell's precinct, only points in boundary cells are tested "
        "exactly (same result, a few seconds for 10 million points). A GeoPackage or other OGR point layer of "
        "requests (with a CRS, no selection or filter) is read a block at a time and counted as it is read, so "
        "memory does not grow with the number of requests. Invalid "
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
        "• city_initiated: requests city staff generated (the requests' city_initiated field = 1), left out of "
        "requests and the rates when RESIDENT_ONLY (default; counted in them too otherwise): a city crew's sweep "
        "is not residents' stress; NULL when the requests have no city_initiated field\n"
        "• cat_<slug>: counts for the city-wide top categories (of CATEGORY_FIELD; a field with more than "
        f"{MAX_CATEGORIES:,} distinct values, such as an id, is refused)\n\n"
        "SUPPRESS_BELOW (privacy) hides small counts: every cat_ count from 1 to below it is NULL (primary "
        "suppression; zeros stay), "
        "and where a precinct's one hidden count could be recovered by subtraction (requests minus the shown "
        "counts, when the precinct has no request outside the listed categories) its smallest shown count is "
        "hidden too (complementary suppression). top_category is NULL where the top category's count is below "
        "the threshold or hidden. The requests total itself is never hidden: a precinct whose only category is "
        "small still shows its total.\n\n"
        "EXCLUDE_CATEGORIES (comma-separated, any case) leaves requests of those categories out of every count "
        "(e.g. a city-run Tree Trim programme); the log says how many.\n\n"
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
        self.addParameter(QgsProcessingParameterString(
            "EXCLUDE_CATEGORIES", self.tr("Categories to leave out (comma-separated)"), optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            "RESIDENT_ONLY", self.tr("Count resident requests only (leave out city-initiated ones)"),
            defaultValue=True))
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
        exclude = {c.strip().lower() for c in self.parameterAsString(parameters, "EXCLUDE_CATEGORIES", context)
                   .split(",") if c.strip()}
        if exclude and not category_field:
            raise QgsProcessingException("EXCLUDE_CATEGORIES needs the requests' category: set CATEGORY_FIELD.")
        resident_only = self.parameterAsBoolean(parameters, "RESIDENT_ONLY", context)
        has_city = request_source.fields().lookupField("city_initiated") >= 0
        if resident_only and not has_city:
            feedback.pushInfo("The requests have no city_initiated field (import or fetch them again to get it): "
                              "every request is counted.")
        wanted = [f for f in (category_field,) if f] + (["city_initiated"] if has_city else [])
        if start is not None or end is not None:
            if request_source.fields().lookupField("created_at") < 0:
                raise QgsProcessingException("A date filter needs a created_at field on REQUESTS (run "
                                             "'Import 311 requests' first, or leave the dates empty).")
            wanted.append("created_at")

        stream = PointStream(self, parameters, "REQUESTS", context, feedback, wanted,
                             categorical=[category_field] if category_field else [])
        # the requests are tallied a block at a time as they are read (never all held). GDAL starts reading them in
        # its threads now, while the precincts are read here; the precincts' lookup grid is then built in another
        # thread while the first blocks wait, and the blocks are counted as they come
        with stream:
            feedback.setProgressText(self.tr("Reading precincts"))
            precincts = read_polygons(self, parameters, "PRECINCTS", context, feedback, dest_crs=stream.crs,
                                      label_field=id_field)
            n = len(precincts.features)
            if n == 0:
                raise QgsProcessingException("PRECINCTS has no features: choose a layer with precinct polygons.")
            repeated = [i for i, k in Counter(str(f[id_field]) for f in precincts.features).items() if k > 1]
            if repeated:
                feedback.pushWarning(f"{len(repeated)} precinct id(s) of {id_field} appear more than once (each "
                                     "polygon is counted on its own; joins by id will be ambiguous): "
                                     + ", ".join(repeated[:20]) + (" …" if len(repeated) > 20 else ""))
            feedback.setProgressText(self.tr("Assigning requests to precincts"))
            counted = count_requests(stream, precincts.polygons, Filters(category_field, exclude, start, end,
                                                                         has_city, resident_only), feedback)
        if counted is None:
            return {}
        tally, city_tally = counted.tally, counted.city_tally
        excluded, city_total, out_of_range = counted.excluded, counted.city_total, counted.out_of_range
        if exclude:
            feedback.pushInfo(f"EXCLUDE_CATEGORIES left out {excluded} request(s).")
        if has_city and resident_only:
            feedback.pushInfo(f"RESIDENT_ONLY: {city_total} city-initiated request(s) are counted apart "
                              "(field city_initiated), not in requests and the rates.")
        city_counts = city_tally.requests.astype(float) if has_city else np.full(n, np.nan)

        def numbers(field):
            return numeric_values(precincts.features, precinct_source.fields().lookupField(field)) if field else None

        located = np.array([bool(rings) for rings in precincts.polygons], dtype=bool)
        if not located.all():
            names = [str(f[id_field]) for f, ok in zip(precincts.features, located) if not ok]
            more = " …" if len(names) > 20 else ""
            feedback.pushWarning(f"{len(names)} precinct(s) have no geometry: they are left out of every statistic "
                                 "(their fields are NULL): " + ", ".join(names[:20]) + more)
        summary = summarise_tally(tally, stream.labels[category_field] if category_field else None,
                                  numbers(voters_field), numbers(ballots_field), top_n=top_n,
                                  suppress_below=suppress, located=located)
        for message in summary.warnings:
            feedback.pushWarning(message)
        unmatched = summary.unmatched + stream.null_geometry
        feedback.pushInfo(f"{summary.matched} requests matched a precinct; {summary.unmatched} fell outside every "
                          f"precinct; {stream.null_geometry} had no location; {out_of_range} were outside the "
                          "date range and not counted.")

        new = [("requests", "int"), ("rate_1k", "double"), ("rate_eb", "double"), ("quintile", "int"),
               ("turnout", "double"), ("top_category", "string"), ("city_initiated", "int")]
        new += [(name, "int") for name in summary.category_fields]
        columns = [summary.requests, summary.rate_1k, summary.rate_eb,
                   np.where(summary.quintile > 0, summary.quintile, np.nan), summary.turnout, summary.top_category,
                   city_counts]
        columns += [summary.category_counts[:, j] for j in range(len(summary.category_fields))]
        dest_id = write_output(self, parameters, context, feedback, precinct_source, precincts, new, columns)
        return {"OUTPUT": dest_id, "MATCHED": summary.matched, "UNMATCHED": unmatched}
