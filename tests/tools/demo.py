# SPDX-License-Identifier: GPL-2.0-or-later
"""`make demo`: the civic311 pipeline on the bundled Chicago sample, headless through qgis_process.

Usage: python -P tests/tools/demo.py OUTPUT_DIR   (after `make install`)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "resources" / "sample" / "civic311_sample.gpkg"


def qgis_process() -> str:
    for name in ("qgis_process.bin", "qgis_process"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("qgis_process not found: run `make deps`")


def run(alg: str, params: dict) -> dict:
    args = [qgis_process(), "--json", "run", f"civic311:{alg}", "--"] + [f"{k}={v}" for k, v in params.items()]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"civic311:{alg} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    print(f"  civic311:{alg:<20} {time.time() - t0:5.1f} s")
    return results


def layer(gpkg: Path, name: str) -> str:
    return f"{gpkg}|layername={name}"


def main(out_dir: str) -> None:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    gpkg = out / "civic311_demo.gpkg"
    if gpkg.exists():
        gpkg.unlink()

    def dest(name: str) -> str:
        return f"ogr:dbname='{gpkg}' table=\"{name}\" (geom)"

    print(f"civic311 demo on {SAMPLE.name}")
    stats = run("precinctstats", {
        "REQUESTS": layer(SAMPLE, "requests"), "PRECINCTS": layer(SAMPLE, "precincts"),
        "PRECINCT_ID_FIELD": "ward_prec", "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast",
        "OUTPUT": dest("precinct_stats")})
    run("hotspots", {"INPUT": layer(gpkg, "precinct_stats"), "FIELD": "rate_eb", "NEIGHBOURS": 0,
                     "OUTPUT": dest("hotspots")})
    run("localmoran", {"INPUT": layer(gpkg, "precinct_stats"), "FIELD": "rate_eb", "NEIGHBOURS": 0,
                       "OUTPUT": dest("clusters")})
    run("outreachpriority", {"INPUT": layer(gpkg, "hotspots"), "OUTPUT": dest("priority")})
    reg = run("turnoutregression", {"INPUT": layer(gpkg, "priority"), "TURNOUT_FIELD": "turnout",
                                    "EXPLANATORY_FIELDS": "rate_1k", "WEIGHT_FIELD": "registered_voters",
                                    "OUTPUT": dest("regression"), "REPORT": str(out / "regression.html")})
    ohs = run("optimizedhotspots", {"INPUT": layer(SAMPLE, "requests"), "OUTPUT": dest("request_hotspots")})
    print(f"\n{stats['MATCHED']} requests matched a precinct ({stats['UNMATCHED']} did not).")
    print(f"Turnout regression: coefficient {reg['COEFFICIENT']:.5f}, R² {reg['R2']:.3f}, "
          f"residual Moran's I {reg['MORAN_I']:.3f} (p = {reg['MORAN_P']:.3f}).")
    print(f"Optimised hot spots: hexagons {ohs['CELL_SIZE']:.0f} m wide, distance band {ohs['DISTANCE_BAND']:.0f} m.")
    print("\nWrote:")
    for path in (gpkg, out / "regression.html"):
        print(f"  {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
