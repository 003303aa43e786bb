"""The project's local Ray cluster: started on demand, shared by jobs and serving, stopped on request.

`ensure_cluster()` returns the address to connect to: `--address` / `RAY_ADDRESS` when given (an existing
cluster, untouched by us), else the local head this module started earlier (recorded in the state
directory), else a new local head. The head runs `ray start --head --block` in its own process group so
it outlives the CLI that started it and `stop_cluster()` can end exactly it (`ray stop` would kill every
Ray on the machine). Every port is chosen free, so several clusters (tests, users) coexist.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from optiserve.errors import UserError

CLUSTER_FILE = "ray-cluster.json"
DEFAULT_NUM_CPUS = 8  # logical CPUs: several small replicas and job runs fit on a 2-core machine


def state_dir() -> Path:
    """Where records live: $OPTISERVE_STATE_DIR, else ~/.optiserve (the embedded default)."""
    path = Path(os.environ.get("OPTISERVE_STATE_DIR") or Path.home() / ".optiserve")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Cluster:
    address: str  # GCS address, e.g. 127.0.0.1:6379, for ray.init(address=...)
    dashboard_url: str | None  # Ray Jobs API endpoint; None when unknown (external cluster)
    pid: int | None = None  # the `ray start --block` process we own; None for external clusters
    env: dict[str, str] | None = None  # extra environment the head was started with (Ray reads flags from it)

    @property
    def owned(self) -> bool:
        return self.pid is not None


# Ports are picked here and bound later by another process (a Ray head, HAProxy, a server), so they are picked
# outside the kernel's ephemeral range: there every outgoing connection (Ray opens many) takes its local port,
# and a port picked there can be taken before it is bound (seen: the gRPC router's bind failing in a test).
# Also clear of Ray's worker ports (10002-19999) and its direct-ingress replica ports (30000-31000).
PICK_RANGE = (20000, 30000)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default; elsewhere the kernel's own choice is used (below)


def picks_from_range() -> bool:
    """Whether ports are picked from PICK_RANGE: on Linux, when the kernel's ephemeral range is clear of it."""
    low, high = _ephemeral_range()
    return sys.platform.startswith("linux") and (high < PICK_RANGE[0] or low >= PICK_RANGE[1])


def _bind_free(s: socket.socket) -> int:
    """Bind `s` on 127.0.0.1 to a free port in PICK_RANGE (the kernel's choice if the range is unusable)."""
    if picks_from_range():
        for _ in range(64):
            try:
                s.bind(("127.0.0.1", random.randrange(*PICK_RANGE)))
                return s.getsockname()[1]
            except OSError:  # in use: another
                continue
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        return _bind_free(s)


def free_ports(count: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """`count` distinct free ports (each socket stays open until all are chosen, so none is handed out twice)."""
    socks, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            socks.append(s)
            port = _bind_free(s)
            if port not in exclude and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def _alive(cluster: Cluster) -> bool:
    if cluster.pid is not None:
        try:
            os.kill(cluster.pid, 0)
        except OSError:
            return False
    host, port = cluster.address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _recorded(directory: Path) -> Cluster | None:
    try:
        return Cluster(**json.loads((directory / CLUSTER_FILE).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def use_token_auth_if_available() -> None:
    """Make this process (and its children) send Ray's auth token when ~/.ray/auth_token exists.

    Ray 2.60 turns token auth on for a head started where that file exists (any local `ray.init()` creates it),
    but its clients send the token only when RAY_AUTH_MODE says so; without this, connecting to such a head
    fails with 401s. An explicit RAY_AUTH_MODE is respected. Uses a private Ray helper: skipped if it moves.
    """
    import logging

    try:
        from ray._private.authentication import authentication_token_setup as setup
    except ImportError:
        return
    logger = logging.getLogger(setup.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)  # its "token auth is enabled" warning is noise for a CLI
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except Exception:  # noqa: BLE001 - best effort: without it, connecting reports the real error
        pass
    finally:
        logger.setLevel(level)


def ensure_cluster(
    address: str | None = None, num_cpus: int = DEFAULT_NUM_CPUS, timeout_s: float = 60,
    env: dict[str, str] | None = None, exclude: Iterable[int] = (),
) -> Cluster:
    """Return a running cluster: the given/RAY_ADDRESS one, our recorded local head, or a new local head.

    `env` is added to a new head's environment, which every Ray process on it inherits (Ray Serve reads its
    feature flags there, at import); a recorded head keeps the environment it started with (see `Cluster.env`).
    A new head's own ports avoid `exclude`."""
    use_token_auth_if_available()  # the head we may start and every client of it must agree on auth
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        dashboard = address if address.startswith("http") else None
        return Cluster(address=address, dashboard_url=dashboard)
    directory = state_dir()
    recorded = _recorded(directory)
    if recorded and _alive(recorded):
        return recorded
    # ports the caller's env already uses, and those it is about to bind (a server's own ports)
    taken = {int(v) for v in (env or {}).values() if v.isdigit()} | set(exclude)
    gcs, dash, *picked = free_ports(9, exclude=taken)
    flags = ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
             "--runtime-env-agent-port", "--metrics-export-port", "--node-manager-port", "--object-manager-port")
    ports = dict(zip(flags, picked, strict=True))
    cmd = [
        str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--disable-usage-stats",
        f"--port={gcs}", "--node-ip-address=127.0.0.1", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}", f"--num-cpus={num_cpus}",
        *(f"{flag}={port}" for flag, port in ports.items()),
    ]
    log = open(directory / "ray-head.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})
    cluster = Cluster(address=f"127.0.0.1:{gcs}", dashboard_url=f"http://127.0.0.1:{dash}", pid=proc.pid,
                      env=dict(env) if env else None)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UserError(f"the local Ray head failed to start; see {directory / 'ray-head.log'}")
        try:
            urllib.request.urlopen(f"{cluster.dashboard_url}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # it answered (401: token auth, on once ~/.ray/auth_token exists)
            break
        except OSError:
            time.sleep(0.5)
    else:
        stop_cluster(cluster)
        raise UserError(f"the local Ray head did not come up in {timeout_s:.0f} s; see {directory / 'ray-head.log'}")
    (directory / CLUSTER_FILE).write_text(json.dumps(asdict(cluster)))
    return cluster


def stop_cluster(cluster: Cluster | None = None, timeout_s: float = 10) -> bool:
    """Stop the local head we started (never an external cluster). Returns whether one was stopped."""
    directory = state_dir()
    cluster = cluster or _recorded(directory)
    if cluster is None or not cluster.owned:
        return False
    try:
        os.killpg(cluster.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            os.killpg(cluster.pid, 0)
            time.sleep(0.2)
        os.killpg(cluster.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if _recorded(directory) == cluster:
        (directory / CLUSTER_FILE).unlink(missing_ok=True)
    return True
