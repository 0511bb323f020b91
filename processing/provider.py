# SPDX-License-Identifier: GPL-2.0-or-later
"""The civic311 Processing provider: id, name, icon and the flat list of algorithms."""

from pathlib import Path

from qgis.core import QgsProcessingProvider
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
ALGORITHMS = (PrecinctStats, HotSpots, LocalMoran, OptimizedHotSpots, OutreachPriority, TurnoutRegression,
              LoadGtfsStops, TransitAccess, CanvassZones, CategoryTrends, EmergingHotSpots, ImportRequests,
              FetchRequests, OutreachPipeline)


class Civic311Provider(QgsProcessingProvider):
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
