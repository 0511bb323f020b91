# SPDX-License-Identifier: GPL-2.0-or-later
"""Codes of text columns read in batches of fixed-width bytes (GDAL's Arrow stream), stable from batch to batch,
without a Python object per row.

Hand-written rather than pandas.factorize: a category column repeats a few hundred values over millions of
rows, so a small hash table of the values already seen answers almost every row with a handful of vectorised
operations, where factorising each batch afresh costs more; and the streamed count (precinctstats) then needs
no pandas, whose import alone (0.3 s in a QGIS process) was longer than counting a million requests."""

from __future__ import annotations

import numpy as np

_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93],
                        dtype=np.uint64)  # odd: one per 8-byte word position (cycled)
_SLOT = np.uint64(0x9E3779B97F4A7C15)


def folded_keys(arr: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """One 64-bit key per row of a fixed-width bytes array (equal bytes, equal keys; different bytes may share a
    key, rarely) and the rows' 8-byte words (unaligned views; the last may overlap the one before)."""
    n, width = len(arr), arr.dtype.itemsize
    arr = np.ascontiguousarray(arr)
    if width < 8:
        padded = np.zeros((n, 8), dtype=np.uint8)
        padded[:, :width] = arr.view(np.uint8).reshape(n, width)
        words = [padded.view(np.uint64).ravel()]
        return words[0], words  # the bytes themselves: no two values share a key
    words = [np.ndarray(n, dtype="<u8", buffer=arr, offset=off, strides=(width,))
             for off in sorted({*range(0, width - 7, 8), width - 8})]
    key = words[0] * _MULTIPLIERS[0]
    for i, word in enumerate(words[1:], start=1):
        key += word * _MULTIPLIERS[i % len(_MULTIPLIERS)]
    return key, words


class _Width:
    """The distinct values seen at one width: their keys in an open-addressing table (linear probing, at most a
    sixteenth full, so that few keys are moved on from their home slot), their words (one array per word
    position: a gather from one is a plain take) and their codes."""

    def __init__(self, words: int):
        self.bits = 10
        self.slots = np.full(1 << self.bits, -1, dtype=np.int32)  # entry per slot, -1 empty
        self.keys = np.zeros(0, dtype=np.uint64)
        self.words = [np.zeros(0, dtype=np.uint64) for _ in range(words)]
        self.codes = np.zeros(0, dtype=np.int32)
        self.probes = 0  # the longest run from a key's home slot to its entry

    def _home(self, keys: np.ndarray) -> np.ndarray:
        return ((keys * _SLOT) >> np.uint64(64 - self.bits)).astype(np.intp)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The entry of each key, -1 where it has none."""
        pos = self._home(keys)
        entry = self.slots[pos]
        if len(self.keys) == 0:
            return entry
        other = (entry >= 0) & (self.keys[np.maximum(entry, 0)] != keys)
        entry[other] = -1
        todo = np.flatnonzero(other)  # the home slot holds another key: look further along
        mask = (1 << self.bits) - 1
        for _ in range(self.probes):
            if len(todo) == 0:
                break
            pos[todo] = (pos[todo] + 1) & mask
            found = self.slots[pos[todo]]
            match = (found >= 0) & (self.keys[np.maximum(found, 0)] == keys[todo])
            entry[todo[match]] = found[match]
            todo = todo[(found >= 0) & ~match]
        return entry

    def add(self, keys: np.ndarray, words: list[np.ndarray], codes: list[int]) -> None:
        """New distinct keys, with their rows' words and their codes."""
        start = len(self.keys)
        self.keys = np.concatenate([self.keys, keys])
        self.words = [np.concatenate([mine, theirs]) for mine, theirs in zip(self.words, words)]
        self.codes = np.concatenate([self.codes, np.asarray(codes, dtype=np.int32)])
        if 16 * len(self.keys) > len(self.slots):
            while 16 * len(self.keys) > (1 << self.bits):
                self.bits += 1
            self.slots = np.full(1 << self.bits, -1, dtype=np.int32)
            self.probes, start = 0, 0
        mask = (1 << self.bits) - 1
        for entry, pos in enumerate(self._home(self.keys[start:]).tolist(), start=start):
            run = 0
            while self.slots[pos] >= 0:
                pos, run = (pos + 1) & mask, run + 1
            self.slots[pos] = entry
            self.probes = max(self.probes, run)


class TextCodes:
    """Codes of one text column, stable across batches: ``labels[code]`` is the value (UTF-8, bad bytes
    replaced); NULL and empty text are -1. A row is given its code only once its bytes have been compared with
    those of the value its key found, so a key shared by two values (two different strings can fold to one
    key) never merges them: such rows are coded exactly, through the sorted distinct values of the batch.
    Up to CACHED values per width are kept in the table; a batch that would pass that (an id or free text, not
    a category) is factorised afresh with pandas."""

    CACHED = 4096

    def __init__(self) -> None:
        self.labels: list[str] = []
        self.index: dict[str, int] = {}
        self._widths: dict[int, _Width] = {}

    def code_of(self, value) -> int:
        """The code of one value (bytes, text, None or NaN), a new one if it is new."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value is None or value != value or value == "":
            return -1
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.labels)
            self.labels.append(value)
        return code

    def codes(self, arr: np.ndarray, cache: bool = True) -> np.ndarray:
        """int32 codes of a fixed-width bytes array (dtype S); ``cache`` False for a column of many values (its
        batch is factorised afresh, with no table)."""
        if len(arr) == 0:
            return np.zeros(0, dtype=np.int32)
        arr = np.ascontiguousarray(arr)
        keys, words = folded_keys(arr)
        if not cache:
            return self._factorised(arr, keys, words)
        table = self._widths.setdefault(arr.dtype.itemsize, _Width(len(words)))
        if len(table.keys) == 0:
            return self._looked_up(arr, keys, words, table)
        # the common case, a category seen before: each row against the entry in its key's home slot, by its
        # bytes (a row that matches the entry it is compared with has that entry's code, whatever slot it came
        # from); only the rows that do not match (new values, keys moved on by probing, shared keys) go further
        entry = table.slots[table._home(keys)]
        same = table.words[0][entry] == words[0]
        for known, word in zip(table.words[1:], words[1:]):
            same &= known[entry] == word
        out = table.codes[entry]
        other = np.flatnonzero(~same)
        if len(other):
            out[other] = self._looked_up(arr[other], keys[other], [w[other] for w in words], table)
        return out

    def _looked_up(self, arr: np.ndarray, keys: np.ndarray, words: list[np.ndarray], table: _Width) -> np.ndarray:
        """Codes of rows through the table, probing, with their new values entered."""
        entry = table.find(keys)
        new = np.flatnonzero(entry < 0)
        if len(new):  # values not seen at this width yet: one entry per distinct key, from its first row
            distinct, first = np.unique(keys[new], return_index=True)
            if len(table.keys) + len(distinct) > self.CACHED:
                return self._factorised(arr, keys, words)
            order = np.argsort(first)  # new values get their codes in the order they first appear
            distinct, rows = distinct[order], new[first[order]]
            table.add(distinct, [w[rows] for w in words],
                      [self.code_of(arr[r]) for r in rows.tolist()])
            entry = table.find(keys)
        out = table.codes[entry]
        if len(words) > 1:  # folded keys: every row's bytes against its entry's
            same = np.ones(len(arr), dtype=bool)
            for known, word in zip(table.words, words):
                same &= known[entry] == word
            wrong = np.flatnonzero(~same)
            if len(wrong):
                values, inverse = np.unique(arr[wrong], return_inverse=True)
                out[wrong] = np.array([self.code_of(v) for v in values.tolist()], dtype=np.int32)[inverse]
        return out

    def _factorised(self, arr: np.ndarray, keys: np.ndarray, words: list[np.ndarray]) -> np.ndarray:
        """Codes of a batch with many distinct values: its keys factorised, then checked row by row against the
        first row of their key (a shared key falls back to the values themselves)."""
        import pandas as pd

        local, _ = pd.factorize(keys)
        first = np.empty(local.max(initial=-1) + 1, dtype=np.int64)
        first[local[::-1]] = np.arange(len(arr) - 1, -1, -1)
        distinct = arr[first]
        if len(words) > 1 and not np.array_equal(distinct[local], arr):
            local, distinct = pd.factorize(arr.astype(object))
        return np.array([self.code_of(v) for v in np.asarray(distinct).tolist()] + [-1], dtype=np.int32)[local]
