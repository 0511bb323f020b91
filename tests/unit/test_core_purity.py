# SPDX-License-Identifier: GPL-2.0-or-later
"""The analysis core must run without QGIS (it is reused and tested outside QGIS)."""

import subprocess
import sys

from conftest import ROOT


def test_core_never_imports_qgis(tmp_path):
    (tmp_path / "civic311").symlink_to(ROOT, target_is_directory=True)
    code = (
        "import sys, pkgutil, importlib\n"
        "import civic311.processing.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__): importlib.import_module('civic311.processing.core.' + m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6'))\n"
        "print(len(list(pkgutil.iter_modules(core.__path__))), bad)\n"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path)}, check=True).stdout.split(maxsplit=1)
    assert int(out[0]) >= 6
    assert out[1].strip() == "[]"
