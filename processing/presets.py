# SPDX-License-Identifier: GPL-2.0-or-later
"""City presets: the bundled resources/presets.json plus the user's <profile>/civic311/presets.json."""

from __future__ import annotations

import json
from pathlib import Path

BUNDLED = Path(__file__).resolve().parents[1] / "resources" / "presets.json"


def user_presets_path() -> Path:
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / "civic311" / "presets.json"


API_KEYS = ("socrata", "open311", "seeclickfix", "arcgis", "ckan")
PROBLEMS: list[str] = []  # what was wrong with the user's presets file, for the log


def valid_preset(entry) -> str | None:
    """Why a preset entry cannot be used, or None when it can."""
    if not isinstance(entry, dict):
        return f"{type(entry).__name__} instead of an object"
    for key in ("name", "api", "base_url"):
        if not isinstance(entry.get(key), str) or not entry.get(key):
            return f"no text {key!r}"
    if entry["api"] not in API_KEYS:
        return f"api {entry['api']!r} is not one of {', '.join(API_KEYS)}"
    for key in ("dataset", "tz", "xy_crs", "location_field", "attribution", "licence"):
        if key in entry and entry[key] is not None and not isinstance(entry[key], str):
            return f"{key!r} is not text"
    if "field_map" in entry and not (isinstance(entry["field_map"], dict)
                                     and all(isinstance(v, str) for v in entry["field_map"].values())):
        return "'field_map' is not an object of text values"
    if "bbox" in entry and not (isinstance(entry["bbox"], list) and len(entry["bbox"]) == 4
                                and all(isinstance(v, (int, float)) for v in entry["bbox"])):
        return "'bbox' is not four numbers"
    return None


def load_presets() -> list[dict]:
    """The bundled presets, then the user's valid ones. A broken user file or entry never hides the others (a bad
    entry once made qgis_process list no civic311 algorithm): it is skipped and named in PROBLEMS."""
    presets = json.loads(BUNDLED.read_text(encoding="utf-8"))["presets"]
    PROBLEMS.clear()
    try:
        path = user_presets_path()
        if path.exists():
            extra = json.loads(path.read_text(encoding="utf-8"))
            entries = extra.get("presets", []) if isinstance(extra, dict) else extra
            if not isinstance(entries, list):
                PROBLEMS.append(f"{path}: 'presets' is not a list; the file is ignored.")
                entries = []
            for i, entry in enumerate(entries):
                why = valid_preset(entry)
                if why is None:
                    presets.append(entry)
                else:
                    name = entry.get("name") if isinstance(entry, dict) else None
                    PROBLEMS.append(f"{path}: preset {i + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
                                    + f" is skipped: {why}.")
    except (OSError, ValueError, ImportError) as err:
        PROBLEMS.append(f"The user presets file could not be read ({err}); only the built-in presets are offered.")
    if PROBLEMS:
        try:
            from qgis.core import Qgis, QgsMessageLog

            for message in PROBLEMS:
                QgsMessageLog.logMessage(message, "civic311", Qgis.MessageLevel.Warning)
        except ImportError:
            pass
    return presets
