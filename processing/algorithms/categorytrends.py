# SPDX-License-Identifier: GPL-2.0-or-later
"""civic311:categorytrends — category trends and spikes per zone, with an optional webhook alert."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from qgis.core import (
    QgsProcessing,
    QgsProcessingException,
    QgsProcessingOutputNumber,
    QgsProcessingParameterAuthConfig,
    QgsProcessingParameterDateTime,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterField,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ..core.trends import INTERVALS, build_cube, mann_kendall, spike_test
from ..network import post_json
from ..zoning import zone_requests
from ._zonal import add_zone_parameters, advanced, write_table, write_zone_layer
from .base import Civic311Algorithm

NEW_FIELDS = [("trend_tau", "double"), ("trend_p", "double"), ("last_count", "int"), ("baseline_mean", "double"),
              ("spike_z", "double"), ("spike", "int"), ("spike_category", "string")]


class CategoryTrends(Civic311Algorithm):
    NAME = "categorytrends"
    DISPLAY_NAME = "Category trends and spikes"
    GROUP = "trends"
    TAGS = ('mann-kendall', 'spike', 'category')
    OUTPUT_FIELDS = tuple(name for name, _ in NEW_FIELDS)
    HELP = (
        "Counts requests per zone and INTERVAL (calendar days, ISO weeks starting on Monday, or calendar "
        "months), from the first request's period to the last period (the one containing END_DATE, default the "
        "latest request); zones are ZONES (e.g. precincts) or, when ZONES is empty, hexagons CELL_SIZE metres "
        "wide that hold at least one request.\n\n"
        "trend_tau, trend_p: Mann-Kendall test of the zone's counts against time — Kendall's tau-b and its "
        "two-sided p-value: exact (the null distribution of S given the zone's ties) up to 10 periods, else the "
        "normal approximation with the tie-corrected variance and the continuity correction, as "
        "pymannkendall.original_test. With few periods no trend can be significant (4 periods: p ≥ 0.083); "
        "the log warns below 10 periods.\n"
        "last_count, baseline_mean: the count of the last period and the mean of the BASELINE periods before it.\n"
        "spike_z: how unusual the last count is. Counts are small and overdispersed, so a normal z on raw "
        "counts would flag noise; instead the next count is predicted by a Gamma-Poisson (negative binomial) "
        "distribution of mean (S + ½)/B (B baseline periods summing to S) and variance φ'·mean, φ' = φ(1 + 1/B) "
        "adding the uncertainty of the mean; the dispersion φ (variance/mean) of each zone is shrunk towards the "
        "dispersion pooled over all zones (empirical Bayes) and never taken below it, because a handful of "
        "baseline periods says little about one zone. The upper tail P(X ≥ x) is turned into a z-score, "
        "z = Φ⁻¹(1 − P). In simulations at dispersion 1, 2 and 3 with baselines of 3, 4 and 8 periods the "
        "false-alarm rate stays at or below the nominal rate of SPIKE_Z.\n"
        "spike: 1 when spike_z ≥ SPIKE_Z. spike_category: for a spike, the category whose count rose most "
        "above its own baseline mean.\n\n"
        "TABLE: long format (zone_id, period_start, category, count) of every non-zero count, for charts and "
        "pivot tables. Numbers SPIKES (zones with a spike) and PERIODS.\n\n"
        "WEBHOOK_URL (advanced): when set and some zone spikes, one JSON document is POSTed listing the spiking "
        "zones (zone_id, last_count, baseline_mean, spike_z, spike_category) — e.g. from a scheduled "
        "qgis_process run, to notify volunteers. It carries no token and no request-level data. Timeouts and "
        "retries as for portal requests; a failed delivery is a warning and the analysis is still written.\n"
        "Webhook URLs are secrets (Slack and Teams put the key in the path): the plugin never writes one to a "
        "log, a warning, an output or its metadata (user:password@, path and query are redacted). QGIS itself "
        "keeps every parameter value in the Processing history and in saved models, so prefer WEBHOOK_AUTH: a "
        "QGIS authentication configuration ('Basic', the URL as its password; or 'API Header', the URL as the "
        "header value) that holds the whole URL in QGIS's encrypted store; it takes precedence over WEBHOOK_URL."
    )

    def initAlgorithm(self, config=None):  # noqa: N802 - QGIS API
        add_zone_parameters(self)
        self.addParameter(QgsProcessingParameterField(
            "CATEGORY_FIELD", self.tr("Category field"), defaultValue="category",
            parentLayerParameterName="REQUESTS", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "BASELINE", self.tr("Baseline periods"), QgsProcessingParameterNumber.Type.Integer, 8, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "SPIKE_Z", self.tr("Spike threshold (z)"), QgsProcessingParameterNumber.Type.Double, 3.0))
        self.addParameter(QgsProcessingParameterDateTime(
            "END_DATE", self.tr("Last period contains this date (default: the latest request)"),
            QgsProcessingParameterDateTime.Type.Date, optional=True))
        self.addParameter(advanced(QgsProcessingParameterString(
            "WEBHOOK_URL", self.tr("Webhook URL for spike alerts"), optional=True)))
        self.addParameter(advanced(QgsProcessingParameterAuthConfig(
            "WEBHOOK_AUTH", self.tr("Webhook URL from a QGIS authentication configuration (keeps it secret)"),
            optional=True)))
        self.addParameter(advanced(QgsProcessingParameterNumber(
            "WEBHOOK_TIMEOUT", self.tr("Webhook read timeout (seconds; 2 retries)"),
            QgsProcessingParameterNumber.Type.Double, 10.0, minValue=0.1)))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "OUTPUT", self.tr("Trends and spikes"), QgsProcessing.SourceType.TypeVectorPolygon))
        self.addParameter(QgsProcessingParameterFeatureSink(
            "TABLE", self.tr("Counts per period and category"), QgsProcessing.SourceType.TypeVector, optional=True,
            createByDefault=True))
        self.addOutput(QgsProcessingOutputNumber("SPIKES", self.tr("Zones with a spike")))
        self.addOutput(QgsProcessingOutputNumber("PERIODS", self.tr("Periods")))

    def execute(self, parameters, context, feedback):
        category_field = self.parameterAsString(parameters, "CATEGORY_FIELD", context)
        interval = self.parameterAsEnum(parameters, "INTERVAL", context)
        baseline_n = self.parameterAsInt(parameters, "BASELINE", context)
        threshold = self.parameterAsDouble(parameters, "SPIKE_Z", context)
        end = None
        if parameters.get("END_DATE") not in (None, ""):
            qd = self.parameterAsDateTime(parameters, "END_DATE", context)
            if qd.isValid():
                end = np.datetime64(qd.date().toString("yyyy-MM-dd"), "ms")
        zoned = zone_requests(self, parameters, context, feedback, category_field)
        if zoned.unlocated or zoned.undated:
            feedback.pushWarning(f"{zoned.unlocated} request(s) outside every zone or without location and "
                                 f"{zoned.undated} without a valid created_at are not counted.")
        try:
            cube = build_cube(zoned.zone_of, zoned.times, zoned.categories, len(zoned.zone_ids), interval, end)
        except ValueError as err:
            raise QgsProcessingException(str(err)) from err
        if cube.out_of_range:
            feedback.pushInfo(f"{cube.out_of_range} request(s) after the last period are not counted.")
        n_per = len(cube.periods)
        counts = cube.counts.astype(float)
        tau, p = mann_kendall(counts)
        if n_per < 10:
            feedback.pushWarning(f"Only {n_per} periods: the trend test needs about 10 or more (with 4 periods "
                                 "no trend can reach p < 0.05); trend_p is exact but has little power.")
        base_n = min(baseline_n, n_per - 1)
        n_z = len(zoned.zone_ids)
        spike_z = np.full(n_z, np.nan)
        base_mean = np.full(n_z, np.nan)
        spike = np.zeros(n_z, dtype=np.int64)
        spike_cat = np.full(n_z, None, dtype=object)
        if base_n < baseline_n:
            feedback.pushWarning(f"Only {n_per} period(s): the baseline uses {base_n} instead of {baseline_n}.")
        if base_n >= 1:
            base = counts[:, -1 - base_n:-1]
            spike_z, base_mean, _ = spike_test(counts[:, -1], base)
            spike = (spike_z >= threshold).astype(np.int64)
            excess = cube.by_category[:, -1, :] - cube.by_category[:, -1 - base_n:-1, :].mean(axis=1)
            best = excess.argmax(axis=1)
            for i in np.flatnonzero(spike):
                spike_cat[i] = cube.categories[best[i]]
        columns = [tau, p, counts[:, -1], base_mean, spike_z, spike, spike_cat]
        dest_id = write_zone_layer(self, parameters, context, zoned, NEW_FIELDS, columns, feedback)
        results = {"OUTPUT": dest_id, "SPIKES": int(spike.sum()), "PERIODS": n_per}
        if parameters.get("TABLE") is not None:
            zi, ti, ci = np.nonzero(cube.by_category)
            table_id = write_table(self, parameters, context, [
                ("zone_id", "string"), ("period_start", "date"), ("category", "string"), ("count", "int")],
                [np.asarray(zoned.zone_ids, dtype=object)[zi], cube.periods[ti],
                 np.asarray(cube.categories, dtype=object)[ci], cube.by_category[zi, ti, ci]])
            if table_id is not None:
                results["TABLE"] = table_id
        last = cube.periods[-1].astype(object)
        feedback.pushInfo(f"{n_per} {INTERVALS[interval]} periods up to the one starting {last}; "
                          f"{int(spike.sum())} zone(s) spike (z ≥ {threshold:g}).")
        url = self.parameterAsString(parameters, "WEBHOOK_URL", context).strip()
        auth_id = self.parameterAsString(parameters, "WEBHOOK_AUTH", context)
        if auth_id:
            from .fetchrequests import auth_secret

            url = auth_secret(auth_id)[1].strip()
            if not url.lower().startswith(("http://", "https://")):
                raise QgsProcessingException("WEBHOOK_AUTH must hold the webhook URL (http:// or https://) as its "
                                             "password (or API-header value).")
        if url and spike.any():
            order = np.argsort(-spike_z[spike == 1])
            idx = np.flatnonzero(spike)[order]
            payload = {
                "source": "civic311:categorytrends",
                "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "interval": INTERVALS[interval], "period_start": str(last), "baseline_periods": base_n,
                "spike_z_threshold": threshold,
                "spikes": [{"zone_id": zoned.zone_ids[i], "last_count": int(counts[i, -1]),
                            "baseline_mean": round(float(base_mean[i]), 3), "spike_z": round(float(spike_z[i]), 3),
                            "spike_category": spike_cat[i]} for i in idx],
            }
            read_timeout = self.parameterAsDouble(parameters, "WEBHOOK_TIMEOUT", context)
            problem = post_json(url, payload, feedback, timeout=(min(5.0, read_timeout), read_timeout), retries=2)
            if problem:
                feedback.pushWarning(f"The spike alert could not be delivered (the analysis is saved): {problem}")
            else:
                feedback.pushInfo(f"Spike alert sent for {len(idx)} zone(s).")
        elif url:
            feedback.pushInfo("No zone spikes: no alert sent.")
        return results
