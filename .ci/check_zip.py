# SPDX-License-Identifier: GPL-2.0-or-later
"""Check a plugin zip against the plugins.qgis.org upload rules. Usage: check_zip.py civic311-x.y.z.zip"""

import configparser
import sys
import zipfile

REQUIRED = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email", "repository")
MAX_BYTES = 25 * 1024 * 1024


def main(path: str) -> int:
    problems = []
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        tops = {n.split("/", 1)[0] for n in names}
        if tops != {"civic311"}:
            problems.append(f"one top folder civic311/ expected, found {sorted(tops)}")
        for bad in ("__pycache__", ".pyc", "/tests/", "/.git", "/.ci/", "/.venv/", "Makefile", "/dist/"):
            hits = [n for n in names if bad in n]
            if hits:
                problems.append(f"dev files in the zip ({bad}): {hits[:3]}")
        for must in ("civic311/metadata.txt", "civic311/LICENSE", "civic311/__init__.py"):
            if must not in names:
                problems.append(f"{must} missing")
        if "civic311/metadata.txt" in names:
            cfg = configparser.ConfigParser()
            cfg.read_string(zf.read("civic311/metadata.txt").decode("utf-8"))
            general = cfg["general"]
            missing = [k for k in REQUIRED if not general.get(k, "").strip()]
            if missing:
                problems.append(f"metadata.txt lacks {missing}")
            icon = general.get("icon", "")
            if icon and f"civic311/{icon}" not in names:
                problems.append(f"icon {icon} not in the zip")
            if general.get("qgisMaximumVersion", "") < "4":
                problems.append("qgisMaximumVersion should allow QGIS 4 (4.99)")
        size = sum(i.file_size for i in zf.infolist())
    import os

    if os.path.getsize(path) > MAX_BYTES:
        problems.append(f"zip is {os.path.getsize(path)} bytes, over 25 MB")
    for p in problems:
        print("PACKAGE PROBLEM:", p)
    print(f"{path}: {len(names)} files, {size / 1e6:.1f} MB unpacked, {'OK' if not problems else 'FAILED'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
