# SPDX-License-Identifier: GPL-2.0-or-later
"""GTFS stops with the number of routes serving each stop (pure: zipfile + pandas)."""

from __future__ import annotations

import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # heavy packages are imported where they are used: the plugin loads quickly
    import pandas as pd


class GtfsError(ValueError):
    """The feed cannot be used (e.g. no stops.txt); the message says what to change."""


@dataclass
class GtfsStops:
    stops: pd.DataFrame  # stop_id, stop_name, location_type, parent_station, wheelchair_boarding, lat, lon,
    # routes (float, NaN when unknown), route_types (str or None)
    rejected: int = 0
    warnings: list[str] = field(default_factory=list)


MAX_TABLE_BYTES = 2 << 30  # one GTFS table may inflate to at most 2 GiB (a zip bomb must not fill the memory)


class _Feed:
    """Read GTFS tables from a .zip (files may sit in a sub-folder) or a folder."""

    def __init__(self, source: str | Path):
        self.path = Path(source)
        self.zip = None
        self.names: dict[str, str] = {}
        if self.path.is_dir():
            self.names = {p.name.lower(): str(p) for p in self.path.iterdir() if p.is_file()}
        elif zipfile.is_zipfile(self.path):
            try:
                self.zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError) as err:
                raise GtfsError(f"{source} is a damaged .zip file ({err}): download the feed again.") from None
            for name in self.zip.namelist():
                base = name.rsplit("/", 1)[-1].lower()
                if base and (base not in self.names or name.count("/") < self.names[base].count("/")):
                    self.names[base] = name
        else:
            raise GtfsError(f"{source} is neither a GTFS .zip file nor a folder.")

    def has(self, name: str) -> bool:
        return name in self.names

    def _bytes(self, name: str) -> bytes:
        """The table's bytes, inflated at most MAX_TABLE_BYTES (checked while inflating, not from the zip's own
        size claims); damaged or encrypted entries are GtfsError, never a traceback."""
        if not self.zip:
            path = Path(self.names[name])
            if path.stat().st_size > MAX_TABLE_BYTES:
                raise GtfsError(f"{path.name} is larger than {MAX_TABLE_BYTES >> 30} GiB: not a GTFS table.")
            return path.read_bytes()
        info = self.zip.getinfo(self.names[name])
        if info.flag_bits & 0x1:
            raise GtfsError(f"{name} is encrypted in the zip: export the feed without a password.")
        out = bytearray()
        try:
            with self.zip.open(info) as fh:
                while True:
                    block = fh.read(1 << 20)
                    if not block:
                        break
                    out += block
                    if len(out) > MAX_TABLE_BYTES:
                        raise GtfsError(f"{name} inflates to more than {MAX_TABLE_BYTES >> 30} GiB: not a GTFS "
                                        "table (a damaged or hostile zip).")
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise GtfsError(f"{name} is damaged in the zip ({err}): download the feed again.") from None
        except RuntimeError as err:  # zipfile: encrypted entries and unsupported methods
            raise GtfsError(f"{name} cannot be read from the zip ({err}).") from None
        return bytes(out)

    def read(self, name: str, usecols: list[str] | None = None) -> pd.DataFrame:
        """All values as stripped strings; BOM, CRLF and quoted fields handled; unknown columns kept."""
        import pandas as pd

        raw = self._bytes(name)
        frame = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            skipinitialspace=True)
        frame.columns = [c.strip() for c in frame.columns]
        if usecols is not None:
            for col in usecols:
                if col not in frame.columns:
                    frame[col] = ""
            frame = frame[usecols]
        return frame.apply(lambda s: s.str.strip())


STOP_COLUMNS = ["stop_id", "stop_name", "location_type", "parent_station", "wheelchair_boarding", "stop_lat",
                "stop_lon"]


def read_stops(source: str | Path, boarding_only: bool = True) -> GtfsStops:
    import pandas as pd

    feed = _Feed(source)
    if not feed.has("stops.txt"):
        raise GtfsError(f"{source} has no stops.txt: a GTFS feed must contain stops.txt.")
    stops = feed.read("stops.txt")
    missing = [c for c in ("stop_id", "stop_lat", "stop_lon") if c not in stops.columns]
    if missing:
        raise GtfsError(f"stops.txt lacks the required column(s) {', '.join(missing)}.")
    for col in STOP_COLUMNS:
        if col not in stops.columns:
            stops[col] = ""
    stops = stops[STOP_COLUMNS].copy()
    warnings: list[str] = []
    if boarding_only:
        stops = stops[stops["location_type"].isin(["", "0"])]
    lat = pd.to_numeric(stops["stop_lat"], errors="coerce")
    lon = pd.to_numeric(stops["stop_lon"], errors="coerce")
    bad = lat.isna() | lon.isna() | (lat.abs() > 90) | (lon.abs() > 180) | ((lat == 0) & (lon == 0))
    rejected = int(bad.sum())
    if rejected:
        warnings.append(f"{rejected} stop(s) without usable coordinates were left out: "
                        + ", ".join(stops.loc[bad, "stop_id"].head(10)))
    stops = stops[~bad].assign(lat=lat[~bad].to_numpy(), lon=lon[~bad].to_numpy())
    stops = stops.drop(columns=["stop_lat", "stop_lon"]).reset_index(drop=True)

    routes = np.full(len(stops), np.nan)
    types: list[str | None] = [None] * len(stops)
    if not feed.has("stop_times.txt"):
        warnings.append("The feed has no stop_times.txt: the number of routes per stop is unknown (NULL).")
    elif not feed.has("trips.txt"):
        warnings.append("The feed has no trips.txt: the number of routes per stop is unknown (NULL).")
    else:
        stop_times = feed.read("stop_times.txt", ["trip_id", "stop_id"]).drop_duplicates()
        trips = feed.read("trips.txt", ["trip_id", "route_id"]).drop_duplicates("trip_id")
        if not (trips["route_id"] != "").any():
            warnings.append("trips.txt has no route_id: stops cannot be joined to routes, so routes is unknown "
                            "(NULL), not 0.")
        served = stop_times.merge(trips, on="trip_id", how="inner")[["stop_id", "route_id"]].drop_duplicates()
        if feed.has("routes.txt"):
            route_types = feed.read("routes.txt", ["route_id", "route_type"]).drop_duplicates("route_id")
            served = served.merge(route_types, on="route_id", how="left")
        else:
            served["route_type"] = ""
        counts = served.groupby("stop_id")["route_id"].nunique()
        kinds = served[served["route_type"].fillna("") != ""].groupby("stop_id")["route_type"].agg(
            lambda s: ",".join(sorted(set(s), key=lambda v: (len(v), v))))
        routes = stops["stop_id"].map(counts).fillna(0).to_numpy(dtype=float)
        if not (trips["route_id"] != "").any():
            routes = np.full(len(stops), np.nan)
        types = [v if isinstance(v, str) else None for v in stops["stop_id"].map(kinds)]
    stops["routes"] = routes
    stops["route_types"] = types
    dup = stops["stop_id"].duplicated()
    if dup.any():
        warnings.append(f"{int(dup.sum())} duplicate stop_id(s) kept: " + ", ".join(stops.loc[dup, "stop_id"].head(5)))
    return GtfsStops(stops, rejected, warnings)
