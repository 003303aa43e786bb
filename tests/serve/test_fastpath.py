"""Live: the HAProxy direct-ingress front end serves every model on one port, and replicas come and go under
traffic without a failed request. Never asserts on speed (bench_serve.py measures it)."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TOKEN = "fastpath-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
ingress: haproxy
defaults: {max_batch_size: 16, batch_wait_timeout_ms: 2, cpus: 0.25}
auth_token_env: MS_FAST_TOKEN
"""


def body(x: np.ndarray) -> dict:
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


@pytest.fixture(scope="module")
def fast(tmp_path_factory, helpers):

    from serve import _ingress

    root = tmp_path_factory.mktemp("fast")
    repo = root / "models"
    helpers.publish(repo, "mlp", "mlp", seed=1, tmp=root)
    helpers.publish(repo, "cnn", "cnn", seed=3, tmp=root)
    (root / "serve.yaml").write_text(CONFIG)
    env = _ingress.cluster_env("haproxy", str(root), helpers.free_port)
    env.update(MS_FAST_TOKEN=TOKEN, OPTISERVE_STATE_DIR=str(root / "state"))
    with helpers.running_app(repo, root / "serve.yaml", env) as info:
        client = httpx.Client(base_url=f"http://127.0.0.1:{info.port}", headers=AUTH, timeout=60)
        yield {"info": info, "repo": repo, "client": client}
        client.close()


def test_haproxy_front_end_serves_every_model_on_one_port(fast, helpers):
    from ray import serve as rs

    info, client = fast["info"], fast["client"]
    assert info.ingress == "haproxy" and info.notes == []
    # HAProxy managers answer instead of Serve's Python proxy on the head node's port
    assert rs.status().proxies, "no front end reported"
    # infer goes straight to the model's app (serve._ingress.ReplicaFrontDoor): Serve's wrapper, which adds a
    # request id to every answer, sees it not; metadata still takes Serve's path. A request that reaches a replica
    # before its constructor has set the shortcut takes Serve's path, answered all the same (seen once, under
    # load, on a fresh clone), so the first answers may carry the id.
    def infer_past_serves_wrapper():
        mlp = client.post("/v2/models/mlp/infer", json=body(np.zeros((2, 64), np.float32)))
        assert mlp.status_code == 200 and mlp.json()["outputs"][0]["shape"] == [2, 10]
        return "x-request-id" not in mlp.headers

    helpers.wait_for(infer_past_serves_wrapper, what="an infer answer without Serve's x-request-id")
    assert "x-request-id" in client.get("/v2/models/mlp").headers
    cnn = client.post("/v2/models/cnn/infer", content=b'{"inputs": [{"name": "input", "shape": [1, 1, 8, 8], '
                      b'"datatype": "FP32", "data": ' + str([0.0] * 64).encode() + b"}]}")  # no Content-Type
    assert cnn.status_code == 200
    assert client.get("/v2").json()["name"] == "optiserve"
    # the head's workers (replicas, HAProxy's manager) run at niceness 0, not Ray's 15 (serve._ingress.WORKER_NICENESS)
    import os

    import ray

    assert ray.get(ray.remote(num_cpus=0)(lambda: os.nice(0)).remote(), timeout=120) == 0
    assert client.get("/v2/health/ready").status_code == 200
    assert client.post("/v2/models/nope/infer", json=body(np.zeros((1, 64), np.float32))).status_code == 404
    assert httpx.post(f"http://127.0.0.1:{info.port}/v2/models/mlp/infer", json={}, timeout=30).status_code == 401
    assert client.post("/v2/models/mlp/infer", content=b"{not json").status_code == 400


def test_scaling_up_and_down_under_traffic_loses_no_request(fast):
    """1 -> 3 -> 1 replicas while clients send requests; draining replicas finish what they hold."""
    from ray import serve as rs

    from serve._deploy import model_app_args, replica_counts
    from serve.app import ModelServer, deployment_options, model_app_name, model_route
    from serve.config import ModelConfig, ServeConfig

    cfg = ServeConfig(defaults={"cpus": 0.25, "max_batch_size": 16})
    args = model_app_args(fast["repo"], "mlp", cfg, None, ingress="haproxy")
    mcfg = ModelConfig(**args["model_config"])

    def deploy(replicas: int) -> None:  # the same code and arguments, only the replica count changes
        options = {**deployment_options(mcfg, ingress="haproxy"), "num_replicas": replicas}
        app = ModelServer.options(**options).bind(
            args["repository"], "mlp", mcfg.model_dump(), None, args["max_body_bytes"], 5.0)
        rs.run(app, name=model_app_name("scaled"), route_prefix=model_route("scaled"), blocking=False)

    deploy(1)
    url = f"http://127.0.0.1:{fast['info'].port}{model_route('scaled')}/infer"
    payload = body(np.ones((1, 64), np.float32))
    wait_until(lambda: httpx.post(url, json=payload, timeout=30).status_code == 200, 120, "the scaled app")
    counts = {"ok": 0, "failed": 0}
    failures: list[str] = []
    stop = threading.Event()

    def client_loop() -> None:
        with httpx.Client(timeout=60) as c:
            while not stop.is_set():
                try:
                    r = c.post(url, json=payload)
                    ok = r.status_code == 200
                    if not ok:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    ok = False
                    failures.append(repr(exc))
                counts["ok" if ok else "failed"] += 1
                time.sleep(0.005)

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        deploy(3)
        wait_until(lambda: replica_counts("scaled")["running"] == 3, 180, "3 running replicas")
        time.sleep(2)
        deploy(1)
        wait_until(lambda: replica_counts("scaled")["total"] == 1, 240, "scale down to 1 replica")
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join()
        rs.delete(model_app_name("scaled"))
    assert counts["ok"] > 0
    assert counts["failed"] == 0, failures[:5]


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")
