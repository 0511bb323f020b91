# SPDX-License-Identifier: GPL-2.0-or-later
"""importrequests on real exports of other cities (../shared/data/external_exports) and on fixtures derived from
them by tests/data/make_import_fixtures.py: inferred column roles, local times, encodings, broken files,
placeholder points, channel and city_initiated."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from qgis.core import QgsProcessingException

from conftest import SHARED, TEST_DATA

EXPORTS = SHARED / "external_exports"
FIXTURES = TEST_DATA / "imports"

# file, TIMEZONE (only for files whose times are UTC instants), city bbox (lon/lat), a kept id -> its local
# created_at as the city's clock showed it, the source column(s) naming the type, rejections allowed
CITIES = [
    ("boston_case-enquiry.csv", None, (-71.2, 42.2, -70.9, 42.45), ("101004130437", "2022-01-19T11:18:00"),
     ["type"], {"placeholder location": 19}),
    ("losangeles_myla311-2017.csv", None, (-118.7, 33.6, -118.1, 34.4), ("1-870704831", "2017-12-31T23:59:58"),
     ["RequestType"], {"missing coordinates": 784}),
    ("neworleans_socrata-ticket.json", None, (-90.2, 29.8, -89.6, 30.25), ("101000608800", "2016-10-21T08:55:58"),
     ["issue_type"], {"coordinates out of range": 9}),
    ("newport-ri_seeclickfix-v2-flattened.json", "America/New_York", (-71.4, 41.4, -71.2, 41.6),
     ("3672116", "2017-08-30T13:38:49"), ["request_type.title", "summary"], {"placeholder location": 10}),
    ("nyc_erm2nwe9-api.csv", None, (-74.3, 40.45, -73.65, 40.95), ("60879417", "2024-04-16T03:03:15"),
     ["complaint_type"], {"missing coordinates": 23}),
    ("nyc_erm2nwe9-export.csv", None, (-74.3, 40.45, -73.65, 40.95), ("39573567", "2018-06-26T10:58:54"),
     ["Complaint Type"], {"missing coordinates": 107}),
    ("sanfrancisco_open311-2010.json", None, (-122.55, 37.6, -122.3, 37.85),
     ("771970", "2010-11-15T01:05:25.727"), ["service_name"], {"zero coordinates": 55, "missing request id": 1}),
    ("sanfrancisco_seeclickfix-v1.json", "America/Los_Angeles", (-122.55, 37.6, -122.3, 37.85),
     ("108657", "2011-06-22T11:55:00"), ["summary"], {}),
    ("sanfrancisco_sf311-pre2017.csv", None, (-122.55, 37.6, -122.3, 37.85), ("1757188", "2012-12-04T15:21:00"),
     ["Category", "Request.Type"], {"missing coordinates": 15}),
]


def raw_frame(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    data = json.loads(path.read_text())
    return pd.DataFrame(data["requests"] if isinstance(data, dict) else data)


ID_COLUMNS = {'boston_case-enquiry.csv': 'case_enquiry_id',
              'losangeles_myla311-2017.csv': 'SRNumber',
              'neworleans_socrata-ticket.json': 'ticket_id',
              'newport-ri_seeclickfix-v2-flattened.json': 'id',
              'nyc_erm2nwe9-api.csv': 'unique_key',
              'nyc_erm2nwe9-export.csv': 'Unique Key',
              'sanfrancisco_open311-2010.json': 'service_request_id',
              'sanfrancisco_seeclickfix-v1.json': 'id',
              'sanfrancisco_sf311-pre2017.csv': 'CaseID'}


def without_type(frame: pd.DataFrame, id_column: str, columns: list[str]) -> set[str]:
    """Ids of the source rows that name no type in any of ``columns``."""
    present = pd.Series(False, index=frame.index)
    for name in columns:
        text = frame[name].astype(str).str.strip()
        present |= frame[name].notna() & ~text.str.lower().isin(["", "none", "null", "nan", "n/a", "na", "unspecified"])
    return set(frame.loc[~present, id_column].astype(str))


def iso(value) -> str:
    text = value.toString("yyyy-MM-ddTHH:mm:ss.zzz")
    return text[:-4] if text.endswith(".000") else text


@pytest.mark.parametrize("name,tz,bbox,known,type_columns,rejections", CITIES, ids=[c[0] for c in CITIES])
def test_every_external_export_imports_without_overrides(run_alg, name, tz, bbox, known, type_columns, rejections):
    path = EXPORTS / name
    params = {"INPUT": str(path), "OUTPUT": "memory:", "REJECTED": "memory:"}
    if tz:
        params["TIMEZONE"] = tz
    res = run_alg("civic311:importrequests", params)
    raw = raw_frame(path)
    assert res["FETCHED"] == len(raw)
    assert res["KEPT"] + res["REJECTED_COUNT"] + res["DUPLICATES"] == res["FETCHED"]
    feats = list(res["OUTPUT"].getFeatures())
    ids = [f["request_id"] for f in feats]
    assert len(ids) == len(set(ids)) == res["KEPT"]
    reasons: dict[str, int] = {}
    for f in res["REJECTED"].getFeatures():
        reasons[f["reject_reason"]] = reasons.get(f["reject_reason"], 0) + 1
    assert reasons == rejections
    for f in feats:
        p = f.geometry().asPoint()
        assert bbox[0] < p.x() < bbox[2] and bbox[1] < p.y() < bbox[3], (f["request_id"], p)
        assert f["created_at"].isValid()
    by_id = {f["request_id"]: f for f in feats}
    assert iso(by_id[known[0]]["created_at"]) == known[1]
    # a category on every kept row whose source row names a type
    no_type = without_type(raw, ID_COLUMNS[name], type_columns)
    assert {i for i, f in by_id.items() if not f["category"]} <= no_type
    assert not any("Traceback" in m for m in res["_feedback"].messages)


def test_mapping_table_in_the_log_and_in_the_layer_metadata(run_alg, tmp_path):
    from qgis.core import QgsVectorLayer

    out = tmp_path / "boston.gpkg"
    res = run_alg("civic311:importrequests", {"INPUT": str(EXPORTS / "boston_case-enquiry.csv"), "OUTPUT": str(out)})
    log = "\n".join(res["_feedback"].messages)
    for line in ("request_id <- 'case_enquiry_id' (name; 100% present, 100% unique)",
                 "created_at <- 'open_dt' (name; 100% parse as dates)", "channel <- 'source'",
                 "latitude <- 'latitude'", "category <- 'type'"):
        assert line in log
    layer = QgsVectorLayer(str(out), "b", "ogr")
    abstract = layer.metadata().abstract()
    assert "Column mapping: request_id <- 'case_enquiry_id'" in abstract and "Encoding: utf-8" in abstract


def test_channel_and_city_initiated(run_alg):
    res = run_alg("civic311:importrequests", {"INPUT": str(EXPORTS / "boston_case-enquiry.csv"), "OUTPUT": "memory:",
                                              "KEEP_PLACEHOLDERS": True})
    fields = [f.name() for f in res["OUTPUT"].fields()]
    assert fields[fields.index("source"):] == ["source", "channel", "city_initiated"]
    pairs = {(f["channel"], f["city_initiated"]) for f in res["OUTPUT"].getFeatures()}
    assert pairs == {("Citizens Connect App", 0), ("Constituent Call", 0), ("City Worker App", 1),
                     ("Self Service", 0)}
    # no channel column: NULL, never 0
    scf = run_alg("civic311:importrequests", {"INPUT": str(EXPORTS / "sanfrancisco_seeclickfix-v1.json"),
                                              "OUTPUT": "memory:"})
    assert all(f["channel"] is None or str(f["channel"]) == "NULL" for f in scf["OUTPUT"].getFeatures())
    assert all(str(f["city_initiated"]) == "NULL" for f in scf["OUTPUT"].getFeatures())


def test_placeholder_points_are_rejected_named_and_can_be_kept(run_alg):
    path = str(EXPORTS / "boston_case-enquiry.csv")
    res = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "REJECTED": "memory:"})
    rejected = [f for f in res["REJECTED"].getFeatures() if f["reject_reason"] == "placeholder location"]
    assert len(rejected) == 19
    log = "\n".join(res["_feedback"].messages)
    assert "Placeholder location 42.359400, -71.058700: 19 request(s)" in log
    kept = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "KEEP_PLACEHOLDERS": True})
    assert kept["KEPT"] == 100


def test_a_real_building_or_estate_with_many_requests_is_kept(run_alg):
    """SF public housing on Cameron Way / Nichols Way is geocoded to one point with several unit addresses (three
    streets), and Newport's Murphy Field on Carroll Ave is spelt five ways: both are real places, kept."""
    sf = run_alg("civic311:importrequests", {"INPUT": str(EXPORTS / "sanfrancisco_sf311-pre2017.csv"),
                                             "OUTPUT": "memory:"})
    at_estate = [f for f in sf["OUTPUT"].getFeatures()
                 if abs(f.geometry().asPoint().y() - 37.719589) < 1e-6 and abs(f.geometry().asPoint().x() + 122.387287)
                 < 1e-6]
    assert len(at_estate) >= 6
    newport = run_alg("civic311:importrequests", {"INPUT": str(EXPORTS / "newport-ri_seeclickfix-v2-flattened.json"),
                                                  "OUTPUT": "memory:", "REJECTED": "memory:"})
    carroll = [f for f in newport["OUTPUT"].getFeatures() if "carroll" in (f["address"] or "").lower()
               and abs(f.geometry().asPoint().y() - 41.4661436) < 1e-6]
    assert len(carroll) == 9
    # the city-centre default point of the same file is rejected
    assert sum(1 for f in newport["REJECTED"].getFeatures() if f["reject_reason"] == "placeholder location") == 10


@pytest.mark.parametrize("name,encoding", [("sf311_utf8.csv", "utf-8"), ("sf311_utf8_bom.csv", "utf-8-sig"),
                                           ("sf311_utf16.csv", "utf-16"), ("sf311_cp1252.csv", "cp1252")])
def test_csv_encodings(run_alg, name, encoding):
    res = run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / name), "OUTPUT": "memory:"})
    assert res["KEPT"] == 20
    first = next(f for f in res["OUTPUT"].getFeatures() if f["request_id"] == "1757188")
    assert first["address"] == "O’Farrell St & Café Alley, SAN FRANCISCO, CA"
    assert f"Encoding: {encoding}" in res["_feedback"].messages
    assert first["category"] == "Street Defects" and first["channel"] == "Voice In"


def test_one_bad_byte_costs_one_value(run_alg):
    res = run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / "sf311_utf8_one_bad_byte.csv"),
                                              "OUTPUT": "memory:"})
    feats = list(res["OUTPUT"].getFeatures())
    clean = list(run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / "sf311_utf8.csv"),
                                                     "OUTPUT": "memory:"})["OUTPUT"].getFeatures())
    assert len(feats) == 20
    assert feats[0]["address"] == "O’Farrell St & Café Alley, SAN FRANCISCO, CA"  # UTF-8 kept for the file
    assert feats[0]["channel"] == "Vo\ufffdce In" and clean[0]["channel"] == "Voice In"
    source = [f.name() for f in res["OUTPUT"].fields()].index("source")
    assert [f.attributes()[:source] for f in feats[1:]] == [f.attributes()[:source] for f in clean[1:]]
    assert [f.attributes()[source + 1:] for f in feats[1:]] == [f.attributes()[source + 1:] for f in clean[1:]]
    assert any("Encoding: utf-8 (1 byte(s) that do not decode" in m for m in res["_feedback"].messages)


@pytest.mark.parametrize("name,message", [
    ("empty.csv", "empty.csv is empty"),
    ("header_only.csv", "has a header but no rows"),
    ("numbers.json", "holds a list whose items are int, not request objects"),
    ("unknown_wrapper.json", "is a JSON object with the keys 'meta', 'count' but no list of requests"),
    ("deeply_nested.json", "nested too deeply"),
    ("scalar.json", "holds a single str, not requests"),
    ("truncated.json", "is not valid JSON"),
])
def test_broken_files_give_a_clear_error(run_alg, name, message):
    with pytest.raises(QgsProcessingException) as err:
        run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / name), "OUTPUT": "memory:"})
    assert message in str(err.value) and "Traceback" not in str(err.value)


def test_a_schema_lookalike_pulls_in_neither_its_zone_nor_its_crs(run_alg):
    """NYC's column names on Boston rows: times with 'Z' stay UTC (with a warning naming TIMEZONE) instead of
    New York time, and the X/Y-only row is not located with New York's state plane."""
    path = str(FIXTURES / "nyc_lookalike_boston_rows.csv")
    res = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "REJECTED": "memory:"})
    by_id = {f["request_id"]: f for f in res["OUTPUT"].getFeatures()}
    assert iso(by_id["101004130437"]["created_at"]) == "2022-01-19T11:18:00"  # as written, UTC
    assert any("Set TIMEZONE" in m for m in res["_feedback"].messages)
    reasons = {f["raw_id"]: f["reject_reason"] for f in res["REJECTED"].getFeatures()}
    assert reasons == {"101004143000": "only projected X/Y coordinates (set XY_CRS)"}
    local = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "TIMEZONE": "America/New_York"})
    by_id = {f["request_id"]: f for f in local["OUTPUT"].getFeatures()}
    assert iso(by_id["101004130437"]["created_at"]) == "2022-01-19T06:18:00"


def test_field_map_overrides_and_names_what_is_missing(run_alg):
    path = str(EXPORTS / "boston_case-enquiry.csv")
    res = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "KEEP_PLACEHOLDERS": True,
                                              "FIELD_MAP": json.dumps({"category": "reason", "channel": "queue"})})
    first = next(f for f in res["OUTPUT"].getFeatures() if f["request_id"] == "101004130437")
    assert first["category"] == "Needle Program" and first["channel"] == "GEN_Needle_Pickup"
    with pytest.raises(QgsProcessingException, match="names 'kind' for category, but the data has no such column"):
        run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "FIELD_MAP": '{"category": "kind"}'})
    with pytest.raises(QgsProcessingException, match="Unknown field map key 'colour'"):
        run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "FIELD_MAP": '{"colour": "type"}'})
    with pytest.raises(QgsProcessingException, match="FIELD_MAP is not valid JSON"):
        run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "FIELD_MAP": "{category: type"})


def test_locations_from_features_text_points_and_projected_latlon(run_alg):
    from qgis.core import QgsGeometry, QgsPointXY

    res = run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / "boston_features.geojson"),
                                              "OUTPUT": "memory:"})
    feats = list(res["OUTPUT"].getFeatures())
    raw = json.loads((FIXTURES / "boston_features.geojson").read_text())["features"]
    assert [f["request_id"] for f in feats] == [r["properties"]["case_enquiry_id"] for r in raw]
    multi = raw[1]["geometry"]["coordinates"][0]
    assert feats[1].geometry().asPoint() == QgsPointXY(*multi)  # a multipoint's first point
    ring = raw[2]["geometry"]["coordinates"][0]
    lot = QgsGeometry.fromPolygonXY([[QgsPointXY(*p) for p in ring]])
    assert lot.contains(feats[2].geometry())  # the polygon's point on surface, inside the L
    assert not lot.contains(lot.centroid())
    assert any("1 request(s) have a polygon geometry" in m for m in res["_feedback"].messages)
    wkt = run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / "boston_wkt.csv"), "OUTPUT": "memory:"})
    assert wkt["KEPT"] == 10
    p = next(wkt["OUTPUT"].getFeatures()).geometry().asPoint()
    assert (round(p.x(), 4), round(p.y(), 4)) == (-71.0587, 42.3594)
    # New Orleans publishes state-plane numbers in latitude/longitude for 9 rows: with XY_CRS they are located
    nola = run_alg("civic311:importrequests", {"INPUT": str(EXPORTS / "neworleans_socrata-ticket.json"),
                                               "OUTPUT": "memory:", "REJECTED": "memory:", "XY_CRS": "EPSG:3452",
                                               "KEEP_PLACEHOLDERS": True})
    assert nola["KEPT"] == 100
    moved = [f for f in nola["OUTPUT"].getFeatures() if f["request_id"] == "101000613757"][0].geometry().asPoint()
    assert -90.2 < moved.x() < -89.6 and 29.8 < moved.y() < 30.25


def test_category_falls_back_row_by_row(run_alg):
    res = run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / "newport_category_fallback.json"),
                                              "OUTPUT": "memory:"})
    raw = {str(r["id"]): r for r in json.loads((FIXTURES / "newport_category_fallback.json").read_text())}
    for f in res["OUTPUT"].getFeatures():
        r = raw[f["request_id"]]
        assert f["category"] == (r["request_type.title"] or r["summary"].strip())
    assert sum(1 for r in raw.values() if not r["request_type.title"]) == 15


def test_semicolon_export_with_xy_in_degrees(run_alg):
    """An ArcGIS-style export: ';' between fields, X/Y columns holding longitude/latitude, names unlike any city
    schema. Every role is still found, and no XY_CRS is needed for degrees."""
    res = run_alg("civic311:importrequests", {"INPUT": str(FIXTURES / "boston_arcgis_semicolon.csv"),
                                              "OUTPUT": "memory:", "KEEP_PLACEHOLDERS": True})
    log = "\n".join(res["_feedback"].messages)
    for line in ("request_id <- 'Case Number'", "created_at <- 'Date Opened'", "category <- 'Problem'",
                 "channel <- 'Intake'", "longitude <- 'X' (X/Y columns whose values are degrees)"):
        assert line in log
    assert res["KEPT"] == 30
    first = next(f for f in res["OUTPUT"].getFeatures() if f["request_id"] == "101004130437")
    p = first.geometry().asPoint()
    assert (round(p.x(), 4), round(p.y(), 4)) == (-71.0566, 42.3634) and first["city_initiated"] == 0
