# SPDX-License-Identifier: GPL-2.0-or-later
"""Headless use must never silently break: run a civic311 algorithm through the real qgis_process binary."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, SAMPLE


def qgis_process_binary():
    for name in ("qgis_process.bin", "qgis_process"):
        path = shutil.which(name)
        if path and not open(path, "rb").read(2) == b"#!":
            return path
    pytest.fail("qgis_process binary not found: run `make deps`")


def qgis_process_with_plugin(tmp_path) -> tuple[str, dict]:
    """(binary, environment) of a qgis_process with a fresh profile and civic311 enabled from the checkout."""
    exe = qgis_process_binary()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "civic311").symlink_to(ROOT, target_is_directory=True)
    # a fresh profile (pytest-qgis points QGIS_CUSTOM_CONFIG_PATH at its own settings folder)
    env = {**os.environ, "HOME": str(tmp_path), "QGIS_PLUGINPATH": str(plugins), "QT_QPA_PLATFORM": "offscreen",
           "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "profile"), "QGIS_OPTIONS_PATH": str(tmp_path / "profile")}
    env.pop("XDG_RUNTIME_DIR", None)
    enable = subprocess.run([exe, "plugins", "enable", "civic311"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert enable.returncode == 0, enable.stderr
    return exe, env


def test_qgis_process_runs_precinctstats(tmp_path):
    exe, env = qgis_process_with_plugin(tmp_path)
    listing = subprocess.run([exe, "list"], env=env, check=True, capture_output=True, text=True, timeout=120)
    assert "civic311:hotspots" in listing.stdout and "civic311:precinctstats" in listing.stdout
    out = tmp_path / "stats.gpkg"
    proc = subprocess.run(
        [exe, "--json", "run", "civic311:precinctstats", "--",
         f"REQUESTS={SAMPLE}|layername=requests", f"PRECINCTS={SAMPLE}|layername=precincts",
         "PRECINCT_ID_FIELD=ward_prec", "VOTERS_FIELD=registered_voters", "BALLOTS_FIELD=ballots_cast",
         f"OUTPUT={out}"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout[proc.stdout.index("{"):])["results"]
    assert results["MATCHED"] + results["UNMATCHED"] == 8304
    assert results["MATCHED"] > 8200
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(str(out), "stats", "ogr")
    assert layer.featureCount() == 1291
    assert sum(f["requests"] for f in layer.getFeatures()) == results["MATCHED"]
