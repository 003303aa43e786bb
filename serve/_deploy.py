"""Putting the application on Ray: plan (which models and versions can be served), deploy, status, stop.

The plan is checked in the caller's process before anything is deployed, so a model with no loadable
version is reported and skipped instead of leaving replicas failing forever; replicas still fall back
on their own when a version breaks later.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optiserve.errors import UserError
from optiserve.ray_cluster import state_dir
from optiserve.repository import list_models, list_versions
from serve import _ingress, _session
from serve.config import ServeConfig, load_config

SERVE_STATE_FILE = "serve.json"


@dataclass(frozen=True)
class AppInfo:
    """What `start_app` deployed: where to send requests and what is served."""

    urls: dict[str, str]  # "server", "openapi", and one per model (its /v2/models/<name> URL)
    models: dict[str, str]  # model -> default version at deploy time
    skipped: dict[str, str] = field(default_factory=dict)  # model -> why it is not served
    address: str | None = None  # the Ray cluster (GCS address)
    host: str = "127.0.0.1"
    port: int = 8000
    ingress: str = "proxy"  # the front end serving `port`: haproxy (direct ingress) or proxy (Serve's Python proxy)
    notes: list[str] = field(default_factory=list)  # what the user should know (e.g. the fast path is not active)
    grpc_port: int | None = None  # KServe v2 gRPC (serve/_grpc_router.py) on `host`; None when off

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> AppInfo:
        return cls(**json.loads(text))


def plan(repository: Path, cfg: ServeConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(model -> version it will start on, model -> reason it cannot be served), checked by loading."""
    repository = Path(repository)
    if not repository.is_dir():
        raise UserError(f"model repository {repository} does not exist: publish a model with `optimize ... --publish`")
    names = cfg.serve_models or list_models(repository)
    served, skipped = {}, {}
    for name in names:
        mcfg = cfg.for_model(name)
        versions = [mcfg.version] if mcfg.version else list_versions(repository, name)[::-1]
        if not versions:
            skipped[name] = f"no versions of {name} in {repository}"
        reasons = []
        for version in versions:
            try:
                _session.load(repository, name, version, device="cpu", threads=1)
            except UserError as exc:
                reasons.append(f"version {version}: {exc}")
                continue
            served[name] = version
            break
        else:
            skipped.setdefault(name, "; ".join(reasons))
    return served, skipped


def model_app_args(repository: Path, name: str, cfg: ServeConfig, token_sha256: str | None,
                   autoscaling: dict[str, Any] | None = None, ingress: str | None = None) -> dict[str, Any]:
    args = {
        "repository": str(Path(repository).resolve()), "model": name, "model_config": cfg.for_model(name).model_dump(),
        "token_sha256": token_sha256, "max_body_bytes": cfg.max_body_bytes, "poll_interval_s": cfg.poll_interval_s,
        "ingress": ingress or _ingress.chosen_ingress(cfg.ingress),
    }
    if autoscaling:
        args["autoscaling_config"] = autoscaling
    return args


def grpc_missing() -> str | None:
    """Why gRPC cannot be served from this environment (its messages come from tritonclient, its HTTP/2 from
    zttp), or None."""
    try:
        import serve._grpc  # noqa: F401
        import serve._h2grpc  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def grpc_app_args(served: dict[str, str], cfg: ServeConfig, token_sha256: str | None, host: str,
                  grpc_port: int, http_port: int | None = None) -> dict[str, Any]:
    return {"models": sorted(served), "token_sha256": token_sha256, "host": host, "port": grpc_port,
            "max_body_bytes": cfg.max_body_bytes, "http_host": host, "http_port": http_port}


def serve_config(repository: Path, cfg: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000,
                 autoscaling: dict[str, Any] | None = None, grpc_port: int | None = None) -> dict[str, Any]:
    """A Ray Serve config file (for `serve deploy`, KubeRay's RayService) deploying this application.

    The repository path must be readable at the same place on every node (a shared volume). Replica-side
    settings travel in each model's runtime_env; the HAProxy front end is a cluster setting (`cluster_env_comment`).
    With `grpc_port`, an application without an HTTP route serves KServe v2 gRPC on host:grpc_port."""
    from serve.app import SERVER_APP, model_app_name, model_route

    served, _ = plan(repository, cfg)
    token = cfg.token_sha256()
    apps = [
        {"name": model_app_name(name), "route_prefix": model_route(name), "import_path": "serve.app:model_app",
         "args": model_app_args(repository, name, cfg, token, autoscaling)}
        for name in served
    ]
    apps.append({"name": SERVER_APP, "route_prefix": "/", "import_path": "serve.app:server_app",
                 "args": {"models": sorted(served), "token_sha256": token, "max_body_bytes": cfg.max_body_bytes,
                          "ingress_cpus": cfg.ingress_cpus}})
    if grpc_port:
        from serve._grpc_router import GRPC_APP

        apps.append({"name": GRPC_APP, "route_prefix": None, "import_path": "serve._grpc_router:grpc_app",
                     "args": grpc_app_args(served, cfg, token, host, grpc_port, port)})
    return {"proxy_location": "EveryNode", "http_options": {"host": host, "port": port}, "applications": apps}


def cluster_env_comment(cfg: ServeConfig) -> str:
    """YAML comment lines naming the environment the Ray head must have for the configured front end."""
    ingress = _ingress.chosen_ingress(cfg.ingress)
    if ingress == "proxy":
        return "# ingress: proxy (Ray Serve's Python proxy); no cluster environment needed.\n"
    flags = " ".join(f"{k}={v}" for k, v in _ingress.FAST_PATH_FLAGS.items())
    extra = " ".join(f"{k}={v}" for k, v in {**_ingress.NO_HAPROXY_METRICS, **_ingress.WORKER_NICENESS}.items())
    return (
        "# ingress: haproxy. Ray Serve reads this front end from the Ray head's environment, not from this file:\n"
        f"#   start the head with: {flags} ray start --head ...\n"
        "#   (KubeRay RayService: put them in the head and worker containers' env). Without them the same\n"
        "#   applications are served through Ray Serve's Python proxy.\n"
        f"#   Recommended too: {extra}\n"
        "#   (no per-request HAProxy log parsed in Python: optiserve counts requests; replicas not at niceness 15).\n"
    )


def _connect(address: str | None, ingress: str, keep: frozenset[int] = frozenset()) -> tuple[str | None, str]:
    """Join or start the cluster; returns its address and the front end it will really serve with. A head it
    starts picks its own ports around `keep` (the ports the server is about to bind)."""
    import os

    import ray

    if ray.is_initialized():  # the caller (a test, a notebook) already chose a cluster, started from its env
        return ray.get_runtime_context().gcs_address, _active(os.environ)
    from optiserve.ray_cluster import ensure_cluster, free_ports, state_dir

    key = f"{state_dir()}:{os.getpid()}:{time.time_ns()}"
    env = _ingress.cluster_env(ingress, key, lambda: free_ports(1, exclude=keep)[0])
    cluster = ensure_cluster(address, env=env, exclude=keep)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    if cluster.owned:
        return cluster.address, _active(cluster.env or {})
    return cluster.address, _active(os.environ)  # an external cluster: its head's env is its operator's choice


def _active(environ) -> str:
    return "haproxy" if _ingress.fast_path_active(environ) else "proxy"


def _check_gpus(served: dict[str, str], cfg: ServeConfig) -> None:
    import ray

    for name in served:
        mcfg = cfg.for_model(name)
        if mcfg.device != "cuda":
            continue
        _session.providers(mcfg)  # raises a clear UserError without onnxruntime's CUDA provider
        available = ray.cluster_resources().get("GPU", 0)
        if available < mcfg.gpus:
            raise UserError(
                f"model {name} asks for {mcfg.gpus} GPU per replica but the Ray cluster has {available:g} GPUs: "
                "add GPU nodes or serve it with device: cpu"
            )


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def start_app(
    repository: Path | str, *, host: str = "127.0.0.1", port: int = 8000, config_path: Path | str | None = None,
    autoscaling_policy: str | None = None, autoscaling_config: Path | str | None = None,
    address: str | None = None, min_replicas: int = 1, max_replicas: int = 4, grpc_port: int | None = None,
) -> AppInfo:
    """Deploy every servable model of the repository on Ray Serve and return where to reach it.

    `grpc_port` also serves KServe v2 gRPC on host:grpc_port (None: HTTP only)."""
    from ray import serve as rs

    from serve.app import SERVER_APP, model_app, model_app_name, model_route, server_app

    cfg = load_config(config_path)
    if grpc_port is not None and (not 0 < grpc_port < 65536 or grpc_port == port):
        raise UserError(f"the gRPC port must be a free port number other than the HTTP port ({port}), got {grpc_port}")
    try:
        ingress = _ingress.chosen_ingress(cfg.ingress)
    except ValueError as exc:
        raise UserError(f"{_ingress.INGRESS_ENV}: {exc}") from None
    token = cfg.token_sha256()
    served, skipped = plan(Path(repository), cfg)
    if not served:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items()) or "the repository has no models"
        raise UserError(f"nothing to serve in {repository} ({reasons})")
    autoscaling = None
    if autoscaling_policy:
        from autoscale.ray_adapter import build_autoscaling_config

        autoscaling = build_autoscaling_config(
            autoscaling_policy, str(autoscaling_config) if autoscaling_config else None, min_replicas, max_replicas
        )
    cluster_address, active = _connect(address, ingress, frozenset(p for p in (port, grpc_port) if p))
    notes = []
    if active != ingress:
        flags = " ".join(f"{k}={v}" for k, v in _ingress.FAST_PATH_FLAGS.items())
        notes.append(f"ingress {ingress} was asked for but this Ray cluster's head runs without its settings (it was "
                     f"started earlier or elsewhere), so Ray Serve's Python proxy serves: `modelserve stop` the local "
                     f"head and start again, or start the cluster's head with {flags}")
    _check_gpus(served, cfg)
    if grpc_port and (why := grpc_missing()):  # e.g. a plain `pip install` (make adds tritonclient): HTTP still serves
        notes.append(f"gRPC is off: {why}")
        grpc_port = None
    if not _serve_running():
        if not _port_free(host, port):
            raise UserError(f"port {port} on {host} is in use: choose another with --port")
        if grpc_port and not _port_free(host, grpc_port):
            raise UserError(f"gRPC port {grpc_port} on {host} is in use: choose another with --grpc-port (0: no gRPC)")
    rs.start(http_options={"host": host, "port": port})
    targets = [
        rs.RunTarget(target=model_app(model_app_args(repository, name, cfg, token, autoscaling, active)),
                     name=model_app_name(name), route_prefix=model_route(name))
        for name in served
    ]
    targets.append(rs.RunTarget(
        target=server_app({"models": sorted(served), "token_sha256": token, "max_body_bytes": cfg.max_body_bytes,
                           "ingress_cpus": cfg.ingress_cpus}),
        name=SERVER_APP, route_prefix="/",
    ))
    if grpc_port:
        from serve._grpc_router import GRPC_APP, grpc_app

        targets.append(rs.RunTarget(target=grpc_app(grpc_app_args(served, cfg, token, host, grpc_port, port)),
                                    name=GRPC_APP, route_prefix=None))
    try:
        rs.run_many(targets)
    except RuntimeError as exc:
        raise UserError(f"the application failed to deploy: {str(exc).splitlines()[0][:400]}") from None
    base = f"http://{host}:{port}"
    urls = {"server": f"{base}/v2", "openapi": f"{base}/openapi.json", "docs": f"{base}/docs"}
    urls.update({name: base + model_route(name) for name in served})
    info = AppInfo(urls=urls, models=served, skipped=skipped, address=cluster_address, host=host, port=port,
                   ingress=active, notes=notes, grpc_port=grpc_port)
    (state_dir() / SERVE_STATE_FILE).write_text(info.to_json())
    return info


def _serve_running() -> bool:
    """Whether a Serve instance runs on the connected cluster (asked of Serve's client: `serve.status()` answers an
    empty status without one, so it cannot tell)."""
    from ray.serve.context import _get_global_client

    return _get_global_client(raise_if_no_controller_running=False) is not None


def stop_app() -> None:
    """Shut Serve down (every optiserve application and the HTTP proxy)."""
    from ray import serve as rs

    rs.shutdown()
    (state_dir() / SERVE_STATE_FILE).unlink(missing_ok=True)


def replica_counts(model: str) -> dict[str, int]:
    """Replicas of a model's deployment by state: running, starting, stopping (and total)."""
    from ray import serve as rs

    from serve.app import MODEL_DEPLOYMENT, model_app_name

    app = rs.status().applications.get(model_app_name(model))
    if app is None or MODEL_DEPLOYMENT not in app.deployments:
        raise UserError(f"model {model} is not deployed")
    states = {str(getattr(k, "value", k)): v for k, v in app.deployments[MODEL_DEPLOYMENT].replica_states.items()}
    counts = {
        "running": states.get("RUNNING", 0),
        "starting": states.get("STARTING", 0) + states.get("UPDATING", 0) + states.get("RECOVERING", 0),
        "stopping": states.get("STOPPING", 0),
    }
    counts["total"] = sum(counts.values())
    return counts


def status() -> dict[str, Any]:
    """Models, their versions, replicas and state, from Serve and from one replica of each model."""
    from ray import serve as rs

    from serve.app import MODEL_APP_PREFIX, MODEL_DEPLOYMENT

    out: dict[str, Any] = {}
    for name, app in rs.status().applications.items():
        if not name.startswith(MODEL_APP_PREFIX):
            continue
        model = name[len(MODEL_APP_PREFIX):]
        entry: dict[str, Any] = {"app_status": str(getattr(app.status, "value", app.status)), "message": app.message}
        try:
            entry["replicas"] = replica_counts(model)
            handle = rs.get_deployment_handle(MODEL_DEPLOYMENT, app_name=name)
            entry.update(handle.model_status.remote().result(timeout_s=15))
        except Exception as exc:  # noqa: BLE001 - status must report a broken model, not fail on it
            entry["error"] = str(exc).splitlines()[0][:300]
        out[model] = entry
    return out


def recorded_app() -> AppInfo | None:
    try:
        return AppInfo.from_json((state_dir() / SERVE_STATE_FILE).read_text())
    except (FileNotFoundError, ValueError, TypeError):
        return None
