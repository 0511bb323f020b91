# SPDX-License-Identifier: GPL-2.0-or-later
"""The normalised 311 request schema: export-schema detection, field maps, row validation (pure pandas).

Every input row ends up kept, rejected with a reason, or counted as a duplicate of a kept request id:
kept + rejected + duplicates = rows read, always.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .infer import ROLES, FieldMap, classify_channel, infer_roles

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    import pandas as pd

FIELDS = ("request_id", "created_at", "closed_at", "status", "category", "descriptor", "agency", "address",
          "source", "channel", "city_initiated")
TEXT_FIELDS = ("status", "category", "descriptor", "agency", "address")
MAP_KEYS = ROLES  # the roles FIELD_MAP may name
COORDINATE_KEYS = ("latitude", "longitude", "x", "y")
PLACEHOLDERS = {"", "n/a", "na", "null", "none", "unspecified", "nan"}


def _case_variants(word: str) -> set[str]:
    out = {""}
    for ch in word:
        out = {prefix + c for prefix in out for c in {ch.lower(), ch.upper()}}
    return out


# every spelling of every placeholder ("N/A", "Null", "NONE", …): a column is checked with one set lookup per value
PLACEHOLDER_SPELLINGS = frozenset().union(*(_case_variants(p) for p in PLACEHOLDERS))

# Known export schemas: role -> column names (compared after infer.tokens()), hints for the inference only.
SCHEMAS: dict[str, dict[str, list[str]]] = {
    "nyc": {"request_id": ["unique_key"], "created_at": ["created_date"], "closed_at": ["closed_date"],
            "status": ["status"], "category": ["complaint_type", "problem_formerly_complaint_type"],
            "descriptor": ["descriptor", "problem_detail_formerly_descriptor"], "agency": ["agency"],
            "address": ["incident_address"], "latitude": ["latitude", "location_latitude"],
            "longitude": ["longitude", "location_longitude"], "x": ["x_coordinate_state_plane"],
            "y": ["y_coordinate_state_plane"]},
    "chicago": {"request_id": ["sr_number"], "created_at": ["created_date"], "closed_at": ["closed_date"],
                "status": ["status"], "category": ["sr_type"], "descriptor": ["sr_short_code"],
                "agency": ["owner_department", "created_department"], "address": ["street_address"],
                "latitude": ["latitude", "location_latitude"], "longitude": ["longitude", "location_longitude"],
                "x": ["x_coordinate"], "y": ["y_coordinate"]},
    "chicago_legacy": {"request_id": ["service_request_number", "srn"],
                       "created_at": ["creation_date"], "closed_at": ["completion_date"], "status": ["status"],
                       "category": ["type_of_service_request", "type_of_sr"],
                       "descriptor": ["tree_location", "location_of_trees", "most_recent_action"],
                       "address": ["street_address"], "latitude": ["latitude"], "longitude": ["longitude"],
                       "x": ["x_coordinate"], "y": ["y_coordinate"]},
    "sf": {"request_id": ["service_request_id", "caseid"], "created_at": ["requested_datetime", "opened"],
           "closed_at": ["closed_date", "closed"], "status": ["status_description"],
           "category": ["service_name", "category"], "descriptor": ["service_subtype", "request_type"],
           "agency": ["agency_responsible", "responsible_agency"], "address": ["address"],
           "latitude": ["lat", "latitude", "point_latitude"], "longitude": ["long", "longitude", "point_longitude"]},
    "boston": {"request_id": ["case_enquiry_id", "case_id"], "created_at": ["open_dt", "open_date"],
               "closed_at": ["closed_dt", "close_date"], "status": ["case_status"],
               "category": ["type", "service_name", "case_topic"], "descriptor": ["reason"],
               "agency": ["department", "assigned_department"], "address": ["location", "full_address"],
               "latitude": ["latitude"], "longitude": ["longitude"]},
    "open311": {"request_id": ["service_request_id"], "created_at": ["requested_datetime"],
                "status": ["status"], "category": ["service_name"], "descriptor": ["service_code"],
                "agency": ["agency_responsible"], "address": ["address"], "latitude": ["lat"],
                "longitude": ["long"]},
    "seeclickfix": {"request_id": ["id"], "created_at": ["created_at"], "closed_at": ["closed_at"],
                    "status": ["status"], "category": ["request_type_title", "summary"],
                    "descriptor": ["summary"], "address": ["address"], "latitude": ["lat"],
                    "longitude": ["lng"]},
}


def schema_hints() -> dict[str, list[str]]:
    """role -> column names of the known export schemas: hints that raise a name's score in the inference, never a
    time zone or a CRS."""
    hints: dict[str, list[str]] = {}
    for schema in SCHEMAS.values():
        for key in MAP_KEYS:
            hints.setdefault(key, []).extend(schema.get(key, []))
    return hints


class MissingRoleError(ValueError):
    """A role the data must provide (request id, creation date, a location) could not be found."""

    def __init__(self, role: str, message: str):
        super().__init__(message)
        self.role = role


def detect_schema(columns: list[str], overrides: dict[str, str] | None = None, xy_crs: str | None = None,
                  sample: pd.DataFrame | None = None) -> FieldMap:
    """The field map of raw rows: every role inferred from the column names and (when ``sample`` is given)
    values, ``overrides`` on top. ``xy_crs`` is the CRS of projected X/Y columns, given by the user or a preset."""
    import pandas as pd

    frame = sample if sample is not None else pd.DataFrame({c: [] for c in columns}, dtype=object)
    fmap = infer_roles(frame, overrides, schema_hints())
    fmap.xy_crs = xy_crs
    return fmap


def _clean(values: np.ndarray) -> np.ndarray:
    """Non-missing raw values -> stripped text, placeholders as None. All-text input goes through C-level loops
    (strip, and one set lookup per value against every placeholder spelling); Python per row only for the rest."""

    out = np.empty(len(values), dtype=object)
    try:
        out[:] = list(map(str.strip, values))  # raises at the first value that is not text
    except TypeError:
        out[:] = [None if (t := str(v).strip()).lower() in PLACEHOLDERS else t for v in values]
        return out
    if not PLACEHOLDER_SPELLINGS.isdisjoint(out):
        out[[t.lower() in PLACEHOLDERS for t in out]] = None
    return out


def _text(series: pd.Series | None, n: int) -> pd.Series:
    """Stripped text with placeholders ('', 'N/A', 'null', …) as None. Each distinct value is cleaned once:
    categories, statuses and agencies repeat a handful of values over millions of rows; mostly distinct columns
    (ids, timestamps) are cleaned row by row instead of hashed first."""
    import pandas as pd

    if series is None:
        return pd.Series(np.full(n, None, dtype=object))  # (a list of n Nones costs a Python pass)
    values = series.to_numpy(dtype=object)
    if len(values) > 20_000 and len(set(values[:2000].tolist())) > 1000:
        present = ~pd.isna(values)
        if present.all():
            return pd.Series(_clean(values), index=series.index)
        out = np.full(len(values), None, dtype=object)
        out[present] = _clean(values[present])
        return pd.Series(out, index=series.index)
    codes, uniques = pd.factorize(values)
    table = _clean(np.append(np.asarray(uniques, dtype=object), ""))  # the trailing '' cleans to None
    return pd.Series(table[codes], index=series.index)  # code -1 (missing) picks the trailing None


DATE_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%Y/%m/%d %H:%M:%S",
                "%m/%d/%Y at %I:%M%p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %I:%M%p", "%m/%d/%Y %H:%M:%S.%f",
                "%Y/%m/%d %H:%M", "%Y/%m/%d", "%m/%d/%y %H:%M:%S", "%m/%d/%y %H:%M", "%m/%d/%y", "%d-%b-%Y %H:%M:%S",
                "%d-%b-%Y", "%d/%m/%Y %H:%M:%S")
# written with an offset ('2011/06/22 18:55:10 +0000'): converted like ISO instants
AWARE_FORMATS = ("%Y/%m/%d %H:%M:%S %z", "%m/%d/%Y %H:%M:%S %z", "%Y-%m-%d %H:%M:%S %z", "%Y/%m/%d %H:%M %z")
DATEUTIL_LIMIT = 200_000  # distinct values left for the general parser (slow per value): the rest stays NaT


def _date_shapes(values: np.ndarray, chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epoch number, ISO date, ISO with a UTC offset) masks of stripped strings, from a character matrix instead
    of a regular expression per row: -?d{10,13}(.d+)? ; ^dddd-dd-dd ; ISO ending in Z or carrying +/- after the
    date. Worked in chunks so the matrix stays small."""
    n = len(values)
    numeric, iso, aware = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
    for start in range(0, n, chunk):
        short = start + np.flatnonzero(lens[start:start + chunk] <= 40)  # longer text is no date of these shapes
        if not len(short):
            continue
        length = lens[short]
        width = max(int(length.max()), 12)
        c = np.array(values[short].tolist(), dtype=f"U{width}").view(np.uint32).reshape(len(short), width)
        digit = (c >= 48) & (c <= 57)
        rows = np.arange(len(short))
        neg = c[:, 0] == ord("-")
        body_digit = np.where(neg[:, None], np.roll(digit, -1, axis=1), digit)
        body_len = length - neg
        lead = np.where(body_digit.all(axis=1), width, body_digit.argmin(axis=1))  # leading digits after a minus
        dot_at = np.minimum(lead + neg, width - 1)
        fraction = (c[rows, dot_at] == ord(".")) & (body_len > lead + 1) & \
            (body_digit.sum(axis=1) == body_len - 1)
        numeric[short] = (lead >= 10) & (lead <= 13) & ((lead == body_len) | fraction)
        is_iso = (length >= 10) & digit[:, [0, 1, 2, 3, 5, 6, 8, 9]].all(axis=1) & (c[:, 4] == ord("-")) & \
            (c[:, 7] == ord("-"))
        offset = ((c[:, 11:] == ord("+")) | (c[:, 11:] == ord("-"))).any(axis=1)
        zulu = (c[rows, length - 1] == ord("Z")) & digit[rows, np.maximum(length - 2, 0)]
        iso[short] = is_iso
        aware[short] = is_iso & (offset | zulu)
    return numeric, iso, aware


# one common shape of plain ISO timestamps (length, separator) -> its format: Socrata's floating timestamps, most
# CSV exports
PLAIN_ISO = {(19, "T"): "%Y-%m-%dT%H:%M:%S", (19, " "): "%Y-%m-%d %H:%M:%S", (23, "T"): "%Y-%m-%dT%H:%M:%S.%f",
             (23, " "): "%Y-%m-%d %H:%M:%S.%f"}


def _uniform_iso(values: np.ndarray) -> np.ndarray | None:
    """Naive datetime64 of stripped date text when every value has the same plain ISO shape (no offset, no 'Z'),
    or None (then the general path classifies each value). The same values the general path would read as
    plain ISO, parsed by the same pandas parser: only the character matrix of every value is saved."""
    import pandas as pd

    if not len(values) or not isinstance(values[0], str):
        return None
    fmt = PLAIN_ISO.get((len(values[0]), values[0][10:11]))
    if fmt is None:
        return None
    try:
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    except TypeError:
        return None
    if (lengths != len(values[0])).any():
        return None
    head = values.astype("U10").view(np.uint32).reshape(len(values), 10)  # the date part: dddd-dd-dd
    if not (((head >= 48) & (head <= 57))[:, [0, 1, 2, 3, 5, 6, 8, 9]].all() and (head[:, [4, 7]] == 45).all()):
        return None
    try:
        parsed = pd.to_datetime(pd.Series(values), format=fmt, errors="raise")
    except (ValueError, TypeError, OverflowError):
        return None
    # an offset or 'Z' anywhere gives a zone-aware or object column (pandas 1 reads any ISO shape here)
    return parsed.to_numpy() if parsed.dtype == np.dtype("datetime64[ns]") else None


def _iso_format() -> dict:
    """pandas 2 guesses one format from the first value and turns every other shape into NaT unless told the
    values are ISO 8601 of any shape; pandas 1 parses each ISO value on its own already."""
    import pandas as pd

    return {"format": "ISO8601"} if int(pd.__version__.split(".")[0]) >= 2 else {}


def parse_dates(values: pd.Series, tz: str | None = None, cleaned: bool = False,
                report: dict | None = None, naive_utc: bool = False) -> pd.Series:
    """Timestamps in the usual 311 formats -> naive datetime64[ns] (NaT where unparseable).

    ISO 8601 with an offset (Open311, SeeClickFix, 'Z'), other text with an offset and epoch seconds or
    milliseconds (ArcGIS) are instants: converted to the source's local time zone ``tz`` (UTC when unknown).
    Timestamps without an offset (Socrata, CKAN, CSV exports) are kept as written (local time), unless
    ``naive_utc`` (the file shows they are UTC). A column mixing both never raises. ``cleaned``: the values
    already went through _text. ``report['instants']`` counts the values that were converted."""
    import pandas as pd

    text = values if cleaned else _text(values, len(values))
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    todo = text.notna().to_numpy()
    if not todo.any():
        return out
    instants = 0

    def local(stamps: pd.Series) -> np.ndarray:  # tz-aware (UTC) -> naive local wall time
        return stamps.dt.tz_convert(tz or "UTC").dt.tz_localize(None).to_numpy()

    def naive(stamps: pd.Series) -> np.ndarray:
        nonlocal instants
        if not naive_utc:
            return stamps.to_numpy()
        instants += int(stamps.notna().sum())
        return local(stamps.dt.tz_localize("UTC"))

    where = np.flatnonzero(todo)
    uniform = _uniform_iso(text.to_numpy()[where])
    if uniform is not None:
        out.iloc[where] = naive(pd.Series(uniform))
        if report is not None:
            report["instants"] = report.get("instants", 0) + instants
        return out
    numeric, iso, aware = _date_shapes(text.to_numpy()[where])
    instants += int(numeric.sum() + aware.sum())
    if numeric.any():
        sub = text.iloc[where[numeric]]
        ms = pd.to_numeric(sub).astype(float)
        ms = ms.where(ms.abs() > 1e11, ms * 1000)  # seconds -> milliseconds
        out.iloc[where[numeric]] = local(pd.to_datetime(ms, unit="ms", utc=True))
    plain = iso & ~aware
    if plain.any():
        sub = text.iloc[where[plain]]
        out.iloc[where[plain]] = naive(pd.to_datetime(sub, errors="coerce", **_iso_format()))
    if aware.any():
        sub = text.iloc[where[aware]]
        fixed = sub.str.replace(r"([+-]\d{2})(\d{2})$", r"\1:\2", regex=True)
        fixed = fixed.str.replace(r"([ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?[+-]\d{2})$", r"\1:00", regex=True)
        out.iloc[where[aware]] = local(pd.to_datetime(fixed, errors="coerce", utc=True, **_iso_format()))
    rest = pd.Series(False, index=values.index)
    rest.iloc[where[~(numeric | iso)]] = True
    for fmt in AWARE_FORMATS + DATE_FORMATS:
        if not rest.any():
            break
        is_aware = fmt in AWARE_FORMATS
        if is_aware and not text[rest].str.contains(r"[+-]\d{4}$").any():
            continue
        parsed = pd.to_datetime(text[rest], format=fmt, errors="coerce", utc=is_aware)
        ok = parsed.notna()
        if ok.any():
            if is_aware:
                instants += int(ok.sum())
            out[parsed[ok].index] = local(parsed[ok]) if is_aware else naive(parsed[ok])
            rest[parsed[ok].index] = False
    if rest.any():
        instants += _parse_rest(text[rest], out, tz, naive_utc)
    if report is not None:  # instants were converted: the caller warns when no zone is known
        report["instants"] = report.get("instants", 0) + instants
    return out


def _parse_rest(text: pd.Series, out: pd.Series, tz: str | None, naive_utc: bool) -> int:
    """Date text of no common format ('Jan 5, 2019 3:04 PM', '2019-01-05T15:04:05 EST'…): each distinct value
    that looks like a date goes through dateutil (a pandas dependency) once; values with a zone are converted to
    ``tz``; at most DATEUTIL_LIMIT distinct values (the rest stay NaT). Returns how many values were converted."""
    import pandas as pd
    from dateutil import parser  # type: ignore[import-untyped]

    from .infer import DATE_LIKE

    uniques = pd.unique(text[text.str.match(DATE_LIKE)].to_numpy())[:DATEUTIL_LIMIT]
    table, converted = {}, set()
    for value in uniques:
        try:
            stamp = pd.Timestamp(parser.parse(value))
        except (ValueError, OverflowError, TypeError):
            continue
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert(tz or "UTC").tz_localize(None)
            converted.add(value)
        elif naive_utc:
            stamp = stamp.tz_localize("UTC").tz_convert(tz or "UTC").tz_localize(None)
            converted.add(value)
        table[value] = stamp
    if not table:
        return 0
    mapped = text.map(table)
    ok = mapped.notna()
    out[mapped[ok].index] = pd.to_datetime(mapped[ok]).to_numpy()
    return int(text.isin(converted).sum())


@dataclass
class Normalised:
    kept: pd.DataFrame  # FIELDS + lon, lat (EPSG:4326) or x, y (XY_CRS, column use_xy True)
    rejected: pd.DataFrame  # raw_id, reject_reason, row
    duplicates: int
    read: int
    unread: dict[str, int] = field(default_factory=dict)  # role -> rows whose value could not be read
    counts: dict[str, int] = field(default_factory=dict)  # what the warnings count: swapped, instants, closed_early
    area: tuple[float, float, float, float] | None = None  # the reference area swapped pairs were judged against


def row_warnings(counts: dict[str, int], tz: str | None) -> list[str]:
    """The warnings of normalise, from its counts (summed over the chunks of a stream)."""
    warnings = []
    if counts.get("swapped"):
        warnings.append(f"{counts['swapped']} row(s) had latitude and longitude swapped; they were swapped back.")
    if counts.get("instants") and not tz:
        warnings.append(f"{counts['instants']} date value(s) are instants (with an offset, 'Z', epoch numbers, or "
                        "UTC times as the file shows) and no time zone is known: they are kept in UTC. Set TIMEZONE "
                        "to the city's zone to get local times.")
    if counts.get("closed_early"):
        warnings.append(f"{counts['closed_early']} kept request(s) were closed before they were created "
                        "(kept as published).")
    return warnings


class SeenIds:
    """The request ids already kept, for de-duplication across the chunks of a stream without holding the ids:
    two independent 64-bit hashes per id (16 bytes; ids that differ share both hashes with a probability
    around 1e-24 even at 40 million ids), kept in sorted runs that merge as they grow (log-structured). A bitmap
    of 2^30 bits on the first hash (128 MB of address space, touched only where ids fall) answers "never seen"
    for nearly every new id; only ids whose bit is set (a repeat, or 1 in 27 new ids at 40 million) are looked
    up in the runs."""

    KEYS = ("civic311-ids-one", "civic311-ids-two")  # pandas' SipHash keys: 16 bytes each
    BITS = 30

    def __init__(self):
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []
        self.bitmap = np.zeros(1 << (self.BITS - 3), dtype=np.uint8)  # calloc: pages appear when written

    def hashes(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from pandas.util import hash_array

        ids = np.asarray(ids, dtype=object)
        return (hash_array(ids, hash_key=self.KEYS[0], categorize=False),
                hash_array(ids, hash_key=self.KEYS[1], categorize=False))

    def _slots(self, h1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        slot = (h1 >> np.uint64(64 - self.BITS)).astype(np.int64)
        return slot >> 3, np.left_shift(1, slot & 7).astype(np.uint8)

    def seen(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """True where an id with both hashes was added before."""
        found = np.zeros(len(h1), dtype=bool)
        byte, bit = self._slots(h1)
        maybe = np.flatnonzero(self.bitmap[byte] & bit)
        q1, q2 = h1[maybe], h2[maybe]
        for r1, r2 in self.runs:
            at = np.minimum(np.searchsorted(r1, q1), len(r1) - 1)
            hit = r1[at] == q1
            found[maybe[hit & (r2[at] == q2)]] = True
            # equal first hashes of different ids (about one pair in 1e19): look along the run of equals
            for i in np.flatnonzero(hit & ~found[maybe]):
                j = at[i]
                while j < len(r1) and r1[j] == q1[i]:
                    found[maybe[i]] |= r2[j] == q2[i]
                    j += 1
        return found

    def add(self, h1: np.ndarray, h2: np.ndarray) -> None:
        order = np.argsort(h1, kind="stable")
        h1, h2 = h1[order], h2[order]
        byte, bit = self._slots(h1)  # the bitmap byte grows with h1: sorted too, so bits of one byte are adjacent
        starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]]) if len(byte) else np.zeros(0, dtype=np.int64)
        if len(starts):  # bits of one byte OR-ed together (ufunc.at is slow)
            self.bitmap[byte[starts]] |= np.bitwise_or.reduceat(bit, starts)
        self.runs.append((h1, h2))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (a1, a2), (b1, b2) = self.runs[-2], self.runs.pop()
            merged = np.concatenate([a1, b1])
            order = np.argsort(merged, kind="stable")  # two sorted runs: a linear merge
            self.runs[-1] = (merged[order], np.concatenate([a2, b2])[order])

    def __len__(self) -> int:
        return sum(len(r[0]) for r in self.runs)

    def clear(self) -> None:
        """Let the memory go (the stream has ended)."""
        self.runs = []
        self.bitmap = np.zeros(0, dtype=np.uint8)


def _num(series: pd.Series | None, n: int) -> np.ndarray:
    return np.full(n, np.nan) if series is None else to_numbers(series)


def to_numbers(series: pd.Series) -> np.ndarray:
    """Numbers (JSON numbers or numeric text) as floats; anything else is NaN. One C pass when every value reads
    as a number, which is the common case for coordinates; otherwise pandas reads what it can, and the few values
    it cannot are tried one by one with Python's float(), so that text reads the same on either path."""
    import pandas as pd

    values = series.to_numpy()
    try:
        return values.astype(float)
    except (TypeError, ValueError):
        pass
    out = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    for i in np.flatnonzero(np.isnan(out)).tolist():
        value = values[i]
        if isinstance(value, str) and value.strip():  # blanks and None are missing: no exception raised per row
            try:
                out[i] = float(value)
            except ValueError:
                pass  # not a number: NaN
    return out


def _plausible(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    return np.isfinite(lat) & np.isfinite(lon) & (lat != 0) & (lon != 0) & (np.abs(lat) <= 90) & \
        (np.abs(lon) <= 180)


def text_points(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) from text cells holding '(lat, lon)' (anywhere in the cell: SF311's Point, Socrata CSV location
    cells spanning lines) or WKT 'POINT (lon lat)'; NaN elsewhere."""
    from .infer import LATLON_TEXT, WKT_POINT

    text = values.astype(object).where(values.notna(), "").astype(str)
    pair = text.str.extract(LATLON_TEXT)
    wkt = text.str.extract(WKT_POINT)
    lat = pair[0].astype(float).to_numpy()
    lon = pair[1].astype(float).to_numpy()
    use_wkt = np.isnan(lat) & wkt[0].notna().to_numpy()
    lat[use_wkt] = wkt.loc[use_wkt, 1].astype(float).to_numpy()
    lon[use_wkt] = wkt.loc[use_wkt, 0].astype(float).to_numpy()
    return lat, lon


def normalise(frame: pd.DataFrame, fmap: FieldMap, source: str,
              bbox: tuple[float, float, float, float] | None = None, categories: list[str] | None = None,
              date_range: tuple | None = None, seen: SeenIds | None = None, first_row: int = 1,
              area: tuple[float, float, float, float] | None = None) -> Normalised:
    """Validate and normalise raw rows. ``bbox`` (lon/lat) is the area the requests must lie in; without it
    only impossible coordinates are rejected and swapped pairs are detected against ``area`` (the previous
    chunk's, in a stream) or the data's own area (the median point +- 1.5 degrees).

    In a stream of chunks, ``seen`` holds the ids kept by earlier chunks (their rows are duplicates, and the
    ids kept here are added to it) and ``first_row`` is the number of this chunk's first row in the input.
    ``categories`` and ``date_range`` ([start, end) naive datetimes) filter rows the portal could not filter
    itself; rows they leave out are listed as rejected with the reason, never dropped silently.

    The location of a row is the first usable one of: the latitude/longitude columns, further pairs
    (``fmap.pairs``), text points (``fmap.points``), projected X/Y with ``fmap.xy_crs``, and — with an XY CRS —
    latitude/longitude values out of range read as X/Y (some portals publish state-plane numbers there)."""
    import pandas as pd

    n = len(frame)
    cols = fmap.columns

    def col(key):
        return frame[cols[key]] if key in cols else None

    if "request_id" not in cols:
        raise MissingRoleError("request_id", "No request id column found.")
    if "created_at" not in cols:
        raise MissingRoleError("created_at", "No creation date column found.")
    has_latlon = "latitude" in cols and "longitude" in cols
    has_xy = "x" in cols and "y" in cols
    if not has_latlon and not has_xy and not fmap.pairs and not fmap.points:
        raise MissingRoleError("location", "No coordinates found.")
    reason = np.full(n, None, dtype=object)
    usable = np.ones(n, dtype=bool)  # rows without a reject reason yet: the first reason found is kept
    unread: dict[str, int] = {}

    def reject(mask, why):
        mask = np.asarray(mask, dtype=bool) & usable
        reason[mask] = why
        usable[mask] = False

    rid = _text(col("request_id"), n)
    reject(rid.isna(), "missing request id")
    unread["request_id"] = int(rid.isna().sum())
    created_raw = _text(col("created_at"), n)
    instants: dict = {}
    naive_utc = fmap.naive_utc is not None
    created = parse_dates(created_raw, fmap.tz, cleaned=True, report=instants, naive_utc=naive_utc)
    reject(created_raw.isna(), "missing created_at")
    reject(created.isna(), "unparseable created_at")
    unread["created_at"] = int(created.isna().sum())
    if date_range is not None:
        start, end = (pd.Timestamp(d) for d in date_range)
        reject(created.notna() & ((created < start) | (created >= end)), "outside the date range")
    category = _text(col("category"), n)
    for extra in fmap.fallbacks.get("category", []):  # row by row: an empty first column takes the next one
        if category.isna().any():
            category = category.where(category.notna(), _text(frame[extra], n))
    unread["category"] = int(category.isna().sum()) if "category" in cols else n
    if categories:
        wanted = {c.strip().lower() for c in categories}
        reject(~category.map(lambda v: v is not None and v.lower() in wanted).to_numpy(dtype=bool),
               "category not requested")
    if "closed_at" in cols:
        closed_raw = _text(col("closed_at"), n)
        closed = parse_dates(closed_raw, fmap.tz, cleaned=True, report=instants, naive_utc=naive_utc)
        unread["closed_at"] = int((closed_raw.notna() & closed.isna()).sum())
    else:
        closed = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    status = _text(col("status"), n)
    if fmap.closed_when_status and fmap.closed_from and "closed_at" not in cols:
        is_closed = status.str.lower().eq(fmap.closed_when_status).fillna(False)
        closed = closed.where(~is_closed, parse_dates(frame[fmap.closed_from], fmap.tz, report=instants,
                                                      naive_utc=naive_utc))
    channel = _text(col("channel"), n)
    city_initiated = classify_channel(channel)

    lat, lon = (_num(col("latitude"), n), _num(col("longitude"), n)) if has_latlon else \
        (np.full(n, np.nan), np.full(n, np.nan))
    raw_lat, raw_lon = lat.copy(), lon.copy()
    zero_ll = ((lat == 0) | (lon == 0)) & has_latlon
    for more in [*fmap.pairs, *fmap.points]:  # further sources, per row, where the first gives nothing usable
        empty = ~_plausible(lat, lon)
        if not empty.any():
            break
        if isinstance(more, tuple):
            la, lo = _num(frame[more[0]], n), _num(frame[more[1]], n)
        else:
            la, lo = text_points(frame[more])
        fill = empty & _plausible(la, lo)
        lat, lon = np.where(fill, la, lat), np.where(fill, lo, lon)
        zero_ll |= empty & ((la == 0) | (lo == 0))
    lat = np.where(lat == 0, np.nan, lat)
    lon = np.where(lon == 0, np.nan, lon)
    x, y = (_num(col("x"), n), _num(col("y"), n)) if has_xy else (np.full(n, np.nan), np.full(n, np.nan))
    if fmap.xy_crs:  # latitude/longitude holding projected numbers are X/Y (New Orleans' state plane)
        projected = np.isfinite(raw_lat) & np.isfinite(raw_lon) & ((np.abs(raw_lat) > 90) | (np.abs(raw_lon) > 180))
        take = projected & ~_plausible(lat, lon) & ~(np.isfinite(x) & np.isfinite(y) & (x != 0) & (y != 0))
        x, y = np.where(take, raw_lon, x), np.where(take, raw_lat, y)
    xy_ok = np.isfinite(x) & np.isfinite(y) & (x != 0) & (y != 0)
    use_xy = ~_plausible(lat, lon) & xy_ok & bool(fmap.xy_crs)
    swapped = 0
    valid = np.isfinite(lat) & np.isfinite(lon)
    in_range = valid & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    area = bbox or area
    if area is None and in_range.sum() >= 10:
        mlon, mlat = np.median(lon[in_range]), np.median(lat[in_range])
        area = (mlon - 1.5, mlat - 1.5, mlon + 1.5, mlat + 1.5)
    if area is not None:
        inside = (lon >= area[0]) & (lon <= area[2]) & (lat >= area[1]) & (lat <= area[3])
        swap_inside = (lat >= area[0]) & (lat <= area[2]) & (lon >= area[1]) & (lon <= area[3])
    else:
        inside = in_range
        swap_inside = np.zeros(n, dtype=bool)
    fix = valid & ~inside & swap_inside & ~use_xy
    if not in_range.any():  # no reference area at all: obvious swaps only
        fix |= valid & (np.abs(lat) > 90) & (np.abs(lon) <= 90)
    lat, lon = np.where(fix, lon, lat), np.where(fix, lat, lon)
    swapped = int(fix.sum())
    in_range = np.isfinite(lat) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    if xy_ok.any() and not fmap.xy_crs:
        reject(~in_range & xy_ok, "only projected X/Y coordinates (set XY_CRS)")
    reject(valid & ~in_range & ~use_xy, "coordinates out of range")
    if bbox is not None:
        outside = np.isfinite(lat) & ~((lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3]))
        reject(outside & ~use_xy, "outside the requested area")
    missing_geo = ~(np.isfinite(lat) & np.isfinite(lon)) & ~use_xy
    reject(missing_geo & (zero_ll | ((x == 0) | (y == 0))), "zero coordinates")
    reject(missing_geo, "missing coordinates")
    unread["location"] = int((~(in_range | use_xy)).sum())

    ok = usable
    # a duplicate is a usable row whose request id an earlier usable row already has
    dup = np.zeros(n, dtype=bool)
    ok_rows = np.flatnonzero(ok)
    dup[ok_rows] = rid[ok].duplicated(keep="first").to_numpy()
    if seen is not None:  # ids kept by earlier chunks
        ids = rid.to_numpy()[ok_rows]
        h1, h2 = seen.hashes(ids)
        dup[ok_rows] |= seen.seen(h1, h2)
        fresh = ~dup[ok_rows]
        seen.add(h1[fresh], h2[fresh])
    bad = np.flatnonzero(~ok | dup)
    rejected = pd.DataFrame({"raw_id": rid.to_numpy()[bad], "row": bad + first_row,
                             "reject_reason": np.where(dup, "duplicate request id", reason)[bad]},
                            columns=["raw_id", "reject_reason", "row"])
    keep = ok & ~dup
    counts = {"swapped": swapped, "instants": int(instants.get("instants", 0)),
              "closed_early": int(((closed < created).to_numpy() & keep).sum())}
    columns = {"request_id": rid, "created_at": created, "closed_at": closed, "status": status,
               "category": category, "descriptor": _text(col("descriptor"), n), "agency": _text(col("agency"), n),
               "address": _text(col("address"), n), "source": source, "channel": channel,
               "city_initiated": city_initiated, "lon": lon, "lat": lat, "x": x, "y": y, "use_xy": use_xy}
    # only the kept rows are assembled: one frame of the survivors instead of a full copy and then a subset
    every = bool(keep.all())
    kept = pd.DataFrame({name: value if np.isscalar(value) or every else np.asarray(value)[keep]
                         for name, value in columns.items()}, index=pd.RangeIndex(int(keep.sum())), copy=False)
    return Normalised(kept, rejected, int(dup.sum()), n, unread, counts, area)
