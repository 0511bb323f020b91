# SPDX-License-Identifier: GPL-2.0-or-later
"""Which column of an unknown 311 export plays which normalised role, inferred from each column's name *and* its
values (pure pandas). Known city schemas are hints that raise a name's score; they never decide a time zone or a
CRS, and no role is taken from a column whose values contradict it.

Each role is inferred on its own:
- request_id: an id-like name, values mostly unique and present;
- created_at / closed_at: a creation/closing name and values that parse as dates; of several creation
  candidates, the one almost always present that is earliest in most rows;
- category (with row-by-row fallback columns), descriptor, status, agency, address, channel: names, and text
  values (few distinct values for the categorical ones);
- location, tried per row in this order: latitude/longitude pairs, coordinate pairs from nested objects, text
  points '(lat, lon)' or 'POINT (lon lat)', projected X/Y (with XY_CRS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_ROWS = 5000
ROLES = ("request_id", "created_at", "closed_at", "status", "category", "descriptor", "agency", "address",
         "channel", "latitude", "longitude", "x", "y", "point")


def tokens(name: str) -> str:
    """A column name as lower-case words joined by '_': 'SRNumber' -> 'sr_number', 'CaseID' -> 'case_id',
    'X Coordinate (State Plane)' -> 'x_coordinate_state_plane', 'request_type.title' -> 'request_type_title'."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name))
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


# name scores per role: exact names (after tokens()), then single words; a word in BLOCK disqualifies the name
NAMES: dict[str, dict[str, float]] = {
    "request_id": {"service_request_id": 10, "unique_key": 10, "case_enquiry_id": 10, "sr_number": 10,
                   "service_request_number": 10, "srn": 9, "case_id": 9, "caseid": 9, "ticket_id": 9,
                   "request_id": 9, "srnumber": 9, "case_number": 9, "ticket_number": 9, "id": 8, "issue_id": 7,
                   "objectid": 3, "object_id": 3, "fid": 2},
    "created_at": {"created_date": 9, "created_at": 9, "creation_date": 9, "date_created": 9, "open_dt": 9,
                   "open_date": 9, "opened_date": 9, "requested_datetime": 9, "opened": 8, "created": 8,
                   "requested_date": 9, "date_opened": 9, "reported_date": 8, "submitted_date": 8},
    "closed_at": {"closed_date": 9, "closed_at": 9, "close_date": 9, "closed_dt": 9, "close_dt": 9,
                  "completion_date": 9, "completed_date": 9, "date_closed": 9, "closed": 8, "resolved_date": 8,
                  "completed_at": 8, "resolved_at": 8},
    "category": {"complaint_type": 10, "sr_type": 10, "request_type": 10, "service_name": 10, "issue_type": 10,
                 "type_of_service_request": 10, "type_of_sr": 10, "service_request_type": 10, "case_type": 9,
                 "problem_type": 9, "request_type_title": 10, "service_type": 9, "category": 9, "type": 8,
                 "problem": 7, "complaint": 7, "request_category": 8, "case_title": 6, "topic": 5, "case_topic": 6,
                 "summary": 3, "title": 3},
    "descriptor": {"descriptor": 10, "service_subtype": 10, "subtype": 9, "sub_type": 9, "sr_short_code": 8,
                   "problem_detail": 8, "request_details": 6, "reason": 6, "most_recent_action": 5,
                   "tree_location": 5, "location_of_trees": 5, "service_code": 4, "detail": 4, "details": 4},
    "status": {"status": 10, "case_status": 10, "ticket_status": 10, "sr_status": 10, "request_status": 10,
               "status_description": 9, "state": 4},
    "agency": {"agency": 10, "agency_responsible": 10, "responsible_agency": 10, "owner_department": 10,
               "department": 9, "assigned_department": 9, "dept": 8, "owner": 7, "agency_name": 6,
               "created_department": 5},
    "address": {"address": 10, "incident_address": 10, "street_address": 10, "full_address": 10,
                "location_address": 9, "street": 5, "location": 4},
    "channel": {"open_data_channel_type": 10, "channel": 10, "origin": 9, "source": 9, "request_source": 10,
                "intake_channel": 10, "method_received": 9, "submission_method": 9, "channel_type": 10,
                "request_channel": 10, "intake": 8, "method": 4},
}
WORDS: dict[str, dict[str, float]] = {
    "request_id": {"id": 5, "key": 4, "number": 4, "ticket": 4, "sr": 4, "case": 3, "num": 3, "no": 2},
    "created_at": {"created": 6, "creation": 6, "opened": 6, "open": 5, "requested": 6, "reported": 5,
                   "submitted": 5, "received": 4, "entered": 4},
    "closed_at": {"closed": 6, "close": 5, "completed": 6, "completion": 6, "resolved": 5},
    "category": {"type": 4, "category": 5, "complaint": 4, "problem": 3, "issue": 2, "service": 2},
    "descriptor": {"descriptor": 5, "subtype": 5, "detail": 2},
    "status": {"status": 5},
    "agency": {"agency": 5, "department": 5, "dept": 4, "owner": 3},
    "address": {"address": 5},
    "channel": {"channel": 5, "origin": 3, "source": 3, "intake": 4},
}
BLOCK: dict[str, set[str]] = {
    "request_id": {"zip", "district", "ward", "precinct", "phone", "reporter", "user", "type", "code", "parcel", "bbl",
                   "house", "page", "row", "column", "tbm", "council", "cd", "nc", "pole", "plate", "street",
                   "media", "image", "organization", "agency", "department", "owner", "assign", "queue", "url",
                   "photo", "area", "community", "tract", "block", "lot", "apn", "account", "asset", "x", "y"},
    "created_at": {"closed", "close", "completed", "completion", "resolved", "updated", "update", "due", "target",
                   "expected", "service", "modified", "last", "acknowledged", "reopened", "action", "resolution",
                   "status", "raw", "minutes", "since", "days"},
    "closed_at": {"reason", "photo", "by", "notes", "note", "status", "type", "expected", "due", "target",
                  "raw", "minutes", "days", "comment", "url"},
    "category": {"location", "address", "facility", "vehicle", "mobile", "os", "media", "point", "geometry", "id",
                 "url", "code", "status", "organization", "related", "count", "date", "time", "channel",
                 "source", "agency", "department", "zip"},
    "descriptor": {"id", "url", "date", "time"},
    "status": {"notes", "note", "date", "time", "id", "url", "closed", "updated", "code", "reason"},
    "agency": {"id", "url", "code", "date", "time"},
    "address": {"type", "verified", "approximate", "id", "url", "zip", "zipcode", "name", "number", "suffix",
                "direction", "latitude", "longitude", "lat", "lon", "lng", "x", "y", "coordinates", "district",
                "city", "state"},
    "channel": {"id", "url", "date", "time", "code", "media", "image", "raw"},
}
LAT_WORDS, LON_WORDS = {"lat", "latitude", "y_lat"}, {"lon", "lng", "long", "longitude", "x_long"}
X_NAMES = {"x", "x_coordinate", "x_coordinate_state_plane", "xcoord", "x_coord", "easting", "point_x", "geom_x",
           "x_state_plane", "state_plane_x"}
Y_NAMES = {"y", "y_coordinate", "y_coordinate_state_plane", "ycoord", "y_coord", "northing", "point_y", "geom_y",
           "y_state_plane", "state_plane_y"}
GENERIC_DATE_WORDS = {"date", "datetime", "time", "dt", "timestamp", "at", "when", "day"}
# a text cell that holds a point: '(41.9, -87.6)' (lat, lon), possibly after other lines, or WKT 'POINT (lon lat)'
LATLON_TEXT = r"\(\s*(-?\d{1,3}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)\s*\)"
WKT_POINT = r"(?i)POINT\s*Z?\s*\(\s*(-?\d+(?:\.\d+)?)\s+(-?\d+(?:\.\d+)?)"
HAS_POINT = re.compile(r"\(\s*-?\d{1,3}(?:\.\d+)?\s*,\s*-?\d{1,3}(?:\.\d+)?\s*\)|(?i:POINT\s*Z?\s*\(\s*-?\d)")
DATE_LIKE = re.compile(r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}|"
                       r"\d{1,2}[- ][A-Za-z]{3,9}[- ]\d{2,4}|[A-Za-z]{3,9}\.? \d{1,2},? \d{4})")
# the intake channel: city staff (1) or a resident (0); a value matching neither is unknown (NULL)
CITY_CHANNEL = re.compile(r"(?i)internal|employee|city ?worker|staff|self[- ]generated|proactive|"
                          r"integrated agency|other department|inspector|crew|city generated|maintenance activity|"
                          r"driver self")
RESIDENT_CHANNEL = re.compile(r"(?i)\bcall|phone|constituent|web|online|internet|mobile|\bapp\b|e-?mail|"
                              r"walk[- ]?in|voice|self[- ]?service|twitter|text|sms|resident|citizen|open311|"
                              r"social|facebook|letter|mail|portal|chat|seeclickfix|311 ?app")


def name_score(role: str, name: str) -> float:
    canon = tokens(name)
    words = set(canon.split("_"))
    if words & BLOCK.get(role, set()) and canon not in NAMES.get(role, {}):
        return 0.0
    if canon in NAMES.get(role, {}):
        return NAMES[role][canon]
    return max((WORDS.get(role, {}).get(w, 0.0) for w in words), default=0.0)


@dataclass
class FieldMap:
    """Where each normalised role is read from. ``columns``: role -> the first column; ``fallbacks``: role -> more
    columns read where the first is empty (row by row); ``pairs``: further (latitude, longitude) columns;
    ``points``: text columns holding points; ``why``: role -> how it was chosen (logged, and kept in the
    output's metadata)."""

    columns: dict[str, str]
    xy_crs: str | None = None
    tz: str | None = None
    closed_when_status: str | None = None
    closed_from: str | None = None
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    points: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)
    naive_utc: str | None = None  # evidence that times without an offset are UTC, when the file shows it

    def used(self) -> list[str]:
        cols = [*self.columns.values(), *(c for v in self.fallbacks.values() for c in v),
                *(c for p in self.pairs for c in p), *self.points, *filter(None, [self.closed_from])]
        return list(dict.fromkeys(cols))

    def table(self) -> list[str]:
        """role <- column (why), one line each, for the log and the layer metadata."""
        lines = []
        for role in ROLES:
            if role in self.columns:
                more = self.fallbacks.get(role, [])
                cols = " then ".join(repr(c) for c in [self.columns[role], *more])
                lines.append(f"{role} <- {cols} ({self.why.get(role, 'given')})")
        for lat, lon in self.pairs:
            lines.append(f"latitude/longitude (next) <- {lat!r}/{lon!r} (per row, where the columns before are "
                         "empty or unusable)")
        for col in self.points:
            lines.append(f"point <- {col!r} ({self.why.get('point:' + col, 'text points')})")
        if self.closed_from:
            lines.append(f"closed_at <- {self.closed_from!r} where status is '{self.closed_when_status}' "
                         "(no closing-date column)")
        if self.naive_utc:
            lines.append(f"times without an offset are UTC: {self.naive_utc}")
        return lines


def _present(values: pd.Series) -> pd.Series:
    """Non-empty values (not None/NaN/blank/'null'), as text."""
    from .normalise import _text

    return _text(values, len(values)).dropna()


def _numeric_share(text: pd.Series) -> float:
    import pandas as pd

    return float(pd.to_numeric(text, errors="coerce").notna().mean()) if len(text) else 0.0


def _lists(values: pd.Series) -> float:
    vals = values.dropna()
    if not len(vals) or vals.dtype != object:
        return 0.0
    return float(vals.map(lambda v: isinstance(v, (list, tuple))).mean())


def _parse_sample(values: pd.Series, name: str):
    """(share of present values that parse as dates, parsed series) — numbers count as dates (epochs) only in a
    column whose name says it holds dates, and only between 1990 and 2100."""
    from .normalise import parse_dates

    text = _present(values)
    if not len(text):
        return 0.0, None
    words = set(tokens(name).split("_"))
    dateish = bool(words & (GENERIC_DATE_WORDS | set(WORDS["created_at"]) | set(WORDS["closed_at"]))) or \
        name_score("created_at", name) > 0 or name_score("closed_at", name) > 0
    like = text.str.match(DATE_LIKE)
    if dateish:
        num = _numeric_share(text)
        if num > 0.5:
            import pandas as pd

            nums = pd.to_numeric(text, errors="coerce")
            seconds = nums.where(nums.abs() < 1e11, nums / 1000)
            like = like | ((seconds > 6.3e8) & (seconds < 4.1e9))
    if like.mean() < 0.5:
        return float(like.mean()), None
    parsed = parse_dates(text[like])
    return float(parsed.notna().sum()) / len(text), parse_dates(values)


def _pick(scores: dict[str, float]) -> str | None:
    best = [c for c, s in scores.items() if s > 0 and s == max(scores.values())]
    return best[0] if best else None


def infer_roles(sample: pd.DataFrame, overrides: dict[str, str] | None = None,
                hints: dict[str, list[str]] | None = None) -> FieldMap:
    """Infer every role from ``sample`` (the first rows of the file, raw values). ``overrides`` (role -> column,
    e.g. FIELD_MAP and the *_FIELD parameters) win; ``hints`` (role -> column names of known schemas) raise a
    name's score. Raises ValueError for an override naming a column the data lacks."""
    import pandas as pd

    columns = [str(c) for c in sample.columns]
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    lookup = {tokens(c): c for c in reversed(columns)}
    for role, col in list(overrides.items()):
        if role not in ROLES:
            raise ValueError(f"Unknown field map key {role!r}: use {', '.join(ROLES)}.")
        if col not in columns:
            found = lookup.get(tokens(col))
            if found is None:
                raise ValueError(f"The field map names {col!r} for {role}, but the data has no such column.")
            overrides[role] = found
    # a prefix shared by most columns ('P_Creation Date'): scored without it (legacy Chicago extracts)
    canon = {c: tokens(c) for c in columns}
    prefixes = pd.Series([m.group(1) for v in canon.values() if (m := re.match(r"^([a-z])_", v))], dtype=object)
    if len(prefixes) and prefixes.value_counts().iloc[0] >= 0.6 * len(columns):
        p = prefixes.value_counts().index[0] + "_"
        canon = {c: (v[len(p):] if v.startswith(p) else v) for c, v in canon.items()}
    hint_names = {role: {tokens(h) for h in names} for role, names in (hints or {}).items()}

    def score(role: str, col: str) -> float:
        base = name_score(role, canon[col])
        if canon[col] in hint_names.get(role, set()):
            base = max(base, 7.0)
        return base

    fmap = FieldMap(columns={}, why={})
    taken: set[str] = set()
    for role, col in overrides.items():
        fmap.columns[role] = col
        fmap.why[role] = "given"
        taken.add(col)
    present = {c: _present(sample[c]) for c in columns if _lists(sample[c]) == 0}
    n = max(len(sample), 1)

    def share(col: str) -> float:
        return len(present.get(col, ())) / n

    def distinct(col: str) -> float:
        vals = present.get(col)
        return vals.nunique() / len(vals) if vals is not None and len(vals) else 0.0

    # request id
    if "request_id" not in fmap.columns:
        scores = {c: score("request_id", c) for c in present if c not in taken}
        scores = {c: s for c, s in scores.items() if s > 0 and share(c) >= 0.9 and distinct(c) >= 0.8}
        picked = _pick(scores)
        if picked:
            fmap.columns["request_id"] = picked
            fmap.why["request_id"] = f"name; {share(picked):.0%} present, {distinct(picked):.0%} unique"
            taken.add(picked)
    # dates
    parsed: dict[str, pd.Series] = {}
    date_share: dict[str, float] = {}
    for c in present:
        if c in taken and c not in (fmap.columns.get("created_at"), fmap.columns.get("closed_at")):
            continue
        if score("created_at", c) > 0 or score("closed_at", c) > 0 or \
                set(canon[c].split("_")) & GENERIC_DATE_WORDS or present[c].head(50).str.match(DATE_LIKE).mean() > 0.5:
            ok, values = _parse_sample(sample[c], canon[c])
            if values is not None and ok >= 0.8:
                parsed[c], date_share[c] = values, ok
    if "created_at" not in fmap.columns:
        named = {c: score("created_at", c) for c in parsed if c not in taken and score("closed_at", c) == 0}
        cands = [c for c, s in named.items() if s > 0]
        how = "name"
        if not cands:
            cands = [c for c in named if set(canon[c].split("_")) & GENERIC_DATE_WORDS
                     and not set(canon[c].split("_")) & BLOCK["created_at"]]
            how = "the only date column" if len(cands) == 1 else "date values"
        if cands:
            col = cands[0]
            if len(cands) > 1:
                most = max(parsed[c].notna().mean() for c in cands)
                cands = [c for c in cands if parsed[c].notna().mean() >= 0.95 * most]
                stack = np.column_stack([parsed[c].to_numpy("datetime64[ns]").astype("int64") for c in cands])
                stack = np.where(stack == np.iinfo(np.int64).min, np.iinfo(np.int64).max, stack)
                first = np.bincount(stack.argmin(axis=1), minlength=len(cands))
                col = cands[int(np.argmax(first))]
                how += f"; earliest in {first.max() / len(stack):.0%} of rows of {len(cands)} date columns"
            fmap.columns["created_at"] = col
            fmap.why["created_at"] = f"{how}; {date_share[col]:.0%} parse as dates"
            taken.add(col)
    if "closed_at" not in fmap.columns:
        scores = {c: score("closed_at", c) for c in parsed if c not in taken}
        picked = _pick(scores)
        if picked:
            fmap.columns["closed_at"] = picked
            fmap.why["closed_at"] = f"name; {date_share[picked]:.0%} parse as dates"
            taken.add(picked)
    # text roles: not numbers, not dates
    texts = {c: v for c, v in present.items() if c not in parsed and len(v) and _numeric_share(v) < 0.5}
    for role, max_distinct in (("status", 0.2), ("channel", 0.2), ("agency", 0.3), ("category", None),
                               ("descriptor", None), ("address", None)):
        if role in fmap.columns:
            continue
        scores = {c: score(role, c) for c in texts if c not in taken}
        if max_distinct is not None:
            scores = {c: s for c, s in scores.items() if distinct(c) <= max_distinct or texts[c].nunique() <= 30}
        if role == "address":  # text that is mostly not a point
            scores = {c: s for c, s in scores.items()
                      if texts[c].str.contains(HAS_POINT).mean() < 0.5 and distinct(c) > 0.05}
        if role == "category":
            # of names scoring near the best, the coarsest (fewest distinct values) is the category: SF311's
            # 'Category' (Street Defects) rather than its 'Request Type' (Utility_Excavation)
            top = max(scores.values(), default=0)
            cands = sorted((c for c, s in scores.items() if s > 0),
                           key=lambda c: (scores[c] < top - 1, distinct(c) if scores[c] >= top - 1 else 0,
                                          -scores[c], columns.index(c)))
            if cands:
                fmap.columns["category"] = cands[0]
                fmap.why["category"] = f"name; {distinct(cands[0]) * len(texts[cands[0]]):.0f} distinct values " \
                                       "in the sample"
                fmap.fallbacks["category"] = [c for c in cands[1:] if scores[c] >= 3]
                taken.update(cands[:1])
            continue
        picked = _pick(scores)
        if picked:
            fmap.columns[role] = picked
            fmap.why[role] = "name; text values"
            taken.add(picked)
    # location
    numbers = {c: pd.to_numeric(v, errors="coerce") for c, v in present.items() if _numeric_share(v) >= 0.5}
    lat_cols = [c for c in numbers if set(canon[c].split("_")) & LAT_WORDS or canon[c] in LAT_WORDS]
    lon_cols = [c for c in numbers if set(canon[c].split("_")) & LON_WORDS or canon[c] in LON_WORDS]
    pairs = []
    for lat in lat_cols:
        stem = re.sub(r"(^|_)(lat|latitude|y_lat)($|_)", r"\1#\3", canon[lat])
        for lon in lon_cols:
            if re.sub(r"(^|_)(lon|lng|long|longitude|x_long)($|_)", r"\1#\3", canon[lon]) == stem:
                pairs.append((lat, lon))
    if len(lat_cols) == 1 and len(lon_cols) == 1 and not pairs:
        pairs.append((lat_cols[0], lon_cols[0]))
    pairs.sort(key=lambda p: (canon[p[0]] not in LAT_WORDS, columns.index(p[0])))
    if "latitude" in overrides or "longitude" in overrides:
        if not ("latitude" in overrides and "longitude" in overrides):
            raise ValueError("Give both latitude and longitude columns (LAT_FIELD and LON_FIELD).")
        pairs = [p for p in pairs if p != (overrides["latitude"], overrides["longitude"])]
    elif pairs:
        fmap.columns["latitude"], fmap.columns["longitude"] = pairs.pop(0)
        fmap.why["latitude"] = fmap.why["longitude"] = "name; numbers"
    fmap.pairs = pairs
    if "point" in overrides:
        fmap.points = [overrides["point"]]
        fmap.columns.pop("point")
    else:
        for c, v in texts.items():
            if c in taken:
                continue
            hit = v.str.contains(HAS_POINT)
            if hit.mean() >= 0.5:
                fmap.points.append(c)
                fmap.why["point:" + c] = f"{hit.mean():.0%} of values hold a point"
    if "x" not in overrides:
        xs = [c for c in numbers if canon[c] in X_NAMES or canon[c].startswith("x_coordinate")]
        ys = [c for c in numbers if canon[c] in Y_NAMES or canon[c].startswith("y_coordinate")]
        if xs and ys:
            xv, yv = numbers[xs[0]].dropna(), numbers[ys[0]].dropna()
            degrees = len(xv) and len(yv) and (xv.abs() <= 180).mean() >= 0.95 and (yv.abs() <= 90).mean() >= 0.95
            if degrees and "latitude" not in fmap.columns and "latitude" not in overrides:
                # X/Y in degrees (ArcGIS exports of WGS 84 layers): longitude and latitude, no CRS needed
                fmap.columns["latitude"], fmap.columns["longitude"] = ys[0], xs[0]
                fmap.why["latitude"] = fmap.why["longitude"] = "X/Y columns whose values are degrees"
            elif not degrees:
                fmap.columns["x"], fmap.columns["y"] = xs[0], ys[0]
                fmap.why["x"] = fmap.why["y"] = "name; numbers (used with XY_CRS)"
    # Open311 GeoReport has no closing date: a closed request's updated_datetime is when it was closed
    if "closed_at" not in fmap.columns and "status" in fmap.columns:
        updated = [c for c in parsed if canon[c] in ("updated_datetime", "updated_at", "updated_date", "updated")]
        if updated and present[fmap.columns["status"]].str.lower().eq("closed").any():
            fmap.closed_when_status, fmap.closed_from = "closed", updated[0]
    fmap.naive_utc = _naive_utc_evidence(sample, parsed, columns)
    return fmap


def _shape(value: str) -> str:
    return re.sub(r"[0-9]", "d", value)


def _naive_utc_evidence(sample: pd.DataFrame, parsed: dict, columns: list[str]) -> str | None:
    """Some exports write times without an offset in UTC and say so only in a sibling column that carries the
    same instant with its offset (SeeClickFix v1: updated_at '06/22/2011 at 06:55PM' beside updated_at_raw
    '2011/06/22 18:55:10 +0000'). When a column without offsets equals another column's UTC times (to the minute)
    in at least 90 % of rows, times written that way are UTC: returns the evidence, else None."""
    import pandas as pd

    from .normalise import _date_shapes, parse_dates

    aware_cols, naive_cols = [], []
    for c in parsed:
        text = _present(sample[c])
        if not len(text):
            continue
        numeric, iso, aware = _date_shapes(text.to_numpy())
        offset = text.str.contains(r"(?:[+-]\d{2}:?\d{2}|Z)$")
        if (aware | offset.to_numpy()).mean() > 0.9:
            aware_cols.append(c)
        elif not (numeric | aware | offset.to_numpy()).any():
            naive_cols.append(c)
    for a in aware_cols:
        utc = parse_dates(sample[a], "UTC")
        for c in naive_cols:
            both = utc.notna() & parsed[c].notna()
            if both.sum() < 5:
                continue
            gap = (utc[both] - parsed[c][both]).abs()
            if (gap <= pd.Timedelta(minutes=1)).mean() >= 0.9:
                local = _present(sample[c])
                return (f"{c!r} equals the UTC times of {a!r} in {(gap <= pd.Timedelta(minutes=1)).mean():.0%} of "
                        f"rows, so values written like {local.iloc[0]!r} are UTC")
    return None


def classify_channel(values: pd.Series) -> pd.Series:
    """city_initiated from the intake channel: 1.0 when city staff generated the request, 0.0 when a resident
    reported it, NaN when the channel says neither (or is missing). Each distinct value is classified once."""
    import pandas as pd

    codes, uniques = pd.factorize(values)
    table = np.full(len(uniques) + 1, np.nan)
    for i, v in enumerate(uniques):
        text = str(v)
        if CITY_CHANNEL.search(text):
            table[i] = 1.0
        elif RESIDENT_CHANNEL.search(text):
            table[i] = 0.0
    return pd.Series(table[codes], index=values.index)


STREET_NOISE = frozenset(
    "ST STREET AVE AVENUE AV RD ROAD BLVD BOULEVARD DR DRIVE WAY PL PLACE PLZ PLAZA CT COURT LN LANE TER TERRACE "
    "HWY HIGHWAY PKWY PARKWAY SQ SQUARE CIR CIRCLE N S E W NE NW SE SW NORTH SOUTH EAST WEST OF AND AT THE "
    "INTERSECTION CORNER CORNEROF BLOCK NEAR BETWEEN USA BUILDING BLDG UNIT APT SUITE FLOOR FL".split())


def street_words(address: str, common: frozenset) -> frozenset:
    """The words of an address that name its street(s): upper case, without house numbers, street types,
    directions, connecting words and the words most addresses of the file share (city, state)."""
    words = re.findall(r"[A-Z0-9]+", address.upper())
    return frozenset(w for w in words if len(w) > 1 and not w.isdigit() and w not in STREET_NOISE
                     and w not in common)


def _street_groups(sets: list[frozenset]) -> int:
    """How many groups the street-word sets form when sets sharing a word are joined (spelling variants of one
    place share a word: 'Carroll Ave' / 'Carroll Avenue'; an intersection joins its two streets)."""
    groups: list[set] = []
    for words in sets:
        if not words:
            continue
        joined = [g for g in groups if g & words]
        merged = set(words).union(*joined)
        groups = [g for g in groups if not (g & words)] + [merged]
    return len(groups)


def common_words(addresses: list[str]) -> frozenset:
    """Words in at least a tenth of ``addresses`` (a sample of the file's): the city's own name and state."""
    import pandas as pd

    counts = pd.Series([w for t in addresses for w in set(re.findall(r"[A-Z0-9]+", t.upper()))],
                       dtype=object).value_counts()
    return frozenset(counts[counts >= 0.1 * max(len(addresses), 1)].index)


def placeholder_points(lon: np.ndarray, lat: np.ndarray, address: np.ndarray | None, min_requests: int = 5,
                       min_streets: int = 4, common: frozenset | None = None
                       ) -> tuple[np.ndarray, list[tuple[float, float, int, int]]]:
    """Default points that a city gives requests it could not locate (often City Hall): one coordinate (to
    1e-6°, about 0.1 m) shared by at least ``min_requests`` requests whose addresses name at least
    ``min_streets`` unrelated streets, in at least 30 % of its requests. A building with many complaints has one
    street, however its address is spelt; a housing estate geocoded to one point has two or three; a placeholder
    collects intersections and addresses from all over the city. Returns (mask of rows at such points,
    [(lon, lat, requests, unrelated streets)]). Without addresses nothing is flagged. ``common``: the words of
    the city's own name and state (in a tenth of addresses), when the caller found them on a wider sample."""
    import pandas as pd

    n = len(lon)
    mask = np.zeros(n, dtype=bool)
    if address is None or n == 0:
        return mask, []
    frame = pd.DataFrame({"lon": np.round(lon, 6), "lat": np.round(lat, 6), "addr": address})
    groups = frame.groupby(["lon", "lat"], sort=False)
    sizes = groups.size()
    distinct = groups["addr"].nunique()
    big = sizes[(sizes >= min_requests) & (distinct.reindex(sizes.index) >= min_streets)]
    if big.empty:
        return mask, []
    key = pd.MultiIndex.from_frame(frame[["lon", "lat"]])
    at_big = key.isin(big.index)
    if common is None:
        texts = pd.Series(address, dtype=object).dropna().astype(str)
        common = common_words((texts.sample(min(len(texts), 20_000), random_state=0) if len(texts) else texts).tolist())
    pairs = frame[at_big].dropna(subset=["addr"]).drop_duplicates()
    found, flagged = [], []
    for (x, y), addrs in pairs.groupby(["lon", "lat"], sort=False)["addr"]:
        streets = _street_groups([street_words(str(a), common) for a in addrs])
        count = int(big[(x, y)])
        if streets >= min_streets and streets >= 0.3 * count:
            found.append((float(x), float(y), count, streets))
            flagged.append((x, y))
    if flagged:
        mask = np.asarray(key.isin(pd.MultiIndex.from_tuples(flagged, names=["lon", "lat"])), dtype=bool)
    return mask, sorted(found, key=lambda t: -t[2])
