# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared parameters and input reading of the algorithms that need spatial neighbours."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from qgis.core import (
    QgsFeature,
    QgsProcessingException,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterNumber,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

from .core.weights import NEIGHBOUR_LABELS, Neighbours, build_weights
from .layerio import METRIC, read_points, read_polygons

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    from scipy import sparse

NEIGHBOUR_HELP = (
    "Neighbours: Queen contiguity (polygons sharing a vertex), Rook contiguity (sharing an edge), K nearest "
    "neighbours (by centroid) or a fixed distance band in metres (DISTANCE = 0 picks the smallest band that "
    "gives every feature a neighbour). Distances are ground metres whatever the layer's CRS (geographic "
    "included): the layer's own CRS when it is a metre CRS true to 0.1 % over the data, else an azimuthal "
    "equidistant projection centred on the data."
)


def add_neighbour_parameters(alg, permutations: bool = True) -> None:
    alg.addParameter(QgsProcessingParameterEnum(
        "NEIGHBOURS", alg.tr("Neighbours"), options=[alg.tr(x) for x in NEIGHBOUR_LABELS], defaultValue=0))
    alg.addParameter(QgsProcessingParameterNumber(
        "K", alg.tr("Number of neighbours (K nearest)"), QgsProcessingParameterNumber.Type.Integer, 8, minValue=1))
    alg.addParameter(QgsProcessingParameterNumber(
        "DISTANCE", alg.tr("Distance band (metres, 0 = automatic)"), QgsProcessingParameterNumber.Type.Double,
        0.0, minValue=0.0))
    if permutations:
        alg.addParameter(QgsProcessingParameterNumber(
            "PERMUTATIONS", alg.tr("Permutations (0 = analytic only)"), QgsProcessingParameterNumber.Type.Integer,
            999, minValue=0, maxValue=99999))
        seed = QgsProcessingParameterNumber("SEED", alg.tr("Random seed"), QgsProcessingParameterNumber.Type.Integer,
                                            1, minValue=0)
        seed.setFlags(seed.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
        alg.addParameter(seed)


@dataclass
class SpatialInput:
    features: list[QgsFeature]
    values: np.ndarray
    weights: sparse.csr_matrix
    band: float
    source: object
    is_polygon: bool
    dropped: list[QgsFeature] = field(default_factory=list)  # features without geometry: not analysed

    def output(self, columns: list[np.ndarray]) -> tuple[list[QgsFeature], list[np.ndarray]]:
        """Every input feature for the output, the dropped ones last with NULL in the computed columns."""
        if not self.dropped:
            return self.features, columns
        pad = len(self.dropped)
        padded = []
        for col in map(np.asarray, columns):
            if col.dtype == object:
                padded.append(np.concatenate([col, np.full(pad, None, dtype=object)]))
            else:
                padded.append(np.concatenate([col.astype(float), np.full(pad, np.nan)]))
        return self.features + self.dropped, padded


DENSE_BAND = 30  # mean neighbours above which a distance band is too wide for local statistics


def data_label(source) -> str:
    """A field that names features (an id-like first text field), or '' to use feature ids."""
    for fld in source.fields():
        if fld.type() == QVariant.String:
            return fld.name()
    return ""


def _label(feature, field: str) -> str:
    return f"{field} {feature[field]}" if field else f"feature {feature.id()}"


def numeric_values(features, field_index: int) -> np.ndarray:
    """One field of the features as floats: NaN for NULL and for a value that is no number (numeric text such as
    "12" is read as its number)."""
    out = np.full(len(features), np.nan)
    for i, feature in enumerate(features):
        value = feature.attributes()[field_index]
        if isinstance(value, str):
            value = value.strip()
        try:
            out[i] = float(value)
        except (TypeError, ValueError):  # NULL (None or a null QVariant), empty or other text
            pass
    return out


def read_spatial_input(alg, parameters, context, feedback, field_key: str = "FIELD",
                       input_key: str = "INPUT", allow_null: bool = False) -> SpatialInput:
    """Features, the analysis field and the neighbour matrix, checked and with the warnings analysts need."""
    source = alg.parameterAsSource(parameters, input_key, context)
    if source is None:
        raise QgsProcessingException(alg.invalidSourceError(parameters, input_key))
    field = alg.parameterAsString(parameters, field_key, context)
    idx = source.fields().lookupField(field)
    if idx < 0:
        raise QgsProcessingException(f"{input_key} has no field {field}: choose a numeric field.")
    kind = alg.parameterAsEnum(parameters, "NEIGHBOURS", context)
    k = alg.parameterAsInt(parameters, "K", context)
    distance = alg.parameterAsDouble(parameters, "DISTANCE", context)
    if source.featureCount() == 0:
        raise QgsProcessingException(f"{input_key} has no features.")
    gtype = QgsWkbTypes.geometryType(source.wkbType())
    if gtype == QgsWkbTypes.GeometryType.PolygonGeometry:
        table = read_polygons(alg, parameters, input_key, context, feedback, dest_crs=METRIC)
        located = np.array([bool(rings) for rings in table.polygons], dtype=bool)
        dropped = [f for f, ok in zip(table.features, located) if not ok]
        features = [f for f, ok in zip(table.features, located) if ok]
        polygons = [r for r, ok in zip(table.polygons, located) if ok]
        xy = table.centroids[located]
        if dropped:
            label = data_label(source)
            feedback.pushWarning(f"{len(dropped)} feature(s) without geometry are left out of the statistics (their "
                                 "output fields are NULL): " + ", ".join(_label(f, label) for f in dropped[:20])
                                 + (" …" if len(dropped) > 20 else ""))
    elif gtype == QgsWkbTypes.GeometryType.PointGeometry:
        if kind in (Neighbours.QUEEN, Neighbours.ROOK):
            raise QgsProcessingException("Contiguity neighbours need polygons: for points choose K nearest "
                                         "neighbours or a fixed distance band.")
        every = list(source.getFeatures())
        features = [f for f in every if not f.geometry().isNull() and not f.geometry().isEmpty()]
        dropped = [f for f in every if f.geometry().isNull() or f.geometry().isEmpty()]
        if dropped:
            label = data_label(source)
            feedback.pushWarning(f"{len(dropped)} feature(s) without geometry are left out of the statistics (their "
                                 "output fields are NULL): " + ", ".join(_label(f, label) for f in dropped[:20])
                                 + (" …" if len(dropped) > 20 else ""))
        pts = read_points(alg, parameters, input_key, context, feedback, (), dest_crs=METRIC)
        polygons, xy = None, np.column_stack([pts.x, pts.y])
        if len(xy) != len(features):
            raise QgsProcessingException("Could not read the point coordinates consistently; save the layer to a "
                                         "GeoPackage and try again.")
    else:
        raise QgsProcessingException(f"{input_key} must be a point or polygon layer.")
    values = numeric_values(features, idx)
    missing = ~np.isfinite(values)
    if missing.any() and not allow_null:
        raise QgsProcessingException(
            f"{int(missing.sum())} feature(s) have a NULL or non-numeric {field}: fill them (e.g. with 0) or "
            "filter them out before the analysis.")
    n = len(values)
    if n < 3:
        raise QgsProcessingException(f"The analysis needs at least 3 features; {input_key} has {n}.")
    if n < 30:
        feedback.pushWarning(f"Only {n} features: local statistics are unreliable with fewer than 30 features.")
    finite = values[np.isfinite(values)]
    if len(finite) and np.allclose(finite, finite[0]):
        feedback.pushWarning(f"{field} has zero variance (every value is {finite[0]:g}): z-scores are undefined "
                             "and every feature is reported as not significant.")
    weights, band = build_weights(kind, polygons, xy[:, 0], xy[:, 1], k=k, distance=distance)
    islands = int((np.diff(weights.indptr) == 0).sum())
    if islands:
        feedback.pushWarning(f"{islands} feature(s) have no neighbours (islands): their statistics only reflect "
                             "their own value and their permutation p-values are NULL. Consider K nearest "
                             "neighbours or a larger distance band.")
    if kind == Neighbours.DISTANCE:
        feedback.pushInfo(f"Distance band: {band:.1f} m")
        mean_card = float(np.diff(weights.indptr).mean()) if n else 0.0
        if mean_card > DENSE_BAND:
            why = ""
            if distance <= 0:  # the automatic band: the most isolated feature sets it for everyone
                from scipy.spatial import cKDTree

                d, _ = cKDTree(xy).query(xy, k=2)
                far = int(np.argmax(d[:, 1]))
                name = _label(features[far], data_label(source))
                why = (f" The automatic band is the distance from the most isolated feature ({name}) to its nearest "
                       f"neighbour, {d[far, 1]:.0f} m, and every other feature inherits it.")
            feedback.pushWarning(f"The distance band gives each feature {mean_card:.0f} neighbours on average: "
                                 f"local statistics then compare each feature with a large part of the map, and "
                                 f"most look significant.{why} Choose K nearest neighbours, or a smaller band.")
    return SpatialInput(features, values, weights, band, source, polygons is not None, dropped)
