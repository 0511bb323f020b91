# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:hotspots — Getis-Ord Gi* hot spot analysis."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
)

from ..core.spatialstats import gi_star
from ..layerio import output_fields, write_rows
from ..neighbours import NEIGHBOUR_HELP, add_neighbour_parameters, read_spatial_input
from .base import Civic311Algorithm

GI_FIELDS = [("gi_z", "double"), ("gi_p", "double"), ("gi_psim", "double"), ("gi_bin", "int"),
             ("n_neighbors", "int")]


class HotSpots(Civic311Algorithm):
    NAME = "hotspots"
    DISPLAY_NAME = "Hot spot analysis (Getis-Ord Gi*)"
    GROUP = "precincts"
    TAGS = ('hot spot', 'getis-ord', 'gi*', 'cluster', 'esda')
    OUTPUT_FIELDS = tuple(name for name, _ in GI_FIELDS)
    HELP = (
        "Finds statistically significant clusters of high values (hot spots) and low values (cold spots) with "
        "the Getis-Ord Gi* statistic (Getis & Ord 1992; Ord & Getis 1995), the statistic of ArcGIS Pro's Hot "
        "Spot Analysis and of PySAL esda G_Local(star=True, transform='B'): binary weights with the feature "
        "itself included.\n\n"
        "gi_z = (Σ_j w_ij x_j / Σx − W_i/n) / sqrt(W_i (n − W_i) / (n − 1) / n² · s²/x̄²), where W_i counts the "
        "feature and its neighbours and s² is the population variance.\n\n"
        + NEIGHBOUR_HELP + "\n\n"
        "Output fields: gi_z (z-score), gi_p (two-sided p-value, normal approximation: a hot and a cold spot of the "
        "same strength have the same gi_p), gi_psim (folded one-sided pseudo p-value, as esda and GeoDa report "
        "it: the share of permutations at least as extreme in gi_z's own direction, never above 0.5 — not "
        "comparable with gi_p without doubling; "
        "from PERMUTATIONS conditional randomisations: the feature's value is held fixed and its neighbours are "
        "drawn at random from the other features; NULL when PERMUTATIONS = 0), gi_bin "
        "(−3…3: ±3 = 99 %, ±2 = 95 %, ±1 = 90 % confidence from gi_p, 0 = not significant; with FDR the "
        "Benjamini-Hochberg False Discovery Rate threshold of each level is used instead, as ArcGIS does), "
        "n_neighbors (neighbours excluding the feature itself). Warnings are given for fewer than 30 features, "
        "features without neighbours and a field with zero variance."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFeatureSource(
            "INPUT", self.tr("Input layer (polygons or points)"),
            [QgsProcessing.SourceType.TypeVectorPolygon, QgsProcessing.SourceType.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            "FIELD", self.tr("Analysis field"), parentLayerParameterName="INPUT",
            type=QgsProcessingParameterField.DataType.Numeric))
        add_neighbour_parameters(self)
        self.addParameter(QgsProcessingParameterBoolean(
            "FDR", self.tr("Apply False Discovery Rate correction"), defaultValue=True))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Hot spots")))

    def execute(self, parameters, context, feedback):
        data = read_spatial_input(self, parameters, context, feedback)
        result = gi_star(data.values, data.weights, cancelled=feedback.isCanceled,
                         permutations=self.parameterAsInt(parameters, "PERMUTATIONS", context),
                         seed=self.parameterAsInt(parameters, "SEED", context),
                         use_fdr=self.parameterAsBool(parameters, "FDR", context))
        hot, cold = int((result.bins > 0).sum()), int((result.bins < 0).sum())
        feedback.pushInfo(f"{hot} hot spot(s) and {cold} cold spot(s) at 90 % confidence or more.")
        fields, keep = output_fields(data.source.fields(), GI_FIELDS, feedback)
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields, data.source.wkbType(),
                                             data.source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        features, columns = data.output([result.z, result.p, result.p_sim, result.bins, result.n_neighbors])
        write_rows(sink, features, keep, columns, feedback)
        return {"OUTPUT": dest_id}
