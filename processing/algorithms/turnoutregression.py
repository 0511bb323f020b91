# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:turnoutregression — complaints and turnout regression with a residual Moran's I."""

from __future__ import annotations

import html

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
)

from ..core.regression import OLSResult, global_moran, least_squares
from ..layerio import output_fields, write_rows
from ..neighbours import NEIGHBOUR_HELP, add_neighbour_parameters, numeric_values, read_spatial_input
from .base import Civic311Algorithm


def plain_sentence(res: OLSResult, explanatory: str, turnout_scale: float, moran_i: float = float("nan"),
                   moran_p: float = float("nan"), cluster_field: str = "") -> str:
    b, p = res.coef[1], res.p[1]
    unit = "request per 1,000 voters" if explanatory in ("rate_1k", "rate_eb") else f"unit of {explanatory}"
    points = abs(b) * turnout_scale
    direction = "lower" if b < 0 else "higher"
    what = "percentage-point" if turnout_scale == 100 else "point"
    text = (f"Each additional {unit} is associated with a {points:.3g}-{what} {direction} turnout "
            f"(p = {p:.3g}, R² = {res.r2:.2f}, n = {res.n}).")
    if res.cluster_p is not None:
        text += (f" With standard errors robust to clustering by {cluster_field} ({res.clusters} clusters), "
                 f"p = {res.cluster_p[1]:.3g}.")
    if np.isfinite(moran_p) and moran_p < 0.05:
        text += (f" Caution: the residuals cluster in space (Moran's I = {moran_i:.2f}, p = {moran_p:.3g}): "
                 "neighbouring precincts are not independent observations, so the first p-value, which assumes they "
                 "are, is unreliable (too small)")
        text += ("; the cluster-robust one allows for correlation within each cluster, though not across their "
                 "borders." if res.cluster_p is not None else
                 ". Set CLUSTER_FIELD (e.g. ward) for cluster-robust standard errors.")
    return text


def html_report(res: OLSResult, sentence: str, moran_i: float, moran_p: float, turnout: str, weighted: str) -> str:
    robust = res.cluster_se is not None
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{c:.6g}</td><td>{s:.4g}</td><td>{t:.3f}</td><td>{p:.4g}</td>"
        f"<td>{lo:.6g}</td><td>{hi:.6g}</td>"
        + (f"<td>{res.cluster_se[i]:.4g}</td><td>{res.cluster_p[i]:.4g}</td>" if robust else "") + "</tr>"
        for i, (n, c, s, t, p, lo, hi) in enumerate(zip(res.names, res.coef, res.se, res.t, res.p, res.ci_low,
                                                        res.ci_high)))
    robust_head = "<th>cluster-robust s.e.</th><th>cluster-robust p</th>" if robust else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>civic311 turnout regression</title></head><body>"
        f"<h1>Complaints and turnout</h1><p><b>{html.escape(sentence)}</b></p>"
        f"<p>Dependent variable: {html.escape(turnout)}. {html.escape(weighted)}</p>"
        "<table border='1' cellpadding='4'><tr><th>term</th><th>coefficient</th><th>std. error</th><th>t</th>"
        f"<th>p</th><th>95 % low</th><th>95 % high</th>{robust_head}</tr>{rows}</table>"
        f"<p>R² = {res.r2:.4f}; adjusted R² = {res.adj_r2:.4f}; n = {res.n}</p>"
        f"<p>Moran's I of the residuals = {moran_i:.4f} (permutation p = {moran_p:.4g}). A significant value "
        "means the residuals cluster in space: nearby precincts share something the model leaves out.</p>"
        "</body></html>")


class TurnoutRegression(Civic311Algorithm):
    NAME = "turnoutregression"
    DISPLAY_NAME = "Complaints and turnout regression"
    GROUP = "precincts"
    TAGS = ('regression', 'ols', 'wls', 'moran', 'cluster-robust')
    OUTPUT_FIELDS = ("predicted", "residual", "std_resid")
    HELP = (
        "Ordinary (or weighted) least squares of turnout on complaint rates: turnout = b0 + b1·x1 + … + e. With "
        "WEIGHT_FIELD (e.g. registered voters) each precinct is weighted by it (WLS). Standard errors come from "
        "s²(X'WX)⁻¹ with s² = Σw e² / (n − p); t and p from Student's t with n − p degrees of freedom; 95 % "
        "intervals b ± t₀.₉₇₅ SE. Moran's I of the residuals (row-standardised neighbours, permutation "
        "p-value) tests whether the model leaves spatial structure unexplained.\n\n"
        + NEIGHBOUR_HELP + "\n\n"
        "Output fields: predicted, residual (observed − predicted), std_resid (internally studentised "
        "residual). REPORT: an HTML page with the coefficient table, R², adjusted R², n, the residual Moran's "
        "I and a plain sentence. When the residual Moran's I is significant (p < 0.05) the sentence says the "
        "p-value is unreliable: neighbouring precincts are not independent observations, so the classical "
        "standard errors are too small. CLUSTER_FIELD (e.g. ward) adds cluster-robust (CR1) standard errors, as "
        "statsmodels' cov_type='cluster' with Student's t on G − 1 degrees of freedom, and the report states "
        "both. Degenerate fits (no rows, a constant dependent variable, an exact fit) stop with an error. "
        "Precincts with a NULL in any model field are left out of the fit (their "
        "output fields are NULL)."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFeatureSource(
            "INPUT", self.tr("Precinct statistics"), [QgsProcessing.SourceType.TypeVectorPolygon,
                                                     QgsProcessing.SourceType.TypeVectorPoint]))
        self.addParameter(QgsProcessingParameterField(
            "TURNOUT_FIELD", self.tr("Turnout field"), defaultValue="turnout", parentLayerParameterName="INPUT",
            type=QgsProcessingParameterField.DataType.Numeric))
        self.addParameter(QgsProcessingParameterField(
            "EXPLANATORY_FIELDS", self.tr("Explanatory fields"), defaultValue="rate_1k",
            parentLayerParameterName="INPUT", type=QgsProcessingParameterField.DataType.Numeric,
            allowMultiple=True))
        self.addParameter(QgsProcessingParameterField(
            "WEIGHT_FIELD", self.tr("Weight field (weighted least squares)"), parentLayerParameterName="INPUT",
            type=QgsProcessingParameterField.DataType.Numeric, optional=True))
        self.addParameter(QgsProcessingParameterField(
            "CLUSTER_FIELD", self.tr("Cluster field for robust standard errors (e.g. ward)"),
            parentLayerParameterName="INPUT", optional=True))
        add_neighbour_parameters(self)
        self.addParameter(QgsProcessingParameterFeatureSink("OUTPUT", self.tr("Regression residuals")))
        self.addParameter(QgsProcessingParameterFileDestination(
            "REPORT", self.tr("Regression report"), fileFilter="HTML files (*.html)"))
        for key, label in (("COEFFICIENT", "Coefficient of the first explanatory field"), ("R2", "R²"),
                           ("MORAN_I", "Moran's I of the residuals"), ("MORAN_P", "Residual Moran's I p-value"),
                           ("P", "p-value of the first explanatory field (classical)"),
                           ("CLUSTER_P", "p-value of the first explanatory field (cluster-robust)")):
            self.addOutput(QgsProcessingOutputNumber(key, self.tr(label)))

    def execute(self, parameters, context, feedback):
        turnout = self.parameterAsString(parameters, "TURNOUT_FIELD", context)
        explanatory = self.parameterAsFields(parameters, "EXPLANATORY_FIELDS", context)
        weight_field = self.parameterAsString(parameters, "WEIGHT_FIELD", context)
        cluster_field = self.parameterAsString(parameters, "CLUSTER_FIELD", context)
        if not explanatory:
            raise QgsProcessingException("Choose at least one explanatory field.")
        data = read_spatial_input(self, parameters, context, feedback, field_key="TURNOUT_FIELD", allow_null=True)
        fields = data.source.fields()
        for key, f in [("EXPLANATORY_FIELDS", f) for f in explanatory] + [("WEIGHT_FIELD", weight_field),
                                                                          ("CLUSTER_FIELD", cluster_field)]:
            if f and fields.lookupField(f) < 0:
                names = ", ".join(fld.name() for fld in fields)
                raise QgsProcessingException(f"INPUT has no field {f!r} ({key}). Its fields: {names}.")
        y = data.values
        x = np.column_stack([numeric_values(data.features, fields.lookupField(f)) for f in explanatory])
        w = numeric_values(data.features, fields.lookupField(weight_field)) if weight_field else np.ones(len(y))
        ok = np.isfinite(y) & np.isfinite(x).all(axis=1) & np.isfinite(w) & (w > 0)
        groups = None
        if cluster_field:
            idx = fields.lookupField(cluster_field)
            raw = [f.attributes()[idx] for f in data.features]
            groups = np.array([None if v is None or str(v) == "NULL" else str(v) for v in raw], dtype=object)
            ok &= groups != None  # noqa: E711 - elementwise comparison with None
        if (~ok).any():
            feedback.pushWarning(f"{int((~ok).sum())} feature(s) with NULL values (or a non-positive weight) are "
                                 "left out of the regression.")
        try:
            res = least_squares(y[ok], x[ok], explanatory, w[ok], None if groups is None else groups[ok])
        except ValueError as err:
            raise QgsProcessingException(str(err)) from err
        sub = data.weights[ok][:, ok]
        moran_i, moran_p = global_moran(res.residual, sub,
                                        permutations=self.parameterAsInt(parameters, "PERMUTATIONS", context),
                                        seed=self.parameterAsInt(parameters, "SEED", context))
        scale = 100.0 if np.nanmax(np.abs(y[ok])) <= 1.0 else 1.0
        sentence = plain_sentence(res, explanatory[0], scale, moran_i, moran_p, cluster_field)
        feedback.pushInfo(sentence)
        full = {name: np.full(len(y), np.nan) for name in ("predicted", "residual", "std_resid")}
        full["predicted"][ok], full["residual"][ok], full["std_resid"][ok] = res.predicted, res.residual, res.std_resid
        out_fields, keep = output_fields(fields, [(n, "double") for n in full], feedback)
        sink, dest_id = self.parameterAsSink(parameters, "OUTPUT", context, out_fields, data.source.wkbType(),
                                             data.source.sourceCrs())
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, "OUTPUT"))
        features, columns = data.output(list(full.values()))
        write_rows(sink, features, keep, columns, feedback)
        report = self.parameterAsFileOutput(parameters, "REPORT", context)
        weighted = f"Weighted by {weight_field}." if weight_field else "Unweighted (OLS)."
        with open(report, "w", encoding="utf-8") as fh:
            fh.write(html_report(res, sentence, moran_i, moran_p, turnout, weighted))
        results = {"OUTPUT": dest_id, "REPORT": report, "COEFFICIENT": float(res.coef[1]), "R2": res.r2,
                   "MORAN_I": moran_i, "MORAN_P": moran_p, "P": float(res.p[1])}
        if res.cluster_p is not None:
            results["CLUSTER_P"] = float(res.cluster_p[1])
        return results
