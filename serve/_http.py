"""The HTTP face of the server (FastAPI, no Ray): the KServe v2 routes, bearer token, body limit, JSON errors.

Two ASGI apps. The model app (one per model, mounted by Ray Serve at /v2/models/<name>) answers
metadata, readiness and infer for that model; the server app (mounted at /) answers /v2, health,
unknown models (404) and publishes the OpenAPI document of the whole API. Every error is
`{"error": "..."}` with a meaningful status; no request can crash a replica.

Inference bodies are read raw, not through FastAPI's body parsing, so JSON is accepted with any or no
Content-Type (Triton's Python client sends none, `curl -d` sends a form type) and Triton's binary tensor
data extension works both ways (serve/_codec.py). gzip/deflate request bodies are accepted, as Triton does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from serve._codec import parse_request, render_response, validation_message
from serve._ingress import infer_version
from serve._messages import (
    ErrorResponse,
    InferenceRequest,
    InferenceResponse,
    InferError,
    ModelMetadata,
    ServerMetadata,
)

SERVER_NAME = "optiserve"
SERVER_VERSION = "0.1.0"
_ERRORS = {
    400: {"model": ErrorResponse, "description": "invalid request"},
    401: {"model": ErrorResponse, "description": "missing or wrong bearer token"},
    404: {"model": ErrorResponse, "description": "unknown model or version"},
    413: {"model": ErrorResponse, "description": "request body too large"},
    415: {"model": ErrorResponse, "description": "unsupported Content-Encoding"},
    503: {"model": ErrorResponse, "description": "overloaded: retry after the Retry-After header's seconds"},
}


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        # allow_nan: a model output of inf/NaN must not turn into a 500
        return json.dumps(content, allow_nan=True, separators=(",", ":")).encode()


class Guard:
    """ASGI middleware: bearer token (compared by sha256, constant time) and request body size limit."""

    def __init__(self, app, *, token_sha256: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token_sha256 = token_sha256
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.token_sha256 and not self._authorized(headers.get(b"authorization", b"")):
            return await _send_error(send, 401, "a valid bearer token is required", {"www-authenticate": "Bearer"})
        length = headers.get(b"content-length")
        try:
            too_big = length is not None and int(length) > self.max_body_bytes
        except ValueError:
            return await _send_error(send, 400, "the Content-Length header is not a number")
        if too_big:
            return await _send_error(send, 413, f"the request body is larger than {self.max_body_bytes} bytes")
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body_bytes:  # chunked bodies have no Content-Length to check up front
                raise HTTPException(413, f"the request body is larger than {self.max_body_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)

    def _authorized(self, header: bytes) -> bool:
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        return hmac.compare_digest(hashlib.sha256(token.strip()).hexdigest(), self.token_sha256)


async def _send_error(send, status: int, message: str, extra: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str, retry_after_s: float | None = None) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(retry_after_s)))} if retry_after_s is not None else None
    return _JSON({"error": message}, status_code=status, headers=headers)


INFER_HEADER = "Inference-Header-Content-Length"
EXTENSIONS = ["model_status", "binary_tensor_data"]
# Infer routes read their body themselves; this documents it (schemas added by _add_schemas).
_INFER_BODY = {"requestBody": {
    "required": True,
    "description": "An InferenceRequest as JSON (any or no Content-Type), or, with the Inference-Header-Content-"
                   "Length header, that many bytes of JSON followed by binary tensor data (Triton's extension).",
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}}
_INFER_OK = {200: {"description": "JSON, or application/octet-stream with an Inference-Header-Content-Length "
                                  "header when an output was asked for as binary data"}}
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def read_infer_request(request: Request, max_body_bytes: int) -> InferenceRequest:
    body = _decompress(await request.body(), request.headers.get("content-encoding"), max_body_bytes)
    return parse_request(body, request.headers.get(INFER_HEADER))


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before Content-Encoding, bounded by the same size limit as plain bodies."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in _WBITS:
        raise InferError(415, f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none")
    inflater = zlib.decompressobj(_WBITS[name])
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise InferError(400, f"the request body is not valid {name} data") from None
    if len(out) > limit:
        raise InferError(413, f"the decompressed request body is larger than {limit} bytes")
    if not inflater.eof:
        raise InferError(400, f"the {name} request body is truncated")
    return out


def infer_response(response: InferenceResponse) -> Response:
    body, header_length = render_response(response)
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream", headers={INFER_HEADER: str(header_length)})


def _add_schemas(app: FastAPI, *models: type) -> None:
    """Put models that no route parses (the raw-body infer request) into the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            if model.__name__ not in schemas:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schemas[model.__name__] = schema
        return doc

    app.openapi = openapi


def _base_app(title: str, **kwargs) -> FastAPI:
    app = FastAPI(title=title, version=SERVER_VERSION, default_response_class=_JSON, **kwargs)

    @app.exception_handler(InferError)
    async def _infer_error(_: Request, exc: InferError):
        return _error(exc.status, exc.message, exc.retry_after_s)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        return _error(400, validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException):
        status = 400 if exc.status_code == 422 else exc.status_code
        return _error(status, str(exc.detail))

    return app


def build_model_app(runtime, *, token_sha256: str | None = None, max_body_bytes: int = 8 << 20) -> Any:
    """The routes of one model, relative to where it is mounted (/v2/models/<name>)."""
    app = _base_app(f"{SERVER_NAME} model {runtime.name}", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("", response_model=ModelMetadata, responses=_ERRORS, include_in_schema=False)
    @app.get("/", response_model=ModelMetadata, responses=_ERRORS)
    async def metadata():
        return runtime.metadata()

    @app.get("/ready", responses=_ERRORS)
    async def ready():
        return _ready(runtime.ready())

    @app.post("/infer", response_model=InferenceResponse, responses={**_INFER_OK, **_ERRORS},
              openapi_extra=_INFER_BODY)
    async def infer(request: Request):
        return infer_response(await runtime.infer(await read_infer_request(request, max_body_bytes)))

    @app.get("/versions/{version}", response_model=ModelMetadata, responses=_ERRORS)
    async def version_metadata(version: str):
        return runtime.metadata(version)

    @app.get("/versions/{version}/ready", responses=_ERRORS)
    async def version_ready(version: str):
        return _ready(runtime.ready(version))

    @app.post("/versions/{version}/infer", response_model=InferenceResponse, responses={**_INFER_OK, **_ERRORS},
              openapi_extra=_INFER_BODY)
    async def version_infer(version: str, request: Request):
        return infer_response(await runtime.infer(await read_infer_request(request, max_body_bytes), version))

    @app.get("/status", responses=_ERRORS)
    async def status():
        return runtime.status()

    return Guard(InferFastPath(app, runtime, max_body_bytes), token_sha256=token_sha256, max_body_bytes=max_body_bytes)


class InferFastPath:
    """ASGI: `POST .../infer` answered straight from the raw request, every other route by the FastAPI app.

    The infer routes are the hot path; FastAPI's routing, dependency solving and middleware stack cost more
    per request than parsing the body and batching do (measured with py-spy on a replica under load). The
    FastAPI routes stay declared, so the OpenAPI document and every other endpoint are unchanged, and
    answers are the same bytes: the InferenceResponse, or `{"error": ...}` with its status (and Retry-After).
    """

    def __init__(self, app, runtime, max_body_bytes: int) -> None:
        self.app = app
        self.runtime = runtime
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        version = infer_version(_route_path(scope))
        if version is False:
            return await self.app(scope, receive, send)
        try:
            body = await _read_body(receive)
            headers = dict(scope.get("headers") or [])
            encoding = headers.get(b"content-encoding")
            body = _decompress(body, encoding.decode("latin-1") if encoding else None, self.max_body_bytes)
            if headers.get(b"content-type") == GROUP_TYPE:  # the gRPC router's coalesced ModelInfer calls
                return await self._grpc_group(body, send)
            infer_header = headers.get(INFER_HEADER.lower().encode())
            request = parse_request(body, infer_header.decode("latin-1") if infer_header else None)
            response = await self.runtime.infer(request, version)
        except InferError as exc:
            extra = {"retry-after": str(max(1, round(exc.retry_after_s)))} if exc.retry_after_s is not None else None
            return await _send_error(send, exc.status, exc.message, extra)
        except HTTPException as exc:  # the Guard's body limit on a chunked body
            return await _send_error(send, exc.status_code, str(exc.detail))
        out, header_length = render_response(response)
        headers = [(b"content-length", str(len(out)).encode())]
        if header_length is None:
            headers.append((b"content-type", b"application/json"))
        else:
            headers += [(b"content-type", b"application/octet-stream"),
                        (INFER_HEADER.lower().encode(), str(header_length).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})


    async def _grpc_group(self, body: bytes, send) -> None:
        from serve import _grpc

        out = _grpc.pack_results(await _grpc.infer_many(self.runtime, _grpc.unpack_group(body)))
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(out)).encode()), (b"content-type", GROUP_TYPE)]})
        await send({"type": "http.response.body", "body": out})


GROUP_TYPE = b"application/x-optiserve-grpc-group"


def _route_path(scope) -> str:
    """The path relative to where the app is mounted (as Starlette computes it)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root):]
    return path


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InferError(400, "the client disconnected before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks) if len(chunks) > 1 else chunks[0]


def _ready(ok: bool) -> JSONResponse:
    # KServe v2: readiness is the status code, 200 for true and 4xx for false
    return _JSON({"ready": ok}, status_code=200 if ok else 400)


def build_server_app(
    models: Callable[[], list[str]], ready: Callable[[], Awaitable[bool]], *,
    token_sha256: str | None = None, max_body_bytes: int = 8 << 20,
) -> Any:
    """/v2 metadata, health, and 404 for models that are not served; its OpenAPI document covers every route."""
    app = _base_app(
        f"{SERVER_NAME} (Open Inference Protocol / KServe v2 REST)",
        description="Models of a model repository served with dynamic batching on Ray Serve.",
    )

    @app.get("/v2", response_model=ServerMetadata, responses=_ERRORS)
    async def server_metadata():
        return ServerMetadata(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    @app.get("/v2/health/live", responses=_ERRORS)
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", responses=_ERRORS)
    async def server_ready():
        return _ready(await ready())

    def unknown(model_name: str):
        served = ", ".join(models()) or "none"
        raise InferError(404, f"model {model_name!r} is not served (served: {served})")

    # Requests for served models never reach these: Ray Serve routes /v2/models/<name> to the model's app.
    @app.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=_ERRORS)
    async def model_metadata(model_name: str):
        unknown(model_name)

    @app.get("/v2/models/{model_name}/ready", responses=_ERRORS)
    async def model_ready(model_name: str):
        unknown(model_name)

    @app.post("/v2/models/{model_name}/infer", response_model=InferenceResponse,
              responses={**_INFER_OK, **_ERRORS}, openapi_extra=_INFER_BODY)
    async def model_infer(model_name: str):
        unknown(model_name)

    @app.get("/v2/models/{model_name}/versions/{version}", response_model=ModelMetadata, responses=_ERRORS)
    async def version_metadata(model_name: str, version: str):
        unknown(model_name)

    @app.get("/v2/models/{model_name}/versions/{version}/ready", responses=_ERRORS)
    async def version_ready(model_name: str, version: str):
        unknown(model_name)

    @app.post("/v2/models/{model_name}/versions/{version}/infer", response_model=InferenceResponse,
              responses={**_INFER_OK, **_ERRORS}, openapi_extra=_INFER_BODY)
    async def version_infer(model_name: str, version: str):
        unknown(model_name)

    @app.get("/v2/models/{model_name}/status", responses=_ERRORS)
    async def model_status(model_name: str):
        unknown(model_name)

    _add_schemas(app, InferenceRequest)
    return Guard(app, token_sha256=token_sha256, max_body_bytes=max_body_bytes)


class Dispatcher:
    """Longest-prefix routing of paths to ASGI apps, as Ray Serve's proxy does (for in-process tests)."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = sorted(routes.items(), key=lambda kv: -len(kv[0]))

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        for prefix, app in self.routes:
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                if prefix != "/":
                    scope = {**scope, "root_path": scope.get("root_path", "") + prefix}
                return await app(scope, receive, send)
