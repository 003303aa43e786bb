"""Ray Serve edge: what a replica start and a scale from zero cost, measured on a live deployment.

The model is deployed with the default `adaptive` policy, told a small capacity per replica (so a light load
needs two replicas) and a short scale-down hold (so it lets one go within seconds). Each scale-up start is
one cycle: a low probe load until one replica is left, then a higher one until the policy asks for a second
replica and it has served a request. Each scale-from-zero try (min_replicas 0): no load until the deployment
has no replica, then one request, timed by the client; the replica that wakes is a start too (kind "cold").

The times come from Ray Serve's own logs (loadtests/serve_logs.py, pure): the controller's upscaling decision,
the replica's start, its constructor finishing, its first access-log line (where the deployment keeps Serve's
access log; without it a start is timed to "initialized" and the summary says it is a lower bound). So this reads
logs of the local node: it measures on the embedded local Ray (or a single-node cluster on this machine).
"""

from __future__ import annotations

import glob
import threading
import time
from pathlib import Path

from optiserve.errors import UserError

from . import serve_logs

# Capacity the policy is told per replica during the measurement: the probe's high rate needs two replicas.
PROBE_CAPACITY_RPS = 2.0
PROBE_POLICY = {"capacity_rps_per_replica": PROBE_CAPACITY_RPS, "service_ms": 20.0, "slo_p95_ms": 1000.0,
                "rate_window_s": 4.0, "min_hold_s": 2.0, "hold_starts": 0.2, "downscale_step_s": 1.0,
                "memory_s": 5.0, "rise_hold_starts": 0.0}


# How long to wait for the new replica's first access-log line; serve/ may turn the access log off on model
# replicas (it costs throughput), and then every start is timed to "initialized" and flagged a lower bound.
ACCESS_LOG_WAIT_S = 10.0


def _details(model: str) -> dict | None:
    from ray.serve.context import _get_global_client

    from serve.app import MODEL_DEPLOYMENT, model_app_name

    app = _get_global_client().get_serve_details().get("applications", {}).get(model_app_name(model))
    return app["deployments"].get(MODEL_DEPLOYMENT) if app else None


def _replicas(model: str) -> tuple[int, set[str]]:
    """(target replica count, ids of RUNNING replicas)."""
    d = _details(model) or {}
    running = {r["replica_id"] for r in d.get("replicas", []) if str(r.get("state", "")).endswith("RUNNING")}
    return int(d.get("target_num_replicas", -1)), running


def _log_dir() -> Path:
    import ray

    return Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"


def _replica_times(replica_id: str) -> tuple[float | None, float | None]:
    for f in glob.glob(str(_log_dir() / f"replica_*_{replica_id}.log")):
        with open(f, errors="replace") as fh:
            return serve_logs.replica_log_times(fh)
    return None, None


def _wait(cond, timeout_s: float, what: str, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every_s)
    raise UserError(f"{what} did not happen within {timeout_s:.0f} s; the machine may be overloaded (try again "
                    "with fewer --starts, or a longer wait).")


class _Load:
    """A light probe load at a rate that can change (0 pauses it), from one thread."""

    def __init__(self, url: str, model: str, bodies: list[dict]) -> None:
        self.url, self.model, self.bodies = url, model, bodies
        self.rate = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=30) as client:
            k = 0
            while not self.stop.is_set():
                rate = self.rate  # read once: another thread may set it to 0 meanwhile
                if rate <= 0:
                    self.stop.wait(0.1)
                    continue
                t = time.monotonic()
                try:
                    client.post(f"{self.url}/v2/models/{self.model}/infer", json=self.bodies[k % len(self.bodies)])
                except httpx.HTTPError:
                    pass
                k += 1
                self.stop.wait(max(1.0 / rate - (time.monotonic() - t), 0.0))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=35)


def _one_request_ms(url: str, model: str, body: dict, timeout_s: float = 180.0) -> float:
    import httpx

    t = time.perf_counter()
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=timeout_s)
    if r.status_code != 200:
        raise UserError(f"model {model} answered HTTP {r.status_code} to an inference request: {r.text[:200]}")
    return (time.perf_counter() - t) * 1000.0


def measure(repository: str | Path, model: str, *, starts: int, cold: int, work_dir: Path, low_rps: float = 0.5,
            high_rps: float = 10.0, timeout_s: float = 120.0, progress=print) -> dict:
    """Run the scale-up cycles and the scale-from-zero tries; returns timelines and cold/warm latencies."""
    import yaml

    import serve
    from serve.app import model_app_name

    from ._serve_probe import serve_port, wait_ready
    from .live import bodies_for

    port = serve_port()
    url = f"http://127.0.0.1:{port}"
    policy_yaml = work_dir / "probe_policy.yaml"
    policy_yaml.write_text(yaml.safe_dump(PROBE_POLICY))
    t_begin = time.time()
    serve.start_app(repository, host="127.0.0.1", port=port, autoscaling_policy="adaptive",
                    autoscaling_config=policy_yaml, min_replicas=0 if cold else 1, max_replicas=2)
    wait_ready(url, model)
    bodies = bodies_for(url, model, repository=repository, n=16)
    load = _Load(url, model, bodies)
    first_ms, warm_ms = [], []
    try:
        for k in range(starts):
            load.rate = low_rps
            _wait(lambda: _replicas(model)[0] == 1 and len(_replicas(model)[1]) == 1, timeout_s,
                  "scale-down to one replica")
            before = _replicas(model)[1]
            load.rate = high_rps
            rid = next(iter(_wait(lambda b=before: _replicas(model)[1] - b, timeout_s, "a second replica")))
            try:
                _wait(lambda r=rid: _replica_times(r)[1] is not None, ACCESS_LOG_WAIT_S, "")
                progress(f"scale-up start {k + 1}/{starts}: replica {rid} started and served")
            except UserError:  # the deployment's access log is off: the start is timed to "initialized"
                progress(f"scale-up start {k + 1}/{starts}: replica {rid} started (no access-log line: timed to "
                         "initialized, a lower bound)")
        load.rate = 0.0
        for k in range(cold):
            _wait(lambda: _replicas(model) == (0, set()), timeout_s, "scale to zero")
            time.sleep(1.0)
            first_ms.append(_one_request_ms(url, model, bodies[0]))
            warm_ms.extend(_one_request_ms(url, model, bodies[0]) for _ in range(5))
            progress(f"scale from zero {k + 1}/{cold}: first request {first_ms[-1] / 1000:.2f} s, "
                     f"warm {min(warm_ms[-5:]):.1f} ms")
    finally:
        load.close()
    time.sleep(1.0)  # let the last access-log lines reach the files
    app = model_app_name(model)
    decisions, started = [], {}
    for f in glob.glob(str(_log_dir() / "controller_*.log")):
        lines = Path(f).read_text(errors="replace").splitlines()
        decisions += serve_logs.upscale_decisions(lines, app)
        started.update(serve_logs.replica_starts(lines, app))
    started = {r: t for r, t in started.items() if t >= t_begin - 1.0}
    tls = serve_logs.timelines(sorted(decisions), started, {r: _replica_times(r) for r in started}, model=model)
    return {"timelines": tls, "first_request_ms": first_ms, "warm_ms": warm_ms}


def _model_profile(repository: str | Path, model: str):
    """The served model's own latency curve (onnxruntime, one thread), to record the start time into."""
    from autoscale.profile import measure_profile
    from optiserve.repository import list_versions, version_dir

    versions = list_versions(Path(repository), model)
    if not versions:
        raise UserError(f"model {model!r} has no published version in {repository}.")
    return measure_profile(version_dir(Path(repository), model, versions[-1]) / "model.onnx", repeats=10)


def run_start_probe(repository: str | Path, model: str, *, starts: int, cold: int, profile_in: str | Path | None,
                    profile_out: str | Path | None, work_dir: str | Path, high_rps: float = 10.0,
                    progress=print) -> dict:
    """Measure, record into the profile, save replica_start.json; embedded Ray unless RAY_ADDRESS, shut down."""
    import json
    import os

    from autoscale.profile import ModelProfile
    from autoscale.startcost import cold_start_report, record_start_cost, start_samples, summarize_starts

    from ._serve_probe import connect_ray, stop_model

    if starts < 1 and cold < 1:
        raise UserError("nothing to measure: give --starts >= 1 or --cold >= 1.")
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = connect_ray(os.environ.get("RAY_ADDRESS"))
    try:
        m = measure(repository, model, starts=starts, cold=cold, work_dir=work_dir, high_rps=high_rps,
                    progress=progress)
    finally:
        stop_model(model, started)
    tls = m["timelines"]
    result: dict = {"model": model, "repository": str(repository), "probe_high_rps": high_rps,
                    "timelines": [t.to_dict() for t in tls]}
    samples = start_samples(tls)
    summary = summarize_starts(samples)
    result["replica_start"] = summary.to_dict()
    for kind in ("scale-up", "cold"):
        of_kind = [s for s in samples if s.kind == kind]
        if of_kind:
            result[f"replica_start_{kind.replace('-', '_')}"] = summarize_starts(of_kind).to_dict()
    if profile_out:
        prof = ModelProfile.load(profile_in) if profile_in else _model_profile(repository, model)
        prof = record_start_cost(prof, summary, source=f"loadtest replica-start {model} ({summary.n} starts)")
        prof.save(profile_out)
        result["profile"] = str(profile_out)
    if m["first_request_ms"]:
        report = cold_start_report(m["first_request_ms"], m["warm_ms"])
        result["cold_start"] = report.to_dict()
        result["cold_start_sentence"] = report.sentence()
    (work_dir / "replica_start.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
