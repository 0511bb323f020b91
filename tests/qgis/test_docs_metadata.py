# SPDX-License-Identifier: GPL-2.0-or-later
"""Documentation generated from the code is up to date; metadata.txt satisfies plugins.qgis.org."""

import configparser
import importlib.util

from conftest import ROOT


def load_gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tests" / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_algorithm_reference_is_in_sync_with_the_code(plugin):
    readme, reference = load_gen_docs().render()
    assert readme == (ROOT / "README.md").read_text(), "README algorithm table is stale: run `make docs`"
    assert reference == (ROOT / "docs" / "algorithms.md").read_text(), "docs/algorithms.md is stale: `make docs`"
    assert "`civic311:hotspots`" in readme and "`gi_bin`" in readme


def test_metadata_has_every_field_the_plugin_repository_requires():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "metadata.txt", encoding="utf-8")
    general = cfg["general"]
    for key in ("name", "qgisMinimumVersion", "qgisMaximumVersion", "description", "about", "version", "author",
                "email", "repository", "tracker", "homepage", "tags", "category", "icon", "changelog"):
        assert general.get(key, "").strip(), key
    assert general["qgisMinimumVersion"] == "3.22" and general["qgisMaximumVersion"] == "4.99"
    assert general["hasProcessingProvider"] == "yes"
    assert (ROOT / general["icon"]).exists()


def test_no_direct_pyqt_imports_and_no_exec_underscore():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or "cache" in path.parts:
            continue
        text = path.read_text()
        for bad in ("from PyQt5", "import PyQt5", "from PyQt6", ".exec_("):
            if bad in text and path.name != "test_docs_metadata.py":
                offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert offenders == []
