import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _FakeV2(BaseHTTPRequestHandler):
    """A minimal Open Inference Protocol server: 5 ms per inference, every 10th request answered 503."""

    protocol_version = "HTTP/1.1"
    count = 0
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}],
                         "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["inputs"][0]["shape"] == [1, 64]
        with _FakeV2.lock:
            _FakeV2.count += 1
            n = _FakeV2.count
        time.sleep(0.005)
        if n % 10 == 0:
            return self._send(503, {"error": "busy"})
        self._send(200, {"model_name": "m", "outputs": [{"name": "y", "shape": [1, 10], "datatype": "FP32",
                                                         "data": [0.0] * 10}]})


@pytest.fixture(scope="module")
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeV2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
