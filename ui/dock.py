# SPDX-License-Identifier: GPL-2.0-or-later
"""The "Civic 311" dock: run the outreach pipeline without the toolbox. Thin: every analysis step is the
civic311:outreachpipeline algorithm, run as a background task."""

from __future__ import annotations

from qgis.core import (
    QgsApplication,
    QgsFeatureRequest,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsVectorLayer,
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
        form.addRow(self.tr("Dates"), dates)
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
        stats = self.layer("STATS_OUTPUT")
        if stats is not None:
            totals = {f.name()[4:].replace("_", " "): 0 for f in stats.fields() if f.name().startswith("cat_")}
            for feat in stats.getFeatures():
                for name in list(totals):
                    value = feat["cat_" + name.replace(" ", "_")]
                    totals[name] += int(value) if value is not None and str(value) != "NULL" else 0
            self.chart.set_counts(sorted(totals.items(), key=lambda kv: -kv[1]))

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
