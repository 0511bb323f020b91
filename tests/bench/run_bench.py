# SPDX-License-Identifier: GPL-2.0-or-later
"""`make bench`: civic311 algorithms against their closest QGIS-native equivalents, in the same run, as whole
`qgis_process` invocations (wall time and peak RSS of the process). Prints a markdown table.

Environment: BENCH_SCALES (default "10k,100k,1M"), ESDA_PYTHON (optional: a Python with esda installed, to add
esda's G_Local as the reference for the Gi* row; esda is never a civic311 dependency).
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from synthetic_city import build  # noqa: E402


def qgis_process() -> str:
    return shutil.which("qgis_process.bin") or shutil.which("qgis_process") or sys.exit("qgis_process not found")


def _hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def measure_rss(args: list[str], env: dict) -> tuple[float, float, dict]:
    """Wall seconds, peak resident memory (MB) of the child and its JSON results. The peak is read from the
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
    try:
        results = json.loads(text[text.index("{"):]).get("results", {})
    except ValueError:
        results = {}
    return wall, peak, results


def run_alg(alg: str, params: dict, env: dict) -> tuple[float, float, dict]:
    args = [qgis_process(), "--json", "run", alg, "--"] + [f"{k}={v}" for k, v in params.items()]
    return measure_rss(args, env)


def main() -> None:
    scales = os.environ.get("BENCH_SCALES", "10k,100k,1M").split(",")
    work = Path(tempfile.mkdtemp(prefix="civic311-bench-"))
    plugins = work / "plugins"
    plugins.mkdir()
    (plugins / "civic311").symlink_to(ROOT, target_is_directory=True)
    env = {**os.environ, "QGIS_PLUGINPATH": str(plugins), "QT_QPA_PLATFORM": "offscreen",
           "QGIS_CUSTOM_CONFIG_PATH": str(work / "profile"), "HOME": str(work)}
    subprocess.run([qgis_process(), "plugins", "enable", "civic311"], env=env, capture_output=True, check=True)
    rows = []

    def row(task, scale, ours, native, native_name, target=""):
        ratio = native[0] / ours[0] if native else None
        rows.append((task, scale, ours, native, native_name, ratio, target))
        print(f"  {task} [{scale}]: civic311 {ours[0]:.2f} s / {ours[1]:.0f} MB"
              + (f"; {native_name} {native[0]:.2f} s / {native[1]:.0f} MB; ratio {ratio:.1f}x" if native else ""),
              flush=True)

    for scale in scales:
        print(f"scale {scale}: building/using the synthetic city", flush=True)
        city = build(scale)
        req, prec = f"{city}|layername=requests", f"{city}|layername=precincts"
        stats_out = work / f"stats_{scale}.gpkg"
        ours = run_alg("civic311:precinctstats", {
            "REQUESTS": req, "PRECINCTS": prec, "PRECINCT_ID_FIELD": "precinct_id",
            "VOTERS_FIELD": "registered_voters", "BALLOTS_FIELD": "ballots_cast", "OUTPUT": stats_out}, env)
        native = run_alg("native:countpointsinpolygon", {
            "POLYGONS": prec, "POINTS": req, "FIELD": "n", "OUTPUT": work / f"native_{scale}.gpkg"}, env)
        row("precinctstats", scale, ours, native, "native:countpointsinpolygon", ">= 10x at 1M, < 1.5 GB")
        if scale == scales[0] or scale == "1M":
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
    print()
    print("| task | scale | civic311 s | civic311 peak MB | reference | reference s | reference peak MB | "
          "speed-up | target |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task, scale, ours, native, name, ratio, target in rows:
        ref = f"{name} | {native[0]:.2f} | {native[1]:.0f} | {ratio:.1f}x" if native else "— | — | — | —"
        print(f"| {task} | {scale} | {ours[0]:.2f} | {ours[1]:.0f} | {ref} | {target} |")
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
