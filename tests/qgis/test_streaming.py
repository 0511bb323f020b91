# SPDX-License-Identifier: GPL-2.0-or-later
"""#16: fetch and import stream their input a chunk at a time. A run cut into chunks of a few rows must give
exactly what one chunk gives: the same kept rows, duplicates found across chunks, rejected rows with their row
numbers, placeholder points whose requests fall in different chunks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from portal_mock import Portal
from test_fetch_import import check_equation, fetch

from conftest import SHARED


def layer_rows(layer) -> list[tuple]:
    rows = []
    for f in layer.getFeatures():
        p = f.geometry().asPoint()
        rows.append((f["request_id"], f["created_at"].toString("yyyy-MM-ddTHH:mm:ss.zzz"), f["category"],
                     f["address"], round(p.x(), 7), round(p.y(), 7)))
    return sorted(rows)


def rejected_rows(layer) -> list[tuple]:
    return sorted((str(f["raw_id"]), f["reject_reason"], int(f["row"])) for f in layer.getFeatures())


def boston_with_repeats(tmp_path) -> tuple[str, int]:
    """Boston's export with 15 of its rows repeated at the end (duplicates in later chunks) and 3 dates blanked."""
    frame = pd.read_csv(SHARED / "external_exports" / "boston_case-enquiry.csv", dtype=str, keep_default_na=False)
    frame.loc[[5, 50, 90], "open_dt"] = ""
    repeats = frame.iloc[10:25]
    path = tmp_path / "boston_repeats.csv"
    pd.concat([frame, repeats]).to_csv(path, index=False)
    return str(path), len(repeats)


def test_import_in_chunks_equals_one_pass(run_alg, tmp_path, monkeypatch):
    from civic311.processing.algorithms import importrequests
    from civic311.processing.requestio import RequestStream

    path, repeated = boston_with_repeats(tmp_path)
    chunks = []
    add = RequestStream.add
    monkeypatch.setattr(RequestStream, "add", lambda self, result: (chunks.append(result.read), add(self, result)))
    one = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": str(tmp_path / "one.gpkg"),
                                              "REJECTED": "memory:"})
    assert chunks == [115]
    monkeypatch.setattr(importrequests, "STREAM_CHUNK", 17)
    chunks.clear()
    many = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": str(tmp_path / "many.gpkg"),
                                               "REJECTED": "memory:"})
    assert chunks == [17] * 6 + [13]
    memory = run_alg("civic311:importrequests", {"INPUT": path, "OUTPUT": "memory:", "REJECTED": "memory:"})
    for key in ("FETCHED", "KEPT", "REJECTED_COUNT", "DUPLICATES"):
        assert one[key] == many[key] == memory[key], key
    # the repeated rows are duplicates of rows in the first chunk
    assert one["DUPLICATES"] == repeated == 15 and one["FETCHED"] == 115
    from qgis.core import QgsVectorLayer

    one_layer = QgsVectorLayer(one["OUTPUT"], "one", "ogr")
    many_layer = QgsVectorLayer(many["OUTPUT"], "many", "ogr")
    assert layer_rows(one_layer) == layer_rows(many_layer) == layer_rows(memory["OUTPUT"])
    assert rejected_rows(one["REJECTED"]) == rejected_rows(many["REJECTED"])
    reasons = pd.Series([r[1] for r in rejected_rows(many["REJECTED"])]).value_counts().to_dict()
    assert reasons == {"placeholder location": 19, "duplicate request id": 15, "missing created_at": 3}
    # rejected rows keep their line in the file (1 = the first data row), whichever chunk they were in
    rows = {r[2] for r in rejected_rows(many["REJECTED"]) if r[1] == "missing created_at"}
    assert rows == {6, 51, 91}
    dup_rows = sorted(r[2] for r in rejected_rows(many["REJECTED"]) if r[1] == "duplicate request id")
    assert dup_rows == list(range(101, 116))
    # the spatial index of the streamed GeoPackage holds exactly the kept rows (placeholders deleted from it)
    import sqlite3

    con = sqlite3.connect(many["OUTPUT"].split("|")[0])
    table = many["OUTPUT"].split("layername=")[1]
    indexed = con.execute(f'SELECT count(*) FROM "rtree_{table}_geom"').fetchone()[0]
    fids = {r[0] for r in con.execute(f'SELECT fid FROM "{table}"')}
    in_index = {r[0] for r in con.execute(f'SELECT id FROM "rtree_{table}_geom"')}
    con.close()
    assert indexed == many["KEPT"] and in_index == fids


def test_seen_ids_find_repeats_across_chunks_exactly():
    from civic311.processing.core.normalise import SeenIds

    rng = np.random.default_rng(5)
    ids = np.array([f"SR{i:09d}" for i in rng.integers(0, 60_000, 100_000)], dtype=object)
    seen = SeenIds()
    repeat = np.zeros(len(ids), dtype=bool)
    for lo in range(0, len(ids), 7_000):
        part = ids[lo:lo + 7_000]
        first_here = ~pd.Series(part).duplicated().to_numpy()
        h1, h2 = seen.hashes(part[first_here])
        earlier = seen.seen(h1, h2)
        repeat[lo + np.flatnonzero(first_here)[earlier]] = True
        repeat[lo + np.flatnonzero(~first_here)] = True
        seen.add(h1[~earlier], h2[~earlier])
    np.testing.assert_array_equal(repeat, pd.Series(ids).duplicated().to_numpy())
    assert len(seen) == len(set(ids.tolist()))
    assert len(seen.runs) <= 5  # runs merge as they grow


def test_fetch_in_chunks_equals_one_pass(run_alg, http_server, tmp_path, monkeypatch):
    from civic311.processing.algorithms import fetchrequests

    faulty = Portal(duplicate_across_pages=True)
    one = fetch(run_alg, http_server(faulty.handle), tmp_path / "a", PAGE_SIZE=40)
    monkeypatch.setattr(fetchrequests, "STREAM_CHUNK", 25)
    faulty = Portal(duplicate_across_pages=True)
    many = fetch(run_alg, http_server(faulty.handle), tmp_path / "b", PAGE_SIZE=40)
    check_equation(many)
    for key in ("FETCHED", "KEPT", "REJECTED_COUNT", "DUPLICATES"):
        assert one[key] == many[key], key
    assert many["DUPLICATES"] > 0
    assert layer_rows(one["OUTPUT"]) == layer_rows(many["OUTPUT"])
    assert rejected_rows(one["REJECTED"]) == rejected_rows(many["REJECTED"])


def test_fetch_keeps_a_named_field_missing_from_the_first_chunk(run_alg, http_server, tmp_path, monkeypatch):
    """Socrata leaves out keys whose value is null: the X/Y fields FIELD_MAP names are absent from the first
    chunk when its rows all have latitude/longitude. Regression: the state-plane row in a later chunk lost its
    location; and a named field the portal never returns is reported."""
    import json

    from test_fetch_import import CHICAGO_MAP

    from civic311.processing.algorithms import fetchrequests

    monkeypatch.setattr(fetchrequests, "STREAM_CHUNK", 25)
    mapping = {**json.loads(CHICAGO_MAP), "descriptor": "no_such_field"}
    res = fetch(run_alg, http_server(Portal().handle), tmp_path, PAGE_SIZE=40, FIELD_MAP=json.dumps(mapping))
    out = {f["request_id"]: f for f in res["OUTPUT"].getFeatures()}
    xy = out["SR24-000009"].geometry().asPoint()  # only x_coordinate/y_coordinate, in a later chunk
    assert abs(xy.y() - 41.8506) < 0.001 and abs(xy.x() + 87.6720) < 0.001
    assert any("FIELD_MAP names 'no_such_field', which the portal never returned" in m
               for m in res["_feedback"].messages)


@pytest.mark.parametrize("name", ["losangeles_myla311-2017.csv", "neworleans_socrata-ticket.json",
                                  "newport-ri_seeclickfix-v2-flattened.json", "sanfrancisco_open311-2010.json",
                                  "nyc_erm2nwe9-export.csv"])
def test_real_exports_in_chunks_equal_one_pass(run_alg, tmp_path, monkeypatch, name):
    """Every real export gives the same rows, rejects and counts when cut into chunks of 37 rows (placeholder
    points, swapped pairs, X/Y rows and duplicates spread over many chunks)."""
    from civic311.processing.algorithms import importrequests

    path = str(SHARED / "external_exports" / name)
    params = {"INPUT": path, "OUTPUT": "memory:", "REJECTED": "memory:"}
    if name.startswith("neworleans"):
        params["XY_CRS"] = "EPSG:3452"
    one = run_alg("civic311:importrequests", params)
    monkeypatch.setattr(importrequests, "STREAM_CHUNK", 37)
    many = run_alg("civic311:importrequests", params)
    for key in ("FETCHED", "KEPT", "REJECTED_COUNT", "DUPLICATES"):
        assert one[key] == many[key], key
    assert layer_rows(one["OUTPUT"]) == layer_rows(many["OUTPUT"])
    assert rejected_rows(one["REJECTED"]) == rejected_rows(many["REJECTED"])
