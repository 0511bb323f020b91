# SPDX-License-Identifier: GPL-2.0-or-later
"""Parameters and outputs shared by the two time-series algorithms (zones or hexagons)."""

from __future__ import annotations

from qgis.core import (
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QDate, QVariant

from ..core.trends import INTERVALS
from ..layerio import QT_TYPES, output_fields, py_value


def add_zone_parameters(alg) -> None:
    alg.addParameter(QgsProcessingParameterFeatureSource(
        "REQUESTS", alg.tr("Service requests (with created_at)"), [QgsProcessing.SourceType.TypeVectorPoint]))
    alg.addParameter(QgsProcessingParameterFeatureSource(
        "ZONES", alg.tr("Zones (e.g. precincts; empty = hexagon grid)"),
        [QgsProcessing.SourceType.TypeVectorPolygon], optional=True))
    alg.addParameter(QgsProcessingParameterField(
        "ZONE_ID_FIELD", alg.tr("Zone id field"), parentLayerParameterName="ZONES", optional=True))
    cell = QgsProcessingParameterNumber("CELL_SIZE", alg.tr("Hexagon width when no zones are given (metres)"),
                                        QgsProcessingParameterNumber.Type.Double, 500.0, minValue=0.0)
    alg.addParameter(cell)
    alg.addParameter(QgsProcessingParameterEnum("INTERVAL", alg.tr("Interval"), options=list(INTERVALS),
                                                defaultValue=1))


def advanced(param):
    param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
    return param


def write_zone_layer(alg, parameters, context, zoned, new_fields, columns, feedback):
    """OUTPUT = the zones (or hexagons) with the computed columns."""
    if zoned.features is not None:
        fields, keep = output_fields(zoned.zone_fields, new_fields, feedback)
        wkb, crs = zoned.wkb_type, zoned.crs
        geoms = [f.geometry() for f in zoned.features]
        base = [[f.attributes()[k] for k in keep] for f in zoned.features]
    else:
        fields, _ = output_fields(QgsFields(), [("zone_id", "string")] + new_fields)
        wkb, crs = QgsWkbTypes.Type.Polygon, zoned.crs
        geoms = zoned.hex_geometries
        base = [[zid] for zid in zoned.zone_ids]
    sink, dest_id = alg.parameterAsSink(parameters, "OUTPUT", context, fields, wkb, crs)
    if sink is None:
        raise QgsProcessingException(alg.invalidSinkError(parameters, "OUTPUT"))
    feats = []
    for i, geom in enumerate(geoms):
        feat = QgsFeature(fields)
        feat.setGeometry(geom)
        feat.setAttributes(base[i] + [py_value(col[i]) for col in columns])
        feats.append(feat)
    if not sink.addFeatures(feats, QgsFeatureSink.Flag.FastInsert):
        raise QgsProcessingException(f"Could not write the zones: {sink.lastError()}")
    return dest_id


def write_table(alg, parameters, context, spec: list[tuple[str, str]], columns: list) -> str | None:
    """TABLE (no geometry) from whole columns (numpy arrays; NaN or None = NULL; dates as datetime64). A new
    GeoPackage is written in bulk inside SQLite; any other destination through a QGIS sink. Returns the
    destination id, or None when TABLE is not wanted."""
    import numpy as np

    from ..gpkgwriter import write_table as bulk_table
    from ..layerio import bulk_destination, load_on_completion

    target, project, layer_name = bulk_destination(alg, parameters, "TABLE")
    if target is not None:
        bulk_table(target[0], target[1], {name: col for (name, _), col in zip(spec, columns)},
                   dict(spec))
        dest_id = f"{target[0]}|layername={target[1]}"
        load_on_completion(context, "TABLE", dest_id, project, layer_name)
        return dest_id
    fields = QgsFields()
    for name, kind in spec:
        fields.append(QgsField(name, QVariant.Date) if kind == "date" else QgsField(name, QT_TYPES[kind]))
    sink, dest_id = alg.parameterAsSink(parameters, "TABLE", context, fields, QgsWkbTypes.Type.NoGeometry)
    if sink is None:
        return None
    rows = []
    for (_, kind), col in zip(spec, columns):
        if kind == "date":
            days = np.asarray(col, dtype="datetime64[D]")
            rows.append([None if np.isnat(d) else QDate(*map(int, str(d).split("-"))) for d in days])
        else:
            rows.append([py_value(v) for v in np.asarray(col, dtype=object)])
    feats = []
    for values in zip(*rows):
        feat = QgsFeature(fields)
        feat.setAttributes(list(values))
        feats.append(feat)
    if not sink.addFeatures(feats, QgsFeatureSink.Flag.FastInsert):
        raise QgsProcessingException(f"Could not write TABLE: {sink.lastError()}")
    return dest_id
