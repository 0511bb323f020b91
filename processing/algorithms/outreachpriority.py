# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:outreachpriority — where canvassers should go: a weighted mean of percentile ranks per precinct,
with the component that drives each precinct and how stable its tier is."""

from __future__ import annotations

import numpy as np
from qgis.core import (
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
)

from ..core.priority import PERTURBATIONS, STABLE, Component, outreach_priority
from ..layerio import output_fields, write_rows
from ..neighbours import numeric_values
from ._zonal import advanced
from .base import Civic311Algorithm

# key, label, default field, sign (+1: higher value = higher priority), default weight
COMPONENTS = (
    ("NONVOTERS", "Non-voters (registered − ballots)", None, 1, 0.5),
    ("RATE", "Complaint rate field", "rate_eb", 1, 0.3),
    ("POLL", "Distance to polling place field", "poll_m", 1, 0.2),
    ("HOTSPOT", "Hot spot strength field", "gi_z", 1, 0.0),
    ("TURNOUT", "Turnout field (lower = higher priority)", "turnout", -1, 0.0),
)
POLL_CAP = 1609.0  # one mile: beyond it every precinct is equally far for a voter on foot


class OutreachPriority(Civic311Algorithm):
    NAME = "outreachpriority"
    DISPLAY_NAME = "Outreach priority score"
    GROUP = "precincts"
    TAGS = ('priority', 'canvassing', 'ranking', 'non-voters')
    OUTPUT_FIELDS = ("non_voters", "priority", "priority_rank", "tier", "top_driver", "rank_stability")
    HELP = (
        "Ranks precincts for canvassing. Each component is turned into a percentile rank p (0 = lowest precinct, "
        "1 = highest, ties sharing their average rank), so no single outlier sets the scale, and the components "
        "are averaged with their weights:\n"
        "• non_voters = VOTERS_FIELD − BALLOTS_FIELD (the votes at stake: precinct size and low turnout in one "
        "number), WEIGHT_NONVOTERS 0.5; written to the output as non_voters\n"
        "• the resident complaint rate (RATE_FIELD, default rate_eb), WEIGHT_RATE 0.3\n"
        "• the distance to the polling place (POLL_FIELD, default poll_m), capped at POLL_CAP (default 1,609 m: "
        "beyond a mile every precinct counts as equally far), WEIGHT_POLL 0.2\n"
        "• hot spot strength (HOTSPOT_FIELD, default gi_z), WEIGHT_HOTSPOT 0 (a smoothed copy of the rate: it would "
        "count complaints twice)\n"
        "• turnout (TURNOUT_FIELD, lower = higher priority), WEIGHT_TURNOUT 0 (non_voters already holds it).\n\n"
        "Formula: S_i = Σ_c w_c · p_c,i / Σ_c w_c over the components whose fields exist and whose weight is "
        "positive; priority = 100 · S_i (not rescaled: 100 would mean top of every component). A missing value "
        "counts as the middle (p = 0.5). priority_rank: 1 = top priority; tier: quintile of the score (5 = top).\n\n"
        "top_driver: the component contributing most (w_c · p_c,i) to the precinct's score. rank_stability: the "
        f"share of {PERTURBATIONS} random weight sets (each weight × U(0.75, 1.25), renormalised; SEED) in which "
        f"the precinct stays in its tier; the log says how many top-tier precincts are stable (≥ {STABLE}). A "
        "precinct at the edge of a tier with low stability could as well be in the next one."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFeatureSource(
            "INPUT", self.tr("Precinct statistics"), [QgsProcessing.SourceType.TypeVectorAnyGeometry]))
        for key, label, default in (("VOTERS_FIELD", "Registered voters field", "registered_voters"),
                                    ("BALLOTS_FIELD", "Ballots cast field", "ballots_cast")):
            self.addParameter(QgsProcessingParameterField(
                key, self.tr(label), defaultValue=default, parentLayerParameterName="INPUT",
                type=QgsProcessingParameterField.DataType.Numeric, optional=True))
        for key, label, default, _, _ in COMPONENTS[1:]:
            self.addParameter(QgsProcessingParameterField(
                f"{key}_FIELD", self.tr(label), defaultValue=default, parentLayerParameterName="INPUT",
                type=QgsProcessingParameterField.DataType.Numeric, optional=True))
        for key, label, _, _, weight in COMPONENTS:
            self.addParameter(QgsProcessingParameterNumber(
                f"WEIGHT_{key}", self.tr(f"Weight of the {label.split(' field')[0].lower()}"),
                QgsProcessingParameterNumber.Type.Double, weight, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "POLL_CAP", self.tr("Polling-place distance cap (m)"), QgsProcessingParameterNumber.Type.Double, POLL_CAP,
            minValue=0.0))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "SEED", self.tr("Random seed of the weight perturbations"), QgsProcessingParameterNumber.Type.Integer, 1,
            minValue=0)))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Outreach priority")))

    def field_values(self, source, features, parameters, key, default, context, feedback, label):
        """The values of a field parameter: None when it is empty, or when its default is absent (said in the
        log); an absent field the user chose is an error naming it."""
        field = self.parameterAsString(parameters, key, context)
        if not field:
            return None
        idx = source.fields().lookupField(field)
        if idx < 0:
            if field == default and parameters.get(key) in (None, "", default):
                feedback.pushInfo(f"No {default} field: {label} is not used.")
                return None
            names = ", ".join(f.name() for f in source.fields())
            raise QgsProcessingException(f"INPUT has no field {field!r} ({key}). Its fields: {names}.")
        return numeric_values(features, idx)

    def execute(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, "INPUT", context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "INPUT"))
        # geometries are copied, never used: invalid precincts must not stop (or crash) the read
        request = QgsFeatureRequest().setInvalidGeometryCheck(QgsFeatureRequest.InvalidGeometryCheck.GeometryNoCheck)
        features = list(source.getFeatures(request))
        if not features:
            raise QgsProcessingException("INPUT has no features.")
        voters = self.field_values(source, features, parameters, "VOTERS_FIELD", "registered_voters", context,
                                   feedback, "non_voters")
        ballots = self.field_values(source, features, parameters, "BALLOTS_FIELD", "ballots_cast", context,
                                    feedback, "non_voters")
        non_voters = voters - ballots if voters is not None and ballots is not None else None
        if non_voters is not None and np.nanmin(non_voters, initial=0) < 0:
            bad = int((non_voters < 0).sum())
            feedback.pushWarning(f"{bad} precinct(s) have more ballots than registered voters: non_voters is "
                                 "negative there (ranked lowest).")
        components = []
        for key, label, default, sign, _ in COMPONENTS:
            weight = self.parameterAsDouble(parameters, f"WEIGHT_{key}", context)
            if weight <= 0:
                continue
            if key == "NONVOTERS":
                if non_voters is None:
                    feedback.pushInfo("non_voters needs VOTERS_FIELD and BALLOTS_FIELD: it is not used.")
                    continue
                components.append(Component("non_voters", non_voters, weight, sign))
                continue
            values = self.field_values(source, features, parameters, f"{key}_FIELD", default, context, feedback,
                                       label.split(" field")[0].lower())
            if values is None:
                continue
            cap = self.parameterAsDouble(parameters, "POLL_CAP", context) if key == "POLL" else None
            name = self.parameterAsString(parameters, f"{key}_FIELD", context)
            components.append(Component(name, values, weight, sign, cap if cap else None))
        if not components:
            raise QgsProcessingException("No component can be used: give VOTERS_FIELD and BALLOTS_FIELD, or INPUT "
                                         "fields rate_eb, poll_m, gi_z, turnout (or choose fields), with a weight "
                                         "> 0.")
        result = outreach_priority(components, seed=self.parameterAsInt(parameters, "SEED", context))
        weights = {c.name: c.weight / sum(x.weight for x in components) for c in components}
        feedback.pushInfo("Score = " + " + ".join(f"{w:.2f}·p({name})" for name, w in weights.items())
                          + " (p: percentile rank, 0-1)")
        top = result.tier == 5
        stable = int((result.stability[top] >= STABLE).sum())
        feedback.pushInfo(f"{stable} of {int(top.sum())} top-tier precincts are stable (stay in the top tier in at "
                          f"least {STABLE:.0%} of {PERTURBATIONS} weight perturbations).")
        if non_voters is not None:
            feedback.pushInfo(f"The top tier holds {np.nansum(non_voters[top]):,.0f} of "
                              f"{np.nansum(non_voters):,.0f} non-voters.")
        drivers = {name: int((result.top_driver[top] == name).sum()) for name in result.used}
        feedback.pushInfo("Top-tier precincts by main driver: " + ", ".join(f"{k} {v}" for k, v in drivers.items()))
        fields, keep = output_fields(source.fields(), [("non_voters", "double"), ("priority", "double"),
                                                       ("priority_rank", "int"), ("tier", "int"),
                                                       ("top_driver", "string"), ("rank_stability", "double")],
                                     feedback)
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields, source.wkbType(),
                                             source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        nv = non_voters if non_voters is not None else np.full(len(features), np.nan)
        write_rows(sink, features, keep, [nv, result.priority, result.rank, result.tier, result.top_driver,
                                          result.stability], feedback)
        return {"OUTPUT": dest_id}
