# SPDX-License-Identifier: GPL-2.0-or-later
"""Bulk-loading a SQLite R*Tree (the GeoPackage spatial index) in one sorted pass (pure numpy).

SQLite inserts into an R*Tree one entry at a time (about 30 µs each, 40 s for a million points), which is why
large outputs used to go without a spatial index. A packed tree is built here instead, Sort-Tile-Recursive
(Leutenegger et al. 1997): entries sorted into vertical slices by x, each slice by y, cut into full nodes; the
nodes' boxes packed the same way level by level up to one root. The result is written straight into the
R*Tree's shadow tables in SQLite's own node format (rtree.c): node 1 is the root and carries the tree depth in
its first two bytes; every node holds a big-endian cell count and cells of (int64 id, float32 minx, maxx, miny,
maxy), minimums rounded down and maximums up to float32 as SQLite does. SQLite's rtreecheck() verifies it.
"""

from __future__ import annotations

import numpy as np

CELL = np.dtype([("id", ">i8"), ("x0", ">f4"), ("x1", ">f4"), ("y0", ">f4"), ("y1", ">f4")])  # 24 bytes
MAX_CELLS = 51  # SQLite's RTREE_MAXCELLS: a 2-D node is 4 + 51 x 24 = 1228 bytes whatever the page size
NODE_BYTES = 4 + MAX_CELLS * CELL.itemsize


def _down(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)


def _up(v: np.ndarray) -> np.ndarray:
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


def str_order(cx: np.ndarray, cy: np.ndarray, capacity: int = MAX_CELLS) -> np.ndarray:
    """Sort-Tile-Recursive order of boxes with centres (cx, cy): slices of about sqrt(n / capacity) nodes by x,
    each ordered by y, so consecutive runs of ``capacity`` entries are compact."""
    n = len(cx)
    nodes = -(-n // capacity)
    per_slice = capacity * int(np.ceil(np.sqrt(nodes)))
    by_x = np.argsort(cx)
    slice_of = np.empty(n, dtype=np.int64)
    slice_of[by_x] = np.arange(n) // per_slice
    # one float sort instead of a lexsort: the slice number plus y scaled into [0, 1)
    low, span = float(np.min(cy)) if n else 0.0, float(np.ptp(cy)) if n else 0.0
    return np.argsort(slice_of + (cy - low) / (span * (1 + 1e-9) + 1e-300))


def pack(ids: np.ndarray, minx: np.ndarray, maxx: np.ndarray, miny: np.ndarray, maxy: np.ndarray):
    """(nodes, rowids, parents): rows for the shadow tables <name>_node (nodeno, data), <name>_rowid (rowid,
    nodeno) and <name>_parent (nodeno, parentnode) of a packed 2-D R*Tree holding these boxes. Nodes and rowids
    are iterators that build their rows as they are consumed (bounded memory)."""
    ids = np.asarray(ids, dtype=np.int64)
    levels = []  # per level, bottom up: (cells structured array in node order, node of each cell, node count)
    x0, x1, y0, y1 = (np.asarray(a, dtype=np.float64) for a in (minx, maxx, miny, maxy))
    ref = ids
    while True:
        order = str_order((x0 + x1) / 2, (y0 + y1) / 2)
        cells = np.empty(len(order), dtype=CELL)
        cells["id"], cells["x0"], cells["x1"] = ref[order], _down(x0[order]), _up(x1[order])
        cells["y0"], cells["y1"] = _down(y0[order]), _up(y1[order])
        node_of = np.arange(len(order)) // MAX_CELLS
        count = int(node_of[-1]) + 1 if len(order) else 1
        levels.append((cells, node_of, count))
        if count == 1:
            break
        starts = np.arange(0, len(order), MAX_CELLS)
        x0 = np.minimum.reduceat(x0[order], starts)
        x1 = np.maximum.reduceat(x1[order], starts)
        y0 = np.minimum.reduceat(y0[order], starts)
        y1 = np.maximum.reduceat(y1[order], starts)
        ref = np.arange(count, dtype=np.int64)  # placeholders: the nodes' final numbers are known below
    # number the nodes from the root (1) down, level by level
    first = {}
    next_no = 1
    for depth in range(len(levels) - 1, -1, -1):
        first[depth] = next_no
        next_no += levels[depth][2]
    parents: list[tuple[int, int]] = []
    for depth, (cells, node_of, count) in enumerate(levels):
        if depth > 0:  # cells point to the nodes of the level below
            cells["id"] = first[depth - 1] + cells["id"]
            numbers = first[depth] + np.arange(count)
            parents.extend(zip(cells["id"].astype(np.int64).tolist(), numbers[node_of].tolist()))
    parents.sort()
    leaf_cells, leaf_node_of, _ = levels[0]
    leaf_ids = leaf_cells["id"].astype(np.int64)
    by_id = np.argsort(leaf_ids, kind="stable")  # inserted in key order: SQLite appends instead of searching
    return _node_rows(levels, first), _rowid_rows(leaf_ids, first[0] + leaf_node_of, by_id), parents


def _node_rows(levels, first, step: int = 4096):
    """(node number, node blob) rows, built a few thousand nodes at a time (a 10M-point tree has 200,000 leaf
    nodes: built at once, their blobs would take 500 MB)."""
    for depth, (cells, node_of, count) in enumerate(levels):
        root = depth == len(levels) - 1
        for lo in range(0, count, step):
            hi = min(count, lo + step)
            padded = np.zeros((hi - lo) * MAX_CELLS, dtype=CELL)
            part = cells[lo * MAX_CELLS:hi * MAX_CELLS]
            padded[:len(part)] = part  # node k holds cells k*MAX_CELLS ... (k+1)*MAX_CELLS - 1
            body = padded.view(np.uint8).reshape(hi - lo, MAX_CELLS * CELL.itemsize)
            header = np.zeros((hi - lo, 4), dtype=np.uint8)
            filled = np.bincount(node_of[lo * MAX_CELLS:hi * MAX_CELLS] - lo, minlength=hi - lo).astype(">u2")
            header[:, 2:4] = filled.view(np.uint8).reshape(hi - lo, 2)
            if root:  # the root carries the depth of the tree
                header[0, 0:2] = np.array([len(levels) - 1], dtype=">u2").view(np.uint8)
            blobs = np.concatenate([header, body], axis=1)
            yield from zip((first[depth] + np.arange(lo, hi)).tolist(), (bytes(b) for b in blobs))


def _rowid_rows(ids: np.ndarray, nodes: np.ndarray, order: np.ndarray, step: int = 100_000):
    """(rowid, leaf node) rows in rowid order, a slice at a time (not ten million tuples at once)."""
    for lo in range(0, len(order), step):
        part = order[lo:lo + step]
        yield from zip(ids[part].tolist(), nodes[part].tolist())


ENVELOPE_BYTES = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}


def envelopes(blobs: list) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(valid, minx, maxx, miny, maxy) of GeoPackage geometry blobs: points from their WKB, other geometries
    from the envelope in their header. None when a non-point blob carries no envelope (the caller then lets
    GDAL compute the index). Empty and NULL geometries are not valid (not indexed)."""
    import struct

    n = len(blobs)
    if n and all(b is not None and len(b) == 29 for b in blobs):  # plain points: 8-byte header + 21-byte WKB
        raw = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(n, 29)
        plain = (raw[:, 0] == ord("G")) & (raw[:, 1] == ord("P")) & ((raw[:, 3] >> 1) & 7 == 0) & \
            (raw[:, 3] & 0x10 == 0) & (raw[:, 8] == 1) & (raw[:, 9] == 1) & (raw[:, 10:13] == 0).all(axis=1)
        if plain.all():  # little-endian WKB points
            x = np.ascontiguousarray(raw[:, 13:21]).view("<f8").ravel()
            y = np.ascontiguousarray(raw[:, 21:29]).view("<f8").ravel()
            valid = np.isfinite(x) & np.isfinite(y)
            return valid, x, x, y, y
    valid = np.zeros(n, dtype=bool)
    box = np.full((n, 4), np.nan)
    for i, blob in enumerate(blobs):
        if blob is None or len(blob) < 8 or blob[:2] != b"GP":
            continue
        flags = blob[3]
        if flags & 0x10:  # empty geometry
            continue
        little = "<" if flags & 1 else ">"
        env = ENVELOPE_BYTES.get((flags >> 1) & 7, 0)
        if env:
            minx, maxx, miny, maxy = struct.unpack_from(little + "4d", blob, 8)
            box[i], valid[i] = (minx, maxx, miny, maxy), True
            continue
        wkb = blob[8:]
        if len(wkb) < 21:
            continue
        order = "<" if wkb[0] == 1 else ">"
        kind = struct.unpack_from(order + "I", wkb, 1)[0] % 1000
        if kind != 1:
            return None
        x, y = struct.unpack_from(order + "2d", wkb, 5)
        if np.isfinite(x) and np.isfinite(y):
            box[i], valid[i] = (x, x, y, y), True
    return valid, box[:, 0], box[:, 1], box[:, 2], box[:, 3]
