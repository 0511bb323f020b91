# SPDX-License-Identifier: GPL-2.0-or-later
"""Shared by fetch and import: read raw files into frames, finish normalisation (state-plane X/Y), write the
normalised request layer and the rejects table."""

from __future__ import annotations

import json
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QDateTime, QVariant

from .core.normalise import FIELDS, Normalised, row_warnings, to_numbers
from .gpkgwriter import ident as gpkg_ident
from .layerio import WGS84, transform_xy

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    import pandas as pd

REQUEST_FIELD_TYPES = {"created_at": QVariant.DateTime, "closed_at": QVariant.DateTime, "city_initiated": QVariant.Int}
REQUEST_BULK_TYPES = {"created_at": "datetime", "closed_at": "datetime", "city_initiated": "int"}


def request_fields() -> QgsFields:
    fields = QgsFields()
    for name in FIELDS:
        fields.append(QgsField(name, REQUEST_FIELD_TYPES.get(name, QVariant.String)))
    return fields


def reject_fields() -> QgsFields:
    fields = QgsFields()
    for name, kind in (("raw_id", QVariant.String), ("reject_reason", QVariant.String),
                       ("source", QVariant.String), ("row", QVariant.LongLong)):
        fields.append(QgsField(name, kind))
    return fields


def records_frame(records: list) -> pd.DataFrame:
    """Rows of JSON objects -> frame of raw values; nested objects flattened with '_' (location_latitude, …),
    and cells holding coordinate arrays (GeoJSON 'coordinates', flattened 'point.coordinates') turned into the
    columns <name>_lon and <name>_lat. Missing values are None or NaN. Only columns that hold objects go through
    json_normalize: the flat majority is built by the DataFrame constructor in C. ``frame.attrs['polygons']``
    counts the polygon cells located by their point on surface."""
    import pandas as pd

    if not records:
        return pd.DataFrame()
    # columns in order of first appearance (portals omit null fields record by record); naming them up front
    # lets pandas skip its own key scan
    frame = pd.DataFrame.from_records(records, columns=list(dict.fromkeys(chain.from_iterable(records))))
    for name in list(frame.columns):
        col = frame[name]
        if col.dtype != object or pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
            continue
        is_dict = col.map(lambda v: isinstance(v, dict)).to_numpy(dtype=bool)
        if not is_dict.any():
            continue
        sub = pd.json_normalize([v if d else {} for v, d in zip(col, is_dict)], sep="_")
        sub.columns = [f"{name}_{c}" for c in sub.columns]
        sub.index = frame.index
        at = frame.columns.get_loc(name)
        keep = [] if is_dict[col.notna().to_numpy()].all() else [col.where(~is_dict, None)]  # scalars stay
        frame = pd.concat([frame.iloc[:, :at], *keep, sub, frame.iloc[:, at + 1:]], axis=1)
    polygons = 0
    for name in list(frame.columns):
        col = frame[name]
        if col.dtype != object or pd.api.types.infer_dtype(col, skipna=True) in ("string", "empty"):
            continue
        is_list = col.map(lambda v: isinstance(v, (list, tuple))).to_numpy(dtype=bool)
        if not is_list.any():
            continue
        points = [coordinates_point(v) if k else (None, None, None) for v, k in zip(col, is_list)]
        polygons += sum(1 for p in points if p[2] == "polygon")
        frame[f"{name}_lon"] = pd.Series([p[0] for p in points], index=frame.index, dtype=float)
        frame[f"{name}_lat"] = pd.Series([p[1] for p in points], index=frame.index, dtype=float)
        frame = frame.drop(columns=[name])
    frame.attrs["polygons"] = polygons
    return frame


def _depth(value) -> int:
    depth = 0
    while isinstance(value, (list, tuple)) and value:
        depth, value = depth + 1, value[0]
    return depth


def coordinates_point(coords) -> tuple[float | None, float | None, str | None]:
    """(lon, lat, kind) of a GeoJSON coordinate array: a point as it is, a multipoint or line by its first point,
    a polygon or multipolygon by its point on surface (OGR); (None, None, None) for anything else."""
    try:
        depth = _depth(coords)
        if depth == 1 and len(coords) >= 2:
            return float(coords[0]), float(coords[1]), "point"
        if depth == 2 and len(coords[0]) >= 2:
            return float(coords[0][0]), float(coords[0][1]), "point"
        if depth in (3, 4):
            from osgeo import ogr

            kind = "Polygon" if depth == 3 else "MultiPolygon"
            geom = ogr.CreateGeometryFromJson(json.dumps({"type": kind, "coordinates": coords}))
            if geom is not None and not geom.IsEmpty():
                point = geom.PointOnSurface() or geom.Centroid()
                return point.GetX(), point.GetY(), "polygon"
    except (TypeError, ValueError, IndexError, RuntimeError):
        pass
    return None, None, None


def coordinate_numbers(frame: pd.DataFrame, numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """The ``numeric`` columns of a frame of decoded JSON (its coordinates) as numbers: unusable text is NaN, a
    missing coordinate. Text columns are left as decoded: sharing one object per distinct value, which saved
    memory while fetch held every row, cost 12% of a streamed fetch's time for 3% less peak memory."""
    for name in numeric:
        if name in frame.columns and frame[name].dtype == object:
            frame[name] = to_numbers(frame[name])
    return frame


MAX_JSON_BYTES = 2 << 30  # a JSON export is read whole: larger ones should be CSV


def is_csv(path: str) -> bool:
    """Whether a file is CSV (else JSON); empty files and folders are refused with a clear message."""
    return _is_csv(Path(path))


def _is_csv(p: Path) -> bool:
    if not p.exists():
        raise QgsProcessingException(f"{p} does not exist.")
    if not p.is_file():
        raise QgsProcessingException(f"{p} is not a file.")
    with p.open("rb") as fh:
        head = fh.read(4096)
    if not head.strip(b"\xef\xbb\xbf\xff\xfe \t\r\n\x00"):
        raise QgsProcessingException(f"{p.name} is empty: export the requests again (CSV or JSON).")
    if p.suffix.lower() in (".json", ".geojson", ".esrijson"):
        return False
    text = head.decode(sniff_encoding(head), errors="replace").lstrip("\ufeff \t\r\n")
    return text[:1] not in ("[", "{")


def sniff_encoding(head: bytes) -> str:
    """The encoding of a file from its first bytes: a BOM (UTF-8, UTF-16), or UTF-16 without a BOM (every other
    byte NUL); else 'utf-8' (decided for good by detect_encoding)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if len(head) >= 4 and head[1:40:2].count(0) > 15:
        return "utf-16-le"
    if len(head) >= 4 and head[0:40:2].count(0) > 15:
        return "utf-16-be"
    return "utf-8"


def detect_encoding(p: Path, chunk: int = 1 << 24) -> tuple[str, int]:
    """(encoding, bytes that do not decode) of a text file. UTF-8 unless the file's non-ASCII bytes mostly fail
    to decode as UTF-8, then Windows-1252 (the usual 'ANSI' of exports: '’' stays '’', which Latin-1 would turn
    into a control character). Undecodable bytes become U+FFFD in their own value only, never the whole file's
    decoding. Read in chunks: ASCII chunks cost one C check each."""
    import codecs

    with p.open("rb") as fh:
        head = fh.read(4096)
        first = sniff_encoding(head)
        if first != "utf-8":
            return first, 0
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        bad = good = 0
        while True:
            block = fh.read(chunk)
            if not block:
                break
            if block.isascii():
                continue
            text = decoder.decode(block)
            bad += text.count("\ufffd")
            good += len(text) - len(text.encode("ascii", "ignore")) - text.count("\ufffd")  # non-ASCII, in C
        bad += decoder.decode(b"", final=True).count("\ufffd")
    if bad and bad >= good:
        return "cp1252", 0
    return "utf-8", bad


DELIMITERS = (",", ";", "\t", "|")


def sniff_delimiter(p: Path, encoding: str) -> str:
    """The field delimiter of a CSV from its header line: the most frequent of , ; tab | outside quotes
    (European exports use ';', some portals tab or '|')."""
    import re

    with p.open("r", encoding=encoding, errors="replace", newline="") as fh:
        header = fh.readline()
    header = re.sub(r'"[^"]*"', "", header)
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _read_csv(p: Path, encoding: str = "utf-8", **options) -> pd.DataFrame:
    import warnings

    import pandas as pd

    if encoding == "utf-8":
        encoding = "utf-8-sig"
    options.setdefault("sep", sniff_delimiter(p, encoding))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed coordinate columns: coerced later
            return pd.read_csv(p, keep_default_na=False, encoding=encoding, encoding_errors="replace", **options)
    except pd.errors.EmptyDataError as err:
        raise QgsProcessingException(f"{p.name} holds no columns: is it an empty export?") from err
    except (pd.errors.ParserError, ValueError) as err:
        raise QgsProcessingException(f"{p.name} is not a readable CSV file ({str(err)[:200]}). Export it again as "
                                     "CSV (comma-separated, one header row).") from err


def csv_columns(path: str, encoding: str = "utf-8") -> list[str] | None:
    """The header of a CSV file (None for JSON), read without the rows."""
    p = Path(path)
    return [str(c) for c in _read_csv(p, encoding, dtype=str, nrows=0).columns] if _is_csv(p) else None


def csv_sample(path: str, encoding: str, rows: int) -> pd.DataFrame:
    """The first ``rows`` rows of a CSV, every column as raw text: what the column inference looks at."""
    return _read_csv(Path(path), encoding, dtype=str, nrows=rows)


def read_csv_columns(path: str, header: list[str], usecols: list[str], numeric: tuple[str, ...] = (),
                     encoding: str = "utf-8", chunk: int | None = None):
    """The ``usecols`` of a CSV whose ``header`` (from csv_columns) is known: exports have dozens of columns and a
    field map uses a few. The ``numeric`` ones (coordinates) are parsed as numbers where they can be; everything
    else stays raw text. With ``chunk``, an iterator of frames of that many rows (the file is streamed)."""
    import pandas as pd

    wanted = [i for i, c in enumerate(header) if c in set(usecols)]
    text = {i: str for i in wanted if header[i] not in numeric}
    p = Path(path)
    frames = _read_csv(p, encoding, usecols=wanted, dtype=text, na_values={i: [""] for i in wanted if i not in text},
                       chunksize=chunk or None)

    def named(frame):
        frame.columns = [header[i] for i in wanted]
        return frame

    if not chunk:
        return named(frames)

    def chunks():
        with frames:
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    return
                except (pd.errors.ParserError, ValueError) as err:
                    raise QgsProcessingException(f"{p.name} is not a readable CSV file ({str(err)[:200]}). Export "
                                                 "it again as CSV (comma-separated, one header row).") from err
                yield named(frame)

    return chunks()


def read_file(path: str) -> pd.DataFrame:
    """CSV, GeoJSON, Socrata JSON, Open311 JSON, SeeClickFix, CKAN or Esri JSON -> frame of raw values.
    GeoJSON and Esri point geometries become the columns _geom_lon and _geom_lat (Esri geometries in another
    CRS: _geom_x, _geom_y and ``frame.attrs['xy_crs']``)."""
    p = Path(path)
    if _is_csv(p):
        return _read_csv(p, detect_encoding(p)[0], dtype=str)
    if p.stat().st_size > MAX_JSON_BYTES:
        raise QgsProcessingException(f"{p.name} is a JSON file over {MAX_JSON_BYTES >> 30} GB: export it as CSV.")
    raw = p.read_bytes()
    try:
        data = json.loads(raw.decode(sniff_encoding(raw[:4096]), errors="replace").lstrip("\ufeff"))
    except (ValueError, UnicodeDecodeError) as err:
        raise QgsProcessingException(f"{p.name} starts like JSON but is not valid JSON ({str(err)[:160]}): export "
                                     "it again, or as CSV.") from err
    except RecursionError:
        raise QgsProcessingException(f"{p.name} is JSON nested too deeply to be a list of requests.") from None
    return json_frame(data, p.name)


WRAPPERS = ("issues", "records", "service_requests", "requests", "data", "results", "rows", "items")


def _records(rows: list, name: str) -> pd.DataFrame:
    objects = sum(1 for r in rows if isinstance(r, dict))
    if rows and objects < len(rows):
        kinds = sorted({type(r).__name__ for r in rows if not isinstance(r, dict)})
        raise QgsProcessingException(
            f"{name} holds a list whose items are {', '.join(kinds)}, not request objects: expected a list of "
            "objects (one per request), a GeoJSON FeatureCollection or a portal's wrapper of them.")
    frame = records_frame(rows)
    if frame.empty:
        raise QgsProcessingException(f"{name} holds no requests (an empty list).")
    return frame


def json_frame(data, name: str = "The JSON file") -> pd.DataFrame:
    if isinstance(data, list):
        return _records(data, name)
    if not isinstance(data, dict):
        raise QgsProcessingException(f"{name} holds a single {type(data).__name__}, not requests: expected a list of "
                                     "request objects or a GeoJSON FeatureCollection.")
    if isinstance(data.get("features"), list):
        rows = []
        polygons = 0
        sr = data.get("spatialReference") or {}
        wkid = sr.get("latestWkid") or sr.get("wkid") if isinstance(sr, dict) else None
        projected = wkid not in (None, 4326)
        for feat in data["features"]:
            if not isinstance(feat, dict):
                continue
            props = dict(feat.get("properties") or feat.get("attributes") or {})
            geom = feat.get("geometry") or {}
            if isinstance(geom, dict) and "coordinates" in geom:
                lon, lat, kind = coordinates_point(geom["coordinates"])
                polygons += kind == "polygon"
                props["_geom_lon"], props["_geom_lat"] = lon, lat
            elif isinstance(geom, dict) and "x" in geom and "y" in geom:
                props["_geom_x" if projected else "_geom_lon"] = geom["x"]
                props["_geom_y" if projected else "_geom_lat"] = geom["y"]
            elif isinstance(geom, dict) and isinstance(geom.get("rings"), list):
                lon, lat, kind = coordinates_point(geom["rings"])
                polygons += kind == "polygon"
                props["_geom_x" if projected else "_geom_lon"] = lon
                props["_geom_y" if projected else "_geom_lat"] = lat
            rows.append(props)
        frame = _records(rows, name)
        frame.attrs["polygons"] = frame.attrs.get("polygons", 0) + polygons
        if projected:
            frame.attrs["xy_crs"] = "EPSG:3857" if wkid in (102100, 102113, 900913) else f"EPSG:{wkid}"
        return frame
    for key in WRAPPERS:
        if isinstance(data.get(key), list):
            return _records(data[key], name)
    if isinstance(data.get("result"), dict) and isinstance(data["result"].get("records"), list):
        return _records(data["result"]["records"], name)
    keys = ", ".join(repr(k) for k in list(data)[:12])
    raise QgsProcessingException(
        f"{name} is a JSON object with the keys {keys or '(none)'} but no list of requests: expected a list of "
        f"request objects, a GeoJSON FeatureCollection, or an object holding the list under one of "
        f"{', '.join(WRAPPERS)} (or CKAN's result.records).")


def parse_field_map(text: str) -> dict[str, str]:
    """The FIELD_MAP parameter: a JSON object, normalised role -> source column."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as err:
        raise QgsProcessingException(f"FIELD_MAP is not valid JSON: {err}") from err
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise QgsProcessingException("FIELD_MAP must be a JSON object: {\"normalised field\": \"source field\", …}.")
    return value


def check_timezone(tz: str) -> None:
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(tz)
    except (ValueError, KeyError, OSError) as err:
        raise QgsProcessingException(f"TIMEZONE {tz!r} is not an IANA time zone name (e.g. America/Chicago).") \
            from err


def move_to_rejected(result: Normalised, mask: np.ndarray, why: str) -> None:
    """Kept rows under ``mask`` become rejected rows with reason ``why`` (so none is lost)."""
    import pandas as pd

    if not mask.any():
        return
    kept = result.kept
    moved = pd.DataFrame({"raw_id": kept.loc[mask, "request_id"], "reject_reason": why, "row": -1})
    result.rejected = pd.concat([result.rejected, moved], ignore_index=True)
    result.kept = kept[~mask].reset_index(drop=True)


def columns_with_samples(frame: pd.DataFrame, limit: int = 40) -> str:
    """'name (e.g. 'value')' for the columns of a frame, to show in an error what the file holds."""
    from .core.normalise import _text

    parts = []
    for name in list(frame.columns)[:limit]:
        values = _text(frame[name].head(200), min(len(frame), 200)).dropna()
        sample = str(values.iloc[0])[:40] if len(values) else ""
        parts.append(f"{name} (e.g. {sample!r})" if sample else f"{name} (empty)")
    more = f", … ({len(frame.columns) - limit} more)" if len(frame.columns) > limit else ""
    return ", ".join(parts) + more


def locate_xy(result: Normalised, xy_crs: str | None, context,
              bbox: tuple[float, float, float, float] | None = None) -> None:
    """Turn state-plane X/Y rows into lon/lat (EPSG:4326); rows that still have no usable location move to the
    rejects (so none is lost), and so do X/Y rows outside ``bbox`` (lon/lat), the area the lat/lon rows were
    already checked against."""
    kept = result.kept
    use = kept["use_xy"].to_numpy(dtype=bool)
    if use.any():
        crs = QgsCoordinateReferenceSystem(xy_crs or "")
        if not crs.isValid():
            raise QgsProcessingException(f"XY_CRS {xy_crs!r} is not a valid CRS.")
        lon, lat = transform_xy(kept.loc[use, "x"].to_numpy(float), kept.loc[use, "y"].to_numpy(float), crs, WGS84,
                                context)
        kept.loc[use, "lon"], kept.loc[use, "lat"] = lon, lat
    bad = ~(np.isfinite(kept["lon"]) & np.isfinite(kept["lat"]) & (kept["lat"].abs() <= 90) &
            (kept["lon"].abs() <= 180)).to_numpy()
    move_to_rejected(result, bad, "unusable X/Y coordinates")
    kept = result.kept
    if bbox is not None and use.any():
        use = kept["use_xy"].to_numpy(dtype=bool)
        lon, lat = kept["lon"].to_numpy(float), kept["lat"].to_numpy(float)
        out = use & ~((lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3]))
        move_to_rejected(result, out, "outside the requested area")


STREAM_CHUNK = 200_000  # rows normalised and written at a time by fetch and import


def _coordinate_keys(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """One int64 per coordinate rounded to 1e-6 degrees (equal keys = equal rounded points; NaN -> -1)."""
    ok = np.isfinite(lon) & np.isfinite(lat)
    out = np.full(len(lon), -1, dtype=np.int64)
    out[ok] = (np.round(lon[ok] * 1e6).astype(np.int64) + 181_000_000) * (1 << 28) + \
        np.round(lat[ok] * 1e6).astype(np.int64) + 91_000_000
    return out


class RequestStream:
    """OUTPUT (points, EPSG:4326), REJECTED (table) and the four counts of fetch and import, written as chunks of
    normalised rows arrive, so memory holds one chunk, never the whole input.

    The requests go into a GeoPackage with SQLite's bulk speed: the destination itself when it is a new
    GeoPackage, otherwise a staging one that is copied into the destination's feature sink at the end. For the
    placeholder check (import), 16 bytes a row are kept: the rounded point and a hash of the address; points
    shared widely are then checked with their addresses read back, and their rows removed and listed in
    REJECTED."""

    def __init__(self, alg, parameters, context, feedback, source: str, placeholders: bool | None = None,
                 tz: str | None = None):
        from collections import Counter

        from .gpkgwriter import LayerWriter
        from .layerio import bulk_destination

        self.alg, self.parameters, self.context, self.feedback = alg, parameters, context, feedback
        self.source, self.tz = source, tz
        self.placeholders = placeholders  # None: not checked; False: rejected; True: flagged and kept
        self.target, self.project, self.name = bulk_destination(alg, parameters, "OUTPUT")
        self.staged = None
        if self.target is None:  # any other destination: staged, then copied through its feature sink
            from qgis.core import QgsProcessingUtils

            self.staged = (QgsProcessingUtils.generateTempFilename("civic311_requests.gpkg"), "requests")
        types = {name: REQUEST_BULK_TYPES.get(name, "string") for name in FIELDS}
        self.writer = LayerWriter(*(self.target or self.staged), types)
        self.rsink, self.rejected_id = None, None
        if parameters.get("REJECTED") is not None:
            self.rsink, self.rejected_id = alg.parameterAsSink(parameters, "REJECTED", context, reject_fields(),
                                                               QgsWkbTypes.Type.NoGeometry)
        self.read = self.kept = self.duplicates = 0
        self.reasons: Counter = Counter()
        self.unread: Counter = Counter()
        self.counts: Counter = Counter()
        self.categories: Counter = Counter()
        self.keys: list[np.ndarray] = []
        self.address_hashes: list[np.ndarray] = []
        self.address_sample: list[str] = []

    def add(self, result: Normalised) -> None:
        """Write one normalised chunk (after locate_xy)."""
        from pandas.util import hash_array

        kept = result.kept
        lon, lat = kept["lon"].to_numpy(float), kept["lat"].to_numpy(float)
        self.writer.append({name: kept[name] for name in FIELDS}, lon, lat)
        if self.placeholders is not None:
            address = kept["address"].to_numpy(dtype=object)
            present = kept["address"].notna().to_numpy()
            hashed = np.zeros(len(kept), dtype=np.uint64)
            hashed[present] = hash_array(address[present], categorize=False) | np.uint64(1)  # 0 = no address
            self.keys.append(_coordinate_keys(lon, lat))
            self.address_hashes.append(hashed)
            if len(self.address_sample) < 20_000 and present.any():
                texts = kept.loc[present, "address"].astype(str)
                self.address_sample += texts.sample(min(len(texts), 20_000 - len(self.address_sample)),
                                                    random_state=0).tolist()
        self.write_rejected(result.rejected)
        self.read += result.read
        self.kept += len(kept)
        self.duplicates += result.duplicates
        self.reasons.update(result.rejected["reject_reason"].value_counts().to_dict())
        self.unread.update(result.unread)
        self.counts.update(result.counts)
        self.categories.update(kept["category"].value_counts().to_dict())

    def write_rejected(self, rejected) -> None:
        if self.rsink is None or not len(rejected):
            return
        feats = []
        for raw_id, why, row in zip(rejected["raw_id"].tolist(), rejected["reject_reason"].tolist(),
                                    rejected["row"].tolist()):
            f = QgsFeature(reject_fields())
            f.setAttributes([raw_id, why, self.source, int(row)])
            feats.append(f)
        self.rsink.addFeatures(feats, QgsFeatureSink.Flag.FastInsert)

    def flag_placeholders(self) -> None:
        """Rows at placeholder points (core.infer.placeholder_points) leave OUTPUT for REJECTED, or are
        reported and kept (placeholders True)."""
        import pandas as pd

        from .core.infer import common_words, placeholder_points

        keys = np.concatenate(self.keys) if self.keys else np.empty(0, dtype=np.int64)
        hashes = np.concatenate(self.address_hashes) if self.keys else np.empty(0, dtype=np.uint64)
        self.keys, self.address_hashes = [], []
        if not (hashes != 0).any():
            self.feedback.pushInfo("No address column: placeholder locations cannot be detected.")
            return
        # points with at least 5 requests and 4 different addresses: the only ones that can be placeholders
        frame = pd.DataFrame({"key": keys, "addr": hashes})
        located = frame[frame["key"] >= 0]
        sizes = located["key"].value_counts()
        distinct = located[located["addr"] != 0].drop_duplicates()["key"].value_counts()
        wide = sizes[(sizes >= 5) & (distinct.reindex(sizes.index).fillna(0) >= 4)].index.to_numpy()
        rows = np.flatnonzero(np.isin(keys, wide)) + 1  # row numbers in the layer being written
        if not len(rows):
            return
        con, table = self.writer.con, gpkg_ident(self.writer.layer)
        got = []
        for i in range(0, len(rows), 900):
            part = rows[i:i + 900].tolist()
            got += con.execute(f"SELECT fid, address, request_id, category FROM {table} "
                               f"WHERE fid IN ({', '.join('?' * len(part))})", part).fetchall()
        got.sort()
        fids = np.array([g[0] for g in got], dtype=np.int64)
        key = keys[fids - 1]
        lon = ((key >> 28) - 181_000_000) / 1e6
        lat = ((key & ((1 << 28) - 1)) - 91_000_000) / 1e6
        address = np.array([g[1] for g in got], dtype=object)
        mask, points = placeholder_points(lon, lat, address, common=common_words(self.address_sample))
        keep = bool(self.placeholders)
        for plon, plat, count, streets in points:
            fate = " (kept: KEEP_PLACEHOLDERS)." if keep else "; they go to REJECTED."
            self.feedback.pushWarning(f"Placeholder location {plat:.6f}, {plon:.6f}: {count} request(s) whose "
                                      f"addresses name {streets} unrelated streets share this exact point{fate}")
        if keep or not mask.any():
            return
        self.writer.delete(fids[mask])
        moved = [got[i] for i in np.flatnonzero(mask)]
        self.write_rejected(pd.DataFrame({"raw_id": [g[2] for g in moved], "reject_reason": "placeholder location",
                                          "row": -1}))
        self.kept -= len(moved)
        self.reasons["placeholder location"] += len(moved)
        self.categories.subtract(pd.Series([g[3] for g in moved], dtype=object).value_counts().to_dict())

    def abort(self) -> None:
        self.writer.abort()

    def finish(self) -> dict:
        from .layerio import load_on_completion

        feedback = self.feedback
        if self.placeholders is not None:
            self.flag_placeholders()
        self.writer.close()
        if self.target is not None:
            dest_id = f"{self.target[0]}|layername={self.target[1]}"  # a source string any algorithm can read
            load_on_completion(self.context, "OUTPUT", dest_id, self.project, self.name)
        else:
            dest_id = self.copy_staged()
        self.alg.style_hints["OUTPUT"] = {"counts": {k: v for k, v in self.categories.items() if v > 0}}
        rejected = sum(self.reasons.values()) - self.duplicates
        results = {"OUTPUT": dest_id, "FETCHED": self.read, "KEPT": self.kept, "REJECTED_COUNT": rejected,
                   "DUPLICATES": self.duplicates}
        if self.rsink is not None:
            results["REJECTED"] = self.rejected_id
        for message in row_warnings(self.counts, self.tz):
            feedback.pushWarning(message)
        reasons = {k: v for k, v in self.reasons.most_common() if v}
        feedback.pushInfo(f"{self.read} rows read: {self.kept} kept, {rejected} rejected, {self.duplicates} "
                          "duplicates" + (f" ({reasons})" if reasons else ""))
        if self.kept + rejected + self.duplicates != self.read:
            raise QgsProcessingException("Internal error: kept + rejected + duplicates differs from the rows read.")
        return results

    def copy_staged(self) -> str:
        """The staged GeoPackage into the OUTPUT feature sink (memory layer, Shapefile, …), in batches. Rows are
        read with SQLite, not OGR, whose float seconds would turn .727 into .726."""
        import sqlite3
        import struct

        from qgis.PyQt.QtCore import Qt

        sink, dest_id = self.alg.parameterAsSink(self.parameters, "OUTPUT", self.context, request_fields(),
                                                 QgsWkbTypes.Type.Point, WGS84)
        if sink is None:
            raise QgsProcessingException(self.alg.invalidSinkError(self.parameters, "OUTPUT"))
        fields = request_fields()
        dates = [i for i, name in enumerate(FIELDS) if REQUEST_BULK_TYPES.get(name) == "datetime"]
        con = sqlite3.connect(self.staged[0])
        try:
            cursor = con.execute(f"SELECT geom, {', '.join(gpkg_ident(n) for n in FIELDS)} FROM "
                                 f"{gpkg_ident(self.staged[1])} ORDER BY fid")
            done = 0
            while True:
                rows = cursor.fetchmany(50_000)
                if not rows:
                    break
                batch = []
                for row in rows:
                    out = QgsFeature(fields)
                    x, y = struct.unpack_from("<dd", row[0], 13)  # GeoPackage header (8) + WKB point header (5)
                    out.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
                    values = list(row[1:])
                    for i in dates:
                        if values[i] is not None:
                            values[i] = QDateTime.fromString(values[i], Qt.DateFormat.ISODateWithMs)
                    out.setAttributes(values)
                    batch.append(out)
                if not sink.addFeatures(batch, QgsFeatureSink.Flag.FastInsert):
                    raise QgsProcessingException(f"Could not write the requests: {sink.lastError()}")
                done += len(rows)
                self.feedback.setProgress(100.0 * done / max(self.kept, 1))
        finally:
            con.close()
        del sink
        Path(self.staged[0]).unlink(missing_ok=True)
        return dest_id
