# SPDX-License-Identifier: GPL-2.0-or-later
"""Geometry helpers on plain arrays: WKB polygons to rings, point-in-polygon assignment."""

from __future__ import annotations

import struct
from typing import List, Sequence

import numpy as np

Ring = np.ndarray  # (m, 2) float64, closed (first vertex == last vertex)
Polygon = List[Ring]  # all rings of all parts of one feature (even-odd rule applies)


def polygon_rings_from_wkb(wkb: bytes) -> Polygon:
    """Rings of a (Multi)Polygon WKB/ISO-WKB geometry (Z/M ordinates dropped)."""
    rings: Polygon = []
    _read_geometry(memoryview(wkb), 0, rings)
    return rings


def _read_geometry(buf: memoryview, offset: int, rings: Polygon) -> int:
    order = "<" if buf[offset] == 1 else ">"
    (gtype,) = struct.unpack_from(order + "I", buf, offset + 1)
    offset += 5
    has_z = bool(gtype & 0x80000000) or 1000 <= gtype % 4000 < 2000 or gtype % 4000 >= 3000
    has_m = bool(gtype & 0x40000000) or gtype % 4000 >= 2000
    base = (gtype & 0x0FFFFFFF) % 1000
    dims = 2 + int(has_z) + int(has_m)
    if base == 3:  # Polygon
        (nrings,) = struct.unpack_from(order + "I", buf, offset)
        offset += 4
        for _ in range(nrings):
            (npts,) = struct.unpack_from(order + "I", buf, offset)
            offset += 4
            coords = np.frombuffer(buf, dtype=order + "f8", count=npts * dims, offset=offset)
            rings.append(coords.reshape(npts, dims)[:, :2].astype(np.float64))
            offset += npts * dims * 8
        return offset
    if base in (6, 7):  # MultiPolygon, GeometryCollection: recurse into the parts
        (nparts,) = struct.unpack_from(order + "I", buf, offset)
        offset += 4
        for _ in range(nparts):
            offset = _read_geometry(buf, offset, rings)
        return offset
    if base == 1:  # a point inside a collection (from a repair): no area, skip it
        return offset + dims * 8
    if base == 2:  # a line inside a collection: no area, skip it
        (npts,) = struct.unpack_from(order + "I", buf, offset)
        return offset + 4 + npts * dims * 8
    raise ValueError(f"Unsupported WKB geometry type {gtype}; polygons expected")


def points_from_wkb(wkbs: Sequence[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """x, y arrays from a sequence of Point WKBs (NaN for null/empty geometries), vectorised."""
    n = len(wkbs)
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    lengths = np.fromiter((len(w) if w else 0 for w in wkbs), dtype=np.int64, count=n)
    for size in np.unique(lengths[lengths >= 21]):
        idx = np.flatnonzero(lengths == size)
        raw = np.frombuffer(b"".join(wkbs[i] for i in idx), dtype=np.uint8).reshape(len(idx), size)  # type: ignore[misc]
        little = raw[:, 0] == 1
        xy = np.empty((len(idx), 2))
        for flag, dt in ((True, "<f8"), (False, ">f8")):
            sel = little == flag
            if sel.any():
                xy[sel] = np.ascontiguousarray(raw[sel, 5:21]).view(dt).reshape(-1, 2)
        x[idx], y[idx] = xy[:, 0], xy[:, 1]
    return x, y


def _ring_edges(rings: Polygon) -> np.ndarray:
    """(E, 4) array of edges x1, y1, x2, y2 of all rings."""
    parts = []
    for ring in rings:
        if len(ring) < 2:
            continue
        parts.append(np.hstack([ring[:-1], ring[1:]]))
    return np.vstack(parts) if parts else np.empty((0, 4))


def points_in_edges(px: np.ndarray, py: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Even-odd (crossing number) test with half-open rules.

    A point exactly on an edge shared by two polygons is inside exactly one of them, so polygons that tile
    the plane partition the points (the convention of GDAL/ArcGIS "contains" for point counts).
    """
    inside = np.zeros(len(px), dtype=bool)
    if len(px) == 0 or len(edges) == 0:
        return inside
    step = max(1, 2_000_000 // max(len(px), 1))
    for start in range(0, len(edges), step):
        e = edges[start:start + step]
        x1, y1, x2, y2 = (e[:, k:k + 1] for k in range(4))
        straddle = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        crossings = np.count_nonzero(straddle & (px < xint), axis=0)
        inside ^= (crossings % 2).astype(bool)
    return inside


class GridIndex:
    """Uniform grid over points: candidates inside a bounding box without scanning every point."""

    def __init__(self, x: np.ndarray, y: np.ndarray, cells_per_side: int | None = None):
        self.x, self.y = x, y
        valid = np.isfinite(x) & np.isfinite(y)
        self.valid_idx = np.flatnonzero(valid)
        if len(self.valid_idx) == 0:
            self.n_side = 1
            self.x0 = self.y0 = 0.0
            self.cell = 1.0
            self.order = self.valid_idx
            self.starts = np.zeros(2, dtype=np.int64)
            return
        vx, vy = x[valid], y[valid]
        self.x0, self.y0 = float(vx.min()), float(vy.min())
        span = max(float(vx.max()) - self.x0, float(vy.max()) - self.y0, 1e-12)
        self.n_side = cells_per_side or int(np.clip(np.sqrt(len(vx) / 8), 1, 2048))
        self.cell = span / self.n_side * (1 + 1e-9)
        cx = np.minimum(((vx - self.x0) / self.cell).astype(np.int64), self.n_side - 1)
        cy = np.minimum(((vy - self.y0) / self.cell).astype(np.int64), self.n_side - 1)
        cell_id = cy * self.n_side + cx
        sort = np.argsort(cell_id, kind="stable")
        self.order = self.valid_idx[sort]
        self.starts = np.searchsorted(cell_id[sort], np.arange(self.n_side * self.n_side + 1))

    def query_bbox(self, xmin: float, ymin: float, xmax: float, ymax: float) -> np.ndarray:
        n = self.n_side
        cx0 = int(np.clip(np.floor((xmin - self.x0) / self.cell), 0, n - 1))
        cx1 = int(np.clip(np.floor((xmax - self.x0) / self.cell), 0, n - 1))
        cy0 = int(np.clip(np.floor((ymin - self.y0) / self.cell), 0, n - 1))
        cy1 = int(np.clip(np.floor((ymax - self.y0) / self.cell), 0, n - 1))
        if xmax < self.x0 or ymax < self.y0 or xmin > self.x0 + n * self.cell or ymin > self.y0 + n * self.cell:
            return np.empty(0, dtype=np.int64)
        pieces = [self.order[self.starts[cy * n + cx0]:self.starts[cy * n + cx1 + 1]] for cy in range(cy0, cy1 + 1)]
        cand = np.concatenate(pieces) if pieces else np.empty(0, dtype=np.int64)
        keep = (self.x[cand] >= xmin) & (self.x[cand] <= xmax) & (self.y[cand] >= ymin) & (self.y[cand] <= ymax)
        return cand[keep]


def assign_points_to_polygons(px: np.ndarray, py: np.ndarray, polygons: Sequence[Polygon],
                              progress=None) -> np.ndarray:
    """Index of the polygon containing each point, or -1. Each point gets at most one polygon.

    Polygons are tested in order; a point already claimed (possible only where polygons overlap or on a
    boundary whose two sides have different vertices) keeps its first polygon, so counts never double.
    """
    result = np.full(len(px), -1, dtype=np.int64)
    index = GridIndex(px, py)
    for i, rings in enumerate(polygons):
        if progress is not None and i % 64 == 0:
            if progress(i / max(len(polygons), 1)) is False:
                break
        edges = _ring_edges(rings)
        if len(edges) == 0:
            continue
        xs = np.concatenate([edges[:, 0], edges[:, 2]])
        ys = np.concatenate([edges[:, 1], edges[:, 3]])
        cand = index.query_bbox(xs.min(), ys.min(), xs.max(), ys.max())
        cand = cand[result[cand] < 0]
        if len(cand) == 0:
            continue
        inside = points_in_edges(px[cand], py[cand], edges)
        result[cand[inside]] = i
    return result


def polygon_centroid(rings: Polygon) -> tuple[float, float]:
    """Area-weighted centroid of all rings (holes subtract); falls back to the vertex mean."""
    a_sum = cx_sum = cy_sum = 0.0
    for ring in rings:
        x, y = ring[:, 0], ring[:, 1]
        x0, y0 = x[0], y[0]
        xs, ys = x - x0, y - y0
        cross = xs[:-1] * ys[1:] - xs[1:] * ys[:-1]
        a = cross.sum() / 2.0
        if a == 0:
            continue
        cx = ((xs[:-1] + xs[1:]) * cross).sum() / (6 * a) + x0
        cy = ((ys[:-1] + ys[1:]) * cross).sum() / (6 * a) + y0
        # outer rings and holes have opposite orientation: sign the area by orientation of the first ring
        a_sum += a
        cx_sum += cx * a
        cy_sum += cy * a
    if a_sum == 0:
        allv = np.vstack(rings) if rings else np.zeros((1, 2))
        return float(allv[:, 0].mean()), float(allv[:, 1].mean())
    return cx_sum / a_sum, cy_sum / a_sum
