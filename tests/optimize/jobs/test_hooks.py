import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from optimize.jobs.hooks import fire
from optimize.jobs.models import Compute, Event, Hook, JobRun, RunState


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"onnx")
    return JobRun(id="p-1", job="prune", state=RunState.SUCCEEDED, env={}, args=(), compute=Compute(),
                  max_runtime_s=5, artifact_path="/a", artifact_sha256="ab", output_dir=str(out),
                  submission_id="s", cluster_address="c", dashboard_url="http://d", created_at=1.0, deadline_at=6.0,
                  outputs=("model.onnx",), exit_code=0)


EVENT = Event(run_id="p-1", state=RunState.SUCCEEDED, at=5.0, reason="the command exited 0", id=3)


def _no_trigger(*_):
    raise AssertionError("not a trigger hook")


def test_shell_hook_gets_run_info_in_env(run, tmp_path):
    target = tmp_path / "hook.txt"
    hook = Hook("shell", command=f'echo "$OPTISERVE_RUN_ID $OPTISERVE_RUN_STATE $OPTISERVE_RUN_OUTPUTS" > {target}')
    assert fire(hook, run, EVENT, _no_trigger) == (True, "shell exit 0")
    assert target.read_text().strip() == 'p-1 succeeded ["model.onnx"]'
    ok, detail = fire(Hook("shell", command="echo nope >&2; exit 4"), run, EVENT, _no_trigger)
    assert not ok and detail == "shell exit 4: nope"


def test_http_hook_posts_json(run):
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        assert fire(Hook("http", url=url + "/ok"), run, EVENT, _no_trigger) == (True, f"http 204 from {url}/ok")
        assert fire(Hook("http", url=url + "/bad"), run, EVENT, _no_trigger) == (False, f"http 500 from {url}/bad")
    finally:
        server.shutdown()
    assert received[0]["event"] == {"run_id": "p-1", "job": "prune", "state": "succeeded", "at": 5.0,
                                    "reason": "the command exited 0"}
    assert received[0]["run"]["outputs"] == ["model.onnx"]
    ok, detail = fire(Hook("http", url=url + "/gone", timeout_s=2), run, EVENT, _no_trigger)
    assert not ok and "http hook failed" in detail


def test_trigger_hook_passes_outputs_on(run):
    calls = []

    def trigger(job, args, env, artifact, by):
        calls.append((job, args, env, artifact, by))
        return "quant-9"

    hook = Hook("trigger", job="quant", args=["--tag", "{job}:{run_id}"], env={"SRC": "{output_dir}"},
                artifact_from="model.onnx")
    assert fire(hook, run, EVENT, trigger) == (True, "triggered run quant-9 of job quant")
    [(job, args, env, artifact, by)] = calls
    assert (job, args, env["SRC"], artifact.name, by) == ("quant", ["--tag", "prune:p-1"], run.output_dir,
                                                          "model.onnx", "p-1")
    missing = Hook("trigger", job="quant", artifact_from="absent.onnx")
    ok, detail = fire(missing, run, EVENT, trigger)
    assert not ok and "not among run p-1's outputs" in detail and len(calls) == 1


def test_hook_filters_states():
    hook = Hook("shell", command="true", on=["failed", "timed_out"])
    assert hook.fires_on(RunState.TIMED_OUT) and not hook.fires_on(RunState.SUCCEEDED)
    assert Hook("shell", command="true", on=["*"]).fires_on(RunState.ACCEPTED)
