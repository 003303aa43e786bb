"""Ray Serve edge: sample a model deployment's replica states, and start/stop the model for a load test.

The only module of loadtests/ (with capacity_live.py and validate.py) that imports Ray or serve/.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from optiserve.errors import UserError
from optiserve.ray_cluster import use_token_auth_if_available


def replica_sampler(model: str, address: str | None = None):
    """A callable returning serve.replica_counts(model) (None on a failed read), or None when no Ray cluster
    with Serve can be found (then the run reports no replica data)."""
    import ray

    if not ray.is_initialized():
        from serve._deploy import recorded_app

        app = recorded_app()
        address = address or os.environ.get("RAY_ADDRESS") or (app.address if app else None)
        if not address:
            return None
        use_token_auth_if_available()
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except Exception:  # noqa: BLE001 - no cluster there: run without replica data
            return None
    from serve import replica_counts

    def sample() -> dict | None:
        try:
            return replica_counts(model)
        except Exception:  # noqa: BLE001 - one missed sample must not end a load test
            return None

    return sample if sample() is not None else None


def replica_resources(replica_kind: str) -> dict:
    """serve/ model config for a replica kind of the price table: cpu-N -> N CPUs, gpu-* -> one GPU."""
    if replica_kind.startswith("cpu-"):
        try:
            return {"cpus": float(replica_kind.split("-", 1)[1])}
        except ValueError:
            pass
    elif replica_kind.startswith("gpu-"):
        return {"device": "cuda", "gpus": 1.0}
    raise UserError(f"replica kind {replica_kind!r} must be cpu-<N> or gpu-<name> (as in the price table).")


def write_serve_config(path: Path, model: str, **model_settings) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"models": {model: model_settings}, "serve_models": [model]}))
    return path


_PORT: list[int] = []


def serve_port() -> int:
    """One HTTP port per process: Serve keeps the port it first started on, so every deployment reuses it."""
    if not _PORT:
        from optiserve.ray_cluster import free_port

        _PORT.append(free_port())
    return _PORT[0]


def start_model(repository: str | Path, model: str, port: int | None = None, *, config_path: Path | None = None,
                policy: str | None = None, policy_config: Path | None = None, min_replicas: int = 1,
                max_replicas: int = 4, ready_timeout_s: float = 180.0) -> str:
    """Deploy `model` with serve/ and wait until it answers; returns its base URL (http://127.0.0.1:PORT)."""
    import serve

    port = port or serve_port()
    serve.start_app(repository, host="127.0.0.1", port=port, config_path=config_path, autoscaling_policy=policy,
                    autoscaling_config=policy_config, min_replicas=min_replicas, max_replicas=max_replicas)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, model, ready_timeout_s)
    return url


def wait_ready(url: str, model: str, timeout_s: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/v2/models/{model}/ready", timeout=5)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(1.0)
    raise UserError(f"model {model} at {url} was not ready after {timeout_s:.0f} s (last answer: {last}).")


def connect_ray(address: str | None = None) -> bool:
    """Connect to `address`, or start an embedded local Ray that ends with this process; True if started."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        use_token_auth_if_available()
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        return False
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return True


def stop_model(model: str, started_ray: bool) -> None:
    """Remove what we deployed: all of Serve on our own embedded Ray, only our applications elsewhere."""
    import ray
    from ray import serve as rs

    from serve.app import SERVER_APP, model_app_name

    if not ray.is_initialized():
        return
    try:
        if started_ray:
            import serve

            serve.stop_app()  # also forgets the recorded application
        else:
            for name in (model_app_name(model), SERVER_APP):
                rs.delete(name)
    finally:
        if started_ray:
            ray.shutdown()
