# SPDX-License-Identifier: GPL-2.0-or-later
"""QGIS entry points: register the Processing provider, the menu and the toolbar button."""

from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .processing.provider import Civic311Provider

PLUGIN_DIR = Path(__file__).resolve().parent
SAMPLE_GPKG = PLUGIN_DIR / "resources" / "sample" / "civic311_sample.gpkg"
SAMPLE_LAYERS = ("precincts", "requests", "stops", "polling_places")
MENU = "&Civic 311"


def tr(text: str) -> str:
    return QCoreApplication.translate("Civic311Plugin", text)


class Civic311Plugin:
    """Thin plugin shell: every piece of analysis lives in the Processing provider."""

    def __init__(self, iface):
        self.iface = iface
        self.provider = None
        self.actions = []
        self.dock = None

    def initProcessing(self):  # noqa: N802 - QGIS API
        if self.provider is None:
            provider = Civic311Provider()
            # the registry takes ownership and deletes a provider it refuses (e.g. a duplicate id)
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider

    def initGui(self):  # noqa: N802 - QGIS API
        self.initProcessing()
        icon = QIcon(str(PLUGIN_DIR / "resources" / "icons" / "civic311.svg"))
        toolbox = QAction(icon, tr("Civic 311 algorithms…"), self.iface.mainWindow())
        toolbox.triggered.connect(self.show_toolbox)
        sample = QAction(tr("Load sample data"), self.iface.mainWindow())
        sample.triggered.connect(self.load_sample)
        dock_action = QAction(icon, tr("Civic 311 panel"), self.iface.mainWindow())
        dock_action.triggered.connect(self.show_dock)
        for action in (toolbox, dock_action, sample):
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)
        self.iface.addToolBarIcon(dock_action)

    def show_dock(self):
        from qgis.PyQt.QtCore import Qt

        from .ui.dock import Civic311Dock

        if self.dock is None:
            self.dock = Civic311Dock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.show()
        self.dock.raise_()

    def unload(self):
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def show_toolbox(self):
        from qgis.utils import plugins

        processing_plugin = plugins.get("processing")
        if processing_plugin is not None and hasattr(processing_plugin, "toolbox"):
            processing_plugin.toolbox.setVisible(True)
            processing_plugin.toolbox.searchBox.setText("civic311")

    def load_sample(self):
        """Add the bundled Chicago sample layers to the current project (once), and let the dock pick them."""
        layers = load_sample_layers(QgsProject.instance())
        if self.dock is not None:
            self.dock.pick_defaults()
        return layers


def load_sample_layers(project):
    """The sample layers, styled; a layer already in the project is reused, never added twice."""
    from .processing.styling import style_sample_layer

    present = {lyr.source(): lyr for lyr in project.mapLayers().values()}
    layers = []
    for name in SAMPLE_LAYERS:
        source = f"{SAMPLE_GPKG}|layername={name}"
        if source in present:
            layers.append(present[source])
            continue
        layer = QgsVectorLayer(source, name, "ogr")
        if layer.isValid():
            style_sample_layer(layer, name)
            project.addMapLayer(layer)
            layers.append(layer)
    return layers
