# SPDX-License-Identifier: GPL-2.0-or-later
"""Geometry helpers on plain arrays: WKB polygons to rings, point-in-polygon assignment."""

from __future__ import annotations

import struct
from typing import List, Sequence

import numpy as np

Ring = np.ndarray  # (m, 2) float64, closed (first vertex == last vertex)
Polygon = List[Ring]  # all rings of all parts of one feature (even-odd rule applies)
CELLS_PER_POINT = 1.0  # PolygonLookup's grid: cells per point, at most MAX_CELLS
MAX_CELLS = 8_000_000


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


def _flat_edges(polygons: Sequence[Polygon]) -> tuple[np.ndarray, np.ndarray]:
    """All ring edges of all polygons (E, 4: x1, y1, x2, y2) and the polygon each belongs to, in polygon order,
    from one concatenation of the rings (no per-polygon array work)."""
    rings = [ring for rings in polygons for ring in rings if len(ring) >= 2]
    if not rings:
        return np.empty((0, 4)), np.empty(0, dtype=np.int64)
    owner_of_ring = np.repeat(np.arange(len(polygons)), [sum(1 for r in p if len(r) >= 2) for p in polygons])
    sizes = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    coords = np.concatenate(rings)[:, :2]
    last = np.cumsum(sizes) - 1  # the last vertex of each ring starts no edge
    starts = np.ones(len(coords), dtype=bool)
    starts[last] = False
    first = np.flatnonzero(starts)
    edges = np.hstack([coords[first], coords[first + 1]])
    owner = np.repeat(owner_of_ring, sizes - 1)
    return edges, owner


def _csr(keys: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Values grouped by integer key (stable): (start offsets of length size + 1, values sorted by key)."""
    order = np.argsort(keys, kind="stable")
    return np.searchsorted(keys[order], np.arange(size + 1)), values[order]


def _expand(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For items with ``counts`` entries from ``starts`` on: (item index per entry, entry position)."""
    item = np.repeat(np.arange(len(counts)), counts)
    position = np.repeat(starts - np.cumsum(counts) + counts, counts)  # start minus the entries before the item
    position += np.arange(len(item))
    return item, position


class _Polygons:
    """Edges grouped by polygon, with a coarse grid of the polygons' bounding boxes to find candidates."""

    def __init__(self, polygons: Sequence[Polygon]):
        self.edges, owner = _flat_edges(polygons)
        n = len(polygons)
        self.edge_start = np.searchsorted(owner, np.arange(n + 1))
        has = np.diff(self.edge_start) > 0
        self.ids = np.flatnonzero(has)
        e = self.edges
        # what the exact test gathers per (point, edge): y1 and y2 side by side, then x1, x2 - x1, y2 - y1 only
        # for the edges that straddle the point's y (a third of them, or fewer)
        # each edge from its lower end up: a boundary shared by two polygons is drawn in opposite directions, and
        # computing the crossing from the same end for both gives the same x, so a point on it lies in exactly one
        # of the two (not in neither, as an ulp's difference between the two computations could make it)
        up = np.where((e[:, 1] > e[:, 3])[:, None], e[:, [2, 3, 0, 1]], e)
        self.edge_y = np.ascontiguousarray(up[:, [1, 3]])
        self.edge_x = np.column_stack([up[:, 0], up[:, 2] - up[:, 0], up[:, 3] - up[:, 1]])
        if len(e) == 0:
            return
        lo_x, hi_x = np.minimum(e[:, 0], e[:, 2]), np.maximum(e[:, 0], e[:, 2])
        lo_y, hi_y = np.minimum(e[:, 1], e[:, 3]), np.maximum(e[:, 1], e[:, 3])
        at = self.edge_start[self.ids]
        self.box = np.column_stack([np.minimum.reduceat(lo_x, at), np.minimum.reduceat(lo_y, at),
                                    np.maximum.reduceat(hi_x, at), np.maximum.reduceat(hi_y, at)])
        self.extent = (float(lo_x.min()), float(lo_y.min()), float(hi_x.max()), float(hi_y.max()))
        # coarse grid: about half a polygon's box per cell side (two or three candidates per cell)
        x0, y0, x1, y1 = self.extent
        side = int(np.clip(np.sqrt(len(self.ids)) * 2, 1, 2048))
        self.cw, self.ch = max(x1 - x0, 1e-12) / side * (1 + 1e-9), max(y1 - y0, 1e-12) / side * (1 + 1e-9)
        self.side = side
        c = self._cells(self.box)
        nx, ny = c[:, 2] - c[:, 0] + 1, c[:, 3] - c[:, 1] + 1
        poly, k = _expand(np.zeros(len(nx), dtype=np.int64), nx * ny)
        cell = (c[poly, 1] + k // nx[poly]) * side + c[poly, 0] + k % nx[poly]
        self.cand_start, self.cand = _csr(cell, poly, side * side)  # positions in self.ids, ascending per cell
        self._bands(lo_y, hi_y)

    def _bands(self, lo_y: np.ndarray, hi_y: np.ndarray) -> None:
        """The edges of each polygon by horizontal band: the exact test gathers only the edges of the point's band
        (an edge can straddle a point's y only if the point's band lies in the edge's band range, as floor is
        monotone), not every edge of the polygon: a few edges per point, however many vertices a precinct has."""
        span = max(self.extent[3] - self.extent[1], 1e-12)
        owner = np.repeat(np.arange(len(self.ids)), np.diff(self.edge_start)[self.ids])  # position in self.ids
        tall = np.flatnonzero(hi_y > lo_y)  # a horizontal edge straddles no y
        dy = hi_y[tall] - lo_y[tall]
        height = float(np.median(dy)) / 4 if len(dy) else span
        while True:  # about four bands per typical edge, coarser while the table would exceed 8 entries per edge
            self.band_h, bands = height, int(min(span / height, 1 << 24)) + 1
            lo, hi = self.band_of(lo_y[tall]), self.band_of(hi_y[tall])
            if int((hi - lo + 1).sum()) <= 8 * len(lo_y) + 1_000_000 or bands == 1:
                break
            height *= 2
        self.band_lo, band_hi = self.band_of(self.box[:, 1]), self.band_of(self.box[:, 3])
        self.band_base = np.concatenate([[0], np.cumsum(band_hi - self.band_lo + 1)])
        edge, k = _expand(lo, hi - lo + 1)
        slot = self.band_base[owner[tall][edge]] + k - self.band_lo[owner[tall][edge]]
        self.band_start, self.band_edge = _csr(slot, tall[edge], int(self.band_base[-1]))

    def band_of(self, y: np.ndarray) -> np.ndarray:
        return np.floor((y - self.extent[1]) / self.band_h).astype(np.int64)

    def _cells(self, box: np.ndarray) -> np.ndarray:
        x0, y0 = self.extent[:2]
        out = np.empty(box.shape, dtype=np.int64)
        for k, (origin, size) in enumerate(((x0, self.cw), (y0, self.ch), (x0, self.cw), (y0, self.ch))):
            out[:, k] = np.clip(np.floor((box[:, k] - origin) / size), 0, self.side - 1)
        return out

    def first_containing(self, qx: np.ndarray, qy: np.ndarray, block: int = 8_192) -> np.ndarray:
        """The lowest polygon index whose rings contain each query point (even-odd, half-open rules), or -1.
        Queries go in blocks of ``block`` points so that the (point, candidate, edge) arrays stay in cache:
        a whole million at once ran twice as slow."""
        result = np.full(len(qx), -1, dtype=np.int64)
        if len(self.edges) == 0 or len(qx) == 0:
            return result
        x0, y0, x1, y1 = self.extent
        found = np.flatnonzero((qx >= x0) & (qx <= x1) & (qy >= y0) & (qy <= y1))
        for lo in range(0, len(found), block):
            ok = found[lo:lo + block]
            bx, by = qx[ok], qy[ok]
            cx = np.minimum(((bx - x0) / self.cw).astype(np.int64), self.side - 1)
            cy = np.minimum(((by - y0) / self.ch).astype(np.int64), self.side - 1)
            cell = cy * self.side + cx
            q, pos = _expand(self.cand_start[cell], self.cand_start[cell + 1] - self.cand_start[cell])
            poly = self.cand[pos]
            b = np.take(self.box, poly, axis=0)  # (take: three times faster than box[poly] for rows)
            px, py = bx[q], by[q]
            inbox = (px >= b[:, 0]) & (px <= b[:, 2]) & (py >= b[:, 1]) & (py <= b[:, 3])
            kept = np.flatnonzero(inbox)
            q, poly = q[kept], poly[kept]
            slot = self.band_base[poly] + self.band_of(by[q]) - self.band_lo[poly]
            start = self.band_start[slot]
            pair, edge = _expand(start, self.band_start[slot + 1] - start)
            edge = self.band_edge[edge]
            py = by[q][pair]
            ey = np.take(self.edge_y, edge, axis=0)
            straddle = np.flatnonzero((ey[:, 0] > py) != (ey[:, 1] > py))
            pair, py, ex = pair[straddle], py[straddle], np.take(self.edge_x, edge[straddle], axis=0)
            xint = ex[:, 0] + (py - ey[:, 0][straddle]) * ex[:, 1] / ex[:, 2]  # dy != 0: the edge straddles py
            crossings = np.bincount(pair[bx[q][pair] < xint], minlength=len(q))
            inside = crossings % 2 == 1
            # pairs run by query, candidates ascending within a query: the first inside pair is the lowest
            kept = np.flatnonzero(inside)
            q, poly = q[kept], poly[kept]
            first = np.ones(len(q), dtype=bool)
            first[1:] = q[1:] != q[:-1]
            result[ok[q[first]]] = self.ids[poly[first]]
        return result


def assign_points_to_polygons(px: np.ndarray, py: np.ndarray, polygons: Sequence[Polygon],
                              progress=None, chunk: int = 65_536) -> np.ndarray:
    """Index of the polygon containing each point, or -1 (PolygonLookup, built for these points)."""
    return PolygonLookup(polygons, len(px)).assign(px, py, progress, chunk)


def _border_cell(px: np.ndarray, py: np.ndarray, extent, inverse: tuple[float, float], nx: int,
                 ny: int) -> np.ndarray:
    """Cell of each point on a grid of nx x ny cells with a border: row and column 1 .. size inside, 0 and
    size + 1 outside (fmax and fmin send NaN to the border too); flattened, (row) * (nx + 2) + column. Computed
    in floats as x / w - x0 / w: a few 1e-9 of a cell from (x - x0) / w, far below the 1e-6 of a cell by which
    the boundary cells are widened."""
    fx = np.multiply(px, inverse[0])
    fx += 1.0 - extent[0] * inverse[0]
    np.fmax(fx, 0.0, out=fx)
    np.fmin(fx, nx + 1.0, out=fx)
    fy = np.multiply(py, inverse[1])
    fy += 1.0 - extent[1] * inverse[1]
    np.fmax(fy, 0.0, out=fy)
    np.fmin(fy, ny + 1.0, out=fy)
    np.floor(fy, out=fy)
    fy *= nx + 2.0
    fy += fx  # row * (nx + 2) + x: the integer part of the sum is row * (nx + 2) + column
    return fy.astype(np.intp)


class PolygonLookup:
    """Which polygon contains each point. Each point gets at most one polygon: where polygons overlap, the
    first in order. The crossing-number test uses half-open rules, so a point exactly on an edge shared by two
    polygons is inside exactly one of them and polygons that tile the plane partition the points (the convention
    of GDAL/ArcGIS "contains" for point counts).

    Vectorised across polygons, with no loop over them: a fine grid over the polygons is rasterised once (sized
    for about ``points`` points). A cell that no edge touches lies wholly inside the same polygons as its
    neighbours in the row, so its points take the label of that run of cells (one exact test per run); only
    points in cells an edge touches get the exact test against the candidate polygons whose boxes hold them.
    Built apart from the points, so a caller can build it while the points are still being read."""

    def __init__(self, polygons: Sequence[Polygon], points: int):
        self.polys = polys = _Polygons(polygons)
        if len(polys.edges) == 0:
            return
        x0, y0, x1, y1 = polys.extent
        # the fine grid: about a cell per point, at least 64 per polygon (8M cells: 50 MB of work arrays)
        cells = int(np.clip(max(points * CELLS_PER_POINT, 64 * len(polys.ids)), 1024, MAX_CELLS))
        w, h = max(x1 - x0, 1e-12), max(y1 - y0, 1e-12)
        nx = int(np.clip(np.sqrt(cells * w / h), 1, 65_535))
        ny = int(np.clip(cells / nx, 1, 65_535))
        cw, ch = w / nx * (1 + 1e-9), h / ny * (1 + 1e-9)
        self.nx, self.ny, self.cw, self.ch = nx, ny, cw, ch
        # boundary cells: every cell an edge passes through. Walking along an edge, it enters each cell after its
        # first through a grid line, at a point on that cell's closure; so marking the cells within a hair (1e-6
        # of a cell) of each end and of each crossing of a grid line marks every cell the edge touches, and
        # rounding never leaves one unmarked. (No sort of the crossings along the edge is needed.)
        e = polys.edges
        ex1, ey1 = (e[:, 0] - x0) / cw, (e[:, 1] - y0) / ch
        ex2, ey2 = (e[:, 2] - x0) / cw, (e[:, 3] - y0) / ch
        # the grid has a border of cells all round (labelled -1 at the end: a point outside the grid, or NaN, is
        # clamped into it), so cell (ix, iy) is at (iy + 1) * (nx + 2) + ix + 1; it counts as boundary until then
        grid = np.zeros((ny + 2, nx + 2), dtype=bool)
        grid[[0, -1], :] = grid[:, [0, -1]] = True
        boundary = grid.ravel()

        def mark(gx: np.ndarray, gy: np.ndarray) -> None:
            for wx in (gx - 1e-6, gx + 1e-6):
                ix = np.clip(np.floor(wx), 0, nx - 1).astype(np.int64) + 1
                for wy in (gy - 1e-6, gy + 1e-6):
                    boundary[(np.clip(np.floor(wy), 0, ny - 1).astype(np.int64) + 1) * (nx + 2) + ix] = True

        def mark_crossings(line: np.ndarray, other: np.ndarray, across: bool) -> None:
            """mark at crossings of grid lines (``line`` whole numbers: a row when ``across``, else a column):
            the line's two sides need no rounding, and the other coordinate's second cell is marked only where
            it differs (within 1e-6 of a grid line). The same cells as mark, in half the writes."""
            n_line, n_other = (ny, nx) if across else (nx, ny)
            below = np.clip(np.floor(other - 1e-6), 0, n_other - 1).astype(np.int64) + 1
            above = np.clip(np.floor(other + 1e-6), 0, n_other - 1).astype(np.int64) + 1
            two = np.flatnonzero(above != below)
            for side in (line - 1, line):
                at = np.clip(side, 0, n_line - 1).astype(np.int64) + 1
                for o, a in ((below, at), (above[two], at[two])):
                    boundary[a * (nx + 2) + o if across else o * (nx + 2) + a] = True

        for lo in range(0, len(e), 100_000):
            a1, b1, a2, b2 = ex1[lo:lo + 100_000], ey1[lo:lo + 100_000], ex2[lo:lo + 100_000], ey2[lo:lo + 100_000]
            mark(a1, b1)
            mark(a2, b2)
            for c1, c2, d1, d2, across in ((a1, a2, b1, b2, False), (b1, b2, a1, a2, True)):
                # the grid lines c = first + k the edge crosses, and the other coordinate there
                first = np.floor(np.minimum(c1, c2)) + 1
                count = np.maximum(np.ceil(np.maximum(c1, c2)) - first, 0).astype(np.int64)
                edge, k = _expand(np.zeros(len(count), dtype=np.int64), count)
                line = first[edge] + k
                other = d1[edge] + (line - c1[edge]) * ((d2[edge] - d1[edge]) / (c2[edge] - c1[edge]))
                mark_crossings(line, other, across)
        # interior cells: one exact test at the centre of the first cell of each run between boundary cells;
        # boundary cells get the label -2 (test each point exactly). Flattened, the grid alternates between runs
        # of boundary and of interior cells (a row's interior run ends at the border, so none spans two rows):
        # the labels are each run's value repeated over its length
        change = np.flatnonzero(boundary[1:] != boundary[:-1]) + 1
        begin = np.concatenate([[0], change])  # the first run is the border's corner: boundary
        interior = ~boundary[begin]
        ix, iy = begin[interior] % (nx + 2) - 1, begin[interior] // (nx + 2) - 1
        # int16 where the polygons allow (edges exist, so some polygon has an index): a grid of half the bytes,
        # which the points' random gathers miss less
        value = np.full(len(begin), -2, dtype=np.int16 if polys.ids[-1] < 32_000 else np.int32)
        value[interior] = polys.first_containing(x0 + (ix + 0.5) * cw, y0 + (iy + 0.5) * ch)
        self.label = label = np.repeat(value, np.diff(np.append(begin, boundary.size)))
        label.reshape(ny + 2, nx + 2)[[0, -1], :] = label.reshape(ny + 2, nx + 2)[:, [0, -1]] = -1

    def assign(self, px: np.ndarray, py: np.ndarray, progress=None, chunk: int = 65_536) -> np.ndarray:
        """Index of the polygon containing each point, or -1; ``progress(fraction)`` returning False stops."""
        px, py = np.asarray(px, dtype=float), np.asarray(py, dtype=float)
        result = np.full(len(px), -1, dtype=np.int64)
        polys = self.polys
        if len(polys.edges) == 0 or len(px) == 0:
            return result
        label, inverse = self.label, (1.0 / self.cw, 1.0 / self.ch)
        for lo in range(0, len(px), chunk):
            if progress is not None and progress(lo / max(len(px), 1)) is False:
                break
            bx, by = px[lo:lo + chunk], py[lo:lo + chunk]
            got = label[_border_cell(bx, by, polys.extent, inverse, self.nx, self.ny)]
            result[lo:lo + chunk] = got
            hard = np.flatnonzero(got == -2)
            if len(hard):
                result[lo + hard] = polys.first_containing(bx[hard], by[hard])
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
