# SPDX-License-Identifier: GPL-2.0-or-later
"""The plugin as QGIS loads it: provider registration, algorithm metadata, GUI hooks, unload."""

from pathlib import Path

import pytest
from qgis.core import QgsApplication

from conftest import ROOT

EXPECTED = {"precinctstats", "hotspots", "localmoran", "optimizedhotspots", "outreachpriority", "turnoutregression"}
GROUPS = {"Fetch and import", "Precinct analysis", "Trends", "Field operations"}


def test_processing_module_is_qgis_own():
    import processing

    assert Path(processing.__file__).resolve().parent != ROOT / "processing"
    assert "python/plugins/processing" in Path(processing.__file__).as_posix()


def test_provider_lists_every_algorithm_with_help(plugin):
    provider = QgsApplication.processingRegistry().providerById("civic311")
    assert provider is not None and provider.name() == "Civic 311"
    assert Path(provider.svgIconPath()).read_text().lstrip().startswith("<svg")
    algs = provider.algorithms()
    ids = [a.id() for a in algs]
    assert len(ids) == len(set(ids))
    assert EXPECTED <= {a.name() for a in algs}
    for alg in algs:
        assert alg.id() == f"civic311:{alg.name()}"
        assert alg.group() in GROUPS
        assert len(alg.shortHelpString()) > 200, alg.id()
        assert alg.helpUrl().endswith("#" + alg.name())
        assert alg.displayName()[0].isupper()
        for param in alg.parameterDefinitions():
            if ":" in param.name():  # a model's outputs are named "child:Output", as QGIS names them
                continue
            assert param.name().isupper(), (alg.id(), param.name())
            assert param.description(), (alg.id(), param.name())


def test_algorithm_instances_are_independent(plugin):
    alg = QgsApplication.processingRegistry().createAlgorithmById("civic311:hotspots")
    assert alg is not None and alg.id() == "civic311:hotspots"
    assert alg.parameterDefinition("NEIGHBOURS").options()[0] == "Queen contiguity"
    assert alg.parameterDefinition("PERMUTATIONS").defaultValue() == 999


def test_gui_hooks_add_and_remove_menu_entries(qgis_iface, plugin):
    import civic311

    registry = QgsApplication.processingRegistry()
    plugin.unload()  # take the session instance out to test a clean load and unload
    assert registry.providerById("civic311") is None
    try:
        gui_plugin = civic311.classFactory(qgis_iface)
        gui_plugin.initGui()
        assert len(gui_plugin.actions) == 3
        assert registry.providerById("civic311") is gui_plugin.provider
        gui_plugin.unload()
        assert gui_plugin.actions == [] and gui_plugin.provider is None
        assert registry.providerById("civic311") is None
    finally:
        plugin.initProcessing()
    assert registry.providerById("civic311") is not None


def test_load_sample_data_adds_the_four_layers(qgis_new_project):
    from qgis.core import QgsProject

    from civic311.plugin import load_sample_layers

    layers = load_sample_layers(QgsProject.instance())
    counts = {layer.name(): layer.featureCount() for layer in layers}
    assert counts == {"precincts": 1291, "requests": 8304, "stops": 11009, "polling_places": 1291}
    md = layers[0].metadata()
    assert "Board of Election" in md.abstract() and md.licenses()


@pytest.mark.parametrize("name", ["metadata.txt", "LICENSE", "README.md", "CHANGELOG.md"])
def test_required_files_exist(name):
    assert (ROOT / name).stat().st_size > 100


def test_every_algorithm_has_tags_and_a_one_line_description(plugin):
    from qgis.core import QgsApplication

    for alg in QgsApplication.processingRegistry().providerById("civic311").algorithms():
        short = alg.shortDescription()
        assert short and "\n" not in short and len(short) <= 200, alg.id()
        assert "311" in alg.tags() and len(alg.tags()) > 6, alg.id()


def test_pipeline_declares_and_returns_every_output(run_alg):
    from qgis.core import QgsApplication

    from conftest import SAMPLE

    alg = QgsApplication.processingRegistry().algorithmById("civic311:outreachpipeline")
    declared = {o.name() for o in alg.outputDefinitions()}
    assert {"MATCHED", "UNMATCHED", "PRIORITY_OUTPUT", "ZONES"} <= declared
    res = run_alg("civic311:outreachpipeline", {
        "REQUESTS": f"{SAMPLE}|layername=requests", "PRECINCTS": f"{SAMPLE}|layername=precincts",
        "PRECINCT_ID_FIELD": "ward_prec", "PERMUTATIONS": 0})
    assert declared <= set(res) and res["MATCHED"] == 8283 and res["ACCESS_OUTPUT"] is None  # no STOPS given
