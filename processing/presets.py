# SPDX-License-Identifier: GPL-2.0-or-later
"""City presets: the bundled resources/presets.json plus the user's <profile>/civic311/presets.json."""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[1] / "resources" / "presets.json"


def user_presets_path() -> Path:
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / "civic311" / "presets.json"


def load_presets() -> list[dict]:
    presets = json.loads(BUNDLED.read_text(encoding="utf-8"))["presets"]
    try:
        path = user_presets_path()
        if path.exists():
            extra = json.loads(path.read_text(encoding="utf-8"))
            presets += extra.get("presets", []) if isinstance(extra, dict) else list(extra)
    except (OSError, ValueError, ImportError):
        pass  # a broken user file must not hide the built-in presets
    return presets
