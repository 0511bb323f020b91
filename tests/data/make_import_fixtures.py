# SPDX-License-Identifier: GPL-2.0-or-later
"""Build the small import fixtures in tests/data/imports/ from the real exports in ../shared/data/external_exports.

Each fixture keeps real rows (values as the city published them) and changes only what the test is about: the
encoding, the file shape, or a column name. Run from the repository root:  python3 tests/data/make_import_fixtures.py
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT.parent / "shared" / "data" / "external_exports"
OUT = ROOT / "tests" / "data" / "imports"


def csv_rows(name: str, count: int) -> tuple[list[str], list[list[str]]]:
    with (SRC / name).open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        return header, [row for _, row in zip(range(count), reader)]


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # --- encodings: 20 SF311 rows; the first address gains a typographic apostrophe and an accent
    header, rows = csv_rows("sanfrancisco_sf311-pre2017.csv", 20)
    rows[0][header.index("Address")] = "O’Farrell St & Café Alley, SAN FRANCISCO, CA"
    write_csv(OUT / "sf311_utf8.csv", header, rows, "utf-8")
    write_csv(OUT / "sf311_utf8_bom.csv", header, rows, "utf-8-sig")
    write_csv(OUT / "sf311_utf16.csv", header, rows, "utf-16")  # with its BOM
    write_csv(OUT / "sf311_cp1252.csv", header, rows, "cp1252")
    data = bytearray((OUT / "sf311_utf8.csv").read_bytes())
    at = data.index(b"Voice In") + 2  # one bad byte inside the first 'Voice In'
    data[at:at + 1] = b"\xff"
    (OUT / "sf311_utf8_one_bad_byte.csv").write_bytes(bytes(data))
    # --- dates: 12 rows of every real format, one column each (names as the cities use them)
    la_h, la = csv_rows("losangeles_myla311-2017.csv", 6)
    sf_h, sf = csv_rows("sanfrancisco_sf311-pre2017.csv", 6)
    scf = json.loads((SRC / "sanfrancisco_seeclickfix-v1.json").read_text())[:6]
    newport = json.loads((SRC / "newport-ri_seeclickfix-v2-flattened.json").read_text())[:6]
    nyc_h, nyc = csv_rows("nyc_erm2nwe9-api.csv", 6)
    formats = {
        "la_ampm": [r[la_h.index("CreatedDate")] for r in la],  # MM/DD/YYYY hh:mm:ss AM/PM
        "scf_at": [r["created_at"] for r in scf],  # 06/22/2011 at 06:55PM
        "scf_raw": [r["updated_at_raw"] for r in scf],  # YYYY/MM/DD HH:MM:SS +0000
        "newport_ms": [str(r["created_at"]) for r in newport],  # epoch milliseconds
        "newport_s": [str(r["created_at"] // 1000) for r in newport],  # epoch seconds
        "nyc_iso_t": [r[nyc_h.index("created_date")] for r in nyc],  # ISO with T and fractional seconds
        "sf_ampm": [r[sf_h.index("Opened")] for r in sf],
    }
    (OUT / "date_formats.json").write_text(json.dumps(formats, indent=1) + "\n")
    # --- inference: Newport SeeClickFix rows where request_type.title is empty take summary, row by row
    rows_nt = [r for r in json.loads((SRC / "newport-ri_seeclickfix-v2-flattened.json").read_text())]
    mixed = [r for r in rows_nt if r.get("request_type.title")][:15] + \
        [r for r in rows_nt if not r.get("request_type.title")][:15]
    (OUT / "newport_category_fallback.json").write_text(json.dumps(mixed) + "\n")
    # --- a lookalike of New York's schema (same column names) holding Boston rows: no NYC zone or CRS follows
    b_h, b = csv_rows("boston_case-enquiry.csv", 30)
    rename = {"case_enquiry_id": "unique_key", "open_dt": "created_date", "closed_dt": "closed_date",
              "type": "complaint_type", "latitude": "latitude", "longitude": "longitude"}
    keep = list(rename)
    look = [[r[b_h.index(c)] for c in keep] for r in b]
    xs = [str(1000000 + i) for i in range(len(look))]
    header_l = [rename[c] for c in keep] + ["x_coordinate_state_plane", "y_coordinate_state_plane"]
    rows_l = [row + [x, "200000"] for row, x in zip(look, xs)]
    rows_l[0][header_l.index("latitude")] = rows_l[0][header_l.index("longitude")] = ""  # only X/Y on row 1
    for row in rows_l:  # written as UTC instants: a zone pulled in from the NYC schema would shift them
        row[1] = row[1].replace(" ", "T") + "Z"
    write_csv(OUT / "nyc_lookalike_boston_rows.csv", header_l, rows_l)
    # --- locations: GeoJSON features (point, multipoint, polygon) and a WKT text column, from Boston rows
    feats = []
    for i, r in enumerate(b[:6]):
        lat, lon = float(r[b_h.index("latitude")]), float(r[b_h.index("longitude")])
        if i == 1:
            geom = {"type": "MultiPoint", "coordinates": [[lon, lat], [lon + 0.01, lat + 0.01]]}
        elif i == 2:  # an L-shaped lot: its centroid lies outside, its point on surface inside
            d = 0.001
            geom = {"type": "Polygon", "coordinates": [[[lon, lat], [lon + 4 * d, lat], [lon + 4 * d, lat + d],
                                                        [lon + d, lat + d], [lon + d, lat + 4 * d],
                                                        [lon, lat + 4 * d], [lon, lat]]]}
        else:
            geom = {"type": "Point", "coordinates": [lon, lat]}
        props = {"case_enquiry_id": r[b_h.index("case_enquiry_id")], "open_dt": r[b_h.index("open_dt")],
                 "type": r[b_h.index("type")]}
        feats.append({"type": "Feature", "geometry": geom, "properties": props})
    (OUT / "boston_features.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}) + "\n")
    wkt_rows = [[r[b_h.index("case_enquiry_id")], r[b_h.index("open_dt")], r[b_h.index("type")],
                 f"POINT ({r[b_h.index('longitude')]} {r[b_h.index('latitude')]})"] for r in b[:10]]
    write_csv(OUT / "boston_wkt.csv", ["case_enquiry_id", "open_dt", "type", "the_geom"], wkt_rows)
    # --- an ArcGIS-style export of the same Boston rows: ';'-delimited, renamed columns, X/Y holding degrees
    renamed = [("OBJECTID", None), ("Case Number", "case_enquiry_id"), ("Date Opened", "open_dt"),
               ("Date Closed", "closed_dt"), ("Problem", "type"), ("Dept", "department"),
               ("Street Address", "location"), ("X", "longitude"), ("Y", "latitude"), ("Intake", "source")]
    arc = [[str(i + 1) if src is None else r[b_h.index(src)] for _, src in renamed] for i, r in enumerate(b)]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    writer.writerow([name for name, _ in renamed])
    writer.writerows(arc)
    (OUT / "boston_arcgis_semicolon.csv").write_text(buf.getvalue())
    # --- broken files
    (OUT / "empty.csv").write_bytes(b"")
    (OUT / "header_only.csv").write_text(",".join(header) + "\r\n")
    (OUT / "numbers.json").write_text("[1, 2, 3]\n")
    (OUT / "unknown_wrapper.json").write_text(json.dumps({"meta": {"view": "x"}, "count": 3}) + "\n")
    (OUT / "deeply_nested.json").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    (OUT / "scalar.json").write_text("\"requests\"\n")
    (OUT / "truncated.json").write_text(json.dumps(scf[:3])[:-40] + "\n")


if __name__ == "__main__":
    main()
