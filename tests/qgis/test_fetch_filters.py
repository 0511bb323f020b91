# SPDX-License-Identifier: GPL-2.0-or-later
"""Fetch filters are never silently dropped (issue #17): for each API, CATEGORIES, EXTENT and the dates are applied
on the server where the API can and always checked locally, or the run stops naming what is missing."""

import json
from datetime import datetime

import pytest
from portal_mock import Portal, make_rows
from qgis.core import QgsProcessingException
from test_fetch_import import check_equation, fetch

ROWS = make_rows()
WANTED = {"Pothole in Street", "Graffiti Removal"}
# the area keeps the southern half of the mock city (lat 41.75 … 41.95)
AREA = "-87.80,-87.50,41.70,41.85 [EPSG:4326]"
ARCGIS_MAP = {"request_id": "ServiceRequestNum", "created_at": "CreatedDate", "category": "SRType",
              "status": "SRStatus", "address": "Address"}
SOCRATA_MAP = {"request_id": "sr_number", "created_at": "created_date", "latitude": "latitude",
               "longitude": "longitude"}


def usable(rows, api="", start=datetime(2024, 2, 1), end=datetime(2024, 3, 1)):
    """Mock rows in [start, end) that a fetch can keep (located, parseable, not duplicated); only the Socrata
    rows carry the state-plane X/Y that locates row 9."""
    bad = {"SR24-000005", "SR24-000006", "SR24-000008"} | (set() if api == "socrata" else {"SR24-000009"})
    out = {}
    for r in rows:
        if start <= r["created"] < end and r["id"] not in bad:
            out.setdefault(r["id"], r)
    return out


def in_area(r):
    lat, lon = (r["lon"], r["lat"]) if r["id"] == "SR24-000007" else (r["lat"], r["lon"])  # row 7 is swapped
    if r.get("x"):
        lat, lon = 41.8506, -87.6720  # its X/Y, reprojected
    return 41.70 <= lat <= 41.85 and -87.80 <= lon <= -87.50


def api_args(api, url):
    """(API index, base URL, DATASET, FIELD_MAP with a category, FIELD_MAP without one) for each API."""
    if api == "socrata":
        return 0, url, "test-0311", {**SOCRATA_MAP, "category": "sr_type"}, SOCRATA_MAP
    if api == "open311":
        return 1, url + "/open311/v2", "", {"category": "service_name"}, None
    if api == "seeclickfix":
        return 2, url + "/api/v2", "test-city", {"category": "request_type_title"}, None
    if api == "arcgis":
        layer = url + "/arcgis/rest/services/311/FeatureServer/0"
        return 3, url, layer, ARCGIS_MAP, {k: v for k, v in ARCGIS_MAP.items() if k != "category"}
    return 4, url, "res-311", {"category": "service_name"}, None


def run(run_alg, api, url, tmp_path, with_category=True, **extra):
    index, base, dataset, with_map, without_map = api_args(api, url)
    field_map = with_map if with_category else without_map
    params = {"api": index, "dataset": dataset, "start": "2024-02-01", "end": "2024-02-29",
              "TIMEZONE": "America/Chicago", **extra}
    if field_map is not None:
        params["FIELD_MAP"] = json.dumps(field_map)
    return fetch(run_alg, base, tmp_path, **params)


def kept_ids(res):
    return {f["request_id"] for f in res["OUTPUT"].getFeatures()}


def expected_id(api, r):
    return str(int(r["id"].split("-")[1])) if api == "seeclickfix" else r["id"]


APIS = ["socrata", "open311", "seeclickfix", "arcgis", "ckan"]


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("with_category", [True, False])
def test_categories_are_applied_or_the_run_stops(run_alg, http_server, tmp_path, api, with_category):
    portal = Portal()
    url = http_server(portal.handle)
    if not with_category and api == "arcgis":
        # without 'category' in FIELD_MAP the server cannot filter; when the layer has no column that can be
        # inferred as the category either, the run stops and says what to add (it never returns every category)
        bare = Portal(drop_fields=("SRType",))
        with pytest.raises(QgsProcessingException, match="CATEGORIES needs a category column: add 'category' to "
                                                         "FIELD_MAP"):
            run(run_alg, api, http_server(bare.handle), tmp_path / "bare", with_category,
                CATEGORIES=", ".join(sorted(WANTED)))
    res = run(run_alg, api, url, tmp_path, with_category, CATEGORIES="Pothole in Street, Graffiti Removal")
    check_equation(res)
    expected = {expected_id(api, r) for r in usable(ROWS, api).values() if r["category"] in WANTED}
    assert kept_ids(res) == expected
    assert {f["category"] for f in res["OUTPUT"].getFeatures()} == WANTED
    log = "\n".join(res["_feedback"].messages)
    line = next(m for m in log.splitlines() if m.startswith("CATEGORIES (column"))
    server_side = api in ("socrata", "arcgis") and with_category
    assert ("on the server" in line) == server_side, line
    removed = sum(1 for f in res["REJECTED"].getFeatures() if f["reject_reason"] == "category not requested")
    assert f"{removed} row(s) removed locally" in line
    if not server_side:
        assert removed > 0  # every category came down and the unwanted ones were removed here


@pytest.mark.parametrize("api", APIS)
def test_extent_is_applied_on_the_server_or_locally(run_alg, http_server, tmp_path, api):
    portal = Portal()
    url = http_server(portal.handle)
    res = run(run_alg, api, url, tmp_path, EXTENT=AREA)
    check_equation(res)
    expected = {expected_id(api, r) for r in usable(ROWS, api).values() if in_area(r)}
    assert kept_ids(res) == expected
    for f in res["OUTPUT"].getFeatures():
        p = f.geometry().asPoint()
        assert 41.70 <= p.y() <= 41.85 and -87.80 <= p.x() <= -87.50
    line = next(m for m in res["_feedback"].messages if m.startswith("EXTENT"))
    assert ("on the server" in line) == (api in ("arcgis", "seeclickfix")), line  # Socrata: no location field
    removed = sum(1 for f in res["REJECTED"].getFeatures() if f["reject_reason"] == "outside the requested area")
    assert f"{removed} row(s) removed locally" in line


def test_extent_also_checks_rows_located_by_state_plane_xy(run_alg, http_server, tmp_path):
    """A row with only X/Y is reprojected and then checked against EXTENT like the lat/lon rows."""
    rows = make_rows()
    rows[9]["created"] = datetime(2024, 2, 10, 12)
    url = http_server(Portal(rows=rows).handle)
    area = "-87.70,-87.60,41.70,41.80 [EPSG:4326]"  # row 9 lies at 41.8506, -87.672: outside
    res = fetch(run_alg, url, tmp_path, start="2024-02-01", end="2024-02-29", EXTENT=area)
    assert "SR24-000009" not in kept_ids(res)
    reasons = {f["raw_id"]: f["reject_reason"] for f in res["REJECTED"].getFeatures()}
    assert reasons["SR24-000009"] == "outside the requested area"
    check_equation(res)


@pytest.mark.parametrize("api", APIS)
def test_dates_are_checked_locally_for_every_api(run_alg, http_server, tmp_path, api):
    """The server's window is checked again on the rows received: a server that sends rows outside it (CKAN
    cannot filter dates; an Open311 server whose end_date is inclusive) never gets them into the output."""
    portal = Portal(inclusive_end=True)
    rows = portal.rows
    rows[20]["created"] = datetime(2024, 3, 1)  # exactly the instant after END_DATE's day
    url = http_server(portal.handle)
    res = run(run_alg, api, url, tmp_path)
    check_equation(res)
    assert kept_ids(res) == {expected_id(api, r) for r in usable(rows, api).values()}
    for f in res["OUTPUT"].getFeatures():
        assert f["created_at"].toString("yyyy-MM") == "2024-02"
    line = next(m for m in res["_feedback"].messages if m.startswith("START_DATE/END_DATE"))
    assert ("on the server" in line) == (api != "ckan"), line
    if api == "open311":  # the inclusive end_date sent the row at 2024-03-01 00:00; it was removed here
        reasons = {f["raw_id"]: f["reject_reason"] for f in res["REJECTED"].getFeatures()}
        assert reasons[rows[20]["id"]] == "outside the date range"
        assert "1 row(s) removed locally" in line


@pytest.mark.parametrize("api", ["socrata", "arcgis"])
def test_a_field_name_that_would_change_the_server_query_is_refused(run_alg, http_server, tmp_path, api):
    portal = Portal()
    url = http_server(portal.handle)
    index, base, dataset, with_map, _ = api_args(api, url)
    crafted = {**with_map, "category": "sr_type) OR (1=1"}
    with pytest.raises(QgsProcessingException, match=r"'sr_type\) OR \(1=1' \(category\) is not a plain field"):
        fetch(run_alg, base, tmp_path, api=index, dataset=dataset, FIELD_MAP=json.dumps(crafted),
              CATEGORIES="Graffiti Removal")
    assert not portal.log  # refused before any request
