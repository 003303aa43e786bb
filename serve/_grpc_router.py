"""The gRPC front end: one small Serve deployment that serves `inference.GRPCInferenceService` on its own port.

Why not Ray Serve's own gRPC ingress (`grpc_options`): it routes a call by its `application` metadata, and a
call without it reaches an application only when exactly one is deployed (Python proxy:
`ProxyRouter.get_handle_for_endpoint`; HAProxy: the `default_backend` of its gRPC frontend). optiserve deploys
one application per model plus the server app, so a plain Triton client (no such metadata) would get NOT_FOUND.
Serve's gRPC server also binds every interface (`[::]:port`), and its port is fixed when Serve first starts.

So this deployment runs its own gRPC server (serve/_h2grpc.py: HTTP/2 parsed on its event loop, not grpc.aio's
threads), on the head node, bound where the user says (127.0.0.1 by default), answers ServerLive/ServerReady/
ServerMetadata, and forwards ModelInfer/ModelMetadata/ModelReady to the model's deployment by `model_name`. The
router reads only `model_name` (from the message's first field); the model replica translates the bytes
(serve/_grpc.py) through the same codec, batcher and bounded queue as HTTP, and answers serialized bytes.

ModelInfer groups (below) travel as one HTTP POST to the model's infer route on the server's own HTTP port
(`serve/_http1.py`, kept-alive connections): under HAProxy that is C straight to a replica's own HTTP server and
event loop, as HTTP requests go, with HAProxy's balancing and draining. Through a DeploymentHandle instead (Ray's
gRPC transport: grpc.aio threads in the router and in the replica, a Ray request wrapper), gRPC reached 0.79x /
0.48x / 0.76x JSON's req/s on the same server at 1 / 16 / 64 connections; over HTTP 2.03x / 0.75x / 1.08x
(`bench_serve.py`, 2-core machine, BENCHMARKS.md session 27). The handle stays for ModelMetadata/ModelReady, for a
single request larger than a group may be (it goes by reference, as a Ray object), and when no HTTP port is known.

ModelInfer calls are coalesced per model (`Coalescer`): one forwarded call costs about as much router and
replica time as a small inference, so calls that arrive while the model's allowed calls are all in flight wait
and leave together, as ONE call carrying a list of requests (the replica submits them to its batcher at once
and answers one result per request: its own bytes or its own error). Nothing waits on a timer: with no group in
flight a call leaves at the next turn of the event loop; while one is, the next leaves with its share of the
callers or once the groups in flight are back (see `Coalescer`). Slots scale with the model's running replicas, so
HAProxy's (or Serve's) balancing still spreads groups over every replica; each request inside a group still
meets the replica's bounded queue (overload is its own UNAVAILABLE with retry-after), and a group is an
ordinary request (roll-out and scale-down drain it as any other).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from ray import serve as rs
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from serve import _grpc
from serve._h2grpc import GrpcServer, Handler, Metadata, RpcError
from serve._http import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from serve._http1 import Http1Pool
from serve._ingress import LEAN_REPLICA_FLAGS, tune_gc
from serve._messages import InferError

GRPC_APP = "optiserve-grpc"  # not "optiserve.<x>": that prefix names model applications
GRPC_DEPLOYMENT = "grpc"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node (Ray's own state actors use it)
log = logging.getLogger("optiserve.serve")
pb = _grpc.pb
Result = _grpc.Result
MAX_GROUP = 64  # requests per coalesced call
# With RAY_SERVE_THROUGHPUT_OPTIMIZED (the haproxy ingress) Serve's handles reach replicas over gRPC, whose
# messages are capped (RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH, 4 MiB by default). A group stays under
# MAX_GROUP_BYTES; a larger single request, or a group whose answers outgrew the cap, goes by reference (a Ray
# actor call, no such cap).
MAX_GROUP_BYTES = 2 << 20
# Group calls in flight per running replica. Measured A/B (BENCHMARKS.md session 28): 4 behind 2 at 16 and 64
# connections; 1 level with 2 at 16 (within the spread), behind at 64.
SLOTS_PER_REPLICA = 2
# How fast the router forgets how many callers it saw at once (per flush): the share a group waits for shrinks with
# the load instead of holding the next few callers back for a round trip.
CALLERS_DECAY = 0.9
REPLICAS_TTL_S = 5.0  # how long a model's running-replica count is trusted (Serve's status costs the router CPU)


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


class Coalescer:
    """Gathers one model's requests into group calls: `send(list of requests) -> list of results, in order`.

    At most `slots()` groups are in flight. With none in flight, a request leaves at the next turn of the event
    loop (with whatever else arrived in that turn). While one is, the next group leaves once it holds its share
    of the callers (the most requests seen pending and in flight at once, decaying, over the slots), or once the
    groups in flight are all back. Sending whatever waits the moment a slot frees made groups of every size from
    1 to 16 at 16 connections (the answered callers had not sent again yet), each costing a model run and a round
    trip; held to their share they even out (measured: +5 to +37 % req/s at 16 connections, level at 1 and 64,
    BENCHMARKS.md session 28). The wait is never a timer: at most until the groups in flight are back. A group
    holds at most `max_group` requests and `max_bytes` bytes; once one leaves, every request waiting leaves (in as
    many groups as the slots allow). If `send` raises, every request of that group gets the exception. Pure
    asyncio: no Ray, no gRPC."""

    def __init__(self, send: Callable[[list[bytes]], Awaitable[list[Any]]], slots: Callable[[], int],
                 max_group: int = MAX_GROUP, max_bytes: int = MAX_GROUP_BYTES) -> None:
        self._send, self._slots = send, slots
        self.max_group, self.max_bytes = max_group, max_bytes
        self._pending: deque[tuple[bytes, asyncio.Future]] = deque()
        self._in_flight = 0
        self._rows_in_flight = 0
        self._callers = 0.0  # requests seen at once (pending + in flight), decaying: the expected group total
        self._scheduled = False
        self._tasks: set[asyncio.Task] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def submit(self, request: bytes) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._schedule()
        return await future  # a caller that gives up cancels its future; its group skips it

    def _schedule(self) -> None:
        if not self._scheduled and self._pending and self._in_flight < max(1, self._slots()):
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        slots = max(1, self._slots())
        self._callers = max(len(self._pending) + self._rows_in_flight, CALLERS_DECAY * self._callers)
        if self._in_flight and len(self._pending) < min(self._callers / slots, self.max_group):
            return  # leaves with its share of the callers, or once the groups in flight are back (see the class)
        while self._pending and self._in_flight < slots:
            group = self._take()
            if group:
                self._in_flight += 1
                self._rows_in_flight += len(group)
                task = asyncio.get_running_loop().create_task(self._run(group))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[bytes, asyncio.Future]]:
        group: list[tuple[bytes, asyncio.Future]] = []
        size = 0
        while self._pending and len(group) < self.max_group:
            request, future = self._pending[0]
            if future.done():  # its caller gave up before it left
                self._pending.popleft()
                continue
            if group and size + len(request) > self.max_bytes:
                break
            self._pending.popleft()
            group.append((request, future))
            size += len(request)
        return group

    async def _run(self, group: list[tuple[bytes, asyncio.Future]]) -> None:
        try:
            results = await self._send([request for request, _ in group])
            if len(results) != len(group):
                raise RuntimeError(f"{len(results)} results for a group of {len(group)} requests")
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the group, each raises it
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
        else:
            for (_, future), result in zip(group, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._in_flight -= 1
            self._rows_in_flight -= len(group)
            self._schedule()


@rs.deployment(name=GRPC_DEPLOYMENT, num_replicas=1, health_check_period_s=5, graceful_shutdown_timeout_s=10)
class GrpcRouter:
    """Owns the gRPC port; one replica (a port binds once per host)."""

    async def __init__(self, models: list[str], token_sha256: str | None, host: str, port: int,
                       max_message_bytes: int, http_port: int | None = None, http_host: str = "127.0.0.1") -> None:
        tune_gc()  # as in the model replicas: each in-flight call's objects must not trigger collections
        self.models = set(models)
        self.token_sha256 = token_sha256
        self._handles: dict[str, Any] = {}
        self._methods: dict[tuple[str, str, bool], Any] = {}  # handle.options() costs: made once
        self._coalescers: dict[str, Coalescer] = {}
        self._replicas: dict[str, tuple[float, int]] = {}  # model -> (checked at, running replicas)
        self._replicas_task: asyncio.Task | None = None
        self._ready_cache = (0.0, False)
        # ModelInfer groups go to the replicas through the HTTP front end (HAProxy: C, straight to the replica's own
        # port and event loop); without an HTTP port, through Serve's handles (Ray's gRPC transport).
        wildcard = http_host in ("0.0.0.0", "::", "")
        self._http = Http1Pool("127.0.0.1" if wildcard else http_host, http_port) if http_port else None
        self._authorization = ""  # a token a caller proved (there is one server token): sent along to HTTP
        self._max_post = max_message_bytes  # the model app's body limit (max_body_bytes) applies to a group's POST
        self._server = GrpcServer(self._handlers(), max_message_bytes=max_message_bytes)
        await self._server.start(host, port)

    def _handlers(self) -> dict[str, Handler]:
        return {f"/{_grpc.SERVICE}/{method}": self._guarded(fn, request_type) for method, fn, request_type in (
            ("ServerLive", self._live, pb.ServerLiveRequest),
            ("ServerReady", self._server_ready, pb.ServerReadyRequest),
            ("ServerMetadata", self._server_metadata, pb.ServerMetadataRequest),
            ("ModelReady", self._model_ready, pb.ModelReadyRequest),
            ("ModelMetadata", self._model_metadata, pb.ModelMetadataRequest),
            ("ModelInfer", self._infer, None),  # raw bytes: the router reads only the model's name
        )}

    def _guarded(self, fn, request_type=None) -> Handler:
        async def call(raw: bytes, metadata: Metadata) -> bytes:
            if self.token_sha256:
                if not _grpc.authorized(((k.decode("latin-1"), v) for k, v in metadata), self.token_sha256):
                    raise RpcError(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required "
                                                                    "(metadata authorization: Bearer <token>)")
                if not self._authorization:
                    self._authorization = next(v for k, v in metadata if k == b"authorization").decode("latin-1")
            try:
                if request_type is None:
                    return await fn(raw)
                try:
                    request = request_type.FromString(raw)
                except Exception:  # noqa: BLE001 - protobuf's DecodeError differs between its implementations
                    raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"the {request_type.__name__} message "
                                                                  "cannot be parsed") from None
                return (await fn(request)).SerializeToString()
            except InferError as exc:  # a request the router itself could not read
                abort = Abort(_grpc.status_code(exc.status), exc.message, exc.retry_after_s)
            except Abort as exc:
                abort = exc
            except Exception:
                log.exception("gRPC call failed")
                abort = Abort(grpc.StatusCode.INTERNAL, "internal error (see the server's log)")
            trailing = [] if abort.retry_after_s is None else \
                [(b"retry-after", str(max(1, round(abort.retry_after_s))).encode())]
            raise RpcError(abort.code, abort.message, trailing)

        return call

    # ---- server-level ------------------------------------------------------------------------------

    async def _live(self, _request) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, _request) -> Any:
        checked_at, ok = self._ready_cache
        if time.monotonic() - checked_at > 1.0:  # probes can be frequent; Serve's status is a controller call
            from serve.app import _all_running

            ok = await asyncio.to_thread(_all_running, sorted(self.models))
            self._ready_cache = (time.monotonic(), ok)
        return pb.ServerReadyResponse(ready=ok)

    async def _server_metadata(self, _request) -> Any:
        return _grpc.server_metadata(SERVER_NAME, SERVER_VERSION, EXTENSIONS)

    # ---- forwarded to the model's deployment -------------------------------------------------------

    async def _model_ready(self, request) -> Any:
        ready = await self._call(request.name, "grpc_ready", request.version or None)
        return pb.ModelReadyResponse(ready=bool(ready))

    async def _model_metadata(self, request) -> Any:
        return pb.ModelMetadataResponse.FromString(
            _answer(await self._call(request.name, "grpc_metadata", request.version or None)))

    async def _infer(self, raw: bytes) -> bytes:
        model = _grpc.infer_model_name(raw)
        self._handle(model)  # NOT_FOUND before it joins a group
        coalescer = self._coalescers.get(model)
        if coalescer is None:
            coalescer = self._coalescers[model] = Coalescer(
                lambda raws: self._infer_group(model, raws), lambda: self._slots(model))
        return _answer(await coalescer.submit(raw))

    async def _infer_group(self, model: str, raws: list[bytes]) -> list[Result]:
        framed = sum(map(len, raws)) + _grpc.GROUP_FRAMING * len(raws)
        if self._http is not None and framed <= self._max_post:
            return await self._infer_group_http(model, raws)
        return await self._infer_group_handle(model, raws)  # over the body limit: a handle call (by reference)

    async def _infer_group_http(self, model: str, raws: list[bytes]) -> list[Result]:
        """One POST of the group to the model's infer route on the HTTP front end; the replica's answer is one
        result per request. An answer about the whole POST (HAProxy's 503 with no replica up, a 401) is every
        request's."""
        from serve.app import model_route

        headers = [("content-type", _grpc.GROUP_CONTENT_TYPE)]
        if self._authorization:
            headers.append(("authorization", self._authorization))
        try:
            status, answer_headers, body = await self._http.post(
                model_route(model) + "/infer", _grpc.pack_group(raws), headers)
        except OSError as exc:
            raise Abort(grpc.StatusCode.UNAVAILABLE, f"model {model} is unavailable: {exc}", 1.0) from None
        if status == 200:
            return _grpc.unpack_results(body)
        return [_http_error(status, dict(answer_headers), body)] * len(raws)

    async def _infer_group_handle(self, model: str, raws: list[bytes]) -> list[Result]:
        by_reference = sum(map(len, raws)) > MAX_GROUP_BYTES
        try:
            return await self._call(model, "grpc_infer_many", raws, by_reference=by_reference)
        except grpc.aio.AioRpcError as exc:  # Serve's gRPC transport: only UNAVAILABLE is mapped by Serve
            if by_reference or exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
        # the answers outgrew the transport's message cap: the same group again (inference has no side effects)
        return await self._call(model, "grpc_infer_many", raws, by_reference=True)

    def _slots(self, model: str) -> int:
        """Group calls allowed in flight for a model: SLOTS_PER_REPLICA per running replica (a stale count is
        used while a fresh one is fetched off the event loop)."""
        checked_at, replicas = self._replicas.get(model, (0.0, 1))
        if time.monotonic() - checked_at > REPLICAS_TTL_S and self._replicas_task is None:
            self._replicas_task = asyncio.get_running_loop().create_task(self._count_replicas())
        return SLOTS_PER_REPLICA * max(1, replicas)

    async def _count_replicas(self) -> None:
        try:
            counts = await asyncio.to_thread(_running_replicas, sorted(self.models))
            now = time.monotonic()
            self._replicas.update({model: (now, n) for model, n in counts.items()})
        except Exception:  # noqa: BLE001 - the last count stays; the next call retries
            log.warning("could not count the models' replicas", exc_info=True)
            now = time.monotonic()
            self._replicas.update({m: (now, r) for m, (_, r) in self._replicas.items()})
        finally:
            self._replicas_task = None

    def _handle(self, model: str) -> Any:
        if model not in self.models:
            served = ", ".join(sorted(self.models)) or "none"
            raise Abort(grpc.StatusCode.NOT_FOUND, f"model {model!r} is not served (served: {served})")
        handle = self._handles.get(model)
        if handle is None:
            from serve.app import MODEL_DEPLOYMENT, model_app_name

            handle = self._handles[model] = rs.get_deployment_handle(MODEL_DEPLOYMENT, app_name=model_app_name(model))
        return handle

    async def _call(self, model: str, method: str, *args, by_reference: bool = False) -> Any:
        key = (model, method, by_reference)
        call = self._methods.get(key)
        if call is None:
            call = getattr(self._handle(model), method)
            call = self._methods[key] = call.options(_by_reference=True) if by_reference else call
        try:
            return await call.remote(*args)
        except BackPressureError as exc:  # Serve's bounded handle queue is full
            raise Abort(grpc.StatusCode.UNAVAILABLE, f"model {model} is overloaded: {exc}", 1.0) from None
        except (DeploymentUnavailableError, RayActorError) as exc:
            raise Abort(grpc.StatusCode.UNAVAILABLE, f"model {model} is unavailable: "
                                                     f"{str(exc).splitlines()[0][:300]}", 1.0) from None

    def check_health(self) -> None:
        if self._server is None:
            raise RuntimeError("the gRPC server is not running")

    async def __del__(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace_s=5)
        if self._http is not None:
            self._http.close()


def _running_replicas(models: list[str]) -> dict[str, int]:
    """Each model's RUNNING replicas, from Serve's status (a controller call: run it off the event loop)."""
    from serve.app import MODEL_DEPLOYMENT, model_app_name

    apps = rs.status().applications
    counts = {}
    for model in models:
        app = apps.get(model_app_name(model))
        deployment = app.deployments.get(MODEL_DEPLOYMENT) if app is not None else None
        if deployment is not None:
            counts[model] = sum(n for state, n in deployment.replica_states.items() if str(state).endswith("RUNNING"))
    return counts


def _http_error(status: int, headers: dict[bytes, bytes], body: bytes) -> Result:
    """An HTTP error answer as a replica's result: its `{"error": ...}` message (or text) and Retry-After."""
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace").strip()[:300] or f"HTTP {status}"
    retry = headers.get(b"retry-after", b"")
    return status, message, float(retry) if retry.isdigit() else (1.0 if status == 503 else None)


def _answer(result: Result) -> Any:
    """A model replica's (HTTP-style status, payload or message, retry-after) as the payload or an Abort."""
    status, payload, retry_after_s = result
    if status == 200:
        return payload
    raise Abort(_grpc.status_code(status), str(payload), retry_after_s)


def grpc_app(args: dict[str, Any]):
    """Ray Serve application builder for the gRPC front end (import path `serve._grpc_router:grpc_app`)."""
    options = {"ray_actor_options": {
        # On the head node and reserving no CPU, as Ray Serve's own proxies: the port is where the user started
        # the server (or where a cluster's head service points), even on a head that gives tasks no CPUs.
        "num_cpus": 0, "resources": {HEAD_NODE_RESOURCE: 0.001},
        # user code on the replica's own event loop, as Serve's own gRPC server would run
        "runtime_env": {"env_vars": dict(LEAN_REPLICA_FLAGS)},
    }}
    return GrpcRouter.options(**options).bind(
        list(args["models"]), args.get("token_sha256"), str(args.get("host", "127.0.0.1")), int(args["port"]),
        int(args.get("max_body_bytes", 8 << 20)), args.get("http_port"), str(args.get("http_host", "127.0.0.1")),
    )
