# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:outreachpriority — outreach priority score per precinct."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
)

from ..core.priority import Component, outreach_priority
from ..layerio import output_fields, write_rows
from ..neighbours import numeric_values
from .base import Civic311Algorithm

# key, label, default field, sign (+1: higher value = higher priority)
COMPONENTS = (
    ("RATE", "Complaint rate field", "rate_eb", 1),
    ("HOTSPOT", "Hot spot strength field", "gi_z", 1),
    ("TURNOUT", "Turnout field (lower = higher priority)", "turnout", -1),
    ("POLL", "Distance to polling place field", "poll_m", 1),
)


class OutreachPriority(Civic311Algorithm):
    NAME = "outreachpriority"
    DISPLAY_NAME = "Outreach priority score"
    GROUP = "precincts"
    OUTPUT_FIELDS = ("priority", "priority_rank", "tier")
    HELP = (
        "Ranks precincts for canvassing by combining four components, each standardised over the precincts "
        "(z = (x − mean) / standard deviation) and given its sign:\n"
        "• complaint rate (RATE_FIELD, default rate_eb): higher = higher priority\n"
        "• hot spot strength (HOTSPOT_FIELD, default gi_z): higher = higher priority\n"
        "• turnout (TURNOUT_FIELD, default turnout): lower = higher priority\n"
        "• distance to the polling place (POLL_FIELD, default poll_m, used when present): farther = higher\n\n"
        "Formula: S_i = Σ_c w_c · sign_c · z_c,i / Σ_c w_c over the components whose field exists and whose "
        "weight WEIGHT_<component> is positive (all weights 1 by default); priority = 100 · (S_i − min S) / "
        "(max S − min S). A missing value counts as the average (z = 0).\n\n"
        "Output fields: priority (0–100), priority_rank (1 = top priority), tier (1–5 quintiles of the score, "
        "5 = top)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFeatureSource(
            "INPUT", self.tr("Precinct statistics"), [QgsProcessing.SourceType.TypeVectorAnyGeometry]))
        for key, label, default, _ in COMPONENTS:
            self.addParameter(QgsProcessingParameterField(
                f"{key}_FIELD", self.tr(label), defaultValue=default, parentLayerParameterName="INPUT",
                type=QgsProcessingParameterField.DataType.Numeric, optional=True))
        for key, label, _, _ in COMPONENTS:
            self.addParameter(QgsProcessingParameterNumber(
                f"WEIGHT_{key}", self.tr(f"Weight of the {label.split(' field')[0].lower()}"),
                QgsProcessingParameterNumber.Type.Double, 1.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Outreach priority")))

    def execute(self, parameters, context, feedback):
        source = self.parameterAsSource(parameters, "INPUT", context)
        if source is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, "INPUT"))
        features = list(source.getFeatures())
        if not features:
            raise QgsProcessingException("INPUT has no features.")
        components = []
        for key, label, default, sign in COMPONENTS:
            field = self.parameterAsString(parameters, f"{key}_FIELD", context)
            weight = self.parameterAsDouble(parameters, f"WEIGHT_{key}", context)
            if not field or weight <= 0:
                continue
            idx = source.fields().lookupField(field)
            if idx < 0:
                if field == default:
                    feedback.pushInfo(f"No {default} field: the {label.split(' field')[0].lower()} is not used.")
                    continue
                raise QgsProcessingException(f"INPUT has no field {field}: choose the {label.lower()}.")
            components.append(Component(field, numeric_values(features, idx), weight, sign))
        if not components:
            raise QgsProcessingException("No component can be used: INPUT needs at least one of the fields "
                                         "rate_eb, gi_z, turnout, poll_m (or choose fields) with a weight > 0.")
        result = outreach_priority(components)
        feedback.pushInfo("Components used: " + ", ".join(result.used))
        fields, keep = output_fields(source.fields(), [("priority", "double"), ("priority_rank", "int"),
                                                       ("tier", "int")], feedback)
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, fields, source.wkbType(),
                                             source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        write_rows(sink, features, keep, [result.priority, result.rank, result.tier], feedback)
        return {"OUTPUT": dest_id}
