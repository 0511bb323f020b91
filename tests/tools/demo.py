# SPDX-License-Identifier: GPL-2.0-or-later
"""`make demo`: the civic311 outreach pipeline on the bundled Chicago sample, headless through qgis_process.

Writes demo-output/civic311_demo.gpkg (every layer, styled), demo-output/civic311_map.png (priorities, hot spots,
canvassing zones, routes and stops with a legend and attribution) and demo-output/civic311_summary.html (top
precincts, the turnout regression sentence, current spikes), then prints the paths.
Usage: python -P tests/tools/demo.py OUTPUT_DIR   (after `make install`)
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resources" / "sample" / "civic311_sample.gpkg"


def qgis_process() -> str:
    for name in ("qgis_process.bin", "qgis_process"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("qgis_process not found: run `make deps`")


def run(alg: str, params: dict) -> dict:
    args = [qgis_process(), "--json", "run", f"civic311:{alg}", "--"] + [f"{k}={v}" for k, v in params.items()]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"civic311:{alg} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    print(f"  civic311:{alg:<20} {time.time() - t0:5.1f} s", flush=True)
    return results


def sample(name: str) -> str:
    return f"{SAMPLE}|layername={name}"


def render_map(gpkg: Path, png: Path) -> None:
    from qgis.core import (
        QgsApplication,
        QgsCategorizedSymbolRenderer,
        QgsLayoutExporter,
        QgsLayoutItemLabel,
        QgsLayoutItemLegend,
        QgsLayoutItemMap,
        QgsLayoutPoint,
        QgsLayoutSize,
        QgsPrintLayout,
        QgsProject,
        QgsRendererCategory,
        QgsSymbol,
        QgsUnitTypes,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QRectF
    from qgis.PyQt.QtGui import QColor, QFont

    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    layers = {}
    for name, title in (("priority", "Outreach priority (tier)"), ("hotspots", "Complaint hot spots (Gi*)"),
                        ("zones", "Canvassing zones"), ("routes", "Walking routes"), ("stops", "CTA stops")):
        path = f"{gpkg}|layername={name}" if name != "stops" else sample("stops")
        layer = QgsVectorLayer(path, title, "ogr")
        if not layer.isValid():
            continue
        layers[name] = layer
    # hot spots drawn as outlines over the priority tiers
    hot = layers["hotspots"]
    cats = []
    for value, label, colour, width in ((3, "Hot spot – 99 % confidence", "#3f007d", 0.7),
                                        (2, "Hot spot – 95 % confidence", "#807dba", 0.4),
                                        (-3, "Cold spot – 99 % confidence", "#08519c", 0.7)):
        sym = QgsSymbol.defaultSymbol(hot.geometryType())
        sym.symbolLayer(0).setBrushStyle(0)  # Qt.NoBrush
        sym.symbolLayer(0).setStrokeColor(QColor(colour))
        sym.symbolLayer(0).setStrokeWidth(width)
        cats.append(QgsRendererCategory(value, sym, label))
    hot.setRenderer(QgsCategorizedSymbolRenderer("gi_bin", cats))
    if "stops" in layers:
        stops = layers["stops"]
        sym = QgsSymbol.defaultSymbol(stops.geometryType())
        sym.setColor(QColor("#2b8cbe"))
        sym.setSize(0.5)
        sym.symbolLayer(0).setStrokeWidth(0)
        from qgis.core import QgsSingleSymbolRenderer

        stops.setRenderer(QgsSingleSymbolRenderer(sym))
        stops.setOpacity(0.35)
    order = [layers[k] for k in ("routes", "zones", "stops", "hotspots", "priority") if k in layers]
    for layer in reversed(order):
        project.addMapLayer(layer)
    layout = QgsPrintLayout(project)
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    page.setPageSize(QgsLayoutSize(297, 260, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

    illinois_east = QgsCoordinateReferenceSystem("EPSG:3435")
    project.setCrs(illinois_east)
    extent = QgsCoordinateTransform(layers["priority"].crs(), illinois_east, project).transformBoundingBox(
        layers["priority"].extent())
    extent.scale(1.03)
    map_item = QgsLayoutItemMap(layout)
    map_item.setRect(QRectF(0, 0, 190, 240))
    map_item.setCrs(illinois_east)
    map_item.setLayers(order)
    map_item.setExtent(extent)
    map_item.attemptMove(QgsLayoutPoint(5, 15, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    map_item.attemptResize(QgsLayoutSize(190, 240, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    map_item.setFrameEnabled(True)
    layout.addLayoutItem(map_item)
    map_item.zoomToExtent(extent)
    title = QgsLayoutItemLabel(layout)
    title.setText("Chicago: where should outreach go? (311 requests, 19 Nov – 16 Dec 2018)")
    title.setFont(QFont("DejaVu Sans", 14, QFont.Weight.Bold))
    title.attemptMove(QgsLayoutPoint(5, 3, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    title.attemptResize(QgsLayoutSize(285, 10, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    layout.addLayoutItem(title)
    legend = QgsLayoutItemLegend(layout)
    legend.setLinkedMap(map_item)
    legend.setTitle("Legend")
    legend.attemptMove(QgsLayoutPoint(198, 15, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    model = legend.model().rootGroup()
    for layer in order:
        if layer is layers.get("routes") or layer is layers.get("zones"):
            node = model.findLayer(layer)
            if node is not None:
                model.removeChildNode(node)
    layout.addLayoutItem(legend)
    credit = QgsLayoutItemLabel(layout)
    credit.setText("civic311 demo. Data: City of Chicago Data Portal (311 requests); Chicago Board of Election "
                   "Commissioners (2023 precincts, voters, ballots; 2024 polling places); Data provided by the "
                   "Chicago Transit Authority (GTFS). Zones: walkable (radius ≤ 400 m) in tier-5 precincts.")
    credit.setFont(QFont("DejaVu Sans", 7))
    credit.attemptMove(QgsLayoutPoint(198, 200, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    credit.attemptResize(QgsLayoutSize(95, 50, QgsUnitTypes.LayoutUnit.LayoutMillimeters))
    layout.addLayoutItem(credit)
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = 110
    result = QgsLayoutExporter(layout).exportToImage(str(png), settings)
    if result != QgsLayoutExporter.ExportResult.Success:
        sys.exit(f"Could not render {png}: {result}")


def summary_html(gpkg: Path, out: Path, regression_html: Path, spikes_layer: str, stats: dict) -> None:
    from osgeo import ogr

    ds = ogr.Open(str(gpkg))
    lyr = ds.GetLayerByName("priority")
    rows = sorted(({k: f.GetField(k) for k in ("ward_prec", "priority", "priority_rank", "tier", "top_driver",
                                                "rank_stability", "non_voters", "requests", "rate_eb", "turnout",
                                                "top_category", "poll_m")}
                   for f in lyr), key=lambda r: r["priority_rank"])[:15]
    # the report holds the sentence HTML-escaped: unescaped here, escaped once below
    sentence = html.unescape(re.search(r"<b>(.*?)</b>", regression_html.read_text(encoding="utf-8")).group(1))
    spikes = []
    sl = ds.GetLayerByName(spikes_layer)
    for f in sl:
        if f.GetField("spike") == 1:
            spikes.append((f.GetField("ward_prec"), f.GetField("last_count"), f.GetField("baseline_mean"),
                           f.GetField("spike_z"), f.GetField("spike_category")))
    spikes.sort(key=lambda s: -s[3])

    def td(v):
        if isinstance(v, float):
            return f"<td>{v:.3g}</td>"
        return f"<td>{html.escape(str(v))}</td>"

    table = "".join("<tr>" + "".join(td(r[k]) for k in r) + "</tr>" for r in rows)
    spike_rows = "".join("<tr>" + "".join(td(v) for v in s) + "</tr>" for s in spikes[:15]) or \
        "<tr><td colspan='5'>No precinct spikes in the last week.</td></tr>"
    out.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>civic311 demo summary</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:3px 8px;border-bottom:1px solid
#ddd}}</style></head><body><h1>civic311 — Chicago outreach summary</h1>
<p>{stats['MATCHED']} of {stats['MATCHED'] + stats['UNMATCHED']} 311 requests (19 Nov – 16 Dec 2018) fell inside a
2023 precinct.</p><img src="civic311_map.png" alt="priority map" style="max-width:100%">
<h2>Top-priority precincts</h2><table><tr>{''.join(f'<th>{k}</th>' for k in rows[0])}</tr>{table}</table>
<h2>Complaints and turnout</h2><p>{html.escape(sentence)}</p>
<h2>Current spikes (last week against the three before)</h2><table><tr><th>precinct</th><th>last week</th>
<th>baseline mean</th><th>spike z</th><th>category</th></tr>{spike_rows}</table>
<p style="font-size:small">Data: City of Chicago Data Portal; Chicago Board of Election Commissioners; Chicago
Transit Authority.</p></body></html>""", encoding="utf-8")


def main(out_dir: str) -> None:
    t_start = time.time()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gpkg = out / "civic311_demo.gpkg"
    for old in (gpkg, out / "civic311_map.png", out / "civic311_summary.html", out / "regression.html"):
        if old.exists():
            old.unlink()

    def dest(name: str) -> str:
        return f"ogr:dbname='{gpkg}' table=\"{name}\" (geom)"

    print(f"civic311 demo on {SAMPLE.name}", flush=True)
    stats = run("outreachpipeline", {
        "REQUESTS": sample("requests"), "PRECINCTS": sample("precincts"), "PRECINCT_ID_FIELD": "ward_prec",
        "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast", "STOPS": sample("stops"),
        "POLLING_PLACES": sample("polling_places"), "POLLING_ID_FIELD": "name",
        "POLLING_PRECINCT_FIELD": "ward_prec", "PERMUTATIONS": 999,
        "STATS_OUTPUT": dest("precinct_stats"), "HOTSPOTS_OUTPUT": dest("hotspots"), "ACCESS_OUTPUT": dest("access"),
        "PRIORITY_OUTPUT": dest("priority"), "ZONES_OUTPUT": dest("zone_requests"), "ZONES": dest("zones"),
        "ROUTES": dest("routes")})
    reg = run("turnoutregression", {"INPUT": f"{gpkg}|layername=priority", "TURNOUT_FIELD": "turnout",
                                    "EXPLANATORY_FIELDS": "rate_1k", "WEIGHT_FIELD": "registered_voters",
                                    "CLUSTER_FIELD": "ward",
                                    "OUTPUT": dest("regression"), "REPORT": str(out / "regression.html")})
    run("categorytrends", {"REQUESTS": sample("requests"), "ZONES": sample("precincts"), "ZONE_ID_FIELD": "ward_prec",
                           "INTERVAL": 1, "BASELINE": 3, "OUTPUT": dest("trends"), "TABLE": dest("trend_table")})
    render_map(gpkg, out / "civic311_map.png")
    summary_html(gpkg, out / "civic311_summary.html", out / "regression.html", "trends", stats)
    print(f"\n{stats['MATCHED']} requests matched a precinct ({stats['UNMATCHED']} did not); turnout regression "
          f"R² {reg['R2']:.3f}, residual Moran's I {reg['MORAN_I']:.3f}.")
    print(f"Done in {time.time() - t_start:.0f} s. Wrote:")
    for path in (gpkg, out / "civic311_map.png", out / "civic311_summary.html", out / "regression.html"):
        print(f"  {path}")


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
