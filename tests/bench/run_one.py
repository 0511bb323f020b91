# SPDX-License-Identifier: GPL-2.0-or-later
"""One algorithm in a fresh PyQGIS process, started the way `qgis_process` starts: QGIS, Processing with every
provider, and civic311 from QGIS_PLUGINPATH. Prints one line, `BENCH {"seconds": …, "results": {…}}`, where seconds
is the time inside `processing.run` (the algorithm, without the process start-up both sides pay alike).

Usage: python3 -P run_one.py ALGORITHM_ID 'JSON parameters'
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main() -> None:
    from qgis.core import QgsApplication

    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, os.environ["QGIS_PLUGINPATH"])
    import civic311  # the checkout, linked into QGIS_PLUGINPATH as qgis_process would find it

    plugin = civic311.classFactory(None)
    plugin.initProcessing()
    import processing

    alg, params = sys.argv[1], json.loads(sys.argv[2])
    start = time.perf_counter()
    results = processing.run(alg, params)
    seconds = time.perf_counter() - start
    plain = {k: v for k, v in results.items() if isinstance(v, (int, float, str))}
    print("BENCH " + json.dumps({"seconds": seconds, "results": plain}), flush=True)
    plugin.unload()
    app.exitQgis()


if __name__ == "__main__":
    main()
