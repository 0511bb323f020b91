# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared plumbing of every civic311 algorithm: ids, groups, translation, help, instances."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingAlgorithm
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
