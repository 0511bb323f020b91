# SPDX-License-Identifier: GPL-2.0-or-later
"""Column-role inference, date formats of real exports, channels and placeholder points (pure core)."""

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from civic311.processing.core.infer import classify_channel, infer_roles, placeholder_points, tokens
from civic311.processing.core.normalise import parse_dates
from conftest import TEST_DATA

FORMATS = json.loads((TEST_DATA / "imports" / "date_formats.json").read_text())


def local(moment: datetime, tz: str | None) -> pd.Timestamp:
    """An aware datetime as naive wall time in ``tz`` (UTC when None), by the standard library."""
    return pd.Timestamp(moment.astimezone(ZoneInfo(tz or "UTC")).replace(tzinfo=None))


def expected(kind: str, value: str, tz: str | None) -> pd.Timestamp:
    if kind in ("la_ampm", "sf_ampm"):
        return pd.Timestamp(datetime.strptime(value, "%m/%d/%Y %I:%M:%S %p"))  # floating: as written
    if kind == "scf_at":
        return pd.Timestamp(datetime.strptime(value, "%m/%d/%Y at %I:%M%p"))
    if kind == "scf_raw":
        return local(datetime.strptime(value, "%Y/%m/%d %H:%M:%S %z"), tz)
    if kind == "newport_ms":
        return local(datetime.fromtimestamp(int(value) / 1000, timezone.utc), tz)
    if kind == "newport_s":
        return local(datetime.fromtimestamp(int(value), timezone.utc), tz)
    if kind == "nyc_iso_t":
        return pd.Timestamp(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f"))
    raise AssertionError(kind)


@pytest.mark.parametrize("tz", [None, "America/Los_Angeles", "America/New_York"])
@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_real_export_date_format(kind, tz):
    values = FORMATS[kind]
    got = parse_dates(pd.Series(values, dtype=object), tz)
    assert [expected(kind, v, tz) for v in values] == list(got)


def test_a_column_mixing_aware_naive_and_odd_shapes_never_raises():
    values = pd.Series(["2024-01-01 10:00", "2024-01-01T10:00:00Z", "01/02/2024 at 10:00AM",
                        "2024/01/01 10:00:00 +0000", "Jan 5, 2019 3:04 PM", "2019-01-05T15:04:05-05:00",
                        "1704103200", "nonsense", None], dtype=object)
    got = parse_dates(values, "America/Chicago")
    assert list(got[:7]) == [pd.Timestamp("2024-01-01 10:00"), pd.Timestamp("2024-01-01 04:00"),
                             pd.Timestamp("2024-01-02 10:00"), pd.Timestamp("2024-01-01 04:00"),
                             pd.Timestamp("2019-01-05 15:04"), pd.Timestamp("2019-01-05 14:04:05"),
                             pd.Timestamp("2024-01-01 04:00")]
    assert got[7:].isna().all()


def test_naive_utc_times_are_converted_when_the_file_shows_them():
    got = parse_dates(pd.Series(["06/22/2011 at 06:55PM"]), "America/Los_Angeles", naive_utc=True)
    assert got.iat[0] == pd.Timestamp("2011-06-22 11:55")


@pytest.mark.parametrize("name,canon", [("SRNumber", "sr_number"), ("CaseID", "case_id"),
                                        ("X Coordinate (State Plane)", "x_coordinate_state_plane"),
                                        ("request_type.title", "request_type_title"), ("RequestType", "request_type"),
                                        ("P_Creation Date", "p_creation_date")])
def test_tokens(name, canon):
    assert tokens(name) == canon


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})


def test_request_id_needs_an_id_name_and_mostly_unique_values():
    n = 40
    f = frame(ticket_type=["A", "B"] * 20, TicketNo=[f"T{i}" for i in range(n)], row=list(range(n)),
              created=["2024-01-01"] * n)
    assert infer_roles(f).columns["request_id"] == "TicketNo"
    f2 = frame(ticket_id=["T1"] * n, created=["2024-01-01"] * n)  # an id name, but one value
    assert "request_id" not in infer_roles(f2).columns


def test_created_is_the_earliest_almost_always_present_date_column():
    n = 30
    f = frame(id=[str(i) for i in range(n)],
              reported_date=["2024-01-02 10:00"] * n,  # a day after opened_date in every row
              opened_date=["2024-01-01 10:00"] * n,
              created_on=["2023-12-01"] * 3 + [None] * (n - 3),  # earliest, but rarely present
              target_date=["2023-01-01"] * n)  # a target is never the creation
    fmap = infer_roles(f)
    assert fmap.columns["created_at"] == "opened_date"
    assert "earliest" in fmap.why["created_at"]


def test_numbers_are_dates_only_in_a_date_named_column():
    n = 20
    ids = [str(1504114729000 + i) for i in range(n)]  # look like epoch milliseconds
    f = frame(case_number=ids, when_created=ids)
    fmap = infer_roles(f)
    assert fmap.columns["request_id"] == "case_number" and fmap.columns["created_at"] == "when_created"


def test_locations_pairs_points_and_xy():
    f = frame(id=["1", "2", "3"], created=["2024-01-01"] * 3, Lat=["41.9", "", ""], Lng=["-87.6", "", ""],
              location_latitude=["", "41.8", ""], location_longitude=["", "-87.7", ""],
              Point=["", "", "(41.7, -87.5)"], XCoord=["1160000", "1160010", "1160020"],
              YCoord=["1900000", "1900010", "1900020"])
    fmap = infer_roles(f)
    assert (fmap.columns["latitude"], fmap.columns["longitude"]) == ("Lat", "Lng")
    assert fmap.pairs == [("location_latitude", "location_longitude")]
    assert fmap.points == ["Point"]
    assert (fmap.columns["x"], fmap.columns["y"]) == ("XCoord", "YCoord")


def test_category_candidates_in_order():
    f = frame(id=["1", "2", "3", "4"], created=["2024-01-01"] * 4, summary=["a", "b", "c", "d"],
              request_type_title=["Pothole", None, "Pothole", "Graffiti"], location_type=["x", "y", "x", "y"])
    fmap = infer_roles(f)
    assert fmap.columns["category"] == "request_type_title" and fmap.fallbacks["category"] == ["summary"]


def test_classify_channel():
    values = pd.Series(["Constituent Call", "Citizens Connect App", "City Worker App", "Employee Generated",
                        "Internal", "PHONE", "ONLINE", "UNKNOWN", None, "Driver Self Report", "Self Service",
                        "Integrated Agency", "Voice In"], dtype=object)
    got = classify_channel(values).to_numpy()
    want = np.array([0, 0, 1, 1, 1, 0, 0, np.nan, np.nan, 1, 0, 1, 0])
    np.testing.assert_array_equal(got, want)  # NaN (unknown) where the channel says neither, or is missing


def test_placeholder_points():
    city = ["INTERSECTION of Charles River Plz & Cambridge St  Boston  MA", "20 Washington St  Boston  MA",
            "INTERSECTION of Meridian St & Condor St  Boston  MA", "40 Battery St  Boston  MA",
            "INTERSECTION of High St & Congress St  Boston  MA", "INTERSECTION of Lewis St & North St  Boston  MA"]
    building = ["12 Main St Boston MA", "12 MAIN STREET, Boston, MA", "12 Main St. Boston MA"] * 3
    estate = ["70 Cameron Way Boston MA", "31 Cameron Way Boston MA", "10 Nichols Way Boston MA",
              "1008 Fitzgerald Ave Boston MA", "71 Nichols Way Boston MA", "125 Cameron Way Boston MA"]
    others = [f"{i} Elm St Boston MA" for i in range(40)]
    lon = np.array([1.0] * 6 + [2.0] * 9 + [3.0] * 6 + list(np.arange(40) + 10.0))
    lat = np.array([5.0000001] * 5 + [5.0] + [5.0] * 9 + [5.0] * 6 + [5.0] * 40)  # 1e-7 apart: one point
    mask, points = placeholder_points(lon, lat, np.array(city + building + estate + others, dtype=object))
    assert mask.tolist() == [True] * 6 + [False] * 55
    assert points == [(1.0, 5.0, 6, 6)]
    assert not placeholder_points(lon, lat, None)[0].any()
