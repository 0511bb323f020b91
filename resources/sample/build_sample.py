# SPDX-License-Identifier: GPL-2.0-or-later
"""Build resources/sample/civic311_sample.gpkg from ../shared/data (run with /usr/bin/python3).

Layers: requests (Chicago 311 legacy extracts Oct-Dec 2018, normalised), precincts (2023 precincts with
registered voters and ballots of the 2023-02-28 general election), stops (CTA boarding stops, Feb 2024),
polling_places (2024). Attribution goes into each layer's metadata.
"""

import glob
import os
import sqlite3
import sys
from pathlib import Path

import pandas as pd
from osgeo import ogr, osr

HERE = Path(__file__).resolve().parent
DATA = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data"
OUT = HERE / "civic311_sample.gpkg"
WINDOW = ("2018-11-19", "2018-12-17")  # four full weeks, Monday to Sunday, all four extracts

ATTRIBUTION = {
    "requests": ("City of Chicago Data Portal, 311 service requests (legacy per-type datasets, requests created "
                 "2018-11-19 to 2018-12-16 "
                 "via github.com/Saikrishnan10/Analysis-of-service-requests-in-the-city-of-Chicago)",
                 "Public open data, City of Chicago terms of use"),
    "precincts": ("Chicago Board of Election Commissioners, 2023 ward precincts and 2023-02-28 general election "
                  "results (packaged by datamade/chicago-municipal-elections, MIT)",
                  "Public open data"),
    "stops": ("Chicago Transit Authority GTFS feed, February 2024 (via github.com/kirtisoglu/"
              "Allocation-of-Primary-Care-Centers-in-Chicago). Data provided by CTA.",
              "CTA developer licence agreement: attribution to the Chicago Transit Authority required"),
    "polling_places": ("Chicago Board of Election Commissioners, 2024 polling places (geocoded by "
                       "github.com/radturkin/ChicagoElectionResults2024; method undocumented)",
                       "Public open data"),
}


def normalised_requests() -> pd.DataFrame:
    frames = []
    for path in sorted(glob.glob(str(DATA / "chicago_311_legacy_2018_saikrishnan" / "*.csv"))):
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
        cols = {c.split("_", 1)[1].strip() if c[:2] in ("P_", "R_", "T_") else c.strip(): c for c in raw.columns}

        def get(*names, raw=raw, cols=cols):
            return next(raw[cols[n]] for n in names if n in cols)

        frame = pd.DataFrame({
            "request_id": get("SRN"),
            "created_at": pd.to_datetime(get("Creation Date", "creation_date")),
            "status": get("Status"),
            "category": get("Type of SR"),
            "descriptor": raw[cols["Tree Location"]] if "Tree Location" in cols else None,
            "address": get("Street Address"),
            "lat": pd.to_numeric(get("Latitude")),
            "lon": pd.to_numeric(get("Longitude")),
        })
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True)
    # the window in which all four extracts have data, so category mixes are comparable
    out = out[(out["created_at"] >= WINDOW[0]) & (out["created_at"] < WINDOW[1])]
    out = out.drop_duplicates("request_id").sort_values(["created_at", "request_id"]).reset_index(drop=True)
    out["source"] = "data.cityofchicago.org/legacy-2018"
    return out


def create_layer(ds, name, geom_type, fields):
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    lyr = ds.CreateLayer(name, srs, geom_type, options=["FID=fid", "GEOMETRY_NAME=geom", "SPATIAL_INDEX=NO",
                                                        f"DESCRIPTION={ATTRIBUTION[name][0]}"])
    for fname, ftype in fields:
        lyr.CreateField(ogr.FieldDefn(fname, ftype))
    return lyr


def write_requests(ds):
    df = normalised_requests()
    lyr = create_layer(ds, "requests", ogr.wkbPoint, [
        ("request_id", ogr.OFTString), ("created_at", ogr.OFTDateTime), ("closed_at", ogr.OFTDateTime),
        ("status", ogr.OFTString), ("category", ogr.OFTString), ("descriptor", ogr.OFTString),
        ("agency", ogr.OFTString), ("address", ogr.OFTString), ("source", ogr.OFTString)])
    ds.StartTransaction()
    for row in df.itertuples():
        f = ogr.Feature(lyr.GetLayerDefn())
        f["request_id"] = row.request_id
        f["created_at"] = row.created_at.strftime("%Y/%m/%d %H:%M:%S")
        f["status"] = row.status
        f["category"] = row.category
        if isinstance(row.descriptor, str) and row.descriptor:
            f["descriptor"] = row.descriptor
        f["address"] = row.address
        f["source"] = row.source
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({row.lon} {row.lat})"))
        lyr.CreateFeature(f)
    ds.CommitTransaction()
    return len(df)


def copy_layer(ds, name, src_path, fields, where=None, geom_from=None, computed=()):
    """Copy a layer; ``computed``: (field, OGR type, function of the source feature) added after ``fields``."""
    src = ogr.Open(str(src_path))
    src_lyr = src.GetLayer(0)
    if where:
        src_lyr.SetAttributeFilter(where)
    out = create_layer(ds, name, geom_from or src_lyr.GetGeomType(),
                       [(o, t) for o, _, t in fields] + [(o, t) for o, t, _ in computed])
    ds.StartTransaction()
    n = 0
    for feat in src_lyr:
        f = ogr.Feature(out.GetLayerDefn())
        for out_name, src_name, _ in fields:
            value = feat.GetField(src_name)
            if value not in (None, ""):
                f[out_name] = value
        for out_name, _, function in computed:
            f[out_name] = function(feat)
        geom = feat.GetGeometryRef().Clone()
        if geom_from == ogr.wkbMultiPolygon:
            geom = ogr.ForceToMultiPolygon(geom)
        f.SetGeometry(geom)
        out.CreateFeature(f)
        n += 1
    ds.CommitTransaction()
    return n


def write_stops(ds):
    stops = pd.read_csv(DATA / "chicago_cta_gtfs_2024" / "stops.txt", dtype=str, keep_default_na=False,
                        encoding="utf-8-sig")
    stops = stops[stops["location_type"].isin(["", "0"])]
    lyr = create_layer(ds, "stops", ogr.wkbPoint, [
        ("stop_id", ogr.OFTString), ("stop_name", ogr.OFTString), ("location_type", ogr.OFTInteger),
        ("parent_station", ogr.OFTString), ("wheelchair_boarding", ogr.OFTInteger)])
    ds.StartTransaction()
    for row in stops.itertuples():
        f = ogr.Feature(lyr.GetLayerDefn())
        f["stop_id"] = row.stop_id
        f["stop_name"] = row.stop_name
        f["location_type"] = int(row.location_type or 0)
        if row.parent_station:
            f["parent_station"] = row.parent_station
        if row.wheelchair_boarding:
            f["wheelchair_boarding"] = int(row.wheelchair_boarding)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({row.stop_lon} {row.stop_lat})"))
        lyr.CreateFeature(f)
    ds.CommitTransaction()
    return len(stops)


def write_metadata():
    """QGIS layer metadata (title, abstract, licence, attribution) stored in the GeoPackage."""
    from qgis.core import QgsApplication, QgsLayerMetadata, QgsProviderRegistry

    app = QgsApplication([], False)
    app.initQgis()
    for name, (attribution, licence) in ATTRIBUTION.items():
        md = QgsLayerMetadata()
        md.setIdentifier(f"civic311-sample-{name}")
        md.setTitle(f"civic311 sample: {name.replace('_', ' ')}")
        md.setAbstract(f"Bundled civic311 sample data (Chicago). Source: {attribution}.")
        md.setRights([attribution])
        md.setLicenses([licence])
        md.setKeywords({"civic311": ["311", "Chicago", name]})
        uri = f"{OUT}|layername={name}"
        QgsProviderRegistry.instance().saveLayerMetadata("ogr", uri, md)
    app.exitQgis()


def main():
    if OUT.exists():
        os.remove(OUT)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(OUT))
    counts = {"requests": write_requests(ds)}
    counts["precincts"] = copy_layer(
        ds, "precincts", DATA / "chicago_precincts_2023" / "DERIVED_precincts_2023_with_feb2023_turnout.geojson",
        [("ward_prec", "ward_prec", ogr.OFTString), ("ward", "ward", ogr.OFTInteger),
         ("precinct", "precinct", ogr.OFTInteger), ("registered_voters", "registered_voters", ogr.OFTInteger),
         ("ballots_cast", "ballots_cast", ogr.OFTInteger)], geom_from=ogr.wkbMultiPolygon)
    counts["stops"] = write_stops(ds)
    counts["polling_places"] = copy_layer(
        ds, "polling_places", DATA / "chicago_polling_places_2024" / "polling_locations_2024.geojson",
        [("ward", "Ward", ogr.OFTInteger), ("precinct", "Precinct", ogr.OFTInteger),
         ("name", "Polling Place Name", ogr.OFTString), ("address", "Polling Place Address", ogr.OFTString)],
        # the precinct each place serves, spelt like the precincts' ward_prec (ward 1, precinct 1 -> '01001')
        computed=[("ward_prec", ogr.OFTString,
                   lambda feat: f"{int(feat.GetField('Ward')):02d}{int(feat.GetField('Precinct')):03d}")])
    ds = None
    write_metadata()
    with sqlite3.connect(OUT) as con:
        con.execute("PRAGMA page_size = 16384")
        con.execute("VACUUM")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): {counts}")


if __name__ == "__main__":
    main()
