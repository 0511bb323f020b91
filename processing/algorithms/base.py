# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared plumbing of every civic311 algorithm: ids, groups, translation, help, instances."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsFeatureRequest,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterVectorLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

from ..core.spatialstats import CancelledError

GROUPS = {
    "fetch": "Fetch and import",
    "precincts": "Precinct analysis",
    "trends": "Trends",
    "fieldops": "Field operations",
}
DOCS_URL = "https://github.com/civic311/civic311/blob/main/docs/algorithms.md"
ICON = Path(__file__).resolve().parents[2] / "resources" / "icons" / "civic311.svg"


class Civic311Algorithm(QgsProcessingAlgorithm):
    """Subclasses set NAME, DISPLAY_NAME, GROUP (a key of GROUPS) and HELP, and implement the algorithm."""

    NAME = ""
    DISPLAY_NAME = ""
    GROUP = ""
    HELP = ""
    OUTPUT_FIELDS: tuple = ()  # fields each output feature gains (documented, and checked by the tests)
    TAGS: tuple = ()  # search words for the toolbox, besides the group's
    GROUP_TAGS = {"fetch": ("open data", "import", "portal", "socrata", "open311", "csv"),
                  "precincts": ("precinct", "election", "voters", "turnout", "outreach"),
                  "trends": ("trend", "time series", "spike", "emerging"),
                  "fieldops": ("canvassing", "transit", "polling place", "routes")}
    STYLE_FILE_OUTPUTS = True  # False when child algorithms already styled the files (the pipeline)

    def tr(self, text: str) -> str:
        return QCoreApplication.translate(type(self).__name__, text)

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        return self.tr(GROUPS[self.GROUP])

    def groupId(self) -> str:  # noqa: N802 - QGIS API
        return self.GROUP

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        return self.tr(self.HELP)

    def shortDescription(self) -> str:  # noqa: N802 - QGIS API
        """One line for the toolbox tooltip and the Model Designer: the help's first sentence."""
        first = self.HELP.split("\n", 1)[0]
        cut = first.find(". ")
        return self.tr(first[:cut + 1] if 0 < cut < 200 else first[:200])

    def tags(self) -> list[str]:
        words = {"311", "civic311", "service requests", "city", *self.GROUP_TAGS.get(self.GROUP, ()), *self.TAGS}
        return sorted(words)

    def helpUrl(self) -> str:  # noqa: N802 - QGIS API
        return f"{DOCS_URL}#{self.NAME}"

    def icon(self) -> QIcon:
        return QIcon(str(ICON))

    def createInstance(self):  # noqa: N802 - QGIS API
        return type(self)()

    def execute(self, parameters, context, feedback) -> dict:
        """The algorithm itself (subclasses): parameters -> arrays -> core -> sinks -> results."""
        raise NotImplementedError

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        self.run_parameters = dict(parameters)
        self.metadata_extra: dict = {}
        self.style_hints: dict = {}  # output key -> keyword arguments for its renderer (see styling.style_layer)
        self.input_layers = []
        for definition in self.parameterDefinitions():
            if isinstance(definition, (QgsProcessingParameterFeatureSource, QgsProcessingParameterVectorLayer)) \
                    and parameters.get(definition.name()):
                layer = self.parameterAsVectorLayer(parameters, definition.name(), context)
                if layer is not None:
                    self.input_layers.append(layer)
        self.check_field_parameters(parameters, context)
        self.check_output_folders(parameters)
        # every source is read without QGIS's abort-on-invalid-geometry check: the plugin repairs invalid
        # polygons itself (makeValid, reported) where geometry matters, and copies them as they are elsewhere;
        # the desktop's default check would stop the run, and on QGIS 3.22's main thread crash QGIS
        check = context.invalidGeometryCheck()
        context.setInvalidGeometryCheck(QgsFeatureRequest.GeometryNoCheck)
        try:
            self.run_results = self.execute(parameters, context, feedback)
        except CancelledError:
            raise QgsProcessingException("Cancelled.") from None
        finally:
            context.setInvalidGeometryCheck(check)
        return self.run_results

    def check_output_folders(self, parameters) -> None:
        """A file output (layer, table, report) in a folder that does not exist is an error before any work, not
        after a long run."""
        import re

        from qgis.core import QgsProcessingDestinationParameter, QgsProcessingOutputLayerDefinition

        for definition in self.destinationParameterDefinitions():
            if not isinstance(definition, QgsProcessingDestinationParameter):
                continue
            value = parameters.get(definition.name())
            if isinstance(value, QgsProcessingOutputLayerDefinition):
                value = value.sink.staticValue()
            if not isinstance(value, str) or not value or value == "TEMPORARY_OUTPUT" or \
                    value.startswith(("memory:", "postgres", "postgis:", "spatialite:")):
                continue
            match = re.match(r"^ogr:dbname='([^']+)'", value)
            path = Path(match.group(1) if match else value.split("|")[0])
            if not path.parent.exists() or not path.parent.is_dir():
                raise QgsProcessingException(f"{definition.name()}: the folder {path.parent} does not exist. Create "
                                             "it, or choose another place for the output.")

    def check_field_parameters(self, parameters, context) -> None:
        """A field parameter naming a field its layer lacks is an error naming both, listing the layer's fields
        (QGIS would otherwise read attribute -1: the last column). An optional field left at its default may be
        absent: the algorithm then goes without it and says so."""
        layer_fields: dict = {}  # parent parameter -> its fields, each layer opened once
        for definition in self.parameterDefinitions():
            if not isinstance(definition, QgsProcessingParameterField):
                continue
            name = definition.name()
            if parameters.get(name) in (None, "", []):
                continue
            parent = definition.parentLayerParameterName()
            if not parent or parameters.get(parent) in (None, ""):
                continue
            if parent not in layer_fields:
                source = self.parameterAsSource(parameters, parent, context)
                layer = self.parameterAsVectorLayer(parameters, parent, context) if source is None else None
                layer_fields[parent] = source.fields() if source is not None else \
                    layer.fields() if layer is not None else None
            fields = layer_fields[parent]
            if fields is None:
                continue
            optional = bool(definition.flags() & QgsProcessingParameterDefinition.Flag.FlagOptional)
            for value in self.parameterAsFields(parameters, name, context):
                if not value or fields.lookupField(value) >= 0:
                    continue
                if optional and value == definition.defaultValue():
                    continue
                names = ", ".join(f.name() for f in fields)
                raise QgsProcessingException(f"{parent} has no field {value!r} ({name}). Its fields: {names}.")

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        """Style every vector output and attach metadata: on memory layers directly, into file outputs
        (GeoPackage layer_styles, or .qml beside other formats), and through a post-processor on layers that
        QGIS loads into the project."""
        from ..layerio import index_output
        from ..styling import StylePostProcessor, build_metadata, keep_alive, store_with_file, style_layer

        for key, value in (getattr(self, "run_results", None) or {}).items():
            definition = self.parameterDefinition(key)
            if not isinstance(definition, QgsProcessingParameterFeatureSink) or not isinstance(value, str):
                continue
            metadata = build_metadata(self, key, self.run_parameters, self.input_layers, self.metadata_extra)
            layer = context.getMapLayer(value)
            hints = getattr(self, "style_hints", {}).get(key)
            if isinstance(layer, QgsVectorLayer):
                style_layer(layer, self.name(), key, hints)
                layer.setMetadata(metadata)
                index_output(layer, feedback)
            elif self.STYLE_FILE_OUTPUTS:
                store_with_file(value, self.name(), key, metadata, feedback, hints)
            if context.willLoadLayerOnCompletion(value):
                details = context.layerToLoadOnCompletionDetails(value)
                details.setPostProcessor(keep_alive(StylePostProcessor(self.name(), key, metadata, hints)))
        return {}
