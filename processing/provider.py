# SPDX-License-Identifier: GPL-2.0-or-later
"""The civic311 Processing provider: id, name, icon and the flat list of algorithms."""

from pathlib import Path

from qgis.core import QgsProcessingModelAlgorithm, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithms.canvasszones import CanvassZones
from .algorithms.categorytrends import CategoryTrends
from .algorithms.emerginghotspots import EmergingHotSpots
from .algorithms.fetchrequests import FetchRequests
from .algorithms.hotspots import HotSpots
from .algorithms.importrequests import ImportRequests
from .algorithms.loadgtfsstops import LoadGtfsStops
from .algorithms.localmoran import LocalMoran
from .algorithms.optimizedhotspots import OptimizedHotSpots
from .algorithms.outreachpipeline import OutreachPipeline
from .algorithms.outreachpriority import OutreachPriority
from .algorithms.precinctstats import PrecinctStats
from .algorithms.transitaccess import TransitAccess
from .algorithms.turnoutregression import TurnoutRegression

ICON = Path(__file__).resolve().parent.parent / "resources" / "icons" / "civic311.svg"
MODELS = Path(__file__).resolve().parent.parent / "resources" / "models"
ALGORITHMS = (PrecinctStats, HotSpots, LocalMoran, OptimizedHotSpots, OutreachPriority, TurnoutRegression,
              LoadGtfsStops, TransitAccess, CanvassZones, CategoryTrends, EmergingHotSpots, ImportRequests,
              FetchRequests, OutreachPipeline)


class ShippedModel(QgsProcessingModelAlgorithm):
    """A Model Builder model shipped with the plugin (resources/models/*.model3): listed in the toolbox under the
    plugin, opened and edited in the Model Designer like any model."""

    def displayName(self):  # noqa: N802 - QGIS API
        return "Outreach pipeline (editable model)"

    def shortDescription(self):  # noqa: N802 - QGIS API
        return "The outreach workflow as a model you can open in the Model Designer and change."

    def helpUrl(self):  # noqa: N802 - QGIS API
        from .algorithms.base import DOCS_URL

        return f"{DOCS_URL}#{self.name()}"

    def tags(self):
        return ["311", "civic311", "model", "model builder", "workflow", "outreach", "precinct", "canvassing"]

    def createInstance(self):  # noqa: N802 - QGIS API
        copy = ShippedModel()
        copy.loadVariant(self.toVariant())
        copy.setSourceFilePath(self.sourceFilePath())
        return copy


def shipped_models() -> list[ShippedModel]:
    models = []
    for path in sorted(MODELS.glob("*.model3")):
        model = ShippedModel()
        if model.fromFile(str(path)):
            models.append(model)
    return models


class Civic311Provider(QgsProcessingProvider):
    def __init__(self, include_models: bool = True):
        super().__init__()
        self.include_models = include_models

    def id(self):  # noqa: A003 - QGIS API
        return "civic311"

    def name(self):
        return "Civic 311"

    def longName(self):  # noqa: N802 - QGIS API
        return "Civic 311 — service requests, precincts and outreach"

    def icon(self):
        return QIcon(str(ICON))

    def svgIconPath(self):  # noqa: N802 - QGIS API
        return str(ICON)

    def loadAlgorithms(self):  # noqa: N802 - QGIS API
        for alg in ALGORITHMS:
            self.addAlgorithm(alg())
        if not self.include_models:
            return
        from qgis.core import QgsApplication

        registry = QgsApplication.processingRegistry()
        if registry.providerById(self.id()) is self:
            for model in shipped_models():  # their child algorithms resolve now that ours are registered
                self.addAlgorithm(model)
        elif not getattr(self, "_waiting", False):
            self._waiting = True

            def added(provider_id):
                if provider_id == self.id():
                    registry.providerAdded.disconnect(added)
                    self._waiting = False
                    self.refreshAlgorithms()

            registry.providerAdded.connect(added)
