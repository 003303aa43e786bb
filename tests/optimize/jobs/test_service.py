"""JobService against a real local Ray (the project's detached head, Jobs API): runs with overrides at the same
time, max run time, cancel, failure with logs, hooks on every transition, one job triggering another, and
records that survive a kill -9 of the submitting process."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from optimize.jobs import Hook, JobService, Recipe, RunState
from optimize.jobs.store import Store
from optiserve.errors import UserError

pytestmark = [pytest.mark.ray, pytest.mark.slow]
FAKE = str(Path(__file__).with_name("fake_recipe.py"))
S = RunState


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from optimize.examples import build_example
    from optiserve.ray_cluster import ensure_cluster, stop_cluster

    root = tmp_path_factory.mktemp("jobs-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTISERVE_STATE_DIR", str(root))
        mp.delenv("RAY_ADDRESS", raising=False)
        cluster = ensure_cluster(timeout_s=180)
        try:
            build_example("mlp", root / "models")
            service = JobService(watcher=False)
            service.create_job("fake", root / "models" / "mlp" / "model.pt", Recipe(FAKE, kind="python"))
            yield {"root": root, "service": service, "model": root / "models" / "mlp" / "model.pt"}
            service.close()
        finally:
            stop_cluster(cluster)


def _states(service, run_id):
    return [e.state for e in service.store.events(run_id)]


def test_concurrent_quantize_runs_with_overrides(env):
    svc = env["service"]
    # the overrides differ in threads and environment. Whether a variant beats fp32 beyond the noise (exit 0) or
    # not (exit 1, a verdict) depends on the load on this machine, so both verdicts count as a run that ran
    svc.create_job("quant", env["model"], Recipe("quantize", {"input_shape": "1,64", "repeats": 5,
                                                              "method": "dynamic"}),
                   env={"OMP_NUM_THREADS": "1"}, max_runtime_s=600)
    runs = {threads: svc.run("quant", args=["--threads", str(threads)], env={"RUN_THREADS": str(threads)})
            for threads in (1, 2)}
    ray, both_running = svc._ray(runs[1].dashboard_url), False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # watch Ray itself: were both running at one moment?
        statuses = [ray.status(run.submission_id).status for run in runs.values()]
        both_running |= statuses == ["RUNNING", "RUNNING"]
        if all(s in ("SUCCEEDED", "FAILED", "STOPPED") for s in statuses):
            break
        time.sleep(0.2)
    done = {threads: svc.wait(run.id, timeout_s=60) for threads, run in runs.items()}
    for threads, run in done.items():
        assert run.state == S.SUCCEEDED or (run.state == S.FAILED and run.exit_code == 1
                                            and "verdict" in run.message), run.message
        assert run.args == ("--threads", str(threads))
        assert run.env == {"OMP_NUM_THREADS": "1", "RUN_THREADS": str(threads)}
        report = json.loads((Path(run.output_dir) / "report.json").read_text())
        assert report["threads"] == threads and "dynamic-int8" in {v["name"] for v in report["variants"]}
        assert "model.onnx" in run.outputs and run.artifact_sha256 == svc.get_job("quant").artifact_sha256
        assert _states(svc, run.id) == [S.ACCEPTED, S.IN_PROGRESS, run.state]
    assert both_running


def test_run_killed_at_its_max_run_time(env):
    svc = env["service"]
    run = svc.run("fake", args=["--sleep", "120"], max_runtime_s=2, wait=True, wait_timeout_s=120)
    assert run.state == S.TIMED_OUT and run.exit_code == 124
    assert "max run time of 2 s" in run.message
    assert "exceeded its max run time" in svc.logs(run.id)
    assert _states(svc, run.id) == [S.ACCEPTED, S.IN_PROGRESS, S.TIMED_OUT]


def test_cancel_frees_the_run(env):
    svc = env["service"]
    run = svc.run("fake", args=["--sleep", "120"])
    deadline = time.monotonic() + 120
    while svc.get_run(run.id).state != S.IN_PROGRESS and time.monotonic() < deadline:
        time.sleep(0.5)
    svc.cancel(run.id)
    run = svc.wait(run.id, timeout_s=60)
    assert run.state == S.CANCELED
    assert [e.reason for e in svc.store.events(run.id)][-2:] == ["canceled by the user", "canceled"]
    assert _states(svc, run.id) == [S.ACCEPTED, S.IN_PROGRESS, S.CANCELING, S.CANCELED]
    assert svc._ray(run.dashboard_url).status(run.submission_id).status == "STOPPED"  # Ray let go of it
    with pytest.raises(UserError, match="already ended"):
        svc.cancel(run.id)


def test_failing_run_keeps_error_and_logs(env):
    svc = env["service"]
    run = svc.run("fake", args=["--fail"], wait=True, wait_timeout_s=120)
    assert run.state == S.FAILED and run.exit_code == 3
    assert "exited 3" in run.message and "verdict" not in run.message and "bad calibration data" in run.message
    kept = Path(run.output_dir).parent / "run.log"
    assert "bad calibration data" in kept.read_text() and svc.logs(run.id) == kept.read_text()


def test_gpu_request_on_a_cluster_without_gpus_is_refused(env):
    svc = env["service"]
    before = len(svc.list_runs(reconcile=False))
    with pytest.raises(UserError, match="GPU.*no node"):
        svc.run("fake", gpus=1)
    assert len(svc.list_runs(reconcile=False)) == before  # nothing recorded, nothing queued


class _Collector(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        self.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_hooks_on_every_transition_and_a_triggered_job(env, tmp_path):
    """Driven by the detached watcher alone: this test only reads the records."""
    svc, root = env["service"], env["root"]
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shell_log = tmp_path / "shell-hook.txt"
    svc.create_job("downstream", env["model"], Recipe(FAKE, kind="python"))
    svc.create_job("upstream", env["model"], Recipe(FAKE, kind="python"), args=["--tag", "up"], hooks=[
        Hook("http", on=["*"], url=f"http://127.0.0.1:{server.server_port}/events"),
        Hook("shell", on=["*"], command=f'echo "$OPTISERVE_RUN_STATE $OPTISERVE_RUN_ID" >> {shell_log}'),
        Hook("trigger", job="downstream", args=["--tag", "after-{run_id}"], artifact_from="model.pt"),
    ])
    watched = JobService(watcher=True)
    try:
        up = watched.run("upstream")
        store = Store(root / "jobs.sqlite")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            down = [r for r in store.list_runs("downstream") if r.triggered_by == up.id]
            if down and down[0].state.terminal and store.get_run(up.id).state.terminal:
                break
            time.sleep(0.5)
        up = store.get_run(up.id)
        [down] = [r for r in store.list_runs("downstream") if r.triggered_by == up.id]
        assert up.state == S.SUCCEEDED and down.state == S.SUCCEEDED, (up.message, down.message)
        upstream_model = Path(up.output_dir) / "model.pt"
        assert down.artifact_sha256 == hashlib.sha256(upstream_model.read_bytes()).hexdigest()
        report = json.loads((Path(down.output_dir) / "report.json").read_text())
        assert report["artifact_sha256"] == down.artifact_sha256 and report["tag"] == f"after-{up.id}"
        deadline = time.monotonic() + 30  # the last hooks fire right after the last state is recorded
        while any(e.hooks_status in ("pending", "firing") for e in store.events(up.id)):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        events = store.events(up.id)
        assert [e.state for e in events] == [S.ACCEPTED, S.IN_PROGRESS, S.SUCCEEDED]
        assert all(e.hooks_status == "done" for e in events), [e.hooks_detail for e in events]
        assert f"triggered run {down.id}" in events[-1].hooks_detail
        posted = [(p["event"]["run_id"], p["event"]["state"]) for p in _Collector.received]
        assert posted == [(up.id, "accepted"), (up.id, "in_progress"), (up.id, "succeeded")]
        assert _Collector.received[-1]["run"]["outputs"] == ["model.pt", "report.json"]
        assert shell_log.read_text().split("\n")[:3] == [f"{s} {up.id}" for s in ("accepted", "in_progress",
                                                                                  "succeeded")]
        store.close()
    finally:
        server.shutdown()
        watched.close()


SUBMITTER = """
import sys, time
from optimize.jobs import JobService
run = JobService(watcher=False).run("fake", args=["--sleep", "4", "--tag", "orphan"])
print(run.id, flush=True)
time.sleep(600)
"""


def test_records_survive_a_killed_submitter(env):
    svc = env["service"]
    proc = subprocess.Popen([sys.executable, "-c", SUBMITTER], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OPTISERVE_JOBS_WATCHER": "0"})
    run_id = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)  # mid-run: Ray has it, nobody watches it
    proc.wait()
    assert svc.store.get_run(run_id).state == S.ACCEPTED
    run = svc.wait(run_id, timeout_s=120)  # the next start reconciles it with Ray
    assert run.state == S.SUCCEEDED and run.outputs == ("model.pt", "report.json")
    assert json.loads((Path(run.output_dir) / "report.json").read_text())["tag"] == "orphan"
    events = svc.store.events(run_id)
    for _ in range(2):  # reconciling again reports nothing twice
        svc.reconcile()
        JobService(watcher=False).reconcile()
    assert svc.store.events(run_id) == events
    assert [e.state for e in events] == [S.ACCEPTED, S.IN_PROGRESS, S.SUCCEEDED]


def test_cli_run_wait_follow_logs_and_events(env, capsys):
    from optimize.cli import main

    assert main(["jobs", "run", "fake", "--arg=--tag cli --sleep 2", "--env", "TAG_ENV=from-cli", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["runs", "logs", run_id, "--follow"]) == 0  # streams while it runs, returns when it ends
    out, err = capsys.readouterr()
    assert "fake recipe: tag=cli env=from-cli" in out and "fake recipe: done" in out
    assert f"run {run_id} succeeded" in err
    assert main(["runs", "events", run_id, "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [e["state"] for e in events] == ["accepted", "in_progress", "succeeded"]
    assert main(["jobs", "run", "fake", "--arg=--fail", "--wait"]) == 1  # verdict: the run failed
    assert "failed" in capsys.readouterr().out
    assert main(["runs", "list", "--job", "fake", "--state", "failed", "--json"]) == 0
    assert all(r["state"] == "failed" for r in json.loads(capsys.readouterr().out))
