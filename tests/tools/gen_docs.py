# SPDX-License-Identifier: GPL-2.0-or-later
"""Generate the algorithm reference (ids, parameters, output fields) from the code.

`make docs` writes docs/algorithms.md and the table between the markers in README.md; a test fails when either
is out of date, so the documentation never drifts from the code.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- algorithms:start -->", "<!-- algorithms:end -->"


def _algorithms():
    pkg = Path(tempfile.mkdtemp())
    (pkg / "civic311").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(pkg))
    from civic311.processing.provider import ALGORITHMS

    algs = []
    for cls in ALGORITHMS:
        alg = cls()
        alg.initAlgorithm()
        algs.append(alg)
    return sorted(algs, key=lambda a: (a.GROUP, a.NAME))


def table(algs) -> str:
    rows = ["| id | name | parameters | output fields |", "|---|---|---|---|"]
    for alg in algs:
        params = ", ".join(f"`{p.name()}`" for p in alg.parameterDefinitions())
        outputs = [o.name() for o in alg.outputDefinitions() if o.name() not in {p.name() for p in
                                                                                   alg.parameterDefinitions()}]
        if outputs:
            params += "; numbers " + ", ".join(f"`{o}`" for o in outputs)
        fields = ", ".join(f"`{f}`" for f in alg.OUTPUT_FIELDS)
        rows.append(f"| `civic311:{alg.name()}` | {alg.DISPLAY_NAME} | {params} | {fields} |")
    return "\n".join(rows)


def reference(algs) -> str:
    parts = ["# civic311 algorithm reference", "", "Generated from the code by `make docs`; do not edit by hand.", ""]
    for alg in algs:
        parts += [f"## {alg.name()}", "", f"**`civic311:{alg.name()}` — {alg.DISPLAY_NAME}** (group "
                  f"{alg.group()})", "", alg.HELP, "", "| parameter | description | type | default |",
                  "|---|---|---|---|"]
        for p in alg.parameterDefinitions():
            default = p.defaultValue()
            parts.append(f"| `{p.name()}` | {p.description()} | {p.type()} | "
                         f"{'' if default is None else f'`{default}`'} |")
        parts += ["", "| output | description | type |", "|---|---|---|"]
        for o in alg.outputDefinitions():
            parts.append(f"| `{o.name()}` | {o.description()} | {o.type()} |")
        parts.append("")
    parts += ["## outreachmodel", "", "**`civic311:outreachmodel` — Outreach pipeline (editable model)** (a Model "
              "Builder model shipped in `resources/models/civic311_outreach.model3`, listed with the algorithms)", "",
              "The outreach workflow as a model to open in the Model Designer and change: importrequests -> "
              "precinctstats -> hotspots -> transitaccess (assigned polling places, distance from the requests) -> "
              "outreachpriority -> canvasszones for the requests in tier-5 precincts. Inputs: INPUT (export "
              "file), PRECINCTS, PRECINCT_ID_FIELD, VOTERS_FIELD, BALLOTS_FIELD, STOPS, POLLING_PLACES, "
              "POLLING_PRECINCT_FIELD, ZONE_COUNT. Outputs (temporary unless named): `priority:Outreach "
              "priority`, `zones:Canvassing zones`, `zones:Walking routes`. Rebuild it with "
              "`python3 resources/models/build_model.py`.", ""]
    return "\n".join(parts) + "\n"


def render() -> tuple[str, str]:
    algs = _algorithms()
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + table(algs) + "\n" + END + tail, reference(algs)


def main(out: str) -> None:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    readme, ref = render()
    (ROOT / "README.md").write_text(readme)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(ref)
    print(f"wrote README.md table and {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "docs" / "algorithms.md"))
