# SPDX-License-Identifier: GPL-2.0-or-later
"""Bulk writer for large point outputs into a GeoPackage: rows go in through one executemany (SQLite speed)
instead of one QgsFeature per row, which is what makes million-row fetches and imports take seconds."""

from __future__ import annotations

import queue
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np

BULK_PAGE_SIZE = 65_536  # SQLite's largest page


def fill_spatial_index(con: sqlite3.Connection, table: str, geom: str, ids, minx, maxx, miny, maxy) -> None:
    """Write a packed R*Tree (core.rtree.pack) into the GeoPackage spatial index of ``table``, created empty by
    GDAL (so its triggers and extension rows are GDAL's own): seconds for millions of rows, where SQLite's
    one-by-one insertion takes minutes."""
    from .core.rtree import pack

    name = f"rtree_{table}_{geom}"
    nodes, rowids, parents = pack(ids, minx, maxx, miny, maxy)
    for shadow in ("node", "rowid", "parent"):
        con.execute(f"DELETE FROM {ident(name + '_' + shadow)}")
    con.executemany(f"INSERT INTO {ident(name + '_node')} VALUES (?, ?)", nodes)
    rowid_table = ident(name + "_rowid")
    for lo in range(0, len(rowids[0]), 100_000):  # many rows per statement: twice as fast for 10M rows
        insert_rows(con, rowid_table, ["rowid", "nodeno"], [rowids[0][lo:lo + 100_000].tolist(),
                                                             rowids[1][lo:lo + 100_000].tolist()])
    con.executemany(f"INSERT INTO {ident(name + '_parent')} VALUES (?, ?)", parents)


def create_spatial_index(path: str, layer: str) -> None:
    from osgeo import ogr

    ds = ogr.Open(path, 1)
    result = ds.ExecuteSQL(f"SELECT CreateSpatialIndex({_quote(layer)}, 'geom')")
    if result is not None:
        ds.ReleaseResultSet(result)  # an unreleased result set keeps the file open (and locked)
    ds = None


def gpkg_destination(value: str) -> tuple[str, str] | None:
    """(file, layer name) when an output destination is a new GeoPackage (a path or an ogr: URI).

    Only files that do not exist yet qualify: an existing GeoPackage may be open in QGIS through its own
    connection, and writing beside it with a second SQLite connection could block on its locks."""
    target = _gpkg_target(value)
    if target is None or Path(target[0]).exists():
        return None
    return target


def _gpkg_target(value) -> tuple[str, str] | None:
    if not isinstance(value, str):
        return None
    m = re.match(r"""^ogr:dbname='([^']+\.gpkg)'\s+table="([^"]+)".*$""", value.strip(), re.I)
    if m:
        return m.group(1), m.group(2)
    if value.lower().endswith(".gpkg") and "|" not in value:
        return value, Path(value).stem
    return None


def connect(path: str, created: bool) -> sqlite3.Connection:
    """A connection for bulk writing. A GeoPackage just ``created`` (by GDAL, still without rows) gets 64 KiB pages
    first: appending a million rows then touches a sixteenth of the pages it would with SQLite's default 4 KiB."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("PRAGMA temp_store = MEMORY")
    if created:
        con.execute(f"PRAGMA page_size = {BULK_PAGE_SIZE}")
        con.execute("VACUUM")  # an empty file: this only rewrites its few pages at the new size
    return con


@contextmanager
def bulk_insert(con: sqlite3.Connection, table: str):
    """GDAL keeps gpkg_ogr_contents.feature_count and the spatial index current with triggers that run once per
    inserted row; for a bulk insert they are lifted, the count set once afterwards (and the index filled in bulk
    by the caller), and the triggers put back as they were."""
    triggers = con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ? "
                           "AND (name LIKE 'trigger_insert_feature_count_%' OR name LIKE 'rtree_%_insert')",
                           (table,)).fetchall()
    for name, _ in triggers:
        con.execute(f"DROP TRIGGER {ident(name)}")
    try:
        yield
    finally:
        for _, sql in triggers:
            con.execute(sql)
    con.execute(f"UPDATE gpkg_ogr_contents SET feature_count = (SELECT count(*) FROM {ident(table)}) "
                "WHERE lower(table_name) = lower(?)", (table,))


def host_parameters(con: sqlite3.Connection) -> int:
    """The most host parameters a statement may have on this connection: SQLite's limit (32,766 by default
    since 3.32) where Python can read it (3.11 and later), else 999, the smallest of any SQLite build."""
    if hasattr(con, "getlimit"):
        return min(int(con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)), 32_766)
    return 999


def insert_rows(con: sqlite3.Connection, table: str, names: list[str], columns: list[list],
                literals: dict[str, str] | None = None) -> None:
    """INSERT the rows of ``columns`` (one list per name, in order) into ``table``, as many rows per statement as
    SQLite's limit on host parameters allows (a few thousand; a hundred where only 999 are known to be allowed).
    SQLite's per-statement overhead, not the values, is what a million one-row INSERTs pay for; and the GIL is let
    go for each statement's step, so with other threads busy in Python (a fetch's pages being parsed and
    normalised) every statement waits to get it back: 90 rows a statement made a million rows take 60 s against
    a busy thread, 3,000 took 5 s (2.4 s alone). ``literals`` are columns with one text value for every row,
    written into the statement itself."""
    literals = literals or {}
    width = len(names)
    one = "(" + ", ".join(["?"] * width + [_quote(v) for v in literals.values()]) + ")"
    quoted = ", ".join(ident(c) for c in [*names, *literals])
    head = f"INSERT INTO {table} ({quoted}) VALUES "  # table: an identifier the caller quoted
    n = len(columns[0]) if columns else 0
    # and at most about a megabyte of statement text: literal columns are written into every row's parentheses
    per = max(1, min(4_000, host_parameters(con) // max(width, 1), 1_000_000 // len(one)))
    flat = list(chain.from_iterable(zip(*columns)))  # row by row
    full, step = n // per * per, per * width
    if full:
        con.executemany(head + ", ".join([one] * per), (flat[i:i + step] for i in range(0, full * width, step)))
    if full < n:  # the rest in one statement too
        con.execute(head + ", ".join([one] * (n - full)), flat[full * width:])


def point_blobs(x: np.ndarray, y: np.ndarray, srs_id: int) -> list[bytes]:
    """GeoPackage geometry blobs of points (little endian, no envelope), built in one numpy pass."""
    n = len(x)
    rec = np.zeros(n, dtype=[("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("srs", "<i4"), ("order", "u1"),
                             ("type", "<u4"), ("x", "<f8"), ("y", "<f8")])
    rec["magic"], rec["version"], rec["flags"], rec["srs"] = b"GP", 0, 1, srs_id
    rec["order"], rec["type"], rec["x"], rec["y"] = 1, 1, x, y
    raw = rec.tobytes()
    size = rec.dtype.itemsize
    return [raw[i * size:(i + 1) * size] for i in range(n)]


def write_points(path: str, layer_name: str, x: np.ndarray, y: np.ndarray, columns: dict,
                 types: dict[str, str], epsg: int = 4326, chunk: int = 100_000) -> int:
    """Create (or replace) ``layer_name`` in the GeoPackage ``path`` with the given points and columns.

    ``types`` maps column -> 'string' | 'int' | 'double' | 'datetime' | 'date'. Returns the rows written."""
    return _write_layer(path, layer_name, columns, types, (np.asarray(x, dtype=float), np.asarray(y, dtype=float)),
                        epsg, chunk)


def write_table(path: str, layer_name: str, columns: dict, types: dict[str, str],
                chunk: int = 100_000) -> int:
    """Create (or replace) the attribute table ``layer_name`` (no geometry) in the GeoPackage ``path``."""
    return _write_layer(path, layer_name, columns, types, None, 0, chunk)


def _write_layer(path, layer_name, columns, types, xy, epsg, chunk) -> int:
    writer = LayerWriter(path, layer_name, types, epsg if xy is not None else None, chunk)
    try:
        writer.append(columns, *(xy if xy is not None else (None, None)))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.rows


class LayerWriter:
    """A GeoPackage layer written a chunk at a time (streaming outputs: memory holds one chunk, plus 16 bytes a
    point for the spatial index, which is packed once at ``close``). ``epsg`` None writes an attribute table.
    Rows are numbered 1..n in the order appended; ``delete`` removes rows by that number before ``close``."""

    def __init__(self, path: str, layer_name: str, types: dict[str, str], epsg: int | None = 4326,
                 chunk: int = 100_000):
        from osgeo import ogr, osr

        ogr_types = {"string": ogr.OFTString, "datetime": ogr.OFTDateTime, "date": ogr.OFTDate,
                     "int": ogr.OFTInteger64, "double": ogr.OFTReal}
        self.path, self.layer, self.types, self.chunk = path, layer_name, types, chunk
        self.points = epsg is not None
        driver = ogr.GetDriverByName("GPKG")
        created = not Path(path).exists()
        ds = driver.CreateDataSource(path) if created else driver.Open(path, 1)
        if ds is None:
            raise OSError(f"Cannot write the GeoPackage {path}")
        for i in range(ds.GetLayerCount()):
            if ds.GetLayer(i).GetName() == layer_name:
                ds.DeleteLayer(i)
                break
        if self.points:
            srs = osr.SpatialReference()
            srs.ImportFromEPSG(epsg)
            lyr = ds.CreateLayer(layer_name, srs, ogr.wkbPoint,
                                 options=["SPATIAL_INDEX=NO", "FID=fid", "GEOMETRY_NAME=geom"])
        else:
            lyr = ds.CreateLayer(layer_name, None, ogr.wkbNone, options=["FID=fid"])
        for name in types:
            lyr.CreateField(ogr.FieldDefn(name, ogr_types[types[name]]))
        ds = None
        if self.points:
            create_spatial_index(path, layer_name)  # on the empty table: GDAL's index, filled in bulk at close
        self.con = connect(path, created)
        self.srs_id = None
        if self.points:
            self.srs_id = self.con.execute("SELECT srs_id FROM gpkg_geometry_columns WHERE table_name = ?",
                                           (layer_name,)).fetchone()[0]
        self._bulk = bulk_insert(self.con, layer_name)
        self._bulk.__enter__()
        self.rows = 0
        self.xs: list[np.ndarray] = []
        self.ys: list[np.ndarray] = []
        self.deleted: list[np.ndarray] = []

    def append(self, columns: dict, x=None, y=None) -> None:
        columns = {name: np.asarray(col) for name, col in columns.items()}
        n = len(next(iter(columns.values()))) if columns else (len(x) if x is not None else 0)
        if self.points:
            x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
            self.xs.append(x)
            self.ys.append(y)
        for start in range(0, n, self.chunk):  # values are built a chunk at a time: bounded memory
            part = slice(start, start + self.chunk)
            # a column holding one value (or none) goes into the statement as a literal instead of a value per row
            literals, bound = {}, []
            for name, col in columns.items():
                col = col[part]
                if _all_null(col):
                    continue  # NULL throughout: the column's default
                first = col[0]
                if isinstance(first, str) and "\x00" not in first and (col[:1000] == first).all() \
                        and (col == first).all():  # the head settles most columns without a full comparison
                    literals[name] = first
                else:
                    bound.append(name)
            if not self.points and not bound and columns:  # every row needs one bound value, or none goes in
                name = next(iter(columns))
                literals.pop(name, None)
                bound.append(name)
            values = [_sql_values(columns[name][part], self.types[name]) for name in bound]
            if not self.points:
                insert_rows(self.con, ident(self.layer), bound, values, literals)
            else:
                insert_rows(self.con, ident(self.layer), ["geom", *bound],
                            [point_blobs(x[part], y[part], self.srs_id), *values], literals)
        self.rows += n

    def delete(self, fids: np.ndarray) -> None:
        """Remove rows by number (1-based, in append order)."""
        fids = np.asarray(fids, dtype=np.int64)
        if len(fids):
            self.con.executemany(f"DELETE FROM {ident(self.layer)} WHERE fid = ?", ((int(f),) for f in fids))
            self.deleted.append(fids)

    def abort(self) -> None:
        """Stop without finishing (an error or a cancel): the connection is closed, the layer left incomplete."""
        if self.con is not None:
            self.con.close()
            self.con = None

    def close(self) -> None:
        if self.con is None:
            return
        try:
            if self.points and self.rows:
                x, y = np.concatenate(self.xs), np.concatenate(self.ys)
                self.xs, self.ys = [], []
                ok = np.isfinite(x) & np.isfinite(y)
                if self.deleted:
                    ok[np.concatenate(self.deleted) - 1] = False
                ids = np.flatnonzero(ok) + 1
                x, y = x[ok], y[ok]
                fill_spatial_index(self.con, self.layer, "geom", ids, x, x, y, y)
            self._bulk.__exit__(None, None, None)
            if self.points and self.rows and len(x):
                self.con.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? "
                                 "WHERE table_name = ?", (float(x.min()), float(y.min()), float(x.max()),
                                                          float(y.max()), self.layer))
            self.con.commit()
        finally:
            self.con.close()
            self.con = None


def _quote(text: str) -> str:
    """An SQL text literal: single quotes doubled."""
    return "'" + text.replace("'", "''") + "'"


def ident(name: str) -> str:
    """An SQL identifier (table, column, trigger): double quotes doubled, so any name — quotes, spaces, SQL — is
    one identifier and never code."""
    return '"' + str(name).replace('"', '""') + '"'


def _all_null(col: np.ndarray) -> bool:
    """Whether a column holds no value at all; the head settles most columns without a pass over all rows."""
    return bool(_nulls(col[:100]).all() and _nulls(col).all())


def _nulls(col: np.ndarray) -> np.ndarray:
    """NULL mask of a column: None, NaN or NaT."""
    if col.dtype == object:
        pd = sys.modules.get("pandas")
        if pd is not None:
            return pd.isna(col)  # one C pass (an elementwise == None and != itself would be two)
        # without pandas loaded (its import costs more than this pass over a few thousand values): None, and
        # the values unequal to themselves (NaN, NaT)
        return np.fromiter((v is None or v != v for v in col.tolist()), dtype=bool, count=len(col))
    if col.dtype.kind in "fM":
        return np.isnan(col) if col.dtype.kind == "f" else np.isnat(col)
    return np.zeros(len(col), dtype=bool)


def _sql_values(col, kind: str) -> list:
    """A column (numpy array or pandas Series) as plain Python values of its kind for SQLite: 'string', 'int',
    'double', or 'datetime' / 'date' as GeoPackage text; None for NULL. Vectorised: only NULL cells are touched
    one by one."""
    col = np.asarray(col)
    if kind in ("datetime", "date"):
        if col.dtype.kind != "M":  # text or objects: pandas parses them (datetime64 needs no round trip)
            import pandas as pd

            col = np.asarray(pd.to_datetime(pd.Series(col)), dtype="datetime64[ns]")
        stamps = col.astype("datetime64[ms]")
        text = np.datetime_as_string(stamps, unit="ms" if kind == "datetime" else "D").astype(object)
        text[np.isnat(stamps)] = None
        return text.tolist()
    missing = _nulls(col)
    if kind == "string":
        values = col.astype(object).tolist()
    else:
        numbers = np.where(missing, np.nan, col).astype(float) if col.dtype == object else col.astype(float)
        values = (np.where(missing, 0, numbers).astype(np.int64) if kind == "int" else numbers).tolist()
    for i in np.flatnonzero(missing).tolist():
        values[i] = None
    return values


SQL_TYPES = {"string": "TEXT", "int": "INTEGER", "double": "REAL"}


def computed_ahead(items: Iterable, convert: Callable) -> Iterator:
    """``convert(item)`` for each of ``items``, computed in a worker thread one item ahead of the consumer, so
    numpy or KD-tree work on the next piece overlaps SQLite work on this one (both release the GIL). An error in
    the worker is raised in the consumer; a consumer that stops early stops the worker."""
    def produce(hand) -> None:
        for item in items:
            hand(convert(item))

    return produced_ahead(produce, depth=1)


def produced_ahead(produce: Callable[[Callable], None], depth: int = 2) -> Iterator:
    """The items that ``produce(hand)`` hands over, produced in a worker thread (started when the first item is
    asked for) while the consumer works on the previous ones; see Ahead."""
    with Ahead(produce, depth) as ahead:
        yield from ahead


class Ahead:
    """The items that ``produce(hand)`` hands over, produced in a worker thread that starts at once, while the
    consumer works on the previous ones (at most ``depth`` waiting). An error in the producer is raised in the
    consumer; ``close`` (or leaving the ``with`` block) stops the producer (its next hand-over raises
    InterruptedError) and waits for it."""

    _DONE = object()

    def __init__(self, produce: Callable[[Callable], None], depth: int = 2):
        self.pending: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.worker = threading.Thread(target=self._work, args=(produce,), name="civic311-producer", daemon=True)
        self.worker.start()

    def _put(self, value) -> None:
        while not self.stop.is_set():
            try:
                self.pending.put(value, timeout=0.1)
                return
            except queue.Full:
                continue
        raise InterruptedError("The consumer stopped.")

    def _work(self, produce) -> None:
        try:
            produce(lambda item: self._put((item, None)))
            self._put((self._DONE, None))
        except InterruptedError:
            if not self.stop.is_set():
                self._put((None, InterruptedError("Cancelled.")))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            try:
                self._put((None, exc))
            except InterruptedError:
                pass

    def __iter__(self) -> Iterator:
        while True:
            value, error = self.pending.get()
            if error is not None:
                raise error
            if value is self._DONE:
                return
            yield value

    def close(self) -> None:
        self.stop.set()
        self.worker.join()

    def __enter__(self) -> Ahead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def copy_with_columns(src: tuple[str, str], dest: tuple[str, str], fids: np.ndarray,
                      new_fields: list[tuple[str, str]], pieces: Iterable[list[np.ndarray]]) -> int:
    """Copy the GeoPackage layer ``src`` (path, layer) into ``dest`` (path, layer) with computed columns joined by
    feature id, entirely inside SQLite. Input fields named like a new field are replaced.

    ``pieces`` yields the computed columns (one array per new field) for consecutive slices of ``fids``; a single
    piece may hold them all. When ``fids`` ascend, each piece is copied as soon as it is ready while the next one
    is computed (see ``computed_ahead``), so a lazy iterator of pieces overlaps the analysis with the writing."""
    from osgeo import ogr

    sds = ogr.Open(src[0])
    slyr = sds.GetLayerByName(src[1]) if src[1] else sds.GetLayer(0)
    src_layer = slyr.GetName()
    defn = slyr.GetLayerDefn()
    new_names = {n.lower() for n, _ in new_fields}
    # plain copies: the field definitions die with the data source
    kept = []
    for i in range(defn.GetFieldCount()):
        fd = defn.GetFieldDefn(i)
        if fd.GetName().lower() not in new_names:
            copy = ogr.FieldDefn(fd.GetName(), fd.GetType())
            copy.SetSubType(fd.GetSubType())
            copy.SetWidth(fd.GetWidth())
            copy.SetPrecision(fd.GetPrecision())
            kept.append(copy)
    fid_col, geom_col = slyr.GetFIDColumn() or "fid", slyr.GetGeometryColumn() or "geom"
    srs, gtype = slyr.GetSpatialRef(), slyr.GetGeomType()
    driver = ogr.GetDriverByName("GPKG")
    same_file = Path(src[0]).resolve() == Path(dest[0]).resolve()
    created = not Path(dest[0]).exists()
    ds = driver.CreateDataSource(dest[0]) if created else driver.Open(dest[0], 1)
    for i in range(ds.GetLayerCount()):
        if ds.GetLayer(i).GetName() == dest[1]:
            ds.DeleteLayer(i)
            break
    # the copy keeps the source's feature id column by name (an OBJECTID stays OBJECTID), as QGIS shows it as a field
    dest_fid = fid_col if fid_col.lower() not in new_names else "fid"
    dlyr = ds.CreateLayer(dest[1], srs, gtype, options=["SPATIAL_INDEX=NO", f"FID={dest_fid}", "GEOMETRY_NAME=geom"])
    for fd in kept:
        dlyr.CreateField(fd)
    ogr_types = {"string": ogr.OFTString, "int": ogr.OFTInteger64, "double": ogr.OFTReal}
    for name, kind in new_fields:
        dlyr.CreateField(ogr.FieldDefn(name, ogr_types[kind]))
    ds = sds = None
    spatial = gtype != ogr.wkbNone
    if spatial:
        create_spatial_index(dest[0], dest[1])  # on the empty table: GDAL's index, filled in bulk below
    fids = np.asarray(fids, dtype=np.int64)
    ascending = bool(np.all(fids[1:] > fids[:-1]))

    def rows(piece: tuple[slice, list[np.ndarray]]) -> tuple[slice, list[str], list[list]]:
        part, columns = piece
        arrays = {name: np.asarray(col) for (name, _), col in zip(new_fields, columns)}
        filled = [(n, k) for n, k in new_fields if not _all_null(arrays[n])]  # all-NULL columns stay NULL
        return part, [n for n, _ in filled], [fids[part].tolist(), *(_sql_values(arrays[n], k) for n, k in filled)]

    def sliced():
        start = 0
        for columns in pieces:
            size = len(columns[0]) if columns else len(fids)
            yield slice(start, start + size), columns
            start += size
        if start != len(fids):
            raise ValueError(f"computed columns cover {start} of {len(fids)} features")

    con = connect(dest[0], created)
    try:
        schema = "main"
        if not same_file:
            con.execute("ATTACH DATABASE ? AS src", (src[0],))
            schema = "src"
        cols = "".join(f", {ident(n)} {SQL_TYPES[k]}" for n, k in new_fields)
        con.execute(f"CREATE TEMP TABLE civic311_values (fid INTEGER PRIMARY KEY{cols})")
        names = [fd.GetName() for fd in kept]
        target = ", ".join(ident(c) for c in [dest_fid, "geom", *names, *(n for n, _ in new_fields)])
        select = ", ".join([f"s.{ident(fid_col)}", f"s.{ident(geom_col)}", *(f"s.{ident(c)}" for c in names),
                            *(f"v.{ident(n)}" for n, _ in new_fields)])
        copy = (f"INSERT INTO main.{ident(dest[1])} ({target}) SELECT {select} FROM {schema}.{ident(src_layer)} s "
                f"LEFT JOIN temp.civic311_values v ON v.fid = s.{ident(fid_col)}")
        fid_ref = f"s.{ident(fid_col)}"
        with bulk_insert(con, dest[1]):
            below = None  # the source rows up to this fid are copied
            for part, filled, values in computed_ahead(sliced(), rows):
                insert_rows(con, "temp.civic311_values", ["fid", *filled], values)
                if ascending and part.start < part.stop < len(fids):  # copy this piece now (the last copies the rest)
                    top = int(fids[part.stop - 1])
                    where = f"{fid_ref} <= {top:d}" + ("" if below is None else f" AND {fid_ref} > {below:d}")
                    con.execute(f"{copy} WHERE {where} ORDER BY {fid_ref}")
                    con.execute("DELETE FROM temp.civic311_values")
                    below = top
            where = "" if below is None else f" WHERE {fid_ref} > {below:d}"
            con.execute(f"{copy}{where} ORDER BY {fid_ref}")
            bulk_index = spatial and (_copy_source_index(con, schema, src_layer, geom_col, dest[1])
                                      or _index_copied_rows(con, dest[1], dest_fid))
        extent = con.execute(f"SELECT min_x, min_y, max_x, max_y FROM {schema}.gpkg_contents WHERE table_name = ?",
                             (src_layer,)).fetchone()
        if extent:
            con.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? WHERE table_name = ?",
                        (*extent, dest[1]))
        count = con.execute(f"SELECT count(*) FROM main.{ident(dest[1])}").fetchone()[0]
        con.commit()
    finally:
        con.close()
    if spatial and not bulk_index:  # geometries without envelopes: GDAL computes the index (slower)
        _rebuild_spatial_index(dest[0], dest[1])
    return count


def _copy_source_index(con: sqlite3.Connection, schema: str, src_table: str, src_geom: str, table: str) -> bool:
    """The copied rows keep their fids and geometries, so the source's own spatial index is theirs too: its
    R*Tree shadow tables are copied as they are (no envelope is recomputed). False when the source has none or
    it does not cover exactly the copied rows."""
    src_name, dest_name = f"rtree_{src_table}_{src_geom}", f"rtree_{table}_geom"
    found = con.execute(f"SELECT count(*) FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?",
                        (src_name + "_node",)).fetchone()[0]
    if not found:
        return False
    rows = con.execute(f"SELECT count(*) FROM {schema}.{ident(src_name + '_rowid')}").fetchone()[0]
    indexed = con.execute(f"SELECT count(*) FROM main.{ident(table)} WHERE geom IS NOT NULL").fetchone()[0]
    if rows != indexed:
        return False
    for shadow in ("node", "rowid", "parent"):
        con.execute(f"DELETE FROM main.{ident(dest_name + '_' + shadow)}")
        con.execute(f"INSERT INTO main.{ident(dest_name + '_' + shadow)} "
                    f"SELECT * FROM {schema}.{ident(src_name + '_' + shadow)}")
    return True


def _index_copied_rows(con: sqlite3.Connection, table: str, fid: str = "fid", chunk: int = 200_000) -> bool:
    """Fill the spatial index of a copied table from its geometry blobs (points, or envelopes in the blob
    headers). False when some geometry has no envelope to read."""
    from .core.rtree import envelopes

    ids, boxes = [], []
    last = 0
    while True:
        rows = con.execute(f"SELECT {ident(fid)}, geom FROM main.{ident(table)} WHERE {ident(fid)} > ? "
                           f"ORDER BY {ident(fid)} LIMIT ?", (last, chunk)).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        found = envelopes([r[1] for r in rows])
        if found is None:
            return False
        valid, minx, maxx, miny, maxy = found
        ids.append(np.array([r[0] for r in rows], dtype=np.int64)[valid])
        boxes.append(np.column_stack([minx, maxx, miny, maxy])[valid])
    if ids:
        box = np.concatenate(boxes)
        fill_spatial_index(con, table, "geom", np.concatenate(ids), box[:, 0], box[:, 1], box[:, 2], box[:, 3])
    return True


def _rebuild_spatial_index(path: str, table: str) -> None:
    from osgeo import ogr

    ds = ogr.Open(path, 1)
    name = _quote(table)
    for sql in (f"SELECT DisableSpatialIndex({name}, 'geom')", f"SELECT CreateSpatialIndex({name}, 'geom')"):
        result = ds.ExecuteSQL(sql)
        if result is not None:
            ds.ReleaseResultSet(result)
    ds = None
