# SPDX-License-Identifier: GPL-2.0-or-later
"""The "Civic 311" dock: run the outreach pipeline without the toolbox. Thin: every analysis step is the
civic311:outreachpipeline algorithm, run as a background task."""

from __future__ import annotations

import re

from qgis.core import (
    QgsApplication,
    QgsFeatureRequest,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsDateEdit, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QDate, Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QPainter
from qgis.PyQt.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStackedWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..processing.presets import load_presets

OPENABLE = (("STATS_OUTPUT", "Statistics"), ("HOTSPOTS_OUTPUT", "Hot spots"), ("ACCESS_OUTPUT", "Access"),
            ("PRIORITY_OUTPUT", "Priority"), ("ZONES", "Zones"), ("ROUTES", "Routes"))


class CategoryChart(QWidget):
    """Horizontal bars of the category mix (no analysis: it only draws the counts it is given)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.counts: list[tuple[str, int]] = []
        self.setMinimumHeight(110)

    def set_counts(self, counts):
        self.counts = counts[:6]
        self.update()

    def paintEvent(self, event):  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#ffffff"))
        if not self.counts:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.tr("Category mix appears after a run"))
            return
        top = max(c for _, c in self.counts) or 1
        row = max(14, (self.height() - 6) // len(self.counts))
        label_w = int(self.width() * 0.45)
        colours = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
        for i, (name, count) in enumerate(self.counts):
            y = 3 + i * row
            painter.setPen(QColor("#333333"))
            painter.drawText(4, y, label_w - 8, row, Qt.AlignmentFlag.AlignVCenter, name[:34])
            width = int((self.width() - label_w - 50) * count / top)
            painter.fillRect(label_w, y + 2, width, row - 4, QColor(colours[i % len(colours)]))
            painter.drawText(label_w + width + 4, y, 46, row, Qt.AlignmentFlag.AlignVCenter, str(count))


class DockFeedback(QgsProcessingFeedback):
    """Keeps the last error so the dock can show it."""

    def __init__(self):
        super().__init__()
        self.errors: list[str] = []

    def reportError(self, error, fatalError=False):  # noqa: N802, N803 - QGIS API
        self.errors.append(error)
        super().reportError(error, fatalError)


class Civic311Dock(QDockWidget):
    finished = pyqtSignal(bool)

    def __init__(self, iface=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(self.tr("Civic 311"))
        self.setObjectName("Civic311Dock")
        self.iface = iface
        self.task = None
        self.feedback = None
        self.results: dict = {}
        self.context = None
        body = QWidget()
        layout = QVBoxLayout(body)
        form = QFormLayout()
        self.source = QComboBox()
        self.source.addItems([self.tr("Requests layer"), self.tr("Import a file"), self.tr("Fetch from a portal")])
        form.addRow(self.tr("Requests from"), self.source)
        self.stack = QStackedWidget()
        self.requests = QgsMapLayerComboBox()
        self.requests.setFilters(QgsMapLayerProxyModel.Filter.PointLayer)
        self.file = QgsFileWidget()
        self.file.setFilter("311 exports (*.csv *.json *.geojson)")
        self.preset = QComboBox()
        self.preset.addItems([p["name"] for p in load_presets()])
        for widget in (self.requests, self.file, self.preset):
            self.stack.addWidget(widget)
        self.source.currentIndexChanged.connect(self.stack.setCurrentIndex)
        form.addRow("", self.stack)
        dates = QHBoxLayout()
        self.start = QgsDateEdit()
        self.end = QgsDateEdit()
        self.start.setDate(QDate.currentDate().addMonths(-3))
        self.end.setDate(QDate.currentDate())
        dates.addWidget(self.start)
        dates.addWidget(QLabel("–"))
        dates.addWidget(self.end)
        self.dates_label = QLabel(self.tr("Dates (portal)"))
        form.addRow(self.dates_label, dates)
        self.source.currentIndexChanged.connect(self.update_dates)
        self.precincts = QgsMapLayerComboBox()
        self.precincts.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        form.addRow(self.tr("Precincts"), self.precincts)
        self.id_field, self.voters, self.ballots = QgsFieldComboBox(), QgsFieldComboBox(), QgsFieldComboBox()
        self.voters.setAllowEmptyFieldName(True)
        self.ballots.setAllowEmptyFieldName(True)
        for label, combo in ((self.tr("Precinct id"), self.id_field), (self.tr("Registered voters"), self.voters),
                             (self.tr("Ballots cast"), self.ballots)):
            self.precincts.layerChanged.connect(combo.setLayer)
            combo.setLayer(self.precincts.currentLayer())
            form.addRow(label, combo)
        self.stops, self.polls = QgsMapLayerComboBox(), QgsMapLayerComboBox()
        for combo in (self.stops, self.polls):
            combo.setFilters(QgsMapLayerProxyModel.Filter.PointLayer)
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
        form.addRow(self.tr("Transit stops (optional)"), self.stops)
        form.addRow(self.tr("Polling places (optional)"), self.polls)
        layout.addLayout(form)
        self.update_dates()
        buttons = QHBoxLayout()
        self.run_button = QPushButton(self.tr("Run"))
        self.cancel_button = QPushButton(self.tr("Cancel"))
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        self.progress = QProgressBar()
        self.status = QLabel(self.tr("Choose the layers, then Run."))
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.PlainText)  # a portal's HTML error page is shown as text
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        self.table = QTableWidget(0, 7)
        self.table.setHorizontalHeaderLabels([self.tr("Rank"), self.tr("Precinct"), self.tr("Priority"),
                                              self.tr("Requests"), self.tr("Turnout"), self.tr("Main driver"),
                                              self.tr("Stable")])
        self.table.cellClicked.connect(self.zoom_to_row)
        layout.addWidget(QLabel(self.tr("Top-priority precincts (click to zoom)")))
        layout.addWidget(self.table)
        layout.addWidget(QLabel(self.tr("Category mix")))
        self.chart = CategoryChart()
        layout.addWidget(self.chart)
        opens = QHBoxLayout()
        self.open_buttons = {}
        for key, label in OPENABLE:
            button = QPushButton(label)
            button.setEnabled(False)
            button.clicked.connect(lambda _=False, k=key: self.open_output(k))
            opens.addWidget(button)
            self.open_buttons[key] = button
        layout.addLayout(opens)
        self.setWidget(body)
        self._fids: list[int] = []
        self.pick_defaults()

    def update_dates(self, *_):
        """The dates apply to a portal fetch only: the row is disabled otherwise."""
        fetch = self.source.currentIndex() == 2
        for widget in (self.start, self.end, self.dates_label):
            widget.setEnabled(fetch)

    def pick_defaults(self, project=None) -> None:
        """Sensible first choices, by geometry and fields rather than layer order: requests = a point layer with
        created_at; precincts = a polygon layer; its id = an id-like field with unique values (never fid);
        voters/ballots by name; stops = a point layer with stop_id; polling places by name."""
        project = project or QgsProject.instance()
        layers = [lyr for lyr in project.mapLayers().values() if isinstance(lyr, QgsVectorLayer) and lyr.isValid()]

        def geometry(layer):
            return QgsWkbTypes.geometryType(layer.wkbType())

        points = [lyr for lyr in layers if geometry(lyr) == QgsWkbTypes.GeometryType.PointGeometry]
        polygons = [lyr for lyr in layers if geometry(lyr) == QgsWkbTypes.GeometryType.PolygonGeometry]
        requests = next((lyr for lyr in points if lyr.fields().lookupField("created_at") >= 0), None)
        if requests is not None:
            self.requests.setLayer(requests)
        precincts = next((lyr for lyr in polygons if "precinct" in lyr.name().lower()), polygons[0] if polygons
                         else None)
        if precincts is not None:
            self.precincts.setLayer(precincts)
            names = [f.name() for f in precincts.fields()]
            ids = [n for n in names if n.lower() != "fid" and re.search(r"prec|id|key|code|name", n, re.I)]
            if ids:
                self.id_field.setField(ids[0])
            for combo, pattern in ((self.voters, r"voter|registered"), (self.ballots, r"ballot|cast|votes")):
                match = next((n for n in names if re.search(pattern, n, re.I)), "")
                combo.setField(match)
        stops = next((lyr for lyr in points if lyr.fields().lookupField("stop_id") >= 0), None)
        self.stops.setLayer(stops)
        polls = next((lyr for lyr in points if "poll" in lyr.name().lower()), None)
        self.polls.setLayer(polls)

    # ------------------------------------------------------------------ run
    def parameters(self) -> dict:
        precincts = self.precincts.currentLayer()
        params = {"PRECINCTS": precincts, "PRECINCT_ID_FIELD": self.id_field.currentField(),
                  "VOTERS_FIELD": self.voters.currentField() or None,
                  "BALLOTS_FIELD": self.ballots.currentField() or None}
        mode = self.source.currentIndex()
        if mode == 0:
            params["REQUESTS"] = self.requests.currentLayer()
        elif mode == 1:
            params["INPUT"] = self.file.filePath()
        else:
            params.update({"PRESET": self.preset.currentIndex() + 1, "START_DATE": self.start.date(),
                           "END_DATE": self.end.date()})
        if self.stops.currentLayer() is not None:
            params["STOPS"] = self.stops.currentLayer()
            params["STOP_ID_FIELD"] = "stop_id"
        polls = self.polls.currentLayer()
        if polls is not None:
            params["POLLING_PLACES"] = polls
            # polling places that name the precinct they serve in a field spelt like the precinct id: measured
            # to the assigned place, not the nearest
            if params["PRECINCT_ID_FIELD"] and polls.fields().lookupField(params["PRECINCT_ID_FIELD"]) >= 0:
                params["POLLING_PRECINCT_FIELD"] = params["PRECINCT_ID_FIELD"]
        for key, _ in OPENABLE + (("ZONES_OUTPUT", ""),):
            params[key] = "TEMPORARY_OUTPUT"
        return params

    def run(self):
        if self.precincts.currentLayer() is None:
            self.status.setText(self.tr("Choose a precinct layer first."))
            return
        requests = self.requests.currentLayer()
        if self.source.currentIndex() == 0 and (requests is None or requests.fields().lookupField("created_at") < 0):
            self.status.setText(self.tr("Choose a layer of 311 requests (points with a created_at field, as "
                                        "'Import 311 requests' or 'Fetch' write them)."))
            return
        alg = QgsApplication.processingRegistry().createAlgorithmById("civic311:outreachpipeline")
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = DockFeedback()
        self.feedback.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        self.task = QgsProcessingAlgRunnerTask(alg, self.parameters(), self.context, self.feedback)
        self.task.executed.connect(self.on_executed)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(self.tr("Running the outreach pipeline…"))
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self):
        if self.feedback is not None:
            self.feedback.cancel()
        self.status.setText(self.tr("Cancelling…"))

    def on_executed(self, ok, results):
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.task = None
        if not ok:
            reason = self.feedback.errors[-1] if self.feedback.errors else self.tr("see the log")
            self.status.setText(self.tr("The pipeline stopped: {}").format(reason[:300]))
            self.finished.emit(False)
            return
        self.results = results
        self.progress.setValue(100)
        self.status.setText(self.tr("{} requests in precincts, {} outside.").format(
            results.get("MATCHED"), results.get("UNMATCHED")))
        self.show_results()
        for key, button in self.open_buttons.items():
            button.setEnabled(bool(results.get(key)))
        self.finished.emit(True)

    # ------------------------------------------------------------------ results
    def layer(self, key) -> QgsVectorLayer | None:
        value = self.results.get(key)
        if isinstance(value, QgsVectorLayer):
            return value
        return self.context.getMapLayer(value) if value and self.context is not None else None

    def show_results(self):
        priority = self.layer("PRIORITY_OUTPUT")
        if priority is None:
            return
        id_field = self.id_field.currentField()
        rows = sorted(priority.getFeatures(), key=lambda f: f["priority_rank"])[:20]
        self.table.setRowCount(len(rows))
        self._fids = [f.id() for f in rows]
        for r, f in enumerate(rows):
            turnout = f["turnout"]
            values = [str(f["priority_rank"]), str(f[id_field]), f"{f['priority']:.0f}", str(f["requests"]),
                      "" if turnout is None or str(turnout) == "NULL" else f"{100 * turnout:.0f} %",
                      str(f["top_driver"]), f"{100 * f['rank_stability']:.0f} %"]
            for c, value in enumerate(values):
                self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        requests = self.layer("REQUESTS_OUTPUT") or self.requests.currentLayer()
        if requests is not None and requests.fields().lookupField("category") >= 0:
            from ..processing.styling import value_counts

            counts = value_counts(requests, "category")  # the categories' own names, not field slugs
            self.chart.set_counts(sorted(counts.items(), key=lambda kv: -kv[1])[:6])

    def zoom_to_row(self, row, _column=0):
        priority = self.layer("PRIORITY_OUTPUT")
        if priority is None or self.iface is None or row >= len(self._fids):
            return
        feat = next(priority.getFeatures(QgsFeatureRequest(self._fids[row])), None)
        if feat is None:
            return
        canvas = self.iface.mapCanvas()
        from qgis.core import QgsCoordinateTransform

        rect = QgsCoordinateTransform(priority.crs(), canvas.mapSettings().destinationCrs(),
                                      QgsProject.instance()).transformBoundingBox(feat.geometry().boundingBox())
        rect.scale(1.5)
        canvas.setExtent(rect)
        canvas.refresh()

    def open_output(self, key):
        layer = self.layer(key)
        if layer is not None:
            if self.context is not None:
                self.context.temporaryLayerStore().takeMapLayer(layer)
            QgsProject.instance().addMapLayer(layer)
