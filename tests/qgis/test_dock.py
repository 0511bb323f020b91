# SPDX-License-Identifier: GPL-2.0-or-later
"""The Civic 311 dock drives the pipeline on the bundled sample (offscreen) and shows the results."""

import time

from qgis.core import QgsProject
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtGui import QImage

from conftest import ROOT


def test_dock_runs_the_pipeline_and_shows_results(plugin, qgis_iface, qgis_new_project, tmp_path):
    from civic311.plugin import load_sample_layers
    from civic311.ui.dock import Civic311Dock

    layers = {layer.name(): layer for layer in load_sample_layers(QgsProject.instance())}
    dock = Civic311Dock(qgis_iface)
    dock.resize(460, 900)
    dock.source.setCurrentIndex(0)
    dock.requests.setLayer(layers["requests"])
    dock.precincts.setLayer(layers["precincts"])
    dock.id_field.setField("ward_prec")
    dock.voters.setField("registered_voters")
    dock.ballots.setField("ballots_cast")
    dock.stops.setLayer(layers["stops"])
    dock.polls.setLayer(layers["polling_places"])
    done = []
    dock.finished.connect(done.append)
    dock.show()
    dock.run()
    assert not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
    deadline = time.monotonic() + 180
    while not done and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert done == [True], dock.status.text()
    assert dock.table.rowCount() == 20
    assert dock.table.item(0, 0).text() == "1"
    assert dock.parameters()["POLLING_PRECINCT_FIELD"] == "ward_prec"  # the assigned polling places
    assert dock.table.item(0, 5).text() == "non_voters" and dock.table.item(0, 6).text().endswith(" %")
    assert "8283 requests" in dock.status.text()
    assert len(dock.chart.counts) == 4 and dock.chart.counts[0][1] > 1500
    assert {name for name, _ in dock.chart.counts} >= {"Pothole in Street", "Tree Trim"}  # names, not slugs
    assert all(dock.open_buttons[k].isEnabled() for k in ("PRIORITY_OUTPUT", "ZONES", "ROUTES"))
    dock.zoom_to_row(0)
    dock.open_output("PRIORITY_OUTPUT")
    assert any(layer.name() == "Outreach priority" for layer in QgsProject.instance().mapLayers().values())
    shot = tmp_path / "dock.png"
    assert dock.grab().save(str(shot))
    image = QImage(str(shot))
    assert image.width() >= 400 and image.height() >= 800
    colours = {image.pixel(x, y) for x in range(0, image.width(), 17) for y in range(0, image.height(), 17)}
    assert len(colours) > 20  # a real, drawn panel — not a blank widget
    keep = ROOT / "demo-output"
    keep.mkdir(exist_ok=True)
    dock.grab().save(str(keep / "dock_screenshot.png"))


def test_dock_defaults_sample_loading_and_refusals(plugin, qgis_iface, qgis_new_project):
    """The sample loads once and styled; the dock picks requests by their fields and an id-like precinct field
    (not polling_places and fid); the dates row only applies to a portal fetch; a points layer without
    request fields is refused."""
    from qgis.core import QgsCategorizedSymbolRenderer

    from civic311.plugin import load_sample_layers
    from civic311.ui.dock import Civic311Dock

    project = QgsProject.instance()
    first = load_sample_layers(project)
    again = load_sample_layers(project)
    assert len(project.mapLayers()) == 4 and [a.id() for a in again] == [f.id() for f in first]
    layers = {layer.name(): layer for layer in first}
    assert isinstance(layers["requests"].renderer(), QgsCategorizedSymbolRenderer)
    assert layers["requests"].renderer().classAttribute() == "category"
    dock = Civic311Dock(qgis_iface)
    assert dock.requests.currentLayer() is layers["requests"]
    assert dock.precincts.currentLayer() is layers["precincts"]
    assert (dock.id_field.currentField(), dock.voters.currentField(), dock.ballots.currentField()) == \
        ("ward_prec", "registered_voters", "ballots_cast")
    assert dock.stops.currentLayer() is layers["stops"] and dock.polls.currentLayer() is layers["polling_places"]
    dock.source.setCurrentIndex(0)
    assert not dock.start.isEnabled()
    dock.source.setCurrentIndex(2)
    assert dock.start.isEnabled()
    dock.source.setCurrentIndex(0)
    dock.requests.setLayer(layers["polling_places"])
    dock.run()
    assert dock.task is None and "created_at" in dock.status.text()
    # a portal's HTML error page is shown as text, never rendered
    from qgis.PyQt.QtCore import Qt

    dock.feedback = type("F", (), {"errors": ["<html><body><h1>502 Bad Gateway</h1></body></html>"]})()
    dock.on_executed(False, {})
    assert dock.status.textFormat() == Qt.TextFormat.PlainText and "<h1>502" in dock.status.text()
