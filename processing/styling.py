# SPDX-License-Identifier: GPL-2.0-or-later
"""Default styles and metadata of every civic311 output: renderers built from the data (classes follow the
values present), applied to layers loaded into the project and stored with file outputs (a GeoPackage's
layer_styles table, or a .qml beside other formats)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from qgis.core import (
    QgsCategorizedSymbolRenderer,
    QgsClassificationRange,
    QgsGraduatedSymbolRenderer,
    QgsLayerMetadata,
    QgsMapLayer,
    QgsProcessingLayerPostProcessorInterface,
    QgsProviderRegistry,
    QgsRendererCategory,
    QgsRendererRange,
    QgsSymbol,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtGui import QColor

GI_CLASSES = [(3, "Hot spot – 99 % confidence", "#b2182b"), (2, "Hot spot – 95 % confidence", "#ef8a62"),
              (1, "Hot spot – 90 % confidence", "#fddbc7"), (0, "Not significant", "#f0f0f0"),
              (-1, "Cold spot – 90 % confidence", "#d1e5f0"), (-2, "Cold spot – 95 % confidence", "#67a9cf"),
              (-3, "Cold spot – 99 % confidence", "#2166ac")]
LISA_CLASSES = [("HH", "High-High cluster", "#d7191c"), ("LL", "Low-Low cluster", "#2c7bb6"),
                ("HL", "High-Low outlier", "#fdae61"), ("LH", "Low-High outlier", "#abd9e9"),
                ("Not significant", "Not significant", "#eeeeee")]
EHS_COLOURS = {"New": ("#fee5d9", "#eff3ff"), "Consecutive": ("#fcbba1", "#c6dbef"),
               "Intensifying": ("#a50f15", "#08519c"), "Persistent": ("#de2d26", "#3182bd"),
               "Diminishing": ("#fc9272", "#9ecae1"), "Sporadic": ("#fb6a4a", "#6baed6"),
               "Oscillating": ("#cb181d", "#2171b5"), "Historical": ("#67000d", "#08306b")}
PALETTE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4",
           "#b2df8a", "#fb9a99", "#cab2d6"]
RAMP_5 = ["#ffffcc", "#a1dab4", "#41b6c4", "#2c7fb8", "#253494"]
RAMP_5_RED = ["#fef0d9", "#fdcc8a", "#fc8d59", "#e34a33", "#b30000"]

_KEEP_ALIVE: list = []  # QGIS does not take ownership of layer post-processors


def _symbol(layer: QgsVectorLayer, colour: str, outline: str | None = None) -> QgsSymbol:
    symbol = QgsSymbol.defaultSymbol(layer.geometryType())
    symbol.setColor(QColor(colour))
    gtype = layer.geometryType()
    if gtype == QgsWkbTypes.GeometryType.PolygonGeometry:
        symbol.symbolLayer(0).setStrokeColor(QColor(outline or "#7f7f7f"))
        symbol.symbolLayer(0).setStrokeWidth(0.1)
    elif gtype == QgsWkbTypes.GeometryType.PointGeometry:
        symbol.setSize(1.6)
        symbol.symbolLayer(0).setStrokeColor(QColor(outline or "#ffffff"))
    elif gtype == QgsWkbTypes.GeometryType.LineGeometry:
        symbol.setWidth(0.6)
    return symbol


def categorized(layer, field: str, classes: list[tuple], all_other: str | None = None):
    cats = [QgsRendererCategory(value, _symbol(layer, colour), label) for value, label, colour in classes]
    if all_other:
        cats.append(QgsRendererCategory(None, _symbol(layer, all_other), "Other"))
    return QgsCategorizedSymbolRenderer(field, cats)


def _values(layer, field: str) -> list:
    idx = layer.fields().lookupField(field)
    return sorted(v for v in layer.uniqueValues(idx) if v is not None and str(v) != "NULL") if idx >= 0 else []


def gi_renderer(layer):
    return categorized(layer, "gi_bin", GI_CLASSES)


def lisa_renderer(layer):
    return categorized(layer, "lisa_q", LISA_CLASSES)


def graduated_classes(layer, field: str, labels: list[str], colours: list[str]):
    ranges = [QgsRendererRange(QgsClassificationRange(lab, i + 0.5, i + 1.5), _symbol(layer, col))
              for i, (lab, col) in enumerate(zip(labels, colours))]
    renderer = QgsGraduatedSymbolRenderer(field, ranges)
    return renderer


def quintile_renderer(layer):
    return graduated_classes(layer, "quintile", ["1 – lowest fifth", "2", "3", "4", "5 – highest fifth"], RAMP_5)


def tier_renderer(layer):
    return graduated_classes(layer, "tier", ["Tier 1 – lowest priority", "Tier 2", "Tier 3", "Tier 4",
                                             "Tier 5 – top priority"], RAMP_5_RED)


def ehs_renderer(layer):
    classes = []
    for name, (hot, cold) in EHS_COLOURS.items():
        classes.append((f"{name} Hot Spot", f"{name} hot spot", hot))
        classes.append((f"{name} Cold Spot", f"{name} cold spot", cold))
    classes.append(("No Pattern Detected", "No pattern detected", "#f7f7f7"))
    return categorized(layer, "ehs_category", classes)


ZONE_COLOUR = ("CASE WHEN \"zone_id\" IS NULL OR \"zone_id\" < 0 THEN '#bdbdbd' "
               "ELSE color_hsv((\"zone_id\" * 137) % 360, 70, 80) END")


def zone_renderer(layer, values: list | None = None):
    """One legend entry, each zone coloured by its id through a data-defined colour (a golden-angle hue, so
    neighbouring ids differ; grey for DBSCAN noise): a categorized renderer listed hundreds of zones in the
    legend. ``values`` is accepted for the callers that know the ids, and not needed."""
    from qgis.core import QgsProperty, QgsSingleSymbolRenderer, QgsSymbolLayer

    symbol = _symbol(layer, "#1b9e77")
    colour = QgsProperty.fromExpression(ZONE_COLOUR)
    line = layer.geometryType() == QgsWkbTypes.GeometryType.LineGeometry
    key = QgsSymbolLayer.PropertyStrokeColor if line else QgsSymbolLayer.PropertyFillColor
    symbol.symbolLayer(0).setDataDefinedProperty(key, colour)
    return QgsSingleSymbolRenderer(symbol)


def value_counts(layer, field: str) -> dict:
    """How often each non-NULL value of ``field`` occurs: one GROUP BY inside a GeoPackage, else one pass of
    QGIS's own value reader (no Python loop over features)."""
    from qgis.core import QgsVectorLayerUtils

    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source()) if layer.providerType() == "ogr" else {}
    if str(parts.get("path", "")).lower().endswith(".gpkg") and not layer.subsetString():
        from osgeo import ogr

        ds = ogr.Open(parts["path"])
        name = parts.get("layerName") or (ds.GetLayer(0).GetName() if ds is not None else "")
        from .gpkgwriter import ident

        col = ident(field)
        result = ds.ExecuteSQL(f"SELECT {col}, count(*) FROM {ident(name)} WHERE {col} IS NOT NULL "
                               f"GROUP BY {col}") if ds is not None else None
        if result is not None:
            counts = {f.GetField(0): f.GetField(1) for f in result}
            ds.ReleaseResultSet(result)
            return counts
    values, ok = QgsVectorLayerUtils.getValues(layer, field)
    return dict(Counter(v for v in values if v is not None and str(v) != "NULL")) if ok else {}


def category_renderer(layer, field="category", top=10, counts: dict | None = None):
    """The ``top`` most frequent values, each in its colour; ``counts`` when the algorithm already knows them."""
    if counts is None:
        counts = value_counts(layer, field) if layer.fields().lookupField(field) >= 0 else {}
    best = sorted(counts, key=lambda k: (-counts[k], str(k)))[:top]
    return categorized(layer, field, [(v, str(v), PALETTE[i % len(PALETTE)]) for i, v in enumerate(best)],
                       all_other="#9e9e9e")


def access_renderer(layer):
    return categorized(layer, "access_gap", [(1, "Near transit, far from a polling place", "#d7301f"),
                                             (0, "No access gap", "#bdbdbd")], all_other="#f0f0f0")


def spike_renderer(layer):
    return categorized(layer, "spike", [(1, "Spike in the last period", "#e31a1c"), (0, "No spike", "#deebf7")])


def residual_renderer(layer):
    edges = [(-99, -2, "Much lower turnout than predicted (< −2)", "#2166ac"),
             (-2, -1, "Lower than predicted", "#92c5de"), (-1, 1, "As predicted", "#f7f7f7"),
             (1, 2, "Higher than predicted", "#f4a582"), (2, 99, "Much higher turnout than predicted (> 2)", "#b2182b")]
    ranges = [QgsRendererRange(QgsClassificationRange(lab, lo, hi), _symbol(layer, col)) for lo, hi, lab, col in edges]
    return QgsGraduatedSymbolRenderer("std_resid", ranges)


def stops_renderer(layer):
    from qgis.core import QgsSingleSymbolRenderer

    symbol = _symbol(layer, "#2b8cbe", "#ffffff")
    symbol.setSize(1.2)
    return QgsSingleSymbolRenderer(symbol)


RENDERERS = {
    ("hotspots", "OUTPUT"): gi_renderer, ("optimizedhotspots", "OUTPUT"): gi_renderer,
    ("localmoran", "OUTPUT"): lisa_renderer, ("precinctstats", "OUTPUT"): quintile_renderer,
    ("outreachpriority", "OUTPUT"): tier_renderer, ("transitaccess", "OUTPUT"): access_renderer,
    ("canvasszones", "OUTPUT"): zone_renderer, ("canvasszones", "ZONES"): zone_renderer,
    ("canvasszones", "ROUTES"): zone_renderer, ("categorytrends", "OUTPUT"): spike_renderer,
    ("emerginghotspots", "OUTPUT"): ehs_renderer, ("turnoutregression", "OUTPUT"): residual_renderer,
    ("fetchrequests", "OUTPUT"): category_renderer, ("importrequests", "OUTPUT"): category_renderer,
    ("loadgtfsstops", "OUTPUT"): stops_renderer,
    ("outreachpipeline", "REQUESTS_OUTPUT"): category_renderer, ("outreachpipeline", "STATS_OUTPUT"): quintile_renderer,
    ("outreachpipeline", "HOTSPOTS_OUTPUT"): gi_renderer, ("outreachpipeline", "ACCESS_OUTPUT"): access_renderer,
    ("outreachpipeline", "PRIORITY_OUTPUT"): tier_renderer, ("outreachpipeline", "ZONES_OUTPUT"): zone_renderer,
    ("outreachpipeline", "ZONES"): zone_renderer, ("outreachpipeline", "ROUTES"): zone_renderer,
}


def style_layer(layer: QgsVectorLayer, algorithm: str, key: str, hints: dict | None = None) -> bool:
    """Apply the output's renderer; ``hints`` are keyword arguments for the renderer builder (facts the
    algorithm already computed, such as category counts, so the layer need not be read again)."""
    builder = RENDERERS.get((algorithm, key))
    if builder is None or not layer.isValid() or not layer.isSpatial():
        return False
    layer.setRenderer(builder(layer, **(hints or {})))
    if (algorithm, key) in (("canvasszones", "ZONES"), ("outreachpipeline", "ZONES")):
        layer.setOpacity(0.45)
    layer.triggerRepaint()
    return True


def style_sample_layer(layer: QgsVectorLayer, name: str) -> None:
    """The plugin's styles for the bundled sample layers (never QGIS's random colours)."""
    from qgis.core import QgsSingleSymbolRenderer

    if name == "requests":
        style_layer(layer, "importrequests", "OUTPUT")
    elif name == "stops":
        style_layer(layer, "loadgtfsstops", "OUTPUT")
    elif name == "precincts":
        symbol = _symbol(layer, "#ffffff", "#636363")
        symbol.setOpacity(0.35)
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    elif name == "polling_places":
        symbol = _symbol(layer, "#08306b", "#ffffff")
        symbol.setSize(2.6)
        layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.triggerRepaint()


SECRET_KEYS = {"AUTH_CONFIG", "WEBHOOK_AUTH"}


def describe_parameters(alg, parameters: dict) -> dict:
    out = {}
    for key, value in parameters.items():
        if key in SECRET_KEYS:
            continue
        if key == "WEBHOOK_URL" and value:
            from .network import safe_url

            value = safe_url(str(value))
        out[key] = str(value) if not isinstance(value, (int, float, bool)) else value
    return out


def build_metadata(alg, key: str, parameters: dict, input_layers: list[QgsMapLayer], extra: dict) -> QgsLayerMetadata:
    from .network import plugin_version

    md = QgsLayerMetadata()
    md.setIdentifier(f"civic311:{alg.name()}:{key}")
    out_def = alg.parameterDefinition(key)
    md.setTitle(f"{alg.displayName()} — {out_def.description() if out_def else key}")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"Produced by civic311:{alg.name()} (civic311 {plugin_version()}) on {now}.",
             "Parameters: " + json.dumps(describe_parameters(alg, parameters), ensure_ascii=False)]
    for name, value in extra.items():
        lines.append(f"{name}: {value}")
    rights, licences = [], []
    for layer in input_layers:
        lmd = layer.metadata()
        rights += [r for r in lmd.rights() if r not in rights]
        licences += [lic for lic in lmd.licenses() if lic not in licences]
    rights += [r for r in extra.get("attribution", "").split("\n") if r and r not in rights]
    if extra.get("licence") and extra["licence"] not in licences:
        licences.append(extra["licence"])
    if rights:
        lines.append("Data: " + "; ".join(rights))
    md.setAbstract("\n".join(lines))
    md.setRights(rights or ["Derived from the input layers; see their own attribution."])
    md.setLicenses(licences)
    md.setKeywords({"civic311": ["311", alg.name()]})
    return md


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles and describes an output when QGIS loads it into the project."""

    def __init__(self, algorithm: str, key: str, metadata: QgsLayerMetadata, hints: dict | None = None):
        super().__init__()
        self.algorithm, self.key, self.metadata, self.hints = algorithm, key, metadata, hints

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 - QGIS API
        if isinstance(layer, QgsVectorLayer):
            style_layer(layer, self.algorithm, self.key, self.hints)
            layer.setMetadata(self.metadata)


def save_style_to_database(layer: QgsVectorLayer, description: str) -> str:
    """Store the layer's style as its default in its GeoPackage; returns an error message or ''. QGIS 3.42+
    deprecates saveStyleToDatabase for saveStyleToDatabaseV2 (which reports a result flag)."""
    if hasattr(layer, "saveStyleToDatabaseV2"):
        _, message = layer.saveStyleToDatabaseV2("civic311", description, True, "")
        return message or ""  # the message is set only when a step failed
    return layer.saveStyleToDatabase("civic311", description, True, "")


def store_with_file(path: str, algorithm: str, key: str, metadata: QgsLayerMetadata, feedback=None,
                    hints: dict | None = None) -> bool:
    """Write the default style and the metadata into a file output (GeoPackage layer_styles / gpkg_metadata,
    or .qml/.qmd beside other formats)."""
    from .layerio import index_output

    layer = QgsVectorLayer(path, "output", "ogr")
    if not layer.isValid():
        return False
    index_output(layer, feedback)
    styled = style_layer(layer, algorithm, key, hints)  # tables have no style, but keep their metadata
    layer.setMetadata(metadata)
    parts = QgsProviderRegistry.instance().decodeUri("ogr", path)
    file_path = parts.get("path", path)
    if file_path.lower().endswith(".gpkg"):
        error = save_style_to_database(layer, f"civic311 default style for {algorithm}:{key}") if styled else ""
        if error and feedback is not None:
            feedback.pushWarning(f"Could not store the style in {file_path}: {error}")
        try:
            uri = layer.source()
            if "layername=" not in uri:
                from osgeo import ogr

                ds = ogr.Open(file_path)
                uri = f"{file_path}|layername={ds.GetLayer(0).GetName()}" if ds is not None else uri
                ds = None
            # gpkg_contents.identifier is unique: two outputs (or two runs) of one algorithm in one GeoPackage
            # each need their own, so the table name is part of it
            table = QgsProviderRegistry.instance().decodeUri("ogr", uri).get("layerName") or key
            own = QgsLayerMetadata(metadata)
            own.setIdentifier(f"{metadata.identifier()}:{table}")
            ok, error = QgsProviderRegistry.instance().saveLayerMetadata("ogr", uri, own)
            if not ok and feedback is not None:
                feedback.pushWarning(f"Could not store the metadata in {file_path}: {error}")
        except Exception as err:  # noqa: BLE001 - metadata is a courtesy: never fail the analysis for it
            if feedback is not None:
                feedback.pushWarning(f"Could not store the metadata in {file_path}: {err}")
    else:
        base = str(Path(file_path).with_suffix(""))
        if styled:
            layer.saveNamedStyle(base + ".qml")
        layer.saveNamedMetadata(base + ".qmd")
    return styled


def keep_alive(obj):
    _KEEP_ALIVE.append(obj)
    return obj
