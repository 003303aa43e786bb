"""A real Ray Serve application on digits models: one Ray and one app for the module (slow to start)."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading
import time

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from optiserve.repository import MODEL_FILE, version_dir

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TOKEN = "integration-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
defaults: {max_batch_size: 32, batch_wait_timeout_ms: 10, cpus: 0.5}
models:
  mlp: {max_versions: 2}
  cnn: {autoscaling: {min_replicas: 2, max_replicas: 3, initial_replicas: 2}}
  tiny: {max_queue: 1, max_batch_size: 1, batch_wait_timeout_ms: 0, cpus: 0.25}
max_body_bytes: 65536
auth_token_env: MS_TEST_TOKEN
poll_interval_s: 0.5
"""


def test_a_port_in_use_is_refused_before_anything_is_deployed(repo):
    # Before the app fixture below starts Serve: with no Serve instance running, start_app checks its ports
    # (it once asked serve.status(), which answers an empty status without Serve, so it never checked).
    import socket

    import ray

    import serve
    from optiserve.errors import UserError

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            with pytest.raises(UserError, match="in use"):
                serve.start_app(repo, port=busy.getsockname()[1], config_path=None)
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, helpers):


    root = tmp_path_factory.mktemp("live")
    repo = root / "models"
    helpers.publish(repo, "mlp", "mlp", seed=1, tmp=root)
    helpers.publish(repo, "mlp", "mlp", seed=2, tmp=root)
    helpers.publish(repo, "cnn", "cnn", seed=3, tmp=root)
    helpers.publish(repo, "tiny", "mlp", seed=4, tmp=root)
    (root / "serve.yaml").write_text(CONFIG)
    metrics_port = helpers.free_port()
    env = {"MS_TEST_TOKEN": TOKEN, "OPTISERVE_STATE_DIR": str(root / "state")}
    with helpers.running_app(repo, root / "serve.yaml", env, ray_init={"_metrics_export_port": metrics_port}) as info:
        client = httpx.Client(base_url=f"http://127.0.0.1:{info.port}", headers=AUTH, timeout=60)
        yield {"info": info, "repo": repo, "root": root, "client": client, "metrics_port": metrics_port}
        client.close()


def body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def reference(repo, name, version, x):
    path = str(version_dir(repo, name, version) / MODEL_FILE)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def logits(resp: httpx.Response) -> np.ndarray:
    out = resp.json()["outputs"][0]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def test_every_endpoint(server, helpers):
    c = server["client"]
    assert c.get("/v2").json()["name"] == "optiserve"
    assert c.get("/v2/health/live").status_code == 200
    assert helpers.wait_for(lambda: c.get("/v2/health/ready").status_code == 200, what="server ready")
    meta = c.get("/v2/models/mlp").json()
    assert meta["versions"] == ["1", "2"] and meta["inputs"][0]["shape"] == [-1, 64]
    assert c.get("/v2/models/mlp/ready").status_code == 200
    assert c.get("/v2/models/mlp/versions/1").json()["name"] == "mlp"
    assert c.get("/v2/models/mlp/versions/1/ready").status_code == 200
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    latest = c.post("/v2/models/mlp/infer", json=body(x))
    first = c.post("/v2/models/mlp/versions/1/infer", json=body(x))
    assert latest.json()["model_version"] == "2" and first.json()["model_version"] == "1"
    np.testing.assert_allclose(logits(first), reference(server["repo"], "mlp", "1", x), rtol=1e-5, atol=1e-6)
    assert c.get("/v2/models/mlp/status").json()["default_version"] == "2"
    doc = c.get("/openapi.json").json()
    assert "/v2/models/{model_name}/infer" in doc["paths"]
    assert c.get("/v2/models/nope").status_code == 404


def test_concurrent_clients_are_batched_and_answers_match_unbatched_runs(server):
    c, repo = server["client"], server["repo"]
    rng = np.random.default_rng(1)
    xs = [rng.random((int(rng.integers(1, 4)), 64), dtype=np.float32) for _ in range(96)]
    with cf.ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(lambda x: c.post("/v2/models/mlp/infer", json=body(x)), xs))
    assert [r.status_code for r in responses] == [200] * len(xs)
    for x, resp in zip(xs, responses, strict=True):
        version = resp.json()["model_version"]
        np.testing.assert_allclose(logits(resp), reference(repo, "mlp", version, x), rtol=1e-5, atol=1e-6)
    stats = c.get("/v2/models/mlp/status").json()["stats"]
    assert stats["batch_size_mean"] > 1  # 32 concurrent clients, 10 ms window: several requests per call


def test_two_models_at_once(server):
    c, repo = server["client"], server["repo"]
    rng = np.random.default_rng(2)
    jobs = [("mlp", rng.random((2, 64), dtype=np.float32)) if i % 2 else
            ("cnn", rng.random((2, 1, 8, 8), dtype=np.float32)) for i in range(40)]
    with cf.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda job: c.post(f"/v2/models/{job[0]}/infer", json=body(job[1])), jobs))
    for (name, x), resp in zip(jobs, responses, strict=True):
        assert resp.status_code == 200
        np.testing.assert_allclose(logits(resp), reference(repo, name, resp.json()["model_version"], x),
                                   rtol=1e-5, atol=1e-5)


def test_error_codes_and_token(server):
    c = server["client"]
    x = np.zeros((1, 64), np.float32)
    bad_shape = {"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": [0.0] * 32}]}
    assert c.post("/v2/models/mlp/infer", json=bad_shape).status_code == 400
    assert "shape" in c.post("/v2/models/mlp/infer", json=bad_shape).json()["error"]
    assert c.post("/v2/models/nope/infer", json=body(x)).status_code == 404
    assert c.post("/v2/models/mlp/versions/9/infer", json=body(x)).status_code == 404
    big = np.zeros((300, 64), np.float32)  # ~77 kB of JSON, over the 64 KiB limit
    assert c.post("/v2/models/mlp/infer", json=body(big)).status_code == 413
    plain = httpx.Client(base_url=str(c.base_url), timeout=30)
    assert plain.get("/v2/health/live").status_code == 401
    assert plain.post("/v2/models/mlp/infer", json=body(x)).status_code == 401
    assert plain.get("/v2/models/mlp", headers={"Authorization": "Bearer nope"}).status_code == 401
    plain.close()
    assert c.post("/v2/models/mlp/infer", json=body(x)).status_code == 200  # none of that hurt the replica


def test_overload_answers_503_not_unbounded_queueing(server):
    c = server["client"]
    x = np.random.default_rng(3).random((1, 64), dtype=np.float32)
    local, clients = threading.local(), []

    def post(_):
        # one connection per thread, as 48 separate clients would have: a pool shared by 48 threads can hand a
        # connection that another thread is closing to the next request (a client-side "Bad file descriptor")
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=str(c.base_url), headers=c.headers, timeout=60)
            clients.append(local.client)
        return local.client.post("/v2/models/tiny/infer", json=body(x))

    try:
        with cf.ThreadPoolExecutor(48) as pool:
            responses = list(pool.map(post, range(240)))
    finally:
        for client in clients:
            client.close()
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
    ours = [r for r in responses if r.status_code == 503 and "queue is full" in r.text]
    assert all(r.headers.get("retry-after") == "1" for r in ours)
    assert c.post("/v2/models/tiny/infer", json=body(x)).status_code == 200


class Traffic:
    """Background requests to one model; records status codes and served versions."""

    def __init__(self, client, model, shape):
        self.client, self.model, self.x = client, model, np.zeros(shape, np.float32)
        self.results: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                r = self.client.post(f"/v2/models/{self.model}/infer", json=body(self.x))
                self.results.append((r.status_code, r.json().get("model_version") if r.status_code == 200 else None))
            except httpx.HTTPError:
                self.results.append((0, None))
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def test_roll_out_then_failed_roll_out_without_dropping_requests(server, helpers):
    c, repo, root = server["client"], server["repo"], server["root"]
    with Traffic(c, "mlp", (1, 64)) as traffic:
        helpers.wait_for(lambda: len(traffic.results) > 5, what="traffic")
        new = helpers.publish(repo, "mlp", "mlp", seed=7, tmp=root)
        helpers.wait_for(lambda: c.get("/v2/models/mlp/status").json()["default_version"] == new, what="roll-out")
        helpers.wait_for(lambda: any(v == new for _, v in traffic.results[-5:]), what="traffic on the new version")
        bad = helpers.publish(repo, "mlp", "mlp", seed=8, tmp=root)
        helpers.corrupt(repo, "mlp", bad)
        status = helpers.wait_for(
            lambda: (s := c.get("/v2/models/mlp/status").json())["failed_versions"].get(bad) and s,
            what="failed roll-out reported")
        assert status["default_version"] == new and "sha256" in status["failed_versions"][bad]
        n = len(traffic.results)
        helpers.wait_for(lambda: len(traffic.results) > n + 5, what="traffic after the failed roll-out")
    codes = [code for code, _ in traffic.results]
    assert codes == [200] * len(codes)  # not one request dropped across both roll-outs
    versions = [v for _, v in traffic.results]
    assert versions[0] == "2" and versions[-1] == new and bad not in versions


def test_killed_replica_is_restarted_and_traffic_continues(server, helpers):
    import ray

    import serve

    c = server["client"]
    helpers.wait_for(lambda: serve.replica_counts("cnn")["running"] == 2, what="two cnn replicas")
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "optiserve.cnn" in a["name"] and a["name"].startswith("SERVE_REPLICA")]
    assert len(replicas) == 2
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    with Traffic(c, "cnn", (1, 1, 8, 8)) as traffic:
        helpers.wait_for(lambda: len(traffic.results) > 5, what="traffic")
        ray.kill(victim, no_restart=True)
        helpers.wait_for(lambda: serve.replica_counts("cnn")["running"] < 2 or None, timeout_s=30,
                         what="replica noticed dead")
        helpers.wait_for(lambda: serve.replica_counts("cnn")["running"] == 2, timeout_s=120, what="replica restarted")
        n = len(traffic.results)
        helpers.wait_for(lambda: len(traffic.results) > n + 10, what="traffic after restart")
    codes = [code for code, _ in traffic.results]
    assert codes[-10:] == [200] * 10
    assert codes.count(200) >= 0.9 * len(codes), codes  # the surviving replica kept answering


def test_status_and_prometheus_metrics(server, helpers):
    import serve

    report = serve.status()
    assert set(report) == {"mlp", "cnn", "tiny"}
    assert report["cnn"]["replicas"]["running"] >= 2 and report["mlp"]["app_status"] == "RUNNING"

    def scrape():
        try:
            text = httpx.get(f"http://127.0.0.1:{server['metrics_port']}/metrics", timeout=10).text
        except httpx.HTTPError:
            return None
        return text if "optiserve_requests" in text and "optiserve_batch_size" in text else None

    text = helpers.wait_for(scrape, timeout_s=90, what="optiserve metrics on Ray's Prometheus endpoint")
    assert 'model="mlp"' in text and "optiserve_queue_depth" in text
    buckets = [line for line in text.splitlines() if line.startswith("ray_optiserve_request_latency_ms_bucket_total{")]
    assert any('le="+Inf"' in line and 'model="mlp"' in line for line in buckets), buckets  # histogram_quantile reads


class _Recorded:
    """A stand-in for ray.serve.metrics: every metric records its calls as (name, value, tags)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, dict]] = []

    def _metric(self, name, *_, **__):
        recorded = self

        class Metric:
            def inc(self, value, tags):
                recorded.calls.append((name, value, tags))

            set = inc

        return Metric()

    Counter = Gauge = _metric


def test_observer_hands_ray_each_request_and_batch_once_at_flush_not_before():
    from serve.app import RayObserver

    metrics = _Recorded()
    observer = RayObserver("mlp", metrics=metrics)
    for ms in (1.5, 2.5):
        observer.request("2", 200, ms)
    observer.request("1", 200, 4.0)
    observer.request("2", 503, 0.1)
    observer.batch("2", 3, 2)
    observer.queue("2", 7)
    assert metrics.calls == []  # nothing reaches Ray on the request path

    observer.flush()

    def series(name):  # (version, le, code) -> the value handed to Ray
        return {(t["version"], t.get("le"), t.get("code")): v for n, v, t in metrics.calls if n == name}

    assert series("optiserve_requests") == {("2", None, "200"): 2, ("1", None, "200"): 1, ("2", None, "503"): 1}
    assert series("optiserve_errors") == {("2", None, "503"): 1}
    latency = series("optiserve_request_latency_ms_bucket")  # errors are counted, their latency is not observed
    assert {le: n for (v, le, _), n in latency.items() if v == "2"} == {
        "2": 1, "5": 2, "10": 2, "20": 2, "50": 2, "100": 2, "200": 2, "500": 2, "1000": 2, "2000": 2, "5000": 2,
        "+Inf": 2}
    assert latency[("1", "5", None)] == 1 and ("1", "2", None) not in latency
    assert series("optiserve_request_latency_ms_sum") == {("2", None, None): 4.0, ("1", None, None): 4.0}
    batch = series("optiserve_batch_size_bucket")
    assert batch[("2", "4", None)] == 1 and ("2", "2", None) not in batch and batch[("2", "+Inf", None)] == 1
    assert series("optiserve_queue_depth") == {("2", None, None): 7}
    metrics.calls.clear()
    observer.flush()
    assert metrics.calls == []  # each observation is handed over once


def test_counted_histogram_counts_each_value_in_every_bucket_at_or_above_it():
    from serve.app import CountedHistogram

    metrics = _Recorded()
    histogram = CountedHistogram(metrics, "h", "H.", [1, 2.5, 10], ("model",))
    histogram.add([1, 1.0001, 2.5, 40, 0.2], {"model": "m"})  # a bound is its own bucket's (le: less or equal)
    assert [(name, n, tags["le"]) for name, n, tags in metrics.calls if name == "h_bucket"] == [
        ("h_bucket", 2, "1"), ("h_bucket", 4, "2.5"), ("h_bucket", 4, "10"), ("h_bucket", 5, "+Inf")]
    assert ("h_sum", 1 + 1.0001 + 2.5 + 40 + 0.2, {"model": "m"}) in metrics.calls
    metrics.calls.clear()
    histogram.add([], {"model": "m"})
    assert metrics.calls == []  # Ray's counters refuse a zero increment


def test_deployment_with_an_autoscale_policy_serves(server):
    """The autoscale/ adapter's config (custom policy function) deploys and the replica reports its metrics hook."""
    from ray import serve as rs

    from autoscale import metrics as m
    from autoscale.ray_adapter import build_autoscaling_config
    from serve._deploy import model_app_args
    from serve.app import MODEL_DEPLOYMENT, model_app
    from serve.config import ServeConfig

    scaling = build_autoscaling_config("queue", None, 1, 2)
    args = model_app_args(server["repo"], "tiny", ServeConfig(poll_interval_s=5), None, scaling)
    rs.run(model_app(args), name="optiserve-autoscaled", route_prefix="/autoscaled")
    try:
        x = np.zeros((1, 64), np.float32)
        resp = httpx.post(f"http://127.0.0.1:{server['info'].port}/autoscaled/infer", json=body(x), timeout=60)
        assert resp.status_code == 200
        handle = rs.get_deployment_handle(MODEL_DEPLOYMENT, app_name="optiserve-autoscaled")
        stats = handle.record_autoscaling_stats.remote().result(timeout_s=30)
        assert set(stats) == set(m.ALL) and stats[m.ARRIVAL_RATE_RPS] > 0
    finally:
        rs.delete("optiserve-autoscaled")


def test_fuzz_the_live_server_from_its_openapi_document(server, helpers):
    """Through the real Serve proxy: no generated request gets a 5xx (503 only as overload, with Retry-After)."""
    c = server["client"]
    doc = c.get("/openapi.json").json()
    failures = []
    for method, path, payload in helpers.fuzz_cases(doc, n=150, seed=7, models={"mlp": (64,), "cnn": (1, 8, 8)}):
        resp = c.request(method, path, json=payload)
        if resp.status_code >= 500 and not (resp.status_code == 503 and "retry-after" in resp.headers):
            failures.append((resp.status_code, method, path, resp.text[:200]))
    assert not failures, failures[:5]
    assert c.get("/v2/health/ready").status_code == 200  # every replica still up


def test_modelserve_status_cli_reads_the_live_app(server):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).with_name("modelserve")
    env = {**os.environ, "RAY_ADDRESS": server["info"].address}
    out = subprocess.run([str(script), "status", "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["mlp"]["app_status"] == "RUNNING" and report["mlp"]["replicas"]["running"] >= 1


def test_triton_http_client_works_unchanged(server, helpers):
    """Triton's own Python HTTP client (binary tensor data by default, no Content-Type) against the live server:
    health, metadata, FP32 in JSON and binary both ways, a BYTES + FP16 model, gzip bodies, error shapes."""
    http = pytest.importorskip("tritonclient.http", reason="tritonclient is installed by `make install`")
    import hashlib

    from ray import serve as rs
    from tritonclient.utils import InferenceServerException

    from serve._deploy import model_app_args
    from serve.app import model_app, model_app_name, model_route
    from serve.config import ServeConfig

    def auth() -> dict[str, str]:  # a fresh dict per call: the client adds its own headers to the one it is given
        return dict(AUTH)

    repo = server["repo"]
    helpers.publish_mixed(repo, server["root"])
    args = model_app_args(repo, "mixed", ServeConfig(), hashlib.sha256(TOKEN.encode()).hexdigest())
    rs.run(model_app(args), name=model_app_name("mixed"), route_prefix=model_route("mixed"))
    client = http.InferenceServerClient(f"127.0.0.1:{server['info'].port}", network_timeout=60)
    try:
        assert client.is_server_live(headers=auth()) and client.is_model_ready("mlp", headers=auth())
        assert helpers.wait_for(lambda: client.is_server_ready(headers=auth()), what="server ready")
        assert "binary_tensor_data" in client.get_server_metadata(headers=auth())["extensions"]
        assert client.get_model_metadata("mlp", headers=auth())["inputs"][0]["shape"] == [-1, 64]

        x = np.random.default_rng(5).random((3, 64), dtype=np.float32)
        version = client.get_model_metadata("mlp", headers=auth())["versions"][-1]  # earlier tests roll out more
        expected = reference(repo, "mlp", version, x)
        for binary_in in (True, False):
            for binary_out in (True, False, None):  # None: no outputs named, the client asks for all as binary
                given = http.InferInput("input", [3, 64], "FP32").set_data_from_numpy(x, binary_data=binary_in)
                wanted = None if binary_out is None else [http.InferRequestedOutput("logits", binary_data=binary_out)]
                result = client.infer("mlp", [given], model_version=version, outputs=wanted, headers=auth(),
                                       request_compression_algorithm="gzip" if binary_in else None)
                np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)

        text = np.array([b"hello", "\u00e9t\u00e9".encode()], object)
        half = np.array([[0.5, 1.5], [-2.0, 4.0]], np.float16)
        for binary in (True, False):
            given = [http.InferInput("text", [2], "BYTES").set_data_from_numpy(text, binary_data=binary),
                     http.InferInput("half", [2, 2], "FP16").set_data_from_numpy(half, binary_data=binary)]
            wanted = [http.InferRequestedOutput(n, binary_data=binary) for n in ("echo", "double")]
            result = client.infer("mixed", given, outputs=wanted, headers=auth(), request_id="r7")
            echo = [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("echo").tolist()]
            assert echo == text.tolist() and result.get_response()["id"] == "r7"
            np.testing.assert_array_equal(result.as_numpy("double"), half * 2)

        wrong = http.InferInput("nope", [1, 64], "FP32").set_data_from_numpy(x[:1])
        with pytest.raises(InferenceServerException) as exc:
            client.infer("mlp", [wrong], headers=auth())
        assert exc.value.status() == "400" and "unknown input 'nope'" in exc.value.message()
    finally:
        client.close()
        rs.delete(model_app_name("mixed"))


def test_live_server_takes_json_without_content_type_and_refuses_bad_binary_sizes(server):
    c = server["client"]
    x = np.zeros((1, 64), np.float32)
    plain = c.post("/v2/models/mlp/infer", content=httpx.Request("POST", "/", json=body(x)).content)
    assert plain.status_code == 200 and plain.request.headers.get("content-type") is None
    form = c.post("/v2/models/mlp/infer", content=plain.request.content,
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 200
    head = b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":256}}]}'
    for raw, length in [(b"\0" * 128, len(head)), (b"\0" * 300, len(head)), (b"\0" * 256, len(head) + 999)]:
        resp = c.post("/v2/models/mlp/infer", content=head + raw,
                      headers={"Inference-Header-Content-Length": str(length)})
        assert resp.status_code == 400 and "error" in resp.json(), resp.text


def test_grpc_groups_ask_the_batcher_not_to_wait_and_each_request_gets_its_own_answer():
    # The router already gathered what was concurrent, so a group must not sit out batch_wait_timeout_ms too.
    from serve._grpc import pb
    from serve._messages import InferenceResponse, InferError, ResponseOutput
    from serve.app import ModelServer

    class Runtime:
        def __init__(self) -> None:
            self.waits = []

        async def infer(self, request, version, wait=True):
            self.waits.append(wait)
            if request.id == "bad":
                raise InferError(400, "bad input")
            out = ResponseOutput(name="y", shape=[1], datatype="FP32")
            out._raw = b"\0\0\x80?"
            return InferenceResponse(model_name="m", model_version="1", id=request.id, outputs=[out])

    def call(id_):
        message = pb.ModelInferRequest(model_name="m", id=id_)
        message.inputs.add(name="x", datatype="FP32", shape=[1])
        message.raw_input_contents.append(b"\0\0\x80?")
        return message.SerializeToString()

    class Bare(ModelServer.func_or_class):
        def __del__(self) -> None:  # Serve's ingress wrapper's async __del__: nothing was started
            pass

    server = object.__new__(Bare)  # its methods alone: no Ray
    server.runtime = runtime = Runtime()
    answers = asyncio.run(server.grpc_infer_many([call("a"), call("bad"), call("c")]))
    assert runtime.waits == [False, False, False]
    assert [status for status, _, _ in answers] == [200, 400, 200]
    assert pb.ModelInferResponse.FromString(answers[2][1]).id == "c"
    assert answers[1][1] == "bad input"
