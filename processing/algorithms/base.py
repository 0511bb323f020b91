# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared plumbing of every civic311 algorithm: ids, groups, translation, help, instances."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterVectorLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon

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
        self.run_results = self.execute(parameters, context, feedback)
        return self.run_results

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        """Style every vector output and attach metadata: on memory layers directly, into file outputs
        (GeoPackage layer_styles, or .qml beside other formats), and through a post-processor on layers that
        QGIS loads into the project."""
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
            elif self.STYLE_FILE_OUTPUTS:
                store_with_file(value, self.name(), key, metadata, feedback, hints)
            if context.willLoadLayerOnCompletion(value):
                details = context.layerToLoadOnCompletionDetails(value)
                details.setPostProcessor(keep_alive(StylePostProcessor(self.name(), key, metadata, hints)))
        return {}
