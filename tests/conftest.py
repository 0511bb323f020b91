# SPDX-License-Identifier: GPL-2.0-or-later
"""Test harness: the checkout as the package ``civic311``, the plugin loaded as QGIS loads it, a local HTTP
server for portal tests, and paths to the shared real data."""

from __future__ import annotations

import http.server
import os
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "resources" / "sample" / "civic311_sample.gpkg"
TEST_DATA = ROOT / "tests" / "data"

# Expose the checkout (whatever its folder is called) as the package "civic311", without putting the repository
# root itself on sys.path (its processing/ would shadow QGIS's processing module).
_PKG_PARENT = Path(tempfile.mkdtemp(prefix="civic311-pkg-"))
(_PKG_PARENT / "civic311").symlink_to(ROOT, target_is_directory=True)
sys.path.insert(0, str(_PKG_PARENT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def plugin(qgis_iface, qgis_processing):
    """The real plugin, created through classFactory(iface) and initProcessing() as QGIS does."""
    import civic311

    instance = civic311.classFactory(qgis_iface)
    instance.initProcessing()
    yield instance
    instance.unload()


@pytest.fixture(scope="session")
def run_alg(plugin):
    """processing.run for a civic311 algorithm, with a fresh context and feedback that records messages."""
    from qgis.core import QgsProcessingContext, QgsProcessingFeedback

    import processing

    class RecordingFeedback(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.messages: list[str] = []

        def pushInfo(self, info):  # noqa: N802
            self.messages.append(info)
            super().pushInfo(info)

        def pushWarning(self, warning):  # noqa: N802
            self.messages.append("WARNING " + warning)
            super().pushWarning(warning)

        def reportError(self, error, fatalError=False):  # noqa: N802, N803
            self.messages.append("ERROR " + error)
            super().reportError(error, fatalError)

    def run(alg_id: str, params: dict, feedback=None):
        feedback = feedback or RecordingFeedback()
        context = QgsProcessingContext()
        result = processing.run(alg_id, params, context=context, feedback=feedback)
        for key, value in list(result.items()):
            if isinstance(value, str) and context.temporaryLayerStore().mapLayer(value) is not None:
                result[key] = context.takeResultLayer(value)
        result["_feedback"] = feedback
        return result

    return run


def sample_layer(name: str):
    from qgis.core import QgsVectorLayer

    layer = QgsVectorLayer(f"{SAMPLE}|layername={name}", name, "ogr")
    assert layer.isValid(), f"sample layer {name} not found in {SAMPLE}"
    return layer


@pytest.fixture()
def http_server():
    """Start local HTTP servers on 127.0.0.1 (port 0). Call with a handler function
    ``handler(request: BaseHTTPRequestHandler) -> (status, headers, body_bytes)``; returns the base URL.
    Every request is recorded in ``server.requests`` as (method, path, headers)."""
    servers = []

    class Recorder:
        requests: list = []

    def start(handler) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                Recorder.requests.append((self.command, self.path, dict(self.headers)))
                status, headers, body = handler(self)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if isinstance(body, bytes):  # otherwise an iterable of pieces (a stream, cut or slow)
                    if "Content-Length" not in headers:
                        self.send_header("Content-Length", str(len(body)))
                    body = [body]
                self.end_headers()
                try:
                    for piece in body:
                        self.wfile.write(piece)
                        self.wfile.flush()
                except OSError:
                    pass  # the client gave up (a deadline): nothing more to send

            do_GET = do_POST = _serve  # noqa: N815

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    start.requests = Recorder.requests
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
