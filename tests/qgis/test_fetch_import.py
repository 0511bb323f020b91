# SPDX-License-Identifier: GPL-2.0-or-later
"""fetchrequests against a local mock of each portal API (with faults), and importrequests on real files."""

import glob
import json
from pathlib import Path

import pytest
from portal_mock import Portal, make_rows
from qgis.core import QgsApplication, QgsAuthMethodConfig, QgsProcessingException, QgsProcessingFeedback

from conftest import SHARED

CHICAGO_MAP = json.dumps({"request_id": "sr_number", "created_at": "created_date", "closed_at": "closed_date",
                          "status": "status", "category": "sr_type", "address": "street_address",
                          "latitude": "latitude", "longitude": "longitude", "x": "x_coordinate",
                          "y": "y_coordinate"})
ALL_ROWS = make_rows()


def expected_counts(rows, start, end):
    """(fetched, kept, rejected, duplicates) for the mock rows created in [start, end)."""
    inside = [r for r in rows if start <= r["created"] < end]
    bad = {"SR24-000005", "SR24-000006", "SR24-000008"}  # missing, zero coordinates, bad date
    ids = [r["id"] for r in inside]
    duplicates = len(ids) - len(set(ids))
    rejected = sum(1 for r in inside if r["id"] in bad)
    return len(inside), len(inside) - rejected - duplicates, rejected, duplicates


def fetch(run_alg, url, tmp_path, api=0, dataset="test-0311", start="2024-01-01", end="2024-03-31", **extra):
    from qgis.PyQt.QtCore import QDate

    params = {"PRESET": 0, "API": api, "BASE_URL": url, "DATASET": dataset,
              "START_DATE": QDate.fromString(start, "yyyy-MM-dd"), "END_DATE": QDate.fromString(end, "yyyy-MM-dd"),
              "CACHE_DIR": str(tmp_path / "cache"), "TIMEOUT": 2.0, "OUTPUT": "memory:", "REJECTED": "memory:"}
    if api == 0:
        params.update({"FIELD_MAP": CHICAGO_MAP, "XY_CRS": "EPSG:3435"})
    params.update(extra)
    feedback = extra.pop("feedback", None)
    params.pop("feedback", None)
    return run_alg("civic311:fetchrequests", params, feedback)


def check_equation(res):
    assert res["KEPT"] + res["REJECTED_COUNT"] + res["DUPLICATES"] == res["FETCHED"]
    assert res["OUTPUT"].featureCount() == res["KEPT"]
    assert res["REJECTED"].featureCount() == res["REJECTED_COUNT"] + res["DUPLICATES"]
    ids = [f["request_id"] for f in res["OUTPUT"].getFeatures()]
    assert len(ids) == len(set(ids))


def test_socrata_end_to_end(run_alg, http_server, tmp_path):
    from datetime import datetime

    portal = Portal()
    res = fetch(run_alg, http_server(portal.handle), tmp_path)
    check_equation(res)
    fetched, kept, rejected, duplicates = expected_counts(ALL_ROWS, datetime(2024, 1, 1), datetime(2024, 4, 1))
    assert (res["FETCHED"], res["KEPT"], res["REJECTED_COUNT"], res["DUPLICATES"]) == \
        (fetched, kept, rejected, duplicates)
    out = {f["request_id"]: f for f in res["OUTPUT"].getFeatures()}
    assert [f.name() for f in res["OUTPUT"].fields()] == [
        "request_id", "created_at", "closed_at", "status", "category", "descriptor", "agency", "address", "source",
        "channel", "city_initiated"]
    swapped = out["SR24-000007"].geometry().asPoint()
    assert 41.7 < swapped.y() < 42 and -87.8 < swapped.x() < -87.5  # swapped back
    xy = out["SR24-000009"].geometry().asPoint()
    assert abs(xy.y() - 41.8506) < 0.001 and abs(xy.x() + 87.6720) < 0.001  # state-plane X/Y reprojected
    assert out["SR24-000001"]["source"].startswith("127.0.0.1:") and out["SR24-000001"]["source"].endswith(
        "/test-0311")
    reasons = {f["reject_reason"] for f in res["REJECTED"].getFeatures()}
    assert reasons == {"missing coordinates", "zero coordinates", "unparseable created_at", "duplicate request id"}
    # deterministic paging: ordered by date then :id, in monthly windows
    params = [p for path, p, _ in portal.log if path.startswith("/resource/")]
    assert all(p["$order"] == "created_date,:id" for p in params)
    assert any("created_date >= '2024-02-01T00:00:00'" in p["$where"] for p in params)


def test_socrata_small_pages_unordered_duplicates_and_insertions_lose_nothing(run_alg, http_server, tmp_path):
    clean = fetch(run_alg, http_server(Portal().handle), tmp_path / "a", PAGE_SIZE=40)
    faulty = Portal(duplicate_across_pages=True, insert_while_paging=True)
    res = fetch(run_alg, http_server(faulty.handle), tmp_path / "b", PAGE_SIZE=40)
    check_equation(res)
    clean_ids = {f["request_id"] for f in clean["OUTPUT"].getFeatures()}
    ids = {f["request_id"] for f in res["OUTPUT"].getFeatures()}
    assert clean_ids <= ids  # nothing lost
    assert ids - clean_ids <= {"SR24-INSERTED"}
    assert res["DUPLICATES"] > clean["DUPLICATES"]  # repeated rows counted, not kept twice


def test_socrata_categories_are_quoted_and_filtered_on_the_server(run_alg, http_server, tmp_path):
    portal = Portal()
    res = fetch(run_alg, http_server(portal.handle), tmp_path,
                CATEGORIES="O'Hare's \"quoted\" category, Graffiti Removal")
    cats = {f["category"] for f in res["OUTPUT"].getFeatures()}
    assert cats == {"O'Hare's \"quoted\" category", "Graffiti Removal"}
    where = [p["$where"] for path, p, _ in portal.log if path.startswith("/resource/")][0]
    assert "sr_type in ('O''Hare''s \"quoted\" category', 'Graffiti Removal')" in where


@pytest.mark.parametrize("fault", [{"fail_429": 2, "retry_after": "1"}, {"fail_500": 1}, {"hang_once": 4.0},
                                   {"truncate_once": True}])
def test_socrata_faults_are_retried(run_alg, http_server, tmp_path, fault):
    portal = Portal(**fault)
    res = fetch(run_alg, http_server(portal.handle), tmp_path)
    check_equation(res)
    assert res["KEPT"] == expected_counts(ALL_ROWS, *month_range())[1]
    messages = "\n".join(res["_feedback"].messages)
    assert "retrying" in messages or "fetching it again" in messages


def month_range():
    from datetime import datetime

    return datetime(2024, 1, 1), datetime(2024, 4, 1)


def test_portal_errors_are_reported_not_retried(run_alg, http_server, tmp_path):
    portal = Portal()
    url = http_server(portal.handle)
    with pytest.raises(QgsProcessingException, match="dataset.missing"):
        fetch(run_alg, url, tmp_path, dataset="nope-0000")
    assert len(portal.log) == 1  # a 404 is not retried
    with pytest.raises(QgsProcessingException, match="no-such-column"):
        fetch(run_alg, url, tmp_path / "b", FIELD_MAP=json.dumps({"created_at": "created_date",
                                                                  "category": "nosuchcolumn"}),
              CATEGORIES="x")


def test_fetch_resumes_after_a_failure_and_extends_to_a_later_end_date(run_alg, http_server, tmp_path):
    portal = Portal(fail_after_requests=3)
    url = http_server(portal.handle)
    with pytest.raises(QgsProcessingException, match="run again to resume"):
        fetch(run_alg, url, tmp_path, PAGE_SIZE=60, RETRIES=1)
    portal.faults["fail_after_requests"] = 0
    portal.log.clear()
    res = fetch(run_alg, url, tmp_path, PAGE_SIZE=60)
    check_equation(res)
    assert res["KEPT"] == expected_counts(ALL_ROWS, *month_range())[1]
    first_offsets = [int(p["$offset"]) for path, p, _ in portal.log if path.startswith("/resource/")]
    assert first_offsets[0] == 180  # the three cached pages were not fetched again
    # a later END_DATE fetches only what is new: January and February come from the cache
    portal.log.clear()
    res2 = fetch(run_alg, url, tmp_path, end="2024-04-30", PAGE_SIZE=60)
    wheres = [p["$where"] for path, p, _ in portal.log if path.startswith("/resource/")]
    assert wheres and all("2024-01" not in w and "2024-02" not in w for w in wheres)
    assert res2["KEPT"] >= res["KEPT"]


def test_cancel_stops_between_pages_and_keeps_the_pages(run_alg, http_server, tmp_path):
    class CancelAfterFirstPage(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.messages = []

        def setProgressText(self, text):  # noqa: N802
            if "rows fetched" in text:
                self.cancel()

    portal = Portal()
    with pytest.raises(QgsProcessingException, match="Cancelled"):
        fetch(run_alg, http_server(portal.handle), tmp_path, PAGE_SIZE=50, feedback=CancelAfterFirstPage())
    assert len(portal.log) == 1
    assert len(list((tmp_path / "cache").rglob("page_*.json"))) == 1


def test_token_never_leaks(run_alg, http_server, tmp_path):
    token = "SeCrEt-T0ken-4242"
    manager = QgsApplication.authManager()
    manager.setMasterPassword("civic311-tests", True)
    cfg = QgsAuthMethodConfig("Basic")
    cfg.setName("socrata token")
    cfg.setConfig("username", "ignored")
    cfg.setConfig("password", token)
    assert manager.storeAuthenticationConfig(cfg)
    portal = Portal(token=token, fail_500=1)
    res = fetch(run_alg, http_server(portal.handle), tmp_path, AUTH_CONFIG=cfg.id())
    assert all(h.get("X-App-Token") == token for path, _, h in portal.log if path.startswith("/resource/"))
    texts = "\n".join(res["_feedback"].messages)
    for layer in (res["OUTPUT"], res["REJECTED"]):
        texts += "\n".join(str(f.attributes()) for f in layer.getFeatures())
    for path in (tmp_path / "cache").rglob("*"):
        texts += str(path) + (path.read_text() if path.is_file() else "")
    assert token not in texts
    # a failing request's error does not show it either
    bad = Portal(token="other")
    with pytest.raises(QgsProcessingException) as err:
        fetch(run_alg, http_server(bad.handle), tmp_path / "x", AUTH_CONFIG=cfg.id())
    assert token not in str(err.value) and "Bad app token" in str(err.value)


def test_open311_windows_offsets_and_servers_that_ignore_paging(run_alg, http_server, tmp_path):
    portal = Portal()
    res = fetch(run_alg, http_server(portal.handle) + "/open311/v2", tmp_path, api=1, dataset="")
    check_equation(res)
    fetched, kept, rejected, dup = expected_counts(ALL_ROWS, *month_range())
    assert res["FETCHED"] == fetched and res["DUPLICATES"] == dup
    out = {f["request_id"]: f for f in res["OUTPUT"].getFeatures()}
    # requested_datetime carried a -06:00 offset: converted to UTC (no preset time zone)
    row = next(r for r in ALL_ROWS if r["id"] == "SR24-000001")
    got = out["SR24-000001"]["created_at"].toPyDateTime()
    assert (got - row["created"]).total_seconds() == 6 * 3600
    ignoring = Portal(ignore_paging=True)
    res2 = fetch(run_alg, http_server(ignoring.handle) + "/open311/v2", tmp_path / "b", api=1, dataset="",
                 PAGE_SIZE=100)
    assert res2["KEPT"] == res["KEPT"]
    assert "splitting it in two" in "\n".join(res2["_feedback"].messages)


def test_seeclickfix_pagination_and_no_personal_data(run_alg, http_server, tmp_path):
    portal = Portal(fail_429=1, retry_after="1")
    res = fetch(run_alg, http_server(portal.handle) + "/api/v2", tmp_path, api=2, dataset="test-city")
    check_equation(res)
    assert res["FETCHED"] == expected_counts(ALL_ROWS, *month_range())[0]
    params = [p for path, p, _ in portal.log if path == "/api/v2/issues"]
    assert all(p["sort_direction"] == "ASC" and p["status"] == "open,acknowledged,closed,archived" for p in params)
    names = "\n".join(str(f.attributes()) for f in res["OUTPUT"].getFeatures())
    assert "Private Person" not in names  # the reporter is never carried over


def test_arcgis_caps_transfer_limit_and_token_errors(run_alg, http_server, tmp_path):
    portal = Portal(arcgis_max=37)
    url = http_server(portal.handle)
    layer = url + "/arcgis/rest/services/311/FeatureServer/0"
    field_map = json.dumps({"request_id": "ServiceRequestNum", "created_at": "CreatedDate", "category": "SRType",
                            "status": "SRStatus", "address": "Address"})
    res = fetch(run_alg, url, tmp_path, api=3, dataset=layer, FIELD_MAP=field_map, PAGE_SIZE=1000)
    check_equation(res)
    assert res["FETCHED"] == expected_counts(ALL_ROWS, *month_range())[0]
    counts = [int(p["resultRecordCount"]) for path, p, _ in portal.log if path.endswith("/query")]
    assert set(counts) == {37}  # the page never exceeds maxRecordCount
    secured = Portal(token="tok")
    surl = http_server(secured.handle)
    with pytest.raises(QgsProcessingException, match="499: Token Required"):
        fetch(run_alg, surl, tmp_path / "s", api=3, dataset=surl + "/arcgis/rest/services/311/FeatureServer/0",
              FIELD_MAP=field_map)


def test_ckan_clamped_limit_and_local_date_filter(run_alg, http_server, tmp_path):
    portal = Portal()
    res = fetch(run_alg, http_server(portal.handle), tmp_path, api=4, dataset="res-311", start="2024-02-01",
                end="2024-02-29", PAGE_SIZE=1000)
    check_equation(res)
    assert res["FETCHED"] == len(ALL_ROWS)  # CKAN cannot filter dates: every row is read…
    reasons = [f["reject_reason"] for f in res["REJECTED"].getFeatures()]
    assert reasons.count("outside the date range") > 300  # …and rows outside February are listed
    offsets = [int(p["offset"]) for path, p, _ in portal.log if path.endswith("datastore_search")]
    assert offsets[:3] == [0, 70, 140]  # stepping by the limit the server really used
    assert all(f["created_at"].toString("yyyy-MM") == "2024-02" for f in res["OUTPUT"].getFeatures())


def test_every_real_chicago_csv_imports_with_no_row_lost(run_alg):
    files = sorted(glob.glob(str(SHARED / "chicago_311_legacy_*" / "*.csv")))
    assert len(files) == 13
    for path in files:
        res = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "REJECTED": "memory:"})
        rows = sum(1 for _ in open(path, encoding="utf-8")) - 1
        assert res["FETCHED"] == rows, path
        check_equation(res)
        assert all(f["created_at"].isValid() for f in res["OUTPUT"].getFeatures())
    pot = run_alg("civic311:importrequests", {"INPUT": files[-3], "OUTPUT": "memory:"})
    assert Path(files[-3]).name == "Potholes_Data.csv" and pot["KEPT"] == 3955 and pot["DUPLICATES"] == 4


def test_import_json_samples_and_overrides(run_alg, tmp_path):
    nyc = run_alg("civic311:importrequests", {
        "INPUT": str(SHARED / "api_samples" / "socrata_nyc_311" / "erm2-nwe9_page_limit1000.json"),
        "OUTPUT": "memory:", "REJECTED": "memory:"})
    check_equation(nyc)
    assert nyc["FETCHED"] == 1000 and nyc["KEPT"] + nyc["REJECTED_COUNT"] == 1000
    assert nyc["REJECTED_COUNT"] >= 12  # rows without coordinates
    o311 = run_alg("civic311:importrequests", {
        "INPUT": str(SHARED / "api_samples" / "open311_chicago" / "chicago_open311_requests_extensions_2014.json"),
        "OUTPUT": "memory:"})
    assert o311["FETCHED"] == 50 and o311["KEPT"] >= 45
    csv = tmp_path / "odd.csv"
    csv.write_text("Ticket,When,Kind,Northing,Easting\nA1,2024-05-01 10:00,Noise,41.9,-87.6\n"
                   "A2,yesterday,Noise,41.9,-87.6\n")
    res = run_alg("civic311:importrequests", {"INPUT": str(csv), "ID_FIELD": "Ticket", "DATE_FIELD": "When",
                                              "CATEGORY_FIELD": "Kind", "LAT_FIELD": "Northing",
                                              "LON_FIELD": "Easting", "OUTPUT": "memory:", "REJECTED": "memory:"})
    assert (res["KEPT"], res["REJECTED_COUNT"]) == (1, 1)
    assert next(res["REJECTED"].getFeatures())["reject_reason"] == "unparseable created_at"
    # 'When' is half dates in this file: no creation date is inferred, and the error says what to set and shows
    # each column with a sample value
    with pytest.raises(QgsProcessingException, match=r"No creation date column found\. Set DATE_FIELD .*"
                                                     r"When \(e\.g\. '2024-05-01 10:00'\)"):
        run_alg("civic311:importrequests", {"INPUT": str(csv), "OUTPUT": "memory:"})


def test_geopackage_outputs_are_written_in_bulk_and_match_the_memory_output(run_alg, tmp_path):
    from qgis.core import QgsVectorLayer

    path = str(SHARED / "chicago_311_legacy_2011_orpolyzos" / "pot-holes.csv")
    memory = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:"})["OUTPUT"]
    gpkg = tmp_path / "potholes.gpkg"
    res = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": str(gpkg)})
    # into another new GeoPackage as a named table
    other = tmp_path / "other.gpkg"
    run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": f"ogr:dbname='{other}' table=\"again\" (geom)"})
    assert QgsVectorLayer(f"{other}|layername=again", "a", "ogr").featureCount() == res["KEPT"]
    layer = QgsVectorLayer(str(gpkg), "p", "ogr")
    assert layer.isValid() and layer.featureCount() == memory.featureCount() == res["KEPT"]
    assert layer.crs().authid() == "EPSG:4326"
    assert [f.name() for f in layer.fields()][1:] == [f.name() for f in memory.fields()]
    a = {f["request_id"]: f for f in memory.getFeatures()}
    for f in layer.getFeatures():
        m = a[f["request_id"]]
        assert f.attributes()[1:] == m.attributes()  # every field, NULLs and the constant source included
        assert f.geometry().asPoint().distance(m.geometry().asPoint()) < 1e-9
    assert layer.renderer().classAttribute() == "category"  # styled like every output
    counts = {}
    for f in memory.getFeatures():
        counts[f["category"]] = counts.get(f["category"], 0) + 1
    top = sorted(counts, key=lambda k: (-counts[k], k))[:10]
    assert [c.value() for c in layer.renderer().categories() if c.value() not in ("", None)] == top  # not "Other"


def test_csv_with_extra_columns_and_text_in_coordinates(run_alg, tmp_path):
    """Only the mapped columns are read; coordinates that are text are rejected as missing, never guessed."""
    csv = tmp_path / "wide.csv"
    extra = ",".join(f"extra_{i}" for i in range(30))
    rows = [f"SR{i:03d},2024-03-0{1 + i % 9} 10:00:00,Open,Pothole,{41.8 + i / 1000:.4f},{-87.6 - i / 1000:.4f},"
            + ",".join(str(i) for _ in range(30)) for i in range(40)]
    rows[5] = rows[5].replace("41.8050", "N/A")
    rows[6] = rows[6].replace("41.8060", '"(41.8, -87.6)"')
    rows.append(rows[0])  # a duplicate
    csv.write_text("sr_number,created_date,status,sr_type,latitude,longitude," + extra + "\n" + "\n".join(rows) + "\n")
    res = run_alg("civic311:importrequests", {"INPUT": str(csv), "OUTPUT": "memory:", "REJECTED": "memory:"})
    check_equation(res)
    assert (res["FETCHED"], res["KEPT"], res["REJECTED_COUNT"], res["DUPLICATES"]) == (41, 38, 2, 1)
    reasons = {f["raw_id"]: f["reject_reason"] for f in res["REJECTED"].getFeatures()}
    assert reasons == {"SR005": "missing coordinates", "SR006": "missing coordinates", "SR000": "duplicate request id"}
    first = next(f for f in res["OUTPUT"].getFeatures() if f["request_id"] == "SR007")
    assert first.geometry().asPoint().y() == pytest.approx(41.807) and first["category"] == "Pothole"
    assert [f.name() for f in res["OUTPUT"].fields()] == ["request_id", "created_at", "closed_at", "status",
                                                        "category", "descriptor", "agency", "address", "source",
                                                        "channel", "city_initiated"]
