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

REQUEST_FIELD_TYPES = {"created_at": QVariant.DateTime, "closed_at": QVariant.DateTime}
REQUEST_BULK_TYPES = {"created_at": "datetime", "closed_at": "datetime"}


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
    """Rows of JSON objects -> frame of raw values; nested objects flattened with '_' (location_latitude, …).
    Missing values are None or NaN. Only columns that hold objects go through json_normalize: the flat
    majority is built by the DataFrame constructor in C."""
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
    return frame


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


def _is_csv(p: Path) -> bool:
    if not p.exists():
        raise QgsProcessingException(f"{p} does not exist.")
    with p.open("rb") as fh:
        head = fh.read(2048).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] not in (b"[", b"{")


def _read_csv(p: Path, **options) -> pd.DataFrame:
    import warnings

    import pandas as pd

    for encoding in ("utf-8-sig", "latin-1"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed coordinate columns: coerced later
                return pd.read_csv(p, keep_default_na=False, encoding=encoding, **options)
        except UnicodeDecodeError:
            continue
    raise QgsProcessingException(f"{p.name} is neither UTF-8 nor Latin-1 text.")


def csv_columns(path: str) -> list[str] | None:
    """The header of a CSV file (None for JSON), read without the rows."""
    p = Path(path)
    return [str(c) for c in _read_csv(p, dtype=str, nrows=0).columns] if _is_csv(p) else None


def read_csv_columns(path: str, header: list[str], usecols: list[str], numeric: tuple[str, ...] = ()) -> pd.DataFrame:
    """The ``usecols`` of a CSV whose ``header`` (from csv_columns) is known: exports have dozens of columns and a
    field map uses a few. The ``numeric`` ones (coordinates) are parsed as numbers where they can be; everything
    else stays raw text."""
    wanted = [i for i, c in enumerate(header) if c in set(usecols)]
    text = {i: str for i in wanted if header[i] not in numeric}
    frame = _read_csv(Path(path), usecols=wanted, dtype=text, na_values={i: [""] for i in wanted if i not in text})
    frame.columns = [header[i] for i in wanted]
    return frame


def read_file(path: str) -> pd.DataFrame:
    """CSV, GeoJSON, Socrata JSON, Open311 JSON, SeeClickFix, CKAN or Esri JSON -> frame of raw values.
    GeoJSON and Esri point geometries become the columns _geom_lon and _geom_lat."""
    p = Path(path)
    if _is_csv(p):
        return _read_csv(p, dtype=str)
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as err:
        raise QgsProcessingException(f"{p.name} is neither CSV nor valid JSON: {err}") from err
    return json_frame(data)


def json_frame(data) -> pd.DataFrame:
    if isinstance(data, list):
        return records_frame(data)
    if not isinstance(data, dict):
        raise QgsProcessingException("The JSON file holds neither a list of requests nor a FeatureCollection.")
    if isinstance(data.get("features"), list):
        rows = []
        for feat in data["features"]:
            props = dict(feat.get("properties") or feat.get("attributes") or {})
            geom = feat.get("geometry") or {}
            coords = geom.get("coordinates") if isinstance(geom, dict) else None
            if isinstance(coords, list) and len(coords) >= 2 and not isinstance(coords[0], list):
                props["_geom_lon"], props["_geom_lat"] = coords[0], coords[1]
            elif isinstance(geom, dict) and "x" in geom and "y" in geom:
                props["_geom_lon"], props["_geom_lat"] = geom["x"], geom["y"]
            rows.append(props)
        return records_frame(rows)
    for key in ("issues", "records", "service_requests", "requests", "data"):
        if isinstance(data.get(key), list):
            return records_frame(data[key])
    if isinstance(data.get("result"), dict) and isinstance(data["result"].get("records"), list):
        return records_frame(data["result"]["records"])
    raise QgsProcessingException("The JSON file holds no list of requests this importer knows.")


def locate_xy(result: Normalised, xy_crs: str | None, context,
              bbox: tuple[float, float, float, float] | None = None) -> None:
    """Turn state-plane X/Y rows into lon/lat (EPSG:4326); rows that still have no usable location move to the
    rejects (so none is lost), and so do X/Y rows outside ``bbox`` (lon/lat), the area the lat/lon rows were
    already checked against."""
    import pandas as pd

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
    if bad.any():
        moved = pd.DataFrame({"raw_id": kept.loc[bad, "request_id"], "reject_reason": "unusable X/Y coordinates",
                              "row": -1})
        result.rejected = pd.concat([result.rejected, moved], ignore_index=True)
        result.kept = kept = kept[~bad].reset_index(drop=True)
    if bbox is not None and use.any():
        use = kept["use_xy"].to_numpy(dtype=bool)
        lon, lat = kept["lon"].to_numpy(float), kept["lat"].to_numpy(float)
        out = use & ~((lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3]))
        if out.any():
            moved = pd.DataFrame({"raw_id": kept.loc[out, "request_id"], "reject_reason": "outside the requested area",
                                  "row": -1})
            result.rejected = pd.concat([result.rejected, moved], ignore_index=True)
            result.kept = kept[~out].reset_index(drop=True)


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
                                                   "address", "source")}
    created, closed = _qdt(kept["created_at"]), _qdt(kept["closed_at"])
    lon, lat = kept["lon"].tolist(), kept["lat"].tolist()
    buffer = []
    for i in range(len(kept)):
        f = QgsFeature(fields)
        f.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(lon[i], lat[i])))
        f.setAttributes([text["request_id"][i], created[i], closed[i], text["status"][i], text["category"][i],
                         text["descriptor"][i], text["agency"][i], text["address"][i], text["source"][i]])
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
    from qgis.core import QgsProcessingContext

    from .gpkgwriter import SPATIAL_INDEX_LIMIT, gpkg_destination, write_points

    destination = alg.parameterAsOutputLayer(parameters, "OUTPUT", context)
    target = gpkg_destination(destination)
    if target is not None:
        kept = result.kept
        types = {name: REQUEST_BULK_TYPES.get(name, "string") for name in FIELDS}
        write_points(target[0], target[1], kept["lon"].to_numpy(float), kept["lat"].to_numpy(float),
                     {name: kept[name] for name in FIELDS}, types)
        if len(kept) > SPATIAL_INDEX_LIMIT:
            feedback.pushInfo(f"{len(kept)} points written without a spatial index (building one would take longer "
                              "than the write): run 'Create spatial index' if you need one.")
        dest_id = f"{target[0]}|layername={target[1]}"  # a source string any algorithm can read back
        if context.project() is not None:
            context.addLayerToLoadOnCompletion(dest_id, QgsProcessingContext.LayerDetails(
                alg.parameterDefinition("OUTPUT").description(), context.project(), "OUTPUT"))
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
