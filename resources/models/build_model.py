# SPDX-License-Identifier: GPL-2.0-or-later
"""Build resources/models/civic311_outreach.model3, the outreach pipeline as a Model Builder model a user can open
in the Model Designer and edit: import -> precinct statistics -> hot spots -> access -> priority -> zones.

Run with /usr/bin/python3 (QT_QPA_PLATFORM=offscreen) after `make install` or from the repository root:
    python3 resources/models/build_model.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "civic311_outreach.model3"


def build():
    from qgis.core import (
        QgsProcessing,
        QgsProcessingModelAlgorithm,
        QgsProcessingModelChildAlgorithm,
        QgsProcessingModelOutput,
        QgsProcessingModelParameter,
        QgsProcessingParameterFeatureSource,
        QgsProcessingParameterField,
        QgsProcessingParameterFile,
        QgsProcessingParameterNumber,
    )
    from qgis.core import (
        QgsProcessingModelChildParameterSource as Src,
    )
    from qgis.PyQt.QtCore import QPointF

    model = QgsProcessingModelAlgorithm("outreachmodel", "Precinct analysis", "precincts")
    model.setHelpContent({"ALG_DESC": "The civic311 outreach workflow as an editable model: import a 311 export, "
                                      "summarise it by precinct, find hot spots, measure transit and polling-place "
                                      "access (assigned places, from where residents are), rank precincts for "
                                      "outreach, and cut walkable canvassing zones with routes in the top tier."})

    def param(definition, x, y):
        model.addModelParameter(definition, QgsProcessingModelParameter(definition.name()))
        model.parameterComponent(definition.name()).setPosition(QPointF(x, y))

    param(QgsProcessingParameterFile("INPUT", "311 export file", extension=""), 60, 40)
    param(QgsProcessingParameterFeatureSource("PRECINCTS", "Precincts", [QgsProcessing.SourceType.TypeVectorPolygon]),
          260, 40)
    param(QgsProcessingParameterField("PRECINCT_ID_FIELD", "Precinct id field", parentLayerParameterName="PRECINCTS"),
          460, 40)
    param(QgsProcessingParameterField("VOTERS_FIELD", "Registered voters field", parentLayerParameterName="PRECINCTS",
                                      type=QgsProcessingParameterField.DataType.Numeric), 660, 40)
    param(QgsProcessingParameterField("BALLOTS_FIELD", "Ballots cast field", parentLayerParameterName="PRECINCTS",
                                      type=QgsProcessingParameterField.DataType.Numeric), 860, 40)
    param(QgsProcessingParameterFeatureSource("STOPS", "Transit stops", [QgsProcessing.SourceType.TypeVectorPoint]),
          1060, 40)
    param(QgsProcessingParameterFeatureSource("POLLING_PLACES", "Polling places",
                                              [QgsProcessing.SourceType.TypeVectorPoint]), 1260, 40)
    param(QgsProcessingParameterField("POLLING_PRECINCT_FIELD", "Precinct served by each polling place",
                                      parentLayerParameterName="POLLING_PLACES"), 1460, 40)
    param(QgsProcessingParameterNumber("ZONE_COUNT", "Canvassing zones", QgsProcessingParameterNumber.Type.Integer,
                                       10, minValue=1), 1660, 40)

    def child(cid, alg, sources, x, y, outputs=()):
        c = QgsProcessingModelChildAlgorithm(alg)
        c.setChildId(cid)
        c.setDescription(cid.replace("_", " "))
        c.setPosition(QPointF(x, y))
        for key, src in sources.items():
            c.addParameterSources(key, [src])
        # every other input parameter at the algorithm's default, so the model validates and shows the values
        from qgis.core import QgsApplication, QgsProcessingDestinationParameter

        definition = QgsApplication.processingRegistry().algorithmById(alg)
        for d in definition.parameterDefinitions():
            if d.name() not in sources and not isinstance(d, QgsProcessingDestinationParameter) and \
                    d.defaultValue() is not None:
                c.addParameterSources(d.name(), [Src.fromStaticValue(d.defaultValue())])
        outs = {}
        for key, name in outputs:
            out = QgsProcessingModelOutput(name)
            out.setChildOutputName(key)
            out.setChildId(cid)
            out.setMandatory(False)
            out.setDefaultValue("TEMPORARY_OUTPUT")  # unless the user names a file, a temporary layer
            outs[name] = out
        c.setModelOutputs(outs)
        model.addChildAlgorithm(c)

    p = Src.fromModelParameter
    child("import", "civic311:importrequests", {"INPUT": p("INPUT")}, 160, 200)
    child("stats", "civic311:precinctstats", {
        "REQUESTS": Src.fromChildOutput("import", "OUTPUT"), "PRECINCTS": p("PRECINCTS"),
        "PRECINCT_ID_FIELD": p("PRECINCT_ID_FIELD"), "VOTERS_FIELD": p("VOTERS_FIELD"),
        "BALLOTS_FIELD": p("BALLOTS_FIELD")}, 360, 300)
    child("hotspots", "civic311:hotspots", {
        "INPUT": Src.fromChildOutput("stats", "OUTPUT"), "FIELD": Src.fromStaticValue("rate_eb"),
        "NEIGHBOURS": Src.fromStaticValue(0), "PERMUTATIONS": Src.fromStaticValue(999)}, 560, 400)
    child("access", "civic311:transitaccess", {
        "INPUT": Src.fromChildOutput("hotspots", "OUTPUT"), "STOPS": p("STOPS"), "POLLING_PLACES": p("POLLING_PLACES"),
        "POLLING_PRECINCT_FIELD": p("POLLING_PRECINCT_FIELD"), "PRECINCT_FIELD": p("PRECINCT_ID_FIELD"),
        "REQUESTS": Src.fromChildOutput("import", "OUTPUT")}, 760, 500)
    child("priority", "civic311:outreachpriority", {
        "INPUT": Src.fromChildOutput("access", "OUTPUT"), "VOTERS_FIELD": p("VOTERS_FIELD"),
        "BALLOTS_FIELD": p("BALLOTS_FIELD")}, 960, 600, [("OUTPUT", "Outreach priority")])
    child("top_tier", "native:extractbyattribute", {
        "INPUT": Src.fromChildOutput("priority", "OUTPUT"), "FIELD": Src.fromStaticValue("tier"),
        "OPERATOR": Src.fromStaticValue(0), "VALUE": Src.fromStaticValue("5")}, 1160, 700)
    child("top_requests", "native:extractbylocation", {
        "INPUT": Src.fromChildOutput("import", "OUTPUT"), "PREDICATE": Src.fromStaticValue([6]),
        "INTERSECT": Src.fromChildOutput("top_tier", "OUTPUT")}, 1360, 800)
    child("zones", "civic311:canvasszones", {
        "INPUT": Src.fromChildOutput("top_requests", "OUTPUT"), "METHOD": Src.fromStaticValue(0),
        "ZONE_COUNT": p("ZONE_COUNT"), "START_POINTS": p("STOPS")}, 1560, 900,
          [("ZONES", "Canvassing zones"), ("ROUTES", "Walking routes")])
    return model


def main():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    root = HERE.parents[1]
    link = Path(os.environ.get("TMPDIR", "/tmp")) / "civic311-model-build"
    link.mkdir(exist_ok=True)
    if not (link / "civic311").exists():
        (link / "civic311").symlink_to(root, target_is_directory=True)
    sys.path.insert(0, str(link))
    from civic311.processing.provider import Civic311Provider

    provider = Civic311Provider(include_models=False)
    QgsApplication.processingRegistry().addProvider(provider)
    model = build()
    if not model.toFile(str(OUT)):
        sys.exit(f"could not write {OUT}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
