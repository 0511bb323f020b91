# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:outreachpipeline — the whole outreach workflow as one algorithm (toolbox, models, batch,
qgis_process): requests -> precinct statistics -> hot spots -> transit access -> priority -> canvassing zones."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingMultiStepFeedback,
    QgsProcessingOutputLayerDefinition,
    QgsProcessingOutputNumber,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core.portals import API_NAMES
from ..core.weights import NEIGHBOUR_LABELS
from ..presets import load_presets
from ._zonal import advanced
from .base import Civic311Algorithm
from .canvasszones import METHODS
from .outreachpriority import COMPONENTS, POLL_CAP

PRIORITY_WEIGHTS = tuple((key, weight) for key, _, _, _, weight in COMPONENTS)

OUTPUTS = (("REQUESTS_OUTPUT", "Requests (fetched or imported)", QgsProcessing.SourceType.TypeVectorPoint),
           ("STATS_OUTPUT", "Precinct statistics", QgsProcessing.SourceType.TypeVectorPolygon),
           ("HOTSPOTS_OUTPUT", "Hot spots", QgsProcessing.SourceType.TypeVectorPolygon),
           ("ACCESS_OUTPUT", "Transit and polling-place access", QgsProcessing.SourceType.TypeVectorPolygon),
           ("PRIORITY_OUTPUT", "Outreach priority", QgsProcessing.SourceType.TypeVectorPolygon),
           ("ZONES_OUTPUT", "Requests in canvassing zones", QgsProcessing.SourceType.TypeVectorPoint),
           ("ZONES", "Canvassing zones", QgsProcessing.SourceType.TypeVectorPolygon),
           ("ROUTES", "Walking routes", QgsProcessing.SourceType.TypeVectorLine))


class OutreachPipeline(Civic311Algorithm):
    NAME = "outreachpipeline"
    DISPLAY_NAME = "Outreach pipeline"
    GROUP = "precincts"
    TAGS = ('workflow', 'pipeline', 'priority', 'canvassing')
    STYLE_FILE_OUTPUTS = False  # each step styles and describes the files it writes
    OUTPUT_FIELDS = ("requests", "rate_eb", "gi_z", "gi_bin", "stop_m", "poll_m", "priority", "tier", "zone_id")
    HELP = (
        "Runs the whole civic311 outreach workflow in one go, writing every intermediate layer:\n"
        "1. Requests: the REQUESTS layer if given; else the file INPUT is imported (Import 311 requests); else "
        "they are fetched from the portal (PRESET or API/BASE_URL/DATASET, START_DATE/END_DATE, CATEGORIES, "
        "AUTH_CONFIG — see Fetch 311 service requests) -> REQUESTS_OUTPUT.\n"
        "2. Summarise requests by precinct (PRECINCTS, PRECINCT_ID_FIELD, VOTERS_FIELD, BALLOTS_FIELD, "
        "CATEGORY_FIELD, TOP_CATEGORIES, EXCLUDE_CATEGORIES, RESIDENT_ONLY, START_DATE/END_DATE) -> STATS_OUTPUT.\n"
        "3. Hot spot analysis of HOTSPOT_FIELD (default rate_eb; requests without voters) with NEIGHBOURS, K, "
        "DISTANCE, PERMUTATIONS, SEED, FDR -> HOTSPOTS_OUTPUT.\n"
        "4. Transit and polling-place access of each precinct when STOPS is given (STOP_ID_FIELD, "
        "POLLING_PLACES, POLLING_ID_FIELD, POLLING_PRECINCT_FIELD for the place each precinct is assigned to, "
        "WALK_DISTANCE, POLL_DISTANCE); the polling distance is measured from the precinct's requests -> "
        "ACCESS_OUTPUT.\n"
        "5. Outreach priority score from non-voters (VOTERS_FIELD − BALLOTS_FIELD), the complaint rate and the "
        "capped polling distance (WEIGHT_NONVOTERS, WEIGHT_RATE, WEIGHT_POLL, WEIGHT_HOTSPOT, WEIGHT_TURNOUT, "
        "POLL_CAP) -> PRIORITY_OUTPUT.\n"
        "6. Canvassing zones (METHOD, ZONE_COUNT, EPS, MIN_POINTS, MAX_RADIUS, MAX_POINTS, SEED) for the "
        "requests in precincts of priority tier CANVASS_TIER or above, with routes starting at the nearest "
        "STOPS -> ZONES_OUTPUT, ZONES, ROUTES.\n"
        "Parameter keys are those of the underlying algorithms; their outputs are prefixed by step. Each "
        "output is styled and carries metadata, as when the algorithms run alone."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        P = QgsProcessingParameterNumber.Type  # noqa: N806
        self.addParameter(QgsProcessingParameterFeatureSource(
            "REQUESTS", self.tr("Requests layer (leave empty to import or fetch)"),
            [QgsProcessing.SourceType.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterFile(
            "INPUT", self.tr("…or an export file to import"), optional=True,
            fileFilter="311 exports (*.csv *.json *.geojson);;All files (*)"))
        presets = load_presets()
        self.addParameter(QgsProcessingParameterEnum(
            "PRESET", self.tr("…or fetch: city preset"), options=["Custom"] + [p["name"] for p in presets],
            defaultValue=0))
        self.addParameter(advanced(QgsProcessingParameterEnum("API", self.tr("API (Custom)"),
                                                              options=list(API_NAMES), defaultValue=0)))
        self.addParameter(advanced(QgsProcessingParameterString("BASE_URL", self.tr("Portal base URL (Custom)"),
                                                                optional=True)))
        self.addParameter(advanced(QgsProcessingParameterString("DATASET", self.tr("Dataset (Custom)"),
                                                                optional=True)))
        for key, label in (("START_DATE", "Start date"), ("END_DATE", "End date (inclusive)")):
            self.addParameter(QgsProcessingParameterDateTime(key, self.tr(label),
                                                             QgsProcessingParameterDateTime.Type.Date, optional=True))
        self.addParameter(QgsProcessingParameterString("CATEGORIES", self.tr("Categories (comma-separated)"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterAuthConfig("AUTH_CONFIG", self.tr("Authentication (token)"),
                                                           optional=True))
        self.addParameter(advanced(QgsProcessingParameterFile(
            "CACHE_DIR", self.tr("Page cache folder"), behavior=QgsProcessingParameterFile.Behavior.Folder,
            optional=True)))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "PRECINCTS", self.tr("Precincts"), [QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField("PRECINCT_ID_FIELD", self.tr("Precinct id field"),
                                                      parentLayerParameterName="PRECINCTS"))
        for key, label in (("VOTERS_FIELD", "Registered voters field"), ("BALLOTS_FIELD", "Ballots cast field")):
            self.addParameter(QgsProcessingParameterField(
                key, self.tr(label), parentLayerParameterName="PRECINCTS",
                type=QgsProcessingParameterField.DataType.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterString("CATEGORY_FIELD", self.tr("Category field of the requests"),
                                                       defaultValue="category", optional=True))
        self.addParameter(advanced(QgsProcessingParameterNumber("TOP_CATEGORIES", self.tr("Top categories"),
                                                                P.Integer, 5, minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterString(
            "EXCLUDE_CATEGORIES", self.tr("Categories to leave out (comma-separated)"), optional=True)))
        self.addParameter(advanced(QgsProcessingParameterBoolean(
            "RESIDENT_ONLY", self.tr("Count resident requests only (leave out city-initiated ones)"), True)))
        self.addParameter(QgsProcessingParameterString("HOTSPOT_FIELD", self.tr("Field for hot spots"),
                                                       defaultValue="rate_eb"))
        self.addParameter(QgsProcessingParameterEnum("NEIGHBOURS", self.tr("Neighbours"),
                                                     options=list(NEIGHBOUR_LABELS), defaultValue=0))
        self.addParameter(advanced(QgsProcessingParameterNumber("K", self.tr("K nearest neighbours"), P.Integer, 8,
                                                                minValue=1)))
        self.addParameter(advanced(QgsProcessingParameterNumber("DISTANCE", self.tr("Distance band (m)"), P.Double,
                                                                0.0, minValue=0.0)))
        self.addParameter(advanced(QgsProcessingParameterNumber("PERMUTATIONS", self.tr("Permutations"), P.Integer,
                                                                999, minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterNumber("SEED", self.tr("Random seed"), P.Integer, 1,
                                                                minValue=0)))
        self.addParameter(advanced(QgsProcessingParameterBoolean("FDR", self.tr("False Discovery Rate"), True)))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "STOPS", self.tr("Transit stops"), [QgsProcessing.SourceType.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterString("STOP_ID_FIELD", self.tr("Stop id field"),
                                                       defaultValue="stop_id", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "POLLING_PLACES", self.tr("Polling places"), [QgsProcessing.SourceType.TypeVectorPoint], optional=True))
        self.addParameter(QgsProcessingParameterString("POLLING_ID_FIELD", self.tr("Polling place id field"),
                                                       optional=True))
        self.addParameter(QgsProcessingParameterString(
            "POLLING_PRECINCT_FIELD", self.tr("Precinct served by each polling place (field of the polling places; "
                                              "matches PRECINCT_ID_FIELD)"), optional=True))
        for key, label, default in (("WALK_DISTANCE", "Walking distance to a stop (m)", 400.0),
                                    ("POLL_DISTANCE", "Far from a polling place (m)", 800.0)):
            self.addParameter(advanced(QgsProcessingParameterNumber(key, self.tr(label), P.Double, default,
                                                                    minValue=0.0)))
        for key, weight in PRIORITY_WEIGHTS:
            self.addParameter(advanced(QgsProcessingParameterNumber(f"WEIGHT_{key}",
                                                                    self.tr(f"Priority weight: {key.lower()}"),
                                                                    P.Double, weight, minValue=0.0)))
        self.addParameter(advanced(QgsProcessingParameterNumber("POLL_CAP", self.tr("Polling-place distance cap (m)"),
                                                                P.Double, POLL_CAP, minValue=0.0)))
        self.addParameter(QgsProcessingParameterEnum("METHOD", self.tr("Canvassing zones method"),
                                                     options=list(METHODS), defaultValue=2))
        self.addParameter(QgsProcessingParameterNumber("CANVASS_TIER", self.tr("Canvass precincts of this tier "
                                                                               "or above"), P.Integer, 5,
                                                       minValue=1, maxValue=5))
        self.addParameter(advanced(QgsProcessingParameterNumber("ZONE_COUNT", self.tr("Zones (K-means)"),
                                                                P.Integer, 10, minValue=1)))
        self.addParameter(advanced(QgsProcessingParameterNumber("EPS", self.tr("DBSCAN distance (m)"), P.Double,
                                                                100.0, minValue=0.0)))
        self.addParameter(advanced(QgsProcessingParameterNumber("MIN_POINTS", self.tr("DBSCAN minimum requests"),
                                                                P.Integer, 5, minValue=1)))
        self.addParameter(QgsProcessingParameterNumber("MAX_RADIUS", self.tr("Maximum zone radius (m)"), P.Double,
                                                       400.0, minValue=0.0))
        self.addParameter(advanced(QgsProcessingParameterNumber("MAX_POINTS", self.tr("Maximum requests per zone"),
                                                                P.Integer, 0, minValue=0)))
        for key, label, kind in OUTPUTS:
            self.addParameter(QgsProcessingParameterFeatureSink(key, self.tr(label), kind, optional=True,
                                                                createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber("MATCHED", self.tr("Requests inside a precinct")))
        self.addOutput(QgsProcessingOutputNumber("UNMATCHED", self.tr("Requests outside every precinct")))

    def execute(self, parameters, context, feedback):
        import processing

        steps = QgsProcessingMultiStepFeedback(6, feedback)
        results = {}

        def dest(key):
            value = parameters.get(key)
            if value is None or value == "":
                return QgsProcessing.TEMPORARY_OUTPUT
            return value

        def run(alg, params, step):
            steps.setCurrentStep(step)
            if steps.isCanceled():
                raise QgsProcessingException("Cancelled.")
            return processing.run(f"civic311:{alg}", params, context=context, feedback=steps,
                                  is_child_algorithm=True)

        # 1. requests
        shared_source = {k: parameters.get(k) for k in ("START_DATE", "END_DATE") if parameters.get(k)}
        if parameters.get("REQUESTS"):
            requests = parameters["REQUESTS"]
        elif parameters.get("INPUT"):
            out = run("importrequests", {"INPUT": parameters["INPUT"], "OUTPUT": dest("REQUESTS_OUTPUT")}, 0)
            requests = results["REQUESTS_OUTPUT"] = out["OUTPUT"]
        else:
            if not parameters.get("START_DATE") or not parameters.get("END_DATE"):
                raise QgsProcessingException("Give a REQUESTS layer, an INPUT file, or START_DATE and END_DATE to "
                                             "fetch requests from the portal.")
            fetch = {k: parameters[k] for k in ("PRESET", "API", "BASE_URL", "DATASET", "CATEGORIES", "AUTH_CONFIG",
                                                "CACHE_DIR") if parameters.get(k) not in (None, "")}
            out = run("fetchrequests", {**fetch, **shared_source, "OUTPUT": dest("REQUESTS_OUTPUT")}, 0)
            requests = results["REQUESTS_OUTPUT"] = out["OUTPUT"]
        # 2. precinct statistics
        stats_params = {k: parameters[k] for k in ("PRECINCTS", "PRECINCT_ID_FIELD", "VOTERS_FIELD", "BALLOTS_FIELD",
                                                   "CATEGORY_FIELD", "TOP_CATEGORIES", "EXCLUDE_CATEGORIES",
                                                   "RESIDENT_ONLY")
                        if parameters.get(k) not in (None, "")}
        if parameters.get("REQUESTS"):
            stats_params.update(shared_source)
        out = run("precinctstats", {**stats_params, "REQUESTS": requests, "OUTPUT": dest("STATS_OUTPUT")}, 1)
        results["STATS_OUTPUT"] = out["OUTPUT"]
        results["MATCHED"], results["UNMATCHED"] = out["MATCHED"], out["UNMATCHED"]
        # 3. hot spots
        field = self.parameterAsString(parameters, "HOTSPOT_FIELD", context) or "rate_eb"
        if not parameters.get("VOTERS_FIELD") and field in ("rate_eb", "rate_1k"):
            field = "requests"
        neighbours = {k: parameters[k] for k in ("NEIGHBOURS", "K", "DISTANCE", "PERMUTATIONS", "SEED", "FDR")
                      if k in parameters}
        out = run("hotspots", {**neighbours, "INPUT": results["STATS_OUTPUT"], "FIELD": field,
                               "OUTPUT": dest("HOTSPOTS_OUTPUT")}, 2)
        results["HOTSPOTS_OUTPUT"] = current = out["OUTPUT"]
        # 4. access
        if parameters.get("STOPS"):
            access = {k: parameters[k] for k in ("STOPS", "STOP_ID_FIELD", "POLLING_PLACES", "POLLING_ID_FIELD",
                                                 "POLLING_PRECINCT_FIELD", "WALK_DISTANCE", "POLL_DISTANCE")
                      if parameters.get(k) not in (None, "")}
            if access.get("POLLING_PRECINCT_FIELD"):
                access["PRECINCT_FIELD"] = parameters["PRECINCT_ID_FIELD"]
            access["REQUESTS"] = requests  # polling distance from where residents are
            out = run("transitaccess", {**access, "INPUT": current, "OUTPUT": dest("ACCESS_OUTPUT")}, 3)
            results["ACCESS_OUTPUT"] = current = out["OUTPUT"]
        # 5. priority
        weights = {k: parameters[k] for k in [f"WEIGHT_{key}" for key, _ in PRIORITY_WEIGHTS] + ["POLL_CAP"]
                   if k in parameters}
        rate_field = "rate_eb" if parameters.get("VOTERS_FIELD") else "requests"
        voters = {k: parameters.get(k) or "" for k in ("VOTERS_FIELD", "BALLOTS_FIELD")}
        out = run("outreachpriority", {**weights, **voters, "INPUT": current, "RATE_FIELD": rate_field,
                                       "OUTPUT": dest("PRIORITY_OUTPUT")}, 4)
        results["PRIORITY_OUTPUT"] = out["OUTPUT"]
        # 6. canvassing zones for requests in the top tiers
        tier = self.parameterAsInt(parameters, "CANVASS_TIER", context)
        top = processing.run("native:extractbyattribute", {
            "INPUT": results["PRIORITY_OUTPUT"], "FIELD": "tier", "OPERATOR": 3, "VALUE": str(tier),
            "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT}, context=context, feedback=None, is_child_algorithm=True)
        picked = processing.run("native:extractbylocation", {
            "INPUT": requests, "PREDICATE": [6], "INTERSECT": top["OUTPUT"], "OUTPUT": QgsProcessing.TEMPORARY_OUTPUT},
            context=context, feedback=None, is_child_algorithm=True)
        zones = {k: parameters[k] for k in ("METHOD", "ZONE_COUNT", "EPS", "MIN_POINTS", "MAX_RADIUS", "MAX_POINTS",
                                            "SEED") if k in parameters}
        if parameters.get("STOPS"):
            zones["START_POINTS"] = parameters["STOPS"]
        picked_layer = context.getMapLayer(picked["OUTPUT"])
        if picked_layer is not None and picked_layer.featureCount() > 0:
            out = run("canvasszones", {**zones, "INPUT": picked["OUTPUT"], "OUTPUT": dest("ZONES_OUTPUT"),
                                       "ZONES": dest("ZONES"), "ROUTES": dest("ROUTES")}, 5)
            for key in ("OUTPUT", "ZONES", "ROUTES"):
                results["ZONES_OUTPUT" if key == "OUTPUT" else key] = out.get(key)
        else:
            feedback.pushWarning(f"No request lies in a precinct of tier {tier} or above: no canvassing zones.")
        # the layers the user asked for are loaded when the pipeline finishes (child outputs are not)
        for key, label, _ in OUTPUTS:
            value = results.get(key)
            requested = parameters.get(key) not in (None, "") or isinstance(parameters.get(key),
                                                                              QgsProcessingOutputLayerDefinition)
            if value and requested and isinstance(value, str):
                context.addLayerToLoadOnCompletion(value, QgsProcessingContext.LayerDetails(
                    self.tr(label), context.project(), key))
        # every declared output is returned (None when its step did not run: no STOPS, no request to zone)
        for definition in self.outputDefinitions():
            results.setdefault(definition.name(), None)
        return results
