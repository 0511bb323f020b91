# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:emerginghotspots — emerging hot spot analysis on a space-time cube of request counts."""

from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterNumber,
)

from ..core.spatialstats import gi_star
from ..core.trends import build_cube, classify_emerging, mann_kendall, space_time_weights
from ..neighbours import add_neighbour_parameters
from ..zoning import zone_requests, zone_weights
from ._zonal import add_zone_parameters, write_table, write_zone_layer
from .base import Civic311Algorithm

NEW_FIELDS = [("ehs_category", "string"), ("trend_tau", "double"), ("trend_p", "double"), ("hot_steps", "int"),
              ("cold_steps", "int"), ("last_z", "double")]


class EmergingHotSpots(Civic311Algorithm):
    NAME = "emerginghotspots"
    DISPLAY_NAME = "Emerging hot spot analysis"
    GROUP = "trends"
    TAGS = ('space-time', 'emerging hot spot', 'mann-kendall')
    OUTPUT_FIELDS = tuple(name for name, _ in NEW_FIELDS)
    HELP = (
        "Where are hot spots of 311 requests new, growing, fading or persistent? Requests are counted per zone "
        "(ZONES, or hexagons CELL_SIZE metres wide holding at least one request) and per INTERVAL step, from the "
        "first request's step to the latest.\n\n"
        "1. Space-time Gi*: for every zone × step bin, Gi* (binary weights, the bin itself included) over the "
        "bins of the zone and its spatial NEIGHBOURS at the same step and the TIME_WINDOW previous steps. "
        "Significance: two-sided normal p-values with the False Discovery Rate correction over all bins; a "
        "bin is a significant hot (cold) spot at 90 % confidence or more with z > 0 (z < 0). PERMUTATIONS "
        "conditional randomisations (seeded) give each bin a pseudo p-value in TABLE.\n"
        "2. Mann-Kendall trend of each zone's Gi* z-scores (trend_tau = Kendall's tau-b, trend_p two-sided).\n"
        "3. Categories (ArcGIS Pro's Emerging Hot Spot Analysis definitions; 'Hot' shown, 'Cold' mirrors it):\n"
        "• New: significant hot in the final step only, never before.\n"
        "• Consecutive: an uninterrupted run of at least two significant hot steps ending with the final step, "
        "never hot before the run, less than 90 % of steps hot.\n"
        "• Intensifying / Persistent / Diminishing: hot in at least 90 % of the steps including the final one, "
        "with a significant (p < 0.05) upward / no significant / significant downward trend in z.\n"
        "• Sporadic: hot in the final step, less than 90 % of steps hot, never significant cold.\n"
        "• Oscillating: hot in the final step, less than 90 % of steps hot, significant cold in some earlier "
        "step.\n"
        "• Historical: not hot in the final step, but hot in at least 90 % of the steps.\n"
        "• No Pattern Detected otherwise. A zone whose final step is cold is classified among the cold "
        "categories.\n\n"
        "Output fields: ehs_category (e.g. 'Intensifying Hot Spot'), trend_tau, trend_p, hot_steps, cold_steps "
        "(significant steps), last_z (Gi* z of the final step). TABLE: zone_id, step_start, gi_z, gi_p, gi_psim, "
        "gi_bin for every bin."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        add_zone_parameters(self)
        add_neighbour_parameters(self)
        self.parameterDefinition("PERMUTATIONS").setDefaultValue(99)
        self.addParameter(QgsProcessingParameterNumber(
            "TIME_WINDOW", self.tr("Previous steps that count as neighbours in time"),
            QgsProcessingParameterNumber.Type.Integer, 1, minValue=0))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", self.tr("Emerging hot spots"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "TABLE", self.tr("Space-time Gi* per zone and step"), QgsProcessing.SourceType.TypeVector,
            optional=True, createByDefault=True))

    def execute(self, parameters, context, feedback):
        interval = self.parameterAsEnum(parameters, "INTERVAL", context)
        window = self.parameterAsInt(parameters, "TIME_WINDOW", context)
        zoned = zone_requests(self, parameters, context, feedback)
        if zoned.unlocated or zoned.undated:
            feedback.pushWarning(f"{zoned.unlocated} request(s) outside every zone or without location and "
                                 f"{zoned.undated} without a valid created_at are not counted.")
        try:
            cube = build_cube(zoned.zone_of, zoned.times, None, len(zoned.zone_ids), interval)
        except ValueError as err:
            raise QgsProcessingException(str(err)) from err
        n_z, n_t = cube.counts.shape
        if n_t < 2:
            raise QgsProcessingException("Emerging hot spots need at least two time steps: choose a shorter INTERVAL.")
        if n_z < 3:
            raise QgsProcessingException(f"Emerging hot spots need at least 3 zones with requests; found {n_z}.")
        if n_t < 10:
            feedback.pushWarning(f"Only {n_t} time steps: the 90 % rules and the trend test need about 10 or more.")
        w_space, _ = zone_weights(zoned, self.parameterAsEnum(parameters, "NEIGHBOURS", context),
                                  self.parameterAsInt(parameters, "K", context),
                                  self.parameterAsDouble(parameters, "DISTANCE", context))
        islands = int((np.diff(w_space.indptr) == 0).sum())
        if islands:
            feedback.pushWarning(f"{islands} zone(s) have no spatial neighbours: only their own past counts.")
        feedback.setProgressText(f"Space-time Gi* on {n_z} zones × {n_t} steps")
        weights = space_time_weights(w_space, n_t, window)
        res = gi_star(cube.counts.astype(float).ravel(), weights, cancelled=feedback.isCanceled,
                      permutations=self.parameterAsInt(parameters, "PERMUTATIONS", context),
                      seed=self.parameterAsInt(parameters, "SEED", context), use_fdr=True)
        z = res.z.reshape(n_z, n_t)
        bins = res.bins.reshape(n_z, n_t)
        significant = bins != 0
        tau, p = mann_kendall(np.nan_to_num(z))
        labels = classify_emerging(z, significant, tau, p)
        hot = (significant & (z > 0)).sum(axis=1)
        cold = (significant & (z < 0)).sum(axis=1)
        summary = {}
        for lab in labels:
            summary[lab] = summary.get(lab, 0) + 1
        feedback.pushInfo("Categories: " + ", ".join(f"{k}: {v}" for k, v in sorted(summary.items())))
        dest_id = write_zone_layer(self, parameters, context, zoned, NEW_FIELDS,
                                   [labels, tau, p, hot, cold, z[:, -1]], feedback)
        results = {"OUTPUT": dest_id}
        if parameters.get("TABLE") is not None:
            zi, ti = np.divmod(np.arange(n_z * n_t), n_t)
            table_id = write_table(self, parameters, context, [
                ("zone_id", "string"), ("step_start", "date"), ("gi_z", "double"), ("gi_p", "double"),
                ("gi_psim", "double"), ("gi_bin", "int")],
                [np.asarray(zoned.zone_ids, dtype=object)[zi], cube.periods[ti], res.z, res.p, res.p_sim,
                 bins.reshape(-1)])
            if table_id is not None:
                results["TABLE"] = table_id
        return results
