# SPDX-License-Identifier: GPL-2.0-or-later
"""`make bench`: civic311 algorithms against their closest QGIS-native equivalents, in the same run, each in a
fresh PyQGIS process started as `qgis_process` starts (run_one.py). Reports the process's wall time (start-up
included) and peak RSS, and the time inside `processing.run`. Prints a markdown table.

Each row also gives the floor (floor.py: the same points read through GDAL's Arrow stream plus the output
written again by GDAL, in a plain Python process) and the ratio to it: process to process, and in process (the
time inside processing.run against floor.py's own time, so that neither start-up counts). At 10M the two slowest natives
(qgis:distancetonearesthubpoints, native:kmeansclustering: hours) run on the 1M city and are scaled by 10, which
the row says; set BENCH_NATIVE_10M=1 to run them at 10M.

Environment: BENCH_SCALES (default "10k,100k,1M"; "10M" builds a 10-million-request city over five years, once),
BENCH_TASKS (default all of "precincts,trends,field_ops,fetch_import"; field_ops = transit + zones),
ESDA_PYTHON (optional: a Python with esda installed, to add esda's G_Local as the reference for the Gi* row;
esda is never a civic311 dependency), BENCH_REPEAT (default 1: rounds of precinctstats and its floor, run in
turn, each writing a new output file; the median of each reported).
`make bench-qgis340` runs it on QGIS 3.40 in the CI chroot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from synthetic_city import build, date_range  # noqa: E402


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def measure_rss(args: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak resident memory (MB) of the child and its standard output. The peak is read from the
    child's own VmHWM while it runs (getrusage would include the fork of this runner)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, text=True)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _hwm_mb(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        text = out.read()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:4])} failed:\n{text[-2000:]}\n{err.read()[-2000:]}")
    return wall, peak, text


def run_alg(alg: str, params: dict, env: dict) -> tuple[float, float, dict, float]:
    """(process wall seconds, peak MB, results, seconds inside processing.run) of one algorithm in a fresh process
    (run_one.py: QGIS, Processing and civic311 started as qgis_process starts them)."""
    args = [sys.executable, "-P", str(HERE / "run_one.py"), alg, json.dumps(params, default=str)]
    wall, peak, text = measure_rss(args, env)
    line = next(line for line in text.splitlines() if line.startswith("BENCH "))
    report = json.loads(line[len("BENCH "):])
    return wall, peak, report["results"], report["seconds"]


def repeated(run):
    """Of BENCH_REPEAT runs (default 1), the one with the median time in the process (the last item of each):
    a 3-second row varies by a tenth from one run to the next on a busy machine."""
    return interleaved(run)[0]


def interleaved(*runs):
    """For each of ``runs``, of BENCH_REPEAT rounds (default 1) that run each in turn, the run with the median
    time in the process (the last item): alternating them, a drift of the machine's speed during the rounds
    touches both sides of a ratio alike."""
    rounds = [[run() for run in runs] for _ in range(max(1, int(os.environ.get("BENCH_REPEAT", "1"))))]
    return [sorted(column, key=lambda r: r[-1])[len(column) // 2] for column in zip(*rounds)]


def floor(source: str, layer: str, columns: str, outputs: list, env: dict) -> tuple[float, float, float]:
    """(process seconds, peak MB, seconds inside the process) of floor.py on the same input and the outputs of
    the civic311 run."""
    wall, peak, text = measure_rss([sys.executable, str(HERE / "floor.py"), source, layer, columns,
                                    *[str(o) for o in outputs]], env)
    line = next(line for line in text.splitlines() if line.startswith("FLOOR "))
    return wall, peak, float(line.rsplit("total=", 1)[1])


def native_run(alg: str, params: dict, city, scale: str, env: dict, inputs: tuple[str, ...]) -> tuple:
    """The native algorithm on this scale, or at 10M (unless BENCH_NATIVE_10M) on the 1M city, times 10."""
    if scale != "10M" or os.environ.get("BENCH_NATIVE_10M"):
        return run_alg(alg, params, env)
    small = build("1M")
    params = {k: (str(v).replace(str(city), str(small)) if k in inputs else v) for k, v in params.items()}
    wall, peak, results, seconds = run_alg(alg, params, env)
    return wall * 10, peak, {**results, "scaled": "1M x 10"}, seconds * 10


def _scaled(native) -> str:
    return " (1M x 10)" if native and isinstance(native[2], dict) and native[2].get("scaled") else ""


def _alg(run) -> str:
    return f"{run[3]:.2f}" if len(run) > 3 else "—"


def _in_process(ours, low) -> str:
    """civic311's seconds inside processing.run over the floor's seconds inside its process (start-up left out
    of both: QGIS and Processing start in about 2 s, plain Python and GDAL in a tenth of that)."""
    return f"{ours[3] / low[2]:.2f}x" if len(ours) > 3 and low[2] > 0 else "—"


def _ratio(native, ours) -> str:
    return f"{native[3] / ours[3]:.1f}x" if len(native) > 3 and len(ours) > 3 else "—"


def mean_zone_radius(path: str, field: str) -> float:
    """Mean over zones of the largest distance from the zone centre to its points (projected metres)."""
    import numpy as np
    from osgeo import ogr

    ds = ogr.Open(path)
    lyr = ds.GetLayer(0)
    xs, ys, labels = [], [], []
    for f in lyr:
        g = f.GetGeometryRef()
        xs.append(g.GetX())
        ys.append(g.GetY())
        labels.append(f.GetField(field))
    sys.path.insert(0, str(ROOT.parent))
    x, y, lab = np.asarray(xs), np.asarray(ys), np.asarray([-1 if v is None else v for v in labels])
    radii = []
    for z in np.unique(lab[lab >= 0]):
        m = lab == z
        cx, cy = x[m].mean(), y[m].mean()
        radii.append(np.sqrt((x[m] - cx) ** 2 + (y[m] - cy) ** 2).max())
    return float(np.mean(radii))


def field_ops(city, scale, work, env, row) -> None:
    transit(city, scale, work, env, row)
    zones(city, scale, work, env, row)


def transit(city, scale, work, env, row) -> None:
    req, stops = f"{city}|layername=requests", f"{city}|layername=stops"
    ours = run_alg("civic311:transitaccess", {"INPUT": req, "STOPS": stops, "OUTPUT": work / f"ta_{scale}.gpkg"},
                   env)
    native = native_run("qgis:distancetonearesthubpoints", {"INPUT": req, "HUBS": stops, "FIELD": "stop_id",
                                                             "UNIT": 0, "OUTPUT": work / f"hub_{scale}.gpkg"},
                        city, scale, env, ("INPUT", "HUBS"))
    row("transitaccess (12,000 stops)", scale, ours, native, "qgis:distancetonearesthubpoints", ">= 50x",
        floor(str(city), "requests", "", [work / f"ta_{scale}.gpkg"], env))


def zones(city, scale, work, env, row) -> None:
    req = f"{city}|layername=requests"
    km = work / f"km_{scale}.gpkg"
    ours = run_alg("civic311:canvasszones", {"INPUT": req, "METHOD": 0, "ZONE_COUNT": 200, "OUTPUT": km,
                                             "ZONES": work / f"km_zones_{scale}.gpkg",
                                             "ROUTES": work / f"km_routes_{scale}.gpkg"}, env)
    nkm = work / f"nkm_{scale}.gpkg"
    native = native_run("native:kmeansclustering", {"INPUT": req, "CLUSTERS": 200, "FIELD": "CLUSTER_ID",
                                                     "OUTPUT": nkm}, city, scale, env, ("INPUT",))
    spread = f"mean radius civic311 {mean_zone_radius(str(km), 'zone_id'):.0f} m" + (
        "" if _scaled(native) else f" vs native {mean_zone_radius(str(nkm), 'CLUSTER_ID'):.0f} m")
    row(f"canvasszones K-means 200 with ZONES and ROUTES ({spread})", scale, ours, native,
        "native:kmeansclustering", ">= 20x", floor(str(city), "requests", "", [km, work / f"km_zones_{scale}.gpkg",
                                                                            work / f"km_routes_{scale}.gpkg"], env))


def precincts(city, scale, work, env, row) -> None:
    req, prec = f"{city}|layername=requests", f"{city}|layername=precincts"
    stats_out = work / f"stats_{scale}.gpkg"
    def ours_run():
        stats_out.unlink(missing_ok=True)  # each run writes a new GeoPackage, as the first one does
        return run_alg("civic311:precinctstats", {
            "REQUESTS": req, "PRECINCTS": prec, "PRECINCT_ID_FIELD": "precinct_id",
            "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast", "OUTPUT": stats_out}, env)

    # civic311 and its floor (which copies civic311's output) alternate, round by round
    ours, lower = interleaved(ours_run, lambda: floor(str(city), "requests", "category", [stats_out], env))
    native = run_alg("native:countpointsinpolygon", {
        "POLYGONS": prec, "POINTS": req, "FIELD": "n", "OUTPUT": work / f"native_{scale}.gpkg"}, env)
    row("precinctstats", scale, ours, native, "native:countpointsinpolygon", ">= 10x, <= 2x floor", lower)
    if scale in ("10k", "1M", "10M"):
        gi = run_alg("civic311:hotspots", {"INPUT": stats_out, "FIELD": "rate_eb", "NEIGHBOURS": 0,
                                           "PERMUTATIONS": 999, "OUTPUT": work / f"gi_{scale}.gpkg"}, env)
        esda = None
        if os.environ.get("ESDA_PYTHON"):
            esda = measure_rss([os.environ["ESDA_PYTHON"], str(HERE / "esda_gi.py"), str(stats_out)], env)
        row("hotspots (999 perms, 4,000 precincts)", scale, gi, esda, "esda G_Local (+ libpysal Queen)",
            "no slower than esda")
        lm = run_alg("civic311:localmoran", {"INPUT": stats_out, "FIELD": "rate_eb", "NEIGHBOURS": 0,
                                             "PERMUTATIONS": 999, "OUTPUT": work / f"lm_{scale}.gpkg"}, env)
        row("localmoran (999 perms)", scale, lm, None, "")


def trends(city, scale, work, env, row) -> None:
    """Weekly category trends and emerging hot spots over the synthetic year, by precinct, TABLE included."""
    zones = {"REQUESTS": f"{city}|layername=requests", "ZONES": f"{city}|layername=precincts",
             "ZONE_ID_FIELD": "precinct_id", "INTERVAL": 1}
    ours = run_alg("civic311:categorytrends", {**zones, "OUTPUT": work / f"ct_{scale}.gpkg",
                                               "TABLE": work / f"ct_table_{scale}.gpkg"}, env)
    row(f"categorytrends weekly ({ours[2].get('PERIODS', 0)} periods, 4,000 precincts, TABLE)", scale, ours, None,
        "", "< 10 s at 1M, < 60 s at 10M", floor(str(city), "requests", "created_at,category",
                                                [work / f"ct_{scale}.gpkg", work / f"ct_table_{scale}.gpkg"], env))
    ours = run_alg("civic311:emerginghotspots", {**zones, "PERMUTATIONS": 99, "OUTPUT": work / f"eh_{scale}.gpkg",
                                                 "TABLE": work / f"eh_table_{scale}.gpkg"}, env)
    row("emerginghotspots weekly (99 perms, 4,000 precincts, TABLE)", scale, ours, None, "", "< 60 s",
        floor(str(city), "requests", "created_at", [work / f"eh_{scale}.gpkg", work / f"eh_table_{scale}.gpkg"], env))


def lonlat_chunks(scale: str):
    """The requests of a scale with longitude/latitude (EPSG:4326), a chunk at a time."""
    from osgeo import osr
    from synthetic_city import requests_chunks

    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromEPSG(32616)
    b.ImportFromEPSG(4326)
    a.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    b.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    transform = osr.CoordinateTransformation(a, b)
    for frame in requests_chunks(scale):
        ll = np.asarray(transform.TransformPoints(frame[["x", "y"]].to_numpy()))
        yield frame.assign(lon=ll[:, 0].round(7), lat=ll[:, 1].round(7))


def fetch_import(city, scale, work, env, row) -> None:
    """Import a CSV of the synthetic requests (with lat/lon) and fetch the same rows from the mock Socrata."""
    import pandas as pd

    csv = work / f"requests_{scale}.csv"
    parts = []
    for i, frame in enumerate(lonlat_chunks(scale)):  # written a chunk at a time (10M rows: bounded memory)
        pd.DataFrame({"sr_number": frame["request_id"], "sr_type": frame["category"], "status": "Open",
                      "created_date": frame["created_at"], "latitude": frame["lat"],
                      "longitude": frame["lon"]}).to_csv(csv, index=False, mode="a" if i else "w", header=not i)
        parts.append(socrata_rows(frame))
    imported = work / f"imp_{scale}.gpkg"
    ours = run_alg("civic311:importrequests", {"INPUT": csv, "OUTPUT": imported}, env)
    vrt = work / f"requests_{scale}.vrt"
    vrt.write_text(f'<OGRVRTDataSource><OGRVRTLayer name="requests_{scale}"><SrcDataSource>{csv}</SrcDataSource>'
                   '<GeometryType>wkbPoint</GeometryType><LayerSRS>EPSG:4326</LayerSRS>'
                   '<GeometryField encoding="PointFromColumns" x="longitude" y="latitude"/></OGRVRTLayer>'
                   '</OGRVRTDataSource>')
    native = run_alg("native:savefeatures", {"INPUT": str(vrt), "OUTPUT": work / f"save_{scale}.gpkg"}, env)
    rate = f"{ours[2].get('FETCHED', 0) / ours[0]:,.0f} rows/s"
    row(f"importrequests (CSV, {rate})", scale, ours, native, "CSV as points + native:savefeatures",
        ">= 200,000 rows/s", floor(str(vrt), "-", "sr_number,sr_type,status,created_date", [imported], env))
    (work / f"save_{scale}.gpkg").unlink(missing_ok=True)
    created = np.concatenate([p[0] for p in parts])
    order = np.argsort(created, kind="stable")
    bodies = np.concatenate([p[1] for p in parts])[order]
    del parts
    url, server = socrata_server(created[order], bodies)
    first, last = date_range(scale)
    fetched = work / f"fetch_{scale}.gpkg"
    try:
        ours = run_alg("civic311:fetchrequests", {
            "PRESET": 0, "API": 0, "BASE_URL": url, "DATASET": "bench-0311", "START_DATE": first,
            "END_DATE": last, "CACHE_DIR": work / f"cache_{scale}", "OUTPUT": fetched}, env)
    finally:
        server.shutdown()
        server.server_close()
    shutil.rmtree(work / f"cache_{scale}", ignore_errors=True)
    rate = f"{ours[2].get('FETCHED', 0) / ours[0]:,.0f} rows/s"
    row(f"fetchrequests (mock Socrata, {ours[2].get('FETCHED', 0)} rows, {rate})", scale, ours, None, "",
        ">= 100,000 rows/s")
    csv.unlink()


def socrata_rows(frame) -> tuple[np.ndarray, np.ndarray]:
    """(created_date text, the row as Socrata JSON) for each request, built with vectorised string operations."""
    created = frame["created_at"].to_numpy(dtype=object)
    body = ('{"sr_number": "' + frame["request_id"] + '", "sr_type": "' + frame["category"]
            + '", "status": "Open", "created_date": "' + frame["created_at"] + '.000", "latitude": "'
            + frame["lat"].map("{:.7f}".format) + '", "longitude": "' + frame["lon"].map("{:.7f}".format) + '"}')
    return created, body.to_numpy(dtype=object)


def socrata_server(created: np.ndarray, rows: np.ndarray):
    """A fast local Socrata stand-in: rows pre-serialised and sorted by created_date, $where bounds by bisection."""
    import http.server
    import re
    import threading
    from urllib.parse import parse_qs, urlsplit

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            p = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
            lo, hi = (re.findall(r"'([^']*)'", p.get("$where", "")) + ["", "~"])[:2]
            a, b = np.searchsorted(created, lo, "left"), np.searchsorted(created, hi, "left")
            off, lim = int(p.get("$offset", 0)), int(p.get("$limit", 1000))
            body = ("[" + "\n,".join(rows[a + off:min(b, a + off + lim)].tolist()) + "]").encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def main() -> None:
    scales = os.environ.get("BENCH_SCALES", "10k,100k,1M").split(",")
    work = Path(tempfile.mkdtemp(prefix="civic311-bench-"))
    plugins = work / "plugins"
    plugins.mkdir()
    (plugins / "civic311").symlink_to(ROOT, target_is_directory=True)
    env = {**os.environ, "QGIS_PLUGINPATH": str(plugins), "QT_QPA_PLATFORM": "offscreen",
           "QGIS_CUSTOM_CONFIG_PATH": str(work / "profile"), "HOME": str(work)}
    rows = []

    def row(task, scale, ours, native, native_name, target="", low=None):
        rows.append((task, scale, ours, native, native_name, target, low))
        scaled = _scaled(native)
        print(f"  {task} [{scale}]: civic311 {ours[0]:.2f} s ({_alg(ours)} in the algorithm) / {ours[1]:.0f} MB"
              + (f"; {native_name}{scaled} {native[0]:.2f} s ({_alg(native)}) / {native[1]:.0f} MB; ratio "
                 f"{native[0] / ours[0]:.1f}x ({_ratio(native, ours)} in the algorithm)" if native else "")
              + (f"; floor {low[0]:.2f} s ({low[2]:.2f} in process) / {low[1]:.0f} MB, civic311 / floor "
                 f"{ours[0] / low[0]:.1f}x ({_in_process(ours, low)} in process)" if low else ""),
              flush=True)

    tasks = set(os.environ.get("BENCH_TASKS", "precincts,trends,field_ops,fetch_import").split(","))
    for scale in scales:
        print(f"scale {scale}: building/using the synthetic city", flush=True)
        city = build(scale)
        if "precincts" in tasks:
            precincts(city, scale, work, env, row)
        if scale in ("1M", "10M") or os.environ.get("BENCH_ALL_ROWS"):
            for name, task in (("trends", trends), ("field_ops", field_ops), ("transit", transit), ("zones", zones),
                               ("fetch_import", fetch_import)):
                if name in tasks:
                    task(city, scale, work, env, row)
    print()
    print("Process: a fresh PyQGIS process per run (start-up included). Algorithm: inside processing.run. Floor: "
          "the same points read through GDAL's Arrow stream + the output written again by GDAL (plain Python).")
    print("| task | scale | civic311 process s | civic311 algorithm s | civic311 peak MB | reference | "
          "reference process s | reference algorithm s | reference peak MB | speed-up process | "
          "speed-up algorithm | floor s | civic311 / floor | floor in process s | civic311 algorithm / floor in "
          "process | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for task, scale, ours, native, name, target, low in rows:
        scaled = _scaled(native)
        ref = (f"{name}{scaled} | {native[0]:.2f} | {_alg(native)} | {native[1]:.0f} | {native[0] / ours[0]:.1f}x | "
               f"{_ratio(native, ours)}" if native else "— | — | — | — | — | —")
        lows = f"{low[0]:.2f} | {ours[0] / low[0]:.1f}x | {low[2]:.2f} | {_in_process(ours, low)}" if low \
            else "— | — | — | —"
        print(f"| {task} | {scale} | {ours[0]:.2f} | {_alg(ours)} | {ours[1]:.0f} | {ref} | {lows} | {target} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    main()
