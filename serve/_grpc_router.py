"""The gRPC front end: one small Serve deployment that serves `inference.GRPCInferenceService` on its own port.

Why not Ray Serve's own gRPC ingress (`grpc_options`): it routes a call by its `application` metadata, and a
call without it reaches an application only when exactly one is deployed (Python proxy:
`ProxyRouter.get_handle_for_endpoint`; HAProxy: the `default_backend` of its gRPC frontend). optiserve deploys
one application per model plus the server app, so a plain Triton client (no such metadata) would get NOT_FOUND.
Serve's gRPC server also binds every interface (`[::]:port`), and its port is fixed when Serve first starts.

So this deployment runs a grpc.aio server itself, on the head node, bound where the user says (127.0.0.1 by
default), answers ServerLive/ServerReady/ServerMetadata, and forwards ModelInfer/ModelMetadata/ModelReady to
the model's deployment by `model_name` through a DeploymentHandle: the same one hop the Python proxy makes, and
the same replicas, batcher and bounded queues the HTTP path uses, whichever front end (haproxy or proxy) serves
HTTP. ModelInfer's bytes are forwarded as received (the router reads only `model_name`); the model replica
translates them (serve/_grpc.py) and answers serialized bytes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from ray import serve as rs
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from serve import _grpc
from serve._http import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from serve._ingress import LEAN_REPLICA_FLAGS
from serve._messages import InferError

GRPC_APP = "optiserve-grpc"  # not "optiserve.<x>": that prefix names model applications
GRPC_DEPLOYMENT = "grpc"
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray's resource of the head node (Ray's own state actors use it)
log = logging.getLogger("optiserve.serve")
pb = _grpc.pb


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_s = code, message, retry_after_s


@rs.deployment(name=GRPC_DEPLOYMENT, num_replicas=1, health_check_period_s=5, graceful_shutdown_timeout_s=10)
class GrpcRouter:
    """Owns the gRPC port; one replica (a port binds once per host)."""

    async def __init__(self, models: list[str], token_sha256: str | None, host: str, port: int,
                       max_message_bytes: int) -> None:
        self.models = set(models)
        self.token_sha256 = token_sha256
        self._handles: dict[str, Any] = {}
        self._ready_cache = (0.0, False)
        self._server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ])
        self._server.add_generic_rpc_handlers((self._handlers(),))
        try:
            bound = self._server.add_insecure_port(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if not bound:
            raise RuntimeError(f"cannot bind the gRPC port {host}:{port} (in use?)")
        await self._server.start()

    def _handlers(self) -> grpc.GenericRpcHandler:
        def unary(fn, request_type=None):
            return grpc.unary_unary_rpc_method_handler(
                self._guarded(fn),
                request_deserializer=request_type.FromString if request_type else None,  # None: raw bytes
                response_serializer=None if request_type is None else lambda m: m.SerializeToString(),
            )

        return grpc.method_handlers_generic_handler(_grpc.SERVICE, {
            "ServerLive": unary(self._live, pb.ServerLiveRequest),
            "ServerReady": unary(self._server_ready, pb.ServerReadyRequest),
            "ServerMetadata": unary(self._server_metadata, pb.ServerMetadataRequest),
            "ModelReady": unary(self._model_ready, pb.ModelReadyRequest),
            "ModelMetadata": unary(self._model_metadata, pb.ModelMetadataRequest),
            "ModelInfer": unary(self._infer),
        })

    def _guarded(self, fn):
        async def call(request, context: grpc.aio.ServicerContext):
            if not _grpc.authorized(context.invocation_metadata(), self.token_sha256):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required "
                                    "(metadata authorization: Bearer <token>)")
            try:
                return await fn(request)
            except InferError as exc:  # a request the router itself could not read
                abort = Abort(_grpc.status_code(exc.status), exc.message, exc.retry_after_s)
            except Abort as exc:
                abort = exc
            except Exception:
                log.exception("gRPC call failed")
                abort = Abort(grpc.StatusCode.INTERNAL, "internal error (see the server's log)")
            if abort.retry_after_s is not None:
                context.set_trailing_metadata((("retry-after", str(max(1, round(abort.retry_after_s)))),))
            await context.abort(abort.code, abort.message)

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
        model = _grpc.parse_infer(raw).model_name if raw else ""
        return _answer(await self._call(model, "grpc_infer", raw))

    async def _call(self, model: str, method: str, *args) -> Any:
        if model not in self.models:
            served = ", ".join(sorted(self.models)) or "none"
            raise Abort(grpc.StatusCode.NOT_FOUND, f"model {model!r} is not served (served: {served})")
        handle = self._handles.get(model)
        if handle is None:
            from serve.app import MODEL_DEPLOYMENT, model_app_name

            handle = self._handles[model] = rs.get_deployment_handle(MODEL_DEPLOYMENT, app_name=model_app_name(model))
        try:
            return await getattr(handle, method).remote(*args)
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
            await server.stop(grace=5)


def _answer(result: tuple[int, Any, float | None]) -> Any:
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
        int(args.get("max_body_bytes", 8 << 20)),
    )
