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

from .core.normalise import FIELDS, Normalised, to_numbers
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


def compact_frame(frame: pd.DataFrame, numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """Less memory for a frame of decoded JSON, which holds one string object per cell: the ``numeric`` columns
    (coordinates) become numbers, and columns of few distinct values share one object per value."""
    import pandas as pd

    for name in frame.columns:
        col = frame[name]
        if col.dtype != object:
            continue
        if name in numeric:
            frame[name] = to_numbers(col)  # unusable text is NaN: a missing coordinate
            continue
        try:
            if len(set(col.iloc[:500].tolist())) < 100:
                codes, uniques = pd.factorize(col.to_numpy())
                frame[name] = np.append(uniques.astype(object), None)[codes]
        except TypeError:
            pass  # lists or other unhashable values: left as they are
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
                     encoding: str = "utf-8") -> pd.DataFrame:
    """The ``usecols`` of a CSV whose ``header`` (from csv_columns) is known: exports have dozens of columns and a
    field map uses a few. The ``numeric`` ones (coordinates) are parsed as numbers where they can be; everything
    else stays raw text."""
    wanted = [i for i, c in enumerate(header) if c in set(usecols)]
    text = {i: str for i in wanted if header[i] not in numeric}
    frame = _read_csv(Path(path), encoding, usecols=wanted, dtype=text,
                      na_values={i: [""] for i in wanted if i not in text})
    frame.columns = [header[i] for i in wanted]
    return frame


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


def _qdt(values: pd.Series) -> list:
    import pandas as pd

    out = []
    for v in values:
        if pd.isna(v):
            out.append(None)
        else:
            out.append(QDateTime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond // 1000))
    return out


def write_requests(sink, kept: pd.DataFrame, feedback, batch: int = 50_000) -> None:
    fields = request_fields()
    text = {name: kept[name].tolist() for name in ("request_id", "status", "category", "descriptor", "agency",
                                                   "address", "source", "channel")}
    created, closed = _qdt(kept["created_at"]), _qdt(kept["closed_at"])
    city = [None if np.isnan(v) else int(v) for v in kept["city_initiated"].to_numpy(float)]
    lon, lat = kept["lon"].tolist(), kept["lat"].tolist()
    buffer = []
    for i in range(len(kept)):
        f = QgsFeature(fields)
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(lon[i], lat[i])))
        f.setAttributes([text["request_id"][i], created[i], closed[i], text["status"][i], text["category"][i],
                         text["descriptor"][i], text["agency"][i], text["address"][i], text["source"][i],
                         text["channel"][i], city[i]])
        buffer.append(f)
        if len(buffer) >= batch:
            if not sink.addFeatures(buffer, QgsFeatureSink.Flag.FastInsert):
                raise QgsProcessingException(f"Could not write the requests: {sink.lastError()}")
            buffer = []
            feedback.setProgress(100.0 * i / max(len(kept), 1))
    if buffer and not sink.addFeatures(buffer, QgsFeatureSink.Flag.FastInsert):
        raise QgsProcessingException(f"Could not write the requests: {sink.lastError()}")


def write_outputs(alg, parameters, context, feedback, result: Normalised, source: str) -> dict:
    """OUTPUT (points, EPSG:4326), REJECTED (table) and the four counts. A GeoPackage destination is written in
    bulk (SQLite speed); other destinations go through a QGIS feature sink."""
    from .gpkgwriter import write_points
    from .layerio import bulk_destination, load_on_completion

    target, project, name = bulk_destination(alg, parameters, "OUTPUT")
    if target is not None:
        kept = result.kept
        types = {name: REQUEST_BULK_TYPES.get(name, "string") for name in FIELDS}
        write_points(target[0], target[1], kept["lon"].to_numpy(float), kept["lat"].to_numpy(float),
                     {name: kept[name] for name in FIELDS}, types)
        dest_id = f"{target[0]}|layername={target[1]}"  # a source string any algorithm can read back
        load_on_completion(context, "OUTPUT", dest_id, project, name)
    else:
        sink, dest_id = alg.parameterAsSink(parameters, "OUTPUT", context, request_fields(), QgsWkbTypes.Type.Point,
                                            WGS84)
        if sink is None:
            raise QgsProcessingException(alg.invalidSinkError(parameters, "OUTPUT"))
        write_requests(sink, result.kept, feedback)
        del sink
    alg.style_hints["OUTPUT"] = {"counts": result.kept["category"].value_counts().to_dict()}
    results = {"OUTPUT": dest_id, "FETCHED": result.read, "KEPT": len(result.kept),
               "REJECTED_COUNT": len(result.rejected) - result.duplicates, "DUPLICATES": result.duplicates}
    if parameters.get("REJECTED") is not None:
        rsink, rid = alg.parameterAsSink(parameters, "REJECTED", context, reject_fields(),
                                         QgsWkbTypes.Type.NoGeometry)
        if rsink is not None:
            feats = []
            for row in result.rejected.itertuples(index=False):
                f = QgsFeature(reject_fields())
                f.setAttributes([row.raw_id, row.reject_reason, source, int(row.row)])
                feats.append(f)
            rsink.addFeatures(feats, QgsFeatureSink.Flag.FastInsert)
            results["REJECTED"] = rid
    for message in result.warnings:
        feedback.pushWarning(message)
    reasons = result.rejected["reject_reason"].value_counts().to_dict() if len(result.rejected) else {}
    feedback.pushInfo(f"{result.read} rows read: {results['KEPT']} kept, {results['REJECTED_COUNT']} rejected, "
                      f"{result.duplicates} duplicates" + (f" ({reasons})" if reasons else ""))
    if results["KEPT"] + results["REJECTED_COUNT"] + results["DUPLICATES"] != results["FETCHED"]:
        raise QgsProcessingException("Internal error: kept + rejected + duplicates differs from the rows read.")
    return results
