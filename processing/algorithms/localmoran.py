# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:localmoran — cluster and outlier analysis with Local Moran's I."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
)

from ..core.spatialstats import local_moran
from ..layerio import output_fields, write_rows
from ..neighbours import NEIGHBOUR_HELP, add_neighbour_parameters, read_spatial_input
from .base import Civic311Algorithm


class LocalMoran(Civic311Algorithm):
    NAME = "localmoran"
    DISPLAY_NAME = "Cluster and outlier analysis (Local Moran's I)"
    GROUP = "precincts"
    TAGS = ('lisa', 'local moran', 'cluster', 'outlier', 'esda')
    OUTPUT_FIELDS = ("lisa_i", "lisa_z", "lisa_psim", "lisa_q")
    HELP = (
        "Local Moran's I (Anselin 1995) with row-standardised weights, as PySAL esda Moran_Local: "
        "I_i = (n − 1) z_i Σ_j w_ij z_j / Σ z², z = standardised field.\n\n"
        + NEIGHBOUR_HELP + "\n\n"
        "Output fields: lisa_i (the statistic), lisa_z (its z-score against the PERMUTATIONS conditional "
        "randomisations, esda's z_sim), lisa_psim (pseudo p-value, folded as esda's p_sim; the seed draws the "
        "same permutations as esda without numba), lisa_q: HH (high value among high neighbours), LL, HL "
        "(high outlier among low neighbours), LH, or 'Not significant' when lisa_psim ≥ 0.05 — or above the "
        "Benjamini-Hochberg False Discovery Rate threshold at 5 % when FDR is on. With PERMUTATIONS = 0 the "
        "analytic z-score under conditional randomisation is used for lisa_z and significance: "
        "z = (I_i − E[I_i]) / sqrt(Var[I_i]) with the moments that hold the feature's own value fixed (Sokal et al. "
        "1998, eqs. A7–A8; esda's EIc and VIc), the null the permutation test uses too; its p-value is "
        "two-sided.\n\n"
        "p-values: lisa_psim is a folded one-sided pseudo p-value, as esda and GeoDa report it — (the number of "
        "permutations at least as extreme in the observed statistic's own direction + 1) / (PERMUTATIONS + 1) — so "
        "it never exceeds 0.5, and cannot be smaller than 1 / (PERMUTATIONS + 1)."
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
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Clusters and outliers")))

    def execute(self, parameters, context, feedback):
        import numpy as np

        data = read_spatial_input(self, parameters, context, feedback)
        permutations = self.parameterAsInt(parameters, "PERMUTATIONS", context)
        result = local_moran(data.values, data.weights, permutations=permutations, cancelled=feedback.isCanceled,
                             seed=self.parameterAsInt(parameters, "SEED", context),
                             use_fdr=self.parameterAsBool(parameters, "FDR", context))
        z = result.z_sim if permutations > 0 else (result.i - result.e_i) / np.sqrt(result.v_i)
        fields, keep = output_fields(data.source.fields(), [("lisa_i", "double"), ("lisa_z", "double"),
                                                            ("lisa_psim", "double"), ("lisa_q", "string")], feedback)
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields, data.source.wkbType(),
                                             data.source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        features, columns = data.output([result.i, z, result.p_sim, result.labels])
        write_rows(sink, features, keep, columns, feedback)
        return {"OUTPUT": dest_id}
