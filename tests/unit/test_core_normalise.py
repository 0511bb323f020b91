# SPDX-License-Identifier: GPL-2.0-or-later
"""Date parsing, text cleaning and row validation of the normalised request schema (pure core)."""

import numpy as np
import pandas as pd
import pytest

from civic311.processing.core.normalise import PLAIN_ISO, _text, detect_schema, normalise, parse_dates, to_numbers

# (raw value, expected naive local time with tz=None, expected with tz="America/Chicago"); None = NaT
CASES = [
    ("2025-02-02T22:09:35", "2025-02-02 22:09:35", "2025-02-02 22:09:35"),  # floating (Socrata): kept as is
    ("2025-02-02T22:09:35.000", "2025-02-02 22:09:35", "2025-02-02 22:09:35"),
    ("2025-02-02 22:09:35", "2025-02-02 22:09:35", "2025-02-02 22:09:35"),
    ("2025-02-02", "2025-02-02 00:00:00", "2025-02-02 00:00:00"),
    ("2025-02-02T22:09", "2025-02-02 22:09:00", "2025-02-02 22:09:00"),
    ("  2025-02-02T22:09:35  ", "2025-02-02 22:09:35", "2025-02-02 22:09:35"),
    ("2025-02-02T22:09:35.123456", "2025-02-02 22:09:35.123456", "2025-02-02 22:09:35.123456"),
    ("2025-02-02T22:09:35Z", "2025-02-02 22:09:35", "2025-02-02 16:09:35"),  # UTC -> Chicago (CST, -6)
    ("2025-02-02T22:09:35.123Z", "2025-02-02 22:09:35.123", "2025-02-02 16:09:35.123"),
    ("2025-02-02T22:09:35-06:00", "2025-02-03 04:09:35", "2025-02-02 22:09:35"),
    ("2025-02-02T22:09:35-0600", "2025-02-03 04:09:35", "2025-02-02 22:09:35"),
    ("2025-02-02T22:09:35+05", "2025-02-02 17:09:35", "2025-02-02 11:09:35"),
    ("2025-07-02 22:09:35+00:00", "2025-07-02 22:09:35", "2025-07-02 17:09:35"),  # CDT, -5
    ("1700000000000", "2023-11-14 22:13:20", "2023-11-14 16:13:20"),  # epoch ms (ArcGIS)
    ("1700000000", "2023-11-14 22:13:20", "2023-11-14 16:13:20"),  # epoch seconds
    ("1700000000.5", "2023-11-14 22:13:20.5", "2023-11-14 16:13:20.5"),
    ("01/15/2019 02:30:00 PM", "2019-01-15 14:30:00", "2019-01-15 14:30:00"),  # Chicago legacy exports
    ("01/15/2019 14:30:00", "2019-01-15 14:30:00", "2019-01-15 14:30:00"),
    ("01/15/2019 14:30", "2019-01-15 14:30:00", "2019-01-15 14:30:00"),
    ("01/15/2019", "2019-01-15 00:00:00", "2019-01-15 00:00:00"),
    ("2019/01/15 14:30:00", "2019-01-15 14:30:00", "2019-01-15 14:30:00"),
    ("31/12/2019 14:30:00", "2019-12-31 14:30:00", "2019-12-31 14:30:00"),
    ("garbage", None, None), ("", None, None), (None, None, None), ("N/A", None, None),
    ("2025-13-45T00:00:00", None, None), ("2025-02-02T25:00:00Z", None, None),
    ("12345", None, None), ("170000000000000", None, None), ("1700000000.", None, None),
    ("x" * 60, None, None),
]


@pytest.mark.parametrize("tz,column", [(None, 1), ("America/Chicago", 2)])
def test_parse_dates_every_shape(tz, column):
    raw = pd.Series([c[0] for c in CASES], dtype=object)
    got = parse_dates(raw, tz)
    assert str(got.dtype) == "datetime64[ns]"
    for case, value in zip(CASES, got):
        expected = case[column]
        assert (pd.isna(value) if expected is None else value == pd.Timestamp(expected)), (case[0], value)


def test_parse_dates_large_mixed_column_matches_row_by_row():
    """The vectorised shape detection (worked in chunks) agrees with parsing each value on its own."""
    rng = np.random.default_rng(3)
    values = pd.Series([CASES[i][0] for i in rng.integers(0, len(CASES), 5000)], dtype=object)
    whole = parse_dates(values, "America/Chicago")
    alone = {c[0]: parse_dates(pd.Series([c[0]], dtype=object), "America/Chicago").iat[0] for c in CASES}
    for value, parsed in zip(values, whole):
        assert (pd.isna(parsed) and pd.isna(alone[value])) or parsed == alone[value]


def _uniform_columns():
    """Columns of one plain ISO shape each, alone and with one value of the same length that is not plain ISO."""
    rng = np.random.default_rng(11)
    stamps = pd.Timestamp("2024-03-10") + pd.to_timedelta(rng.integers(0, 10**8, 300), unit="s")
    odd = {19: ["2024-03-10T01:02:0Z", "2024-03-10T01:02+01", "2024-13-10T01:02:03", "2024/03/10 01:02:03",
                "1710032523000000000", "2024-03-10 01:02:3x", "2024-03-1001:02:03Z", "2024-02-30T01:02:03"],
           23: ["2024-03-10T01:02:03.00Z", "2024-03-10T01:02:0+0100", "2024-03-10T01:02:3-0500",
                "2024-03-10T01:02:03.4+1", "2024-03-10T25:02:03.000", "x024-03-10T01:02:03.000"]}
    for (length, sep), fmt in PLAIN_ISO.items():
        column = [s.strftime(fmt)[:length] for s in stamps]  # %f: six digits, cut to three
        yield column
        for value in odd[length]:
            assert len(value) == length
            yield [*column[:150], value.replace("T", sep, 1), *column[150:]]
        yield [*column[:10], None, *column[10:]]


@pytest.mark.parametrize("tz,naive_utc", [(None, False), ("America/Chicago", False), ("America/Chicago", True)])
def test_parse_dates_uniform_iso_shortcut_matches_the_general_path(monkeypatch, tz, naive_utc):
    """One common plain ISO shape skips the per-value shape matrix: the result (and the count of converted
    instants) is what the general path gives, for pure columns and columns with one odd value of equal length."""
    import civic311.processing.core.normalise as nz

    shortcut = 0
    for column in _uniform_columns():
        values = pd.Series(column, dtype=object)
        fast_report, slow_report = {}, {}
        calls: list = []
        monkeypatch.setattr(nz, "_date_shapes",
                            lambda *a, real=nz._date_shapes, calls=calls, **k: calls.append(1) or real(*a, **k))
        fast = parse_dates(values, tz, report=fast_report, naive_utc=naive_utc)
        shortcut += not calls
        monkeypatch.setattr(nz, "_uniform_iso", lambda values: None)
        slow = parse_dates(values, tz, report=slow_report, naive_utc=naive_utc)
        monkeypatch.undo()
        pd.testing.assert_series_equal(fast, slow)
        assert fast_report == slow_report
    assert shortcut >= 2 * len(PLAIN_ISO)  # each shape, pure and with a NULL, took the shortcut


def test_text_strips_and_drops_placeholders():
    raw = pd.Series([" a ", "N/A", None, "None", "x", 5, float("nan"), "NULL", "Unspecified", " b", "b"],
                    dtype=object)
    assert _text(raw, len(raw)).tolist() == ["a", None, None, None, "x", "5", None, None, None, "b", "b"]


def test_normalise_accounts_for_every_row_with_numeric_and_text_coordinates():
    frame = pd.DataFrame({
        "sr_number": ["A", "B", "C", "D", "E", "A", "F", "G"],
        "created_date": ["2024-01-01T10:00:00"] * 7 + ["not a date"],
        "sr_type": ["Noise", "Noise", "Graffiti", "Noise", "Noise", "Noise", "Noise", "Noise"],
        "status": ["Open"] * 8,
        # floats where the CSV reader could parse them, text where it could not
        "latitude": pd.Series([41.9, "N/A", 0.0, 41.8, -87.6, 41.9, 41.85, 41.8], dtype=object),
        "longitude": pd.Series([-87.6, -87.6, -87.6, -87.7, 41.8, -87.6, -87.65, -87.7], dtype=object),
    })
    result = normalise(frame, detect_schema(list(frame.columns), sample=frame), "test",
                       bbox=(-88.0, 41.6, -87.5, 42.1))
    reasons = dict(zip(result.rejected["raw_id"], result.rejected["reject_reason"]))
    assert reasons == {"B": "missing coordinates", "C": "zero coordinates", "A": "duplicate request id",
                       "G": "unparseable created_at"}
    assert result.kept["request_id"].tolist() == ["A", "D", "E", "F"]
    assert result.counts["swapped"] == 1 and result.kept.loc[2, "lat"] == 41.8 and result.kept.loc[2, "lon"] == -87.6
    assert len(result.kept) + len(result.rejected) == len(frame) and result.duplicates == 1
    assert result.rejected["row"].tolist() == [2, 3, 6, 8]


def test_text_cleans_large_distinct_columns_like_small_ones():
    """Columns of mostly distinct values (ids, timestamps) take a row-by-row path: same result."""
    ids = pd.Series([f" SR{i} " if i % 7 else ("N/A" if i % 2 else None) for i in range(30_000)], dtype=object)
    cleaned = _text(ids, len(ids))
    assert cleaned.iloc[1] == "SR1" and cleaned.iloc[7] is None and cleaned.iloc[14] is None  # 'N/A', None
    assert cleaned.isna().sum() == sum(1 for i in range(30_000) if i % 7 == 0)
    assert cleaned.tolist()[:40] == _text(ids.iloc[:40], 40).tolist()


def test_numbers_read_the_same_whether_or_not_the_column_has_unusable_values():
    clean = pd.Series([" 41.5 ", "-87.6", 3, 2.5, "1e3", "1_000", "nan"], dtype=object)
    expected = [41.5, -87.6, 3.0, 2.5, 1000.0, 1000.0]
    assert to_numbers(clean)[:6].tolist() == expected and np.isnan(to_numbers(clean)[6])
    dirty = pd.Series([*clean.tolist(), None, "", "north", float("nan")], dtype=object)  # the pandas path
    got = to_numbers(dirty)
    assert got[:6].tolist() == expected and np.isnan(got[6:]).all()
