# civic311 — the one entry point: deps, install, test, demo, bench, lint, package.
# Every target is idempotent and works as root on a fresh Debian 12 machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PY          := /usr/bin/python3
VENV        := .venv
VPY         := $(VENV)/bin/python
PYTEST      := $(VPY) -P -m pytest
APT_PKGS    := qgis python3-qgis qgis-providers python3-pandas python3-sklearn python3-requests python3-pytest \
               python3-venv python3-pip xvfb debootstrap
PIP_PKGS    := pytest-qgis==5.0.2 ruff==0.8.4 mypy==1.13.0
QGIS_PROCESS = $(shell command -v qgis_process.bin || command -v qgis_process)
PROFILE_DIR := $(HOME)/.local/share/QGIS/QGIS3/profiles/default
PLUGIN_LINK := $(PROFILE_DIR)/python/plugins/civic311
VERSION     := $(shell sed -n 's/^version=//p' metadata.txt)
ZIP         := dist/civic311-$(VERSION).zip
export QT_QPA_PLATFORM := offscreen

.PHONY: help deps install test test-qgis340 test-qgis344 demo bench bench-qgis340 lint package check-package clean docs i18n

help:
	@echo "make deps | install | test | test-qgis340 | test-qgis344 | demo | bench | bench-qgis340 | lint | package | docs | i18n | clean"

deps: $(VENV)/.stamp

$(VENV)/.stamp: Makefile
	@if ! $(PY) -c "import qgis.core, pandas, sklearn, requests, pytest" 2>/dev/null || ! command -v qgis_process.bin >/dev/null; then \
		echo "Installing QGIS 3.22 and Python packages from Debian"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PKGS); \
	fi
	$(PY) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(PIP_PKGS)
	@$(VPY) -c "import numpy, osgeo.gdal_array; assert numpy.__version__.startswith('1.'), numpy.__version__"
	touch $@

install: deps
	mkdir -p $(dir $(PLUGIN_LINK))
	ln -sfn "$(CURDIR)" "$(PLUGIN_LINK)"
	@out=$$(QGIS_PLUGINPATH="$(dir $(PLUGIN_LINK))" $(QGIS_PROCESS) plugins enable civic311 2>&1) || \
		echo "$$out" | grep -q "already enabled" || { echo "$$out"; exit 1; }
	@echo "civic311 linked into $(PLUGIN_LINK) and enabled for qgis_process"

test: deps
	$(PYTEST) -p no:cacheprovider tests

test-qgis340:
	bash .ci/qgis340.sh

# QGIS 3.44 (Debian sid) in a cached chroot; the first run builds it (about 12 minutes)
test-qgis344:
	bash .ci/qgis344.sh

demo: install
	$(VPY) -P tests/tools/demo.py demo-output

bench: deps
	@echo "synthetic cities are cached in tests/bench/cache (delete it to rebuild)"
	$(VPY) -P tests/bench/run_bench.py

# the same benchmarks on QGIS 3.40 in the CI chroot (BENCH_SCALES defaults to 1M there)
bench-qgis340:
	bash .ci/qgis340.sh --bench

lint: deps
	$(VENV)/bin/ruff check .
	cd processing && ../$(VENV)/bin/mypy --config-file ../pyproject.toml -p core

docs: deps
	$(VPY) -P tests/tools/gen_docs.py docs/algorithms.md

i18n:
	command -v pylupdate5 >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pyqt5-dev-tools)
	mkdir -p resources/i18n
	pylupdate5 -noobsolete $$(git ls-files '*.py' | grep -v '^tests/') -ts resources/i18n/civic311_en.ts

package: $(ZIP)

$(ZIP): $(shell git ls-files 2>/dev/null)
	mkdir -p dist
	rm -f $(ZIP)
	git archive --format=zip --prefix=civic311/ -o $(ZIP) HEAD -- $$(git ls-files | grep -v -E '^(tests/|\.ci/|\.gitignore|\.gitattributes|pyproject\.toml|Makefile|docs/|resources/sample/build_sample\.py)')
	@echo "wrote $(ZIP)"

check-package: package
	$(PY) .ci/check_zip.py $(ZIP)

clean:
	rm -rf dist demo-output .pytest_cache .mypy_cache .ruff_cache .qgis-settings
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
