# SPDX-License-Identifier: GPL-2.0-or-later
"""QGIS <-> numpy glue: bulk reads of point layers, polygon rings, metric CRSs and output fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureRequest,
    QgsFeatureSink,
    QgsFeatureSource,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeatureSourceDefinition,
    QgsProviderRegistry,
    QgsRectangle,
    QgsVectorDataProvider,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QDateTime, QVariant

from .core.geometry import Polygon, polygon_rings_from_wkb
from .core.textcodes import TextCodes

WGS84 = QgsCoordinateReferenceSystem("EPSG:4326")


@dataclass
class PointTable:
    """Point coordinates (in ``crs``) and selected attributes as numpy arrays; null geometries dropped."""

    x: np.ndarray
    y: np.ndarray
    attrs: dict[str, np.ndarray]
    crs: QgsCoordinateReferenceSystem
    null_geometry: int = 0
    total: int = 0
    fids: np.ndarray | None = None  # feature ids, aligned with x/y (for writing results back in bulk)


def _plain_source_path(parameters, key, layer) -> tuple[str, str] | None:
    """(path, layer name) when the layer can be read directly with OGR (no selection, filter or subset)."""
    value = parameters.get(key)
    if isinstance(value, QgsProcessingFeatureSourceDefinition):
        if value.selectedFeaturesOnly or value.featureLimit != -1 or getattr(value, "filterExpression", ""):
            return None
    if layer is None or layer.providerType() != "ogr" or layer.subsetString():
        return None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path")
    if not path or parts.get("subset"):
        return None
    return path, parts.get("layerName") or ""


def _string_codes(col, codes: TextCodes, cache: bool = True) -> np.ndarray:
    """Codes of a text column (masked or not) in ``codes``, whose labels grow as new values appear; -1 for NULL
    and empty text. Only the distinct values of the batch are decoded."""
    mask = np.ma.getmaskarray(col) if np.ma.isMaskedArray(col) else None
    data = np.ma.getdata(col)
    if data.dtype.kind == "S":
        out = codes.codes(data, cache)
    else:  # objects (GDAL gives some text columns so): factorised as they are
        import pandas as pd

        local, uniques = pd.factorize(data)
        out = np.array([codes.code_of(u) for u in uniques] + [-1], dtype=np.int32)[local]
    if mask is not None:
        out[mask] = -1
    return out


def _decode_strings(arr: np.ndarray) -> np.ndarray:
    """Arrow string columns (bytes, masked or not) to str objects, with None for NULL and ''; only distinct
    values are decoded (categories repeat)."""
    if np.ma.getdata(arr).dtype.kind not in "SO":
        return arr
    table = TextCodes()
    codes = _string_codes(arr, table, cache=False)
    return np.array([*table.labels, None], dtype=object)[codes]  # code -1 (missing) picks the trailing None


def _unmask(col):
    """A masked Arrow column as a plain array with NULL kept: NaN for numbers, NaT for dates, None for text."""
    if not np.ma.isMaskedArray(col):
        return _decode_strings(col)
    mask = np.ma.getmaskarray(col)
    data = np.ma.getdata(col)
    if data.dtype.kind in "iuf":
        out = data.astype(float)
        out[mask] = np.nan
        return out
    if data.dtype.kind == "M":
        out = data.copy()
        out[mask] = np.datetime64("NaT")
        return out
    if data.dtype.kind in "SO":
        return _decode_strings(col)
    out = data.astype(object)
    out[mask] = None
    return out


class _NotPlainPointsError(Exception):
    """A batch GDAL's Arrow stream cannot give as plain points (multi-points; for read_points, no feature ids)."""


def _open_points_ogr(path: str, layer_name: str, fields: list[str]):
    """(data source, layer) of an OGR point layer with every other field ignored, or None without an Arrow
    stream. The data source must outlive the layer."""
    from osgeo import ogr

    ds = ogr.Open(path)
    if ds is None:
        return None
    lyr = ds.GetLayerByName(layer_name) if layer_name else ds.GetLayer(0)
    if lyr is None or not hasattr(lyr, "GetArrowStreamAsNumPy"):
        return None
    defn = lyr.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    # GDAL 3.6 returns empty geometries when every attribute is ignored and the FID is left out: keep the FID
    lyr.SetIgnoredFields([n for n in names if n not in fields])
    return ds, lyr


def _ogr_point_batches(lyr, fields: list[str], converters: dict | None, tables: dict[str, TextCodes]):
    """(x, y, attributes, feature ids) of each Arrow batch of an OGR point layer (NaN coordinates for a feature
    without geometry). Fields in ``tables`` come as codes into them (see _string_codes); the others decoded,
    NULL kept, and converted by ``converters``. Raises _NotPlainPointsError for a batch that is not plain points."""
    from .core.geometry import points_from_wkb

    geom_col = lyr.GetGeometryColumn() or "wkb_geometry"
    fid_col = lyr.GetFIDColumn() or "OGC_FID"
    # masked arrays: a NULL stays NULL (unmasked, a NULL date read as 1970-01-01 and a NULL number as 0)
    for batch in lyr.GetArrowStreamAsNumPy(options=["USE_MASKED_ARRAYS=YES", "INCLUDE_FID=YES"]):
        geoms = batch[geom_col]
        if geoms.dtype.kind == "V":
            raw = geoms.view(np.uint8).reshape(len(geoms), geoms.dtype.itemsize)
            if geoms.dtype.itemsize < 21 or not (raw[:, 1] == 1).all():
                raise _NotPlainPointsError
            if (raw[:, 0] == 1).all():  # little-endian points: x and y are views (one copy, at the end)
                xy = geoms.view(np.dtype([("head", "V5"), ("x", "<f8"), ("y", "<f8")])) if geoms.dtype.itemsize == 21 \
                    else np.ascontiguousarray(raw[:, 5:21]).view("<f8").reshape(-1, 2)
                x, y = (xy["x"], xy["y"]) if xy.dtype.names else (xy[:, 0], xy[:, 1])
            else:
                x, y = points_from_wkb([bytes(r) for r in raw])
        else:  # WKB of varying length, or with NULL geometries (masked)
            null = np.ma.getmaskarray(geoms).tolist()
            wkbs = [None if m or g is None else bytes(g) for g, m in zip(np.ma.getdata(geoms).tolist(), null)]
            if any(w is not None and len(w) >= 5 and w[1] not in (1,) for w in wkbs):
                raise _NotPlainPointsError  # multipoints etc.: let QGIS handle them
            x, y = points_from_wkb(wkbs)
        attrs = {}
        for f in fields:
            if f in tables:
                attrs[f] = _string_codes(batch[f], tables[f])
                continue
            values = _unmask(batch[f])  # strings decoded, NULL kept
            attrs[f] = converters[f](values) if converters and f in converters else values
        yield x, y, attrs, batch[fid_col] if fid_col in batch else None


def _read_points_ogr(path: str, layer_name: str, fields: list[str], converters: dict | None = None,
                     categorical: Iterable[str] = ()):
    """Bulk read through GDAL's Arrow stream: about 10x faster than iterating QgsFeatures. ``converters``
    (field -> function of an array) are applied batch by batch, so that e.g. ten million date strings are
    never held at once; ``categorical`` fields are read as codes into one table of their distinct values (a
    pandas Categorical: no Python object per row). None when QGIS must read the layer."""
    opened = _open_points_ogr(path, layer_name, fields)
    if opened is None:
        return None
    xs, ys, fids, cols = [], [], [], {f: [] for f in fields}
    tables = {f: TextCodes() for f in categorical if f in cols}
    try:
        for x, y, attrs, fid in _ogr_point_batches(opened[1], fields, converters, tables):
            if fid is None:
                raise _NotPlainPointsError  # cannot tie rows back to QGIS feature ids: let QGIS read the layer
            xs.append(x)
            ys.append(y)
            fids.append(fid)
            for f in fields:
                cols[f].append(attrs[f])
    except _NotPlainPointsError:
        return None

    def joined(parts, dtype):
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    attrs = {f: joined(v, np.int32 if f in tables else object) for f, v in cols.items()}
    if tables:
        import pandas as pd
    for f, table in tables.items():
        attrs[f] = pd.Categorical.from_codes(attrs[f], categories=pd.Index(table.labels, dtype=object))
    return joined(xs, float), joined(ys, float), attrs, joined(fids, np.int64).astype(np.int64, copy=False)


@dataclass
class PointBlock:
    """Some points of a PointStream: coordinates (features without geometry left out) and attributes."""

    x: np.ndarray
    y: np.ndarray
    attrs: dict[str, np.ndarray]
    located: np.ndarray | None = None  # what the stream's ``locate`` gave, when the reader had time to call it


class PointStream:
    """The points of a source a block at a time, for analyses that only tally them: a whole city's history
    without holding it. A plain OGR point layer with a CRS is read through GDAL's Arrow stream in a worker
    thread, from the moment the stream is entered (``with``) while the caller prepares, and then one batch
    ahead of the caller's work; any other source is read whole (read_points) and given as one block.
    Coordinates stay in the source CRS (``crs``; without one, the CRS is settled from the coordinates as
    read_points does).

    ``categorical`` text fields come as int32 codes, -1 for NULL and empty text, into ``labels[field]``, which
    grows as new values appear. Features without geometry are counted in ``null_geometry`` and left out.

    ``locate`` (x, y -> array), once the caller sets it, is run by the reading thread on the blocks it reads while
    SHARE_AT or more wait for the caller (who lags behind): its result is the block's ``located``, else None."""

    AHEAD = 64  # batches read ahead at most: 4 million points, some 100 MB
    SHARE_AT = 8  # batches waiting from which the reader runs ``locate`` itself (the caller lags behind)
    locate: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def __init__(self, alg, parameters, key: str, context, feedback, fields: Iterable[str] = (),
                 categorical: Iterable[str] = ()):
        self.fields = [f for f in fields if f]
        source = _point_source(alg, parameters, key, context, self.fields)
        self.categorical = [f for f in categorical if f in self.fields]
        self.labels: dict[str, list] = {f: [] for f in self.categorical}
        self.null_geometry = 0
        self.expected = source.featureCount()  # -1 when unknown
        plain = _plain_source_path(parameters, key, alg.parameterAsVectorLayer(parameters, key, context))
        self._plain = plain if plain and source.sourceCrs().isValid() and _plain_points(*plain) else None
        self._whole: PointTable | None = None
        self._ahead = None
        if self._plain is not None:
            self.crs = source.sourceCrs()
        else:
            self._whole = read_points(alg, parameters, key, context, feedback, self.fields,
                                      categorical=self.categorical)
            self.crs, self.null_geometry = self._whole.crs, self._whole.null_geometry

    def __enter__(self) -> PointStream:
        from .gpkgwriter import Ahead

        if self._plain is not None and self._ahead is None:
            self._ahead = Ahead(self._produce, depth=self.AHEAD)
        return self

    def __exit__(self, *exc) -> None:
        if self._ahead is not None:
            self._ahead.close()

    def __iter__(self):
        if self._whole is not None:
            whole, self._whole = self._whole, None
            attrs = dict(whole.attrs)
            for f in self.categorical:
                self.labels[f].extend(attrs[f].categories)
                attrs[f] = attrs[f].codes.astype(np.int32)
            yield PointBlock(whole.x, whole.y, attrs)
            return
        if self._plain is None:
            return
        with self:
            for block, nulls, new in self._ahead:
                self.null_geometry += nulls
                for f, values in new.items():
                    self.labels[f].extend(values)
                yield block

    def _produce(self, hand) -> None:
        """In the worker thread: GDAL, decoding and the category codes, a batch at a time."""
        path, layer_name = self._plain
        opened = _open_points_ogr(path, layer_name, self.fields)
        if opened is None:
            raise QgsProcessingException(f"GDAL cannot read {path} any more.")
        tables = {f: TextCodes() for f in self.categorical}
        known = {f: 0 for f in self.categorical}  # labels handed over so far
        try:
            for x, y, attrs, _ in _ogr_point_batches(opened[1], self.fields, None, tables):
                ok = np.isfinite(x) & np.isfinite(y)
                nulls = len(ok) - int(np.count_nonzero(ok))
                if nulls:
                    x, y, attrs = x[ok], y[ok], {f: v[ok] for f, v in attrs.items()}
                new = {f: tables[f].labels[known[f]:] for f in self.categorical}
                known = {f: len(tables[f].labels) for f in self.categorical}
                block = PointBlock(np.array(x, dtype=float), np.array(y, dtype=float), attrs)
                locate = self.locate
                if locate is not None and self._ahead is not None and self._ahead.pending.qsize() >= self.SHARE_AT:
                    block.located = locate(block.x, block.y)  # the caller lags: take a share of its work
                hand((block, nulls, new))
        except _NotPlainPointsError:
            raise QgsProcessingException(
                f"{layer_name or path} holds geometries that are not single points although the layer is a "
                "point layer: save it again as single points (Multipart to singleparts).") from None


def _plain_points(path: str, layer_name: str) -> bool:
    """Whether GDAL gives the OGR layer as an Arrow stream and declares it single points (plain point WKB)."""
    from osgeo import ogr

    opened = _open_points_ogr(path, layer_name, [])
    return opened is not None and ogr.GT_Flatten(opened[1].GetGeomType()) == ogr.wkbPoint


def _qvariant_to_py(value):
    if value is None or (isinstance(value, QVariant) and value.isNull()):
        return None
    if isinstance(value, QDateTime):
        return value.toPyDateTime() if value.isValid() else None
    if hasattr(value, "toPyDate"):
        return value.toPyDate()
    return value


def read_points(alg, parameters, key: str, context, feedback, fields: Iterable[str] = (),
                dest_crs: QgsCoordinateReferenceSystem | None = None, keep_null: bool = False,
                converters: dict | None = None, categorical: Iterable[str] = ()) -> PointTable:
    """Coordinates and attributes of a point source, in ``dest_crs`` (default: the source CRS).

    Features without geometry are counted in ``null_geometry`` and dropped, or kept with NaN coordinates when
    ``keep_null`` (so results can be written back for every feature). ``converters`` (field -> function of an
    array) turn a field's values as they are read (in batches on the fast path). ``categorical`` text fields
    come as a pandas Categorical (NULL and empty text: a missing value), with no Python object per row."""
    fields = [f for f in fields if f]
    source = _point_source(alg, parameters, key, context, fields)
    crs = source.sourceCrs()
    want_metric = isinstance(dest_crs, str) and dest_crs == METRIC
    dest = crs if want_metric or dest_crs is None or not dest_crs.isValid() else dest_crs
    no_crs = not crs.isValid()
    if no_crs:
        dest = crs  # read as stored; the CRS is settled from the coordinates below
    layer = alg.parameterAsVectorLayer(parameters, key, context)
    plain = _plain_source_path(parameters, key, layer)
    categorical = [f for f in categorical if f in fields]
    fast = _read_points_ogr(*plain, fields, converters, categorical) if plain else None
    if fast is not None and (len(fast[0]) == 0 or np.isfinite(fast[0]).any() or source.featureCount() == 0):
        x, y, attrs, fids = fast
        if dest != crs:
            x, y = transform_xy(x, y, crs, dest, context)
    else:
        request = QgsFeatureRequest().setSubsetOfAttributes(fields, source.fields())
        if dest != crs:
            request.setDestinationCrs(dest, context.transformContext())
        xs, ys, ids, rows = [], [], [], {f: [] for f in fields}
        idx = [source.fields().lookupField(f) for f in fields]
        for feat in source.getFeatures(request):
            if feedback.isCanceled():
                break
            ids.append(feat.id())
            geom = feat.geometry()
            if geom.isNull() or geom.isEmpty():
                xs.append(np.nan)
                ys.append(np.nan)
            else:
                pt = geom.constGet()
                if QgsWkbTypes.isMultiType(geom.wkbType()):
                    pt = pt.geometryN(0)
                xs.append(pt.x())
                ys.append(pt.y())
            attrs_row = feat.attributes()
            for f, i in zip(fields, idx):
                rows[f].append(_qvariant_to_py(attrs_row[i]))
        x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        attrs = {f: np.asarray(v, dtype=object) for f, v in rows.items()}
        for f, convert in (converters or {}).items():
            if f in attrs:
                attrs[f] = convert(attrs[f])
        fids = np.asarray(ids, dtype=np.int64)
        if categorical:
            import pandas as pd
        for f in categorical:
            attrs[f] = pd.Categorical([None if v == "" else v for v in attrs[f].tolist()])
    if no_crs:
        crs = assume_lonlat(key, x, y, feedback)
        dest = crs if want_metric or dest_crs is None or not dest_crs.isValid() else dest_crs
        if dest != crs:
            x, y = transform_xy(x, y, crs, dest, context)
    if want_metric:
        dest = metric_crs_for(x, y, crs, context)
        x, y = transform_xy(x, y, crs, dest, context)
    ok = np.isfinite(x) & np.isfinite(y)
    total = len(x)
    if keep_null or ok.all():
        return PointTable(x, y, attrs, dest, int(total - ok.sum()), total, fids)
    return PointTable(x[ok], y[ok], {k: v[ok] for k, v in attrs.items()}, dest, int(total - ok.sum()), total,
                      fids[ok])


def _point_source(alg, parameters, key: str, context, fields: list[str]):
    """The point source of ``key``, with every field of ``fields``; else an error saying what to change."""
    source = alg.parameterAsSource(parameters, key, context)
    if source is None:
        raise QgsProcessingException(alg.invalidSourceError(parameters, key))
    if QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.GeometryType.PointGeometry:
        raise QgsProcessingException(f"{key} must be a point layer.")
    missing = [f for f in fields if source.fields().lookupField(f) < 0]
    if missing:
        raise QgsProcessingException(f"{key} has no field {', '.join(missing)}: choose an existing field.")
    return source


def assume_lonlat(key: str, x: np.ndarray, y: np.ndarray, feedback) -> QgsCoordinateReferenceSystem:
    """The CRS of a layer that has none: longitude/latitude (EPSG:4326) when every coordinate is in range, said
    in a warning; otherwise an error, since distances and overlays in an unknown CRS would be wrong."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.any() and ((np.abs(x[ok]) > 180) | (np.abs(y[ok]) > 90)).any():
        raise QgsProcessingException(f"{key} has no CRS and its coordinates are not longitude/latitude (e.g. "
                                     f"{x[ok][0]:.1f}, {y[ok][0]:.1f}): set the layer's CRS (Layer Properties > "
                                     "Source, or 'Assign projection') and run again.")
    feedback.pushWarning(f"{key} has no CRS: its coordinates are all within longitude/latitude ranges, so "
                         "EPSG:4326 is assumed. Set the layer's CRS if that is wrong.")
    return WGS84


def transform_xy(x: np.ndarray, y: np.ndarray, src: QgsCoordinateReferenceSystem,
                 dest: QgsCoordinateReferenceSystem, context) -> tuple[np.ndarray, np.ndarray]:
    """Bulk coordinate transformation through OSR (same PROJ pipeline as QGIS for these CRSs)."""
    if len(x) == 0 or src == dest:
        return x, y
    from osgeo import osr

    def srs(crs):
        """The same CRS for OSR: by EPSG code, else by its PROJ string, else by WKT (GDAL versions differ in
        which WKT2 flavours of custom CRSs they accept)."""
        s = osr.SpatialReference()
        authid = crs.authid()
        code = authid.split(":", 1)[1] if authid.upper().startswith("EPSG:") else ""
        if not (code.isdigit() and s.ImportFromEPSG(int(code)) == 0):
            proj = crs.toProj()
            if not proj or s.ImportFromProj4(proj) != 0:
                s.ImportFromWkt(crs.toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT1_GDAL))
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return s

    ct = osr.CoordinateTransformation(srs(src), srs(dest))
    ok = np.isfinite(x) & np.isfinite(y)
    ox, oy = np.full(len(x), np.nan), np.full(len(y), np.nan)
    if ok.any():
        out = np.asarray(ct.TransformPoints(np.column_stack([x[ok], y[ok]])))
        ox[ok], oy[ok] = out[:, 0], out[:, 1]
    return ox, oy


METRIC = "metric"  # dest_crs sentinel: an azimuthal equidistant CRS centred on the data actually read


def metric_crs_for(x: np.ndarray, y: np.ndarray, crs: QgsCoordinateReferenceSystem, context):
    """A CRS in which planar distances are ground metres over these coordinates: the layer's own CRS when it
    already is one (a projected metre CRS whose scale stays within 0.1 % over the data, like UTM or a state
    plane in metres — no transformation needed), else an azimuthal equidistant CRS centred on the data (a
    layer's cached extent can be stale, so the coordinates decide)."""
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return metric_crs(crs, QgsRectangle(0, 0, 0, 0), context)
    extent = QgsRectangle(float(x[ok].min()), float(y[ok].min()), float(x[ok].max()), float(y[ok].max()))
    if is_ground_metric(crs, extent, context):
        return crs
    # centred on the data itself: the circular mean of the longitudes (points at 179.9° and −179.9° are
    # neighbours, and the min/max extent would centre them on Greenwich, 177 % off in distance)
    xs, ys = x[ok], y[ok]
    if len(xs) > 100_000:
        pick = np.linspace(0, len(xs) - 1, 100_000).astype(np.int64)
        xs, ys = xs[pick], ys[pick]
    lon, lat = transform_xy(xs, ys, crs, WGS84, context) if crs != WGS84 else (xs, ys)
    good = np.isfinite(lon) & np.isfinite(lat)
    if not good.any():
        return metric_crs(crs, extent, context)
    rad = np.radians(lon[good])
    centre_lon = float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())))
    centre_lat = float(np.median(lat[good]))
    proj = f"+proj=aeqd +lat_0={centre_lat:.6f} +lon_0={centre_lon:.6f} +datum=WGS84 +units=m +no_defs"
    return QgsCoordinateReferenceSystem.fromProj(proj)


ISOMETRY_TOLERANCE = 0.001


def is_ground_metric(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle, context) -> bool:
    """True when 1 km in ``crs`` measures 1 km on the ellipsoid (within ISOMETRY_TOLERANCE) east, north and
    diagonally at 25 places spread over ``extent``. Geographic and non-metre CRSs fail the test."""
    from qgis.core import QgsDistanceArea, QgsPointXY

    if not crs.isValid() or crs.isGeographic():
        return False
    area = QgsDistanceArea()
    area.setSourceCrs(crs, context.transformContext())
    if not area.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030"):
        return False
    step = 1000.0
    for px in np.linspace(extent.xMinimum(), extent.xMaximum(), 5):
        for py in np.linspace(extent.yMinimum(), extent.yMaximum(), 5):
            for dx, dy in ((step, 0.0), (0.0, step), (step, step)):
                ground = area.measureLine(QgsPointXY(px, py), QgsPointXY(px + dx, py + dy))
                if not np.isfinite(ground) or abs(ground / np.hypot(dx, dy) - 1.0) > ISOMETRY_TOLERANCE:
                    return False
    return True


def metric_crs(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle, context) -> QgsCoordinateReferenceSystem:
    """Azimuthal equidistant CRS centred on the data: distances in true metres whatever the input CRS."""
    centre = QgsCoordinateTransform(crs, WGS84, context.transformContext()).transform(extent.center())
    proj = f"+proj=aeqd +lat_0={centre.y():.6f} +lon_0={centre.x():.6f} +datum=WGS84 +units=m +no_defs"
    return QgsCoordinateReferenceSystem.fromProj(proj)


@dataclass
class PolygonTable:
    features: list[QgsFeature]
    polygons: list[Polygon]
    centroids: np.ndarray  # (n, 2) in the target CRS
    repaired: list[str] = field(default_factory=list)
    crs: QgsCoordinateReferenceSystem | None = None


def polygon_layer_crs(source, key: str, feedback) -> QgsCoordinateReferenceSystem:
    """assume_lonlat for a polygon layer without a CRS, from its extent."""
    extent = source.sourceExtent()
    x = np.array([extent.xMinimum(), extent.xMaximum()])
    y = np.array([extent.yMinimum(), extent.yMaximum()])
    return assume_lonlat(key, x, y, feedback)


def read_polygons(alg, parameters, key: str, context, feedback, dest_crs=None, label_field: str = "") -> PolygonTable:
    """Features and rings of a polygon source in ``dest_crs``; invalid geometries are repaired, never dropped."""
    source = alg.parameterAsSource(parameters, key, context)
    if source is None:
        raise QgsProcessingException(alg.invalidSourceError(parameters, key))
    if QgsWkbTypes.geometryType(source.wkbType()) != QgsWkbTypes.GeometryType.PolygonGeometry:
        raise QgsProcessingException(f"{key} must be a polygon layer.")
    want_metric = isinstance(dest_crs, str) and dest_crs == METRIC
    source_crs = source.sourceCrs()
    if not source_crs.isValid():
        source_crs = polygon_layer_crs(source, key, feedback)
    transform = None
    if not want_metric and dest_crs is not None and dest_crs.isValid() and dest_crs != source_crs:
        transform = QgsCoordinateTransform(source_crs, dest_crs, context.transformContext())
    features, polygons, cents, repaired = [], [], [], []
    # validity is checked (and repaired) here, so Processing's own check must not abort or skip features
    for feat in source.getFeatures(QgsFeatureRequest(), QgsProcessingFeatureSource.Flag.FlagSkipGeometryValidityChecks):
        if feedback.isCanceled():
            break
        geom = feat.geometry()
        if not geom.isNull() and not geom.isGeosValid():
            label = str(feat[label_field]) if label_field else f"feature {feat.id()}"
            geom = geom.makeValid()
            if geom.type() != QgsWkbTypes.GeometryType.PolygonGeometry:
                geom = geom.convertToType(QgsWkbTypes.GeometryType.PolygonGeometry, True) or geom
            feat.setGeometry(geom)
            repaired.append(label)
        features.append(feat)
        work = QgsGeometry(geom)
        if not work.isNull() and QgsWkbTypes.isCurvedType(work.wkbType()):
            work = QgsGeometry(work.constGet().segmentize())
        if transform is not None and not work.isNull():
            work.transform(transform)
        polygons.append(polygon_rings_from_wkb(bytes(work.asWkb())) if not work.isNull() else [])
        cent = work.centroid() if not work.isNull() else QgsGeometry()
        cents.append((cent.asPoint().x(), cent.asPoint().y()) if not cent.isNull() else (np.nan, np.nan))
    centroids = np.asarray(cents, dtype=float).reshape(-1, 2)
    crs_out = dest_crs if transform is not None else source_crs
    if want_metric:
        sizes = [sum(len(r) for r in rings) for rings in polygons]
        allv = np.vstack([r for rings in polygons for r in rings]) if any(sizes) else np.empty((0, 2))
        crs_out = metric_crs_for(allv[:, 0], allv[:, 1], source_crs, context)
        mx, my = transform_xy(allv[:, 0], allv[:, 1], source_crs, crs_out, context)
        cx, cy = transform_xy(centroids[:, 0], centroids[:, 1], source_crs, crs_out, context)
        centroids = np.column_stack([cx, cy])
        pos = 0
        for rings in polygons:
            for k, ring in enumerate(rings):
                rings[k] = np.column_stack([mx[pos:pos + len(ring)], my[pos:pos + len(ring)]])
                pos += len(ring)
    if repaired:
        feedback.pushWarning(f"Repaired {len(repaired)} invalid polygon(s) with makeValid (kept, not dropped): "
                             + ", ".join(repaired[:20]) + (" …" if len(repaired) > 20 else ""))
    return PolygonTable(features, polygons, centroids, repaired, crs_out)


QT_TYPES = {"int": QVariant.LongLong, "double": QVariant.Double, "string": QVariant.String}


def output_fields(input_fields: QgsFields, new: list[tuple[str, str]], feedback=None) -> tuple[QgsFields, list[int]]:
    """Input fields (minus any that clash with a new name) followed by the new fields.

    Returns the fields and the indices of the kept input attributes.
    """
    new_names = {n.lower() for n, _ in new}
    out = QgsFields()
    keep = []
    for i, fld in enumerate(input_fields):
        if fld.name().lower() in new_names:
            if feedback is not None:
                feedback.pushWarning(f"Input field {fld.name()} is replaced by the computed field of that name.")
            continue
        out.append(fld)
        keep.append(i)
    for name, kind in new:
        out.append(QgsField(name, QT_TYPES[kind]))
    return out, keep


def py_value(value):
    """numpy scalar -> plain Python for QgsFeature attributes (NaN -> NULL)."""
    if value is None:
        return None
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def write_rows(sink, features: list[QgsFeature], keep: list[int], columns: list[np.ndarray], feedback,
               geometries=None, batch: int = 1_000) -> None:
    """Write input features (kept attributes) plus computed columns to ``sink``, in batches; each column is made
    plain Python values once (py_value's rules: NaN and infinities are NULL)."""
    n = len(features)
    values = [_finite_list(np.asarray(col)) for col in columns]
    buffer: list[QgsFeature] = []
    for i, feat in enumerate(features):
        out = QgsFeature()
        out.setGeometry(geometries[i] if geometries is not None else feat.geometry())
        attrs = feat.attributes()
        out.setAttributes([attrs[k] for k in keep] + [col[i] for col in values])
        buffer.append(out)
        if len(buffer) == batch or i == n - 1:
            if feedback.isCanceled():
                break
            if not sink.addFeatures(buffer, QgsFeatureSink.Flag.FastInsert):
                raise QgsProcessingException(f"Could not write the features to the output: {sink.lastError()}")
            buffer = []
            feedback.setProgress(100.0 * (i + 1) / max(n, 1))


def _finite_list(col: np.ndarray) -> list:
    """A column as plain Python values by py_value's rules, converted once per column instead of once per cell."""
    if col.dtype.kind == "f":
        values = col.tolist()
        for i in np.flatnonzero(~np.isfinite(col)).tolist():
            values[i] = None
        return values
    if col.dtype.kind in "iub":
        return col.tolist()
    return [py_value(v) for v in col]


def _plain_list(col: np.ndarray) -> list:
    """Plain Python values (NULL for NaN/None), converted once per column instead of once per cell."""
    if col.dtype == object:
        return [py_value(v) for v in col]
    values = col.tolist()
    if col.dtype.kind == "f" and np.isnan(col).any():
        values = [None if v != v else v for v in values]
    return values


def write_by_fid(sink, source, fids: np.ndarray, columns: list[np.ndarray], feedback, keep: list[int] | None = None,
                 batch: int = 50_000) -> int:
    """Copy every feature of ``source`` to ``sink`` (attributes ``keep``, default all) with its computed values
    appended, looked up by feature id. Features missing from ``fids`` get NULL values. Written in batches: this
    is the hot loop of large outputs, so each row's values are prepared once as a list.
    """
    rows = [list(r) for r in zip(*(_plain_list(col) for col in columns))]
    position = dict(zip(fids.tolist(), rows))
    nulls = [None] * len(columns)
    total = max(source.featureCount(), 1)
    buffer = []
    written = 0
    for feat in source.getFeatures():
        values = position.get(feat.id(), nulls)
        if keep is None:
            feat.setAttributes(feat.attributes() + values)
        else:
            attrs = feat.attributes()
            feat.setAttributes([attrs[k] for k in keep] + values)
        buffer.append(feat)
        if len(buffer) >= batch:
            if not sink.addFeatures(buffer, QgsFeatureSink.Flag.FastInsert):
                raise QgsProcessingException(f"Could not write to the output: {sink.lastError()}")
            written += len(buffer)
            buffer = []
            feedback.setProgress(100.0 * written / total)
            if feedback.isCanceled():
                return written
    if buffer and not sink.addFeatures(buffer, QgsFeatureSink.Flag.FastInsert):
        raise QgsProcessingException(f"Could not write to the output: {sink.lastError()}")
    return written + len(buffer)


def bulk_destination(alg, parameters, key: str) -> tuple[tuple[str, str] | None, object, str]:
    """(GeoPackage target for a bulk write or None, project to load it into or None, layer name) of a
    destination parameter, read without side effects: parameterAsOutputLayer would register a layer to load
    (a 'memory:…' one for temporary outputs) that the bulk path never creates, which the desktop then reports
    as 'not correctly generated' — or, for a file, adds it to the project a second time."""
    from qgis.core import QgsProcessingOutputLayerDefinition

    from .gpkgwriter import gpkg_destination

    value = parameters.get(key)
    project, name = None, alg.parameterDefinition(key).description()
    if isinstance(value, QgsProcessingOutputLayerDefinition):
        project = value.destinationProject
        name = value.destinationName or name
        value = value.sink.staticValue()
    target = gpkg_destination(value) if isinstance(value, str) else None
    return target, project, name


def load_on_completion(context, key: str, dest_id: str, project, name: str) -> None:
    """Load a bulk-written layer when the run asked for it (the dialog's 'open output file' option)."""
    from qgis.core import QgsProcessingContext

    if project is not None:
        context.addLayerToLoadOnCompletion(dest_id, QgsProcessingContext.LayerDetails(name, project, key))


def _bulk_copy(alg, parameters, input_key: str, output_key: str, context):
    """(source, target, project, layer name) when OUTPUT can be copied inside SQLite (GeoPackage to a new
    GeoPackage), else None."""
    target, project, name = bulk_destination(alg, parameters, output_key)
    plain = _plain_source_path(parameters, input_key, alg.parameterAsVectorLayer(parameters, input_key, context))
    if target is not None and plain is not None and plain[0].lower().endswith(".gpkg") and \
            not (plain[0] == target[0] and (plain[1] or "") == target[1]):
        return plain, target, project, name
    return None


def can_copy_with_columns(alg, parameters, input_key: str, output_key: str, context) -> bool:
    """Whether write_copy_with_columns copies the input inside SQLite (GeoPackage to a new GeoPackage), with the
    input's own stored geometries."""
    return _bulk_copy(alg, parameters, input_key, output_key, context) is not None


def write_copy_with_columns(alg, parameters, input_key: str, output_key: str, context, feedback, source,
                            fids: np.ndarray, new_fields: list[tuple[str, str]], pieces: Iterable[list[np.ndarray]]):
    """OUTPUT = the input features plus computed columns. ``pieces`` yields the columns (one array per new field)
    for consecutive slices of ``fids``: a list with one piece, or a lazy iterator whose pieces are computed while the
    previous ones are written. GeoPackage to GeoPackage runs inside SQLite (a copy and a join); any other
    combination goes through a QGIS sink, feature by feature. Returns the destination id."""
    from .gpkgwriter import copy_with_columns

    bulk = _bulk_copy(alg, parameters, input_key, output_key, context)
    if bulk is not None:
        plain, target, project, name = bulk
        copy_with_columns(plain, target, fids, new_fields, pieces)
        dest_id = f"{target[0]}|layername={target[1]}"  # a source string any algorithm can read back
        load_on_completion(context, output_key, dest_id, project, name)
        return dest_id
    fields, keep = output_fields(source.fields(), new_fields, feedback)
    sink, dest_id = alg.parameterAsSink(parameters, output_key, context, fields, source.wkbType(), source.sourceCrs())
    if sink is None:
        raise QgsProcessingException(alg.invalidSinkError(parameters, output_key))
    columns = [np.concatenate(parts) for parts in zip(*pieces)] if new_fields else []
    write_by_fid(sink, source, fids, columns, feedback, keep)
    return dest_id


class CopyAlongside:
    """write_copy_with_columns started at once, for an algorithm with more outputs to compute: the GeoPackage copy
    (SQLite work, which releases the GIL) runs in a worker thread while the caller computes the others. Only
    where no other output of the run may name the same file (two writers of one SQLite file would block each
    other); otherwise, and through a QGIS sink, the copy is written at once, as write_copy_with_columns does.
    ``dest_id()`` waits for the copy and raises its error; leaving the ``with`` block always waits for it."""

    def __init__(self, alg, parameters, input_key: str, output_key: str, context, feedback, source,
                 fids: np.ndarray, new_fields: list[tuple[str, str]], pieces: list[list[np.ndarray]],
                 others: Iterable[str] = ()):
        import threading

        from .gpkgwriter import copy_with_columns

        self._thread = None
        self._error: BaseException | None = None
        bulk = _bulk_copy(alg, parameters, input_key, output_key, context)
        if bulk is None or _may_share_file(bulk[1][0], [parameters.get(k) for k in others]):
            self._dest = write_copy_with_columns(alg, parameters, input_key, output_key, context, feedback, source,
                                                 fids, new_fields, pieces)
            return
        plain, target, project, name = bulk
        self._dest = f"{target[0]}|layername={target[1]}"
        self._load = (context, output_key, project, name)

        def copy() -> None:
            try:
                copy_with_columns(plain, target, fids, new_fields, pieces)
            except BaseException as exc:  # noqa: BLE001 - raised in the caller by dest_id()
                self._error = exc

        self._thread = threading.Thread(target=copy, name="civic311-copy", daemon=True)
        self._thread.start()

    def dest_id(self) -> str:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._error is not None:
                raise self._error
            context, key, project, name = self._load
            load_on_completion(context, key, self._dest, project, name)
        return self._dest

    def __enter__(self) -> CopyAlongside:
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._thread.join()


def _may_share_file(path: str, values: list) -> bool:
    """Whether any of these output values (strings, output definitions, None) might write into the file
    ``path``: its file name in the value's text, or a value whose text cannot be read."""
    from qgis.core import QgsProcessingOutputLayerDefinition, QgsProperty

    name = Path(path).name.lower()
    for value in values:
        if value is None:
            continue
        if isinstance(value, QgsProcessingOutputLayerDefinition):
            if value.sink.propertyType() != QgsProperty.StaticProperty:  # an expression: known only later
                return True
            value = value.sink.staticValue()
        if not isinstance(value, str):
            return True
        if name in value.lower():
            return True
    return False


def index_output(layer: QgsVectorLayer, feedback=None) -> None:
    """Give an output layer a spatial index where it has none and its format can hold one: a Shapefile's .qix, a
    memory layer's index (GeoPackage and FlatGeobuf outputs are written with theirs). A format that holds none
    (GeoJSON, CSV) is said in the log: panning and location-based tools then read every feature."""
    if not layer.isSpatial() or layer.hasSpatialIndex() == QgsFeatureSource.SpatialIndexPresence.SpatialIndexPresent:
        return
    provider = layer.dataProvider()
    if provider is not None and provider.capabilities() & QgsVectorDataProvider.CreateSpatialIndex:
        if provider.createSpatialIndex():
            return
        if feedback is not None:
            feedback.pushWarning(f"Could not build a spatial index on {layer.source()}.")
    elif feedback is not None:
        feedback.pushInfo(f"{layer.source()} is in a format without a spatial index: for a large layer, save it as "
                          "a GeoPackage, which has one.")
