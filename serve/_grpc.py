"""Open Inference Protocol over gRPC (KServe v2 `inference.GRPCInferenceService`) to and from serve._messages.

Pure: no Ray, no server. A `ModelInferRequest` becomes the same `InferenceRequest` the HTTP path builds, so
every check (names, datatypes, shapes, sizes, ranges, UTF-8) is serve/_codec.py's, once:
`raw_input_contents` are handed to the codec as binary tensor data (the same little-endian layout, BYTES
elements each a 4-byte little-endian length then the bytes, as Triton's HTTP binary extension), BYTES typed
`contents` are laid out that way too, and numeric typed `contents` go through the codec's JSON-value checks.
Answers carry `raw_output_contents` (what Triton's client reads). An `InferError`'s HTTP status maps to a gRPC
status code: a client's mistake is never INTERNAL.

The messages are Triton's generated ones (`tritonclient.grpc.service_pb2`), so the wire format is exactly what
Triton's clients speak.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import struct
from collections.abc import Iterable
from typing import Any

import grpc
from pydantic import ValidationError

from serve._codec import validation_message
from serve._messages import InferenceRequest, InferenceResponse, InferError, ModelMetadata, RequestInput, RequestOutput

try:
    from tritonclient.grpc import service_pb2 as pb
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("serving gRPC needs Triton's generated messages: pip install 'tritonclient[grpc]'") from exc

SERVICE = "inference.GRPCInferenceService"
# The typed `contents` field each datatype's values travel in (KServe v2 gRPC); FP16/BF16 have none: raw only.
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
# An InferError's HTTP status as the gRPC status a client sees.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED, 404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_code(http_status: int) -> grpc.StatusCode:
    if http_status in STATUS_CODES:
        return STATUS_CODES[http_status]
    return grpc.StatusCode.INVALID_ARGUMENT if 400 <= http_status < 500 else grpc.StatusCode.INTERNAL


def authorized(metadata: Iterable[tuple[str, Any]] | None, token_sha256: str | None) -> bool:
    """Whether the call's `authorization: Bearer <token>` metadata matches (compared by sha256, constant time)."""
    if not token_sha256:
        return True
    value = next((v for k, v in metadata or () if k.lower() == "authorization"), None)
    if value is None:
        return False
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    scheme, _, token = text.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(hashlib.sha256(token.strip().encode()).hexdigest(), token_sha256)


# ---- requests ---------------------------------------------------------------------------------------


def parse_infer(raw: bytes) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest()
    try:
        message.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError differs between its implementations
        raise InferError(400, "the ModelInferRequest message cannot be parsed") from None
    return message


def infer_model_name(raw: bytes) -> str:
    """A ModelInferRequest's `model_name` (field 1) without parsing the message: read from the front, where
    protobuf writers (Triton's clients, grpcio, upb) put field 1; a message laid out otherwise is parsed."""
    if len(raw) >= 2 and raw[0] == 0x0A and raw[1] < 0x80 and 2 + raw[1] <= len(raw):  # field 1, short length
        end = 2 + raw[1]
        try:
            return raw[2:end].decode()
        except UnicodeDecodeError:
            pass
    return parse_infer(raw).model_name if raw else ""


def infer_request(message: pb.ModelInferRequest) -> tuple[InferenceRequest, str | None]:
    """(request, version or None for the default) with every tensor's bytes attached for the codec to check."""
    raws = message.raw_input_contents
    if raws and len(raws) != len(message.inputs):
        raise InferError(400, f"raw_input_contents has {len(raws)} entries but the request has "
                              f"{len(message.inputs)} inputs: send one per input, in order, or none")
    try:
        inputs = [_input(tensor, raws[i] if raws else None) for i, tensor in enumerate(message.inputs)]
        outputs = [RequestOutput(name=o.name) for o in message.outputs] or None
        request = InferenceRequest(
            id=message.id or None, inputs=inputs, outputs=outputs,
            parameters={"binary_data_output": True},  # every output comes back as raw_output_contents
        )
    except ValidationError as exc:
        raise InferError(400, validation_message(exc.errors(include_url=False))) from None
    return request, message.model_version or None


def _input(tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None) -> RequestInput:
    where = f"input {tensor.name!r}"
    has_contents = tensor.HasField("contents")
    if raw is not None and has_contents and tensor.contents.ListFields():
        raise InferError(400, f"{where} has both contents and raw_input_contents; send one of them")
    item = RequestInput(name=tensor.name, shape=list(tensor.shape), datatype=tensor.datatype)
    if raw is not None:
        item._raw = memoryview(raw)
        return item
    expected = CONTENTS_FIELD.get(tensor.datatype)
    given = [field.name for field, _ in tensor.contents.ListFields()] if has_contents else []
    if given and given != [expected]:
        uses = f"uses {expected}" if expected else "has no typed contents field: send raw_input_contents"
        raise InferError(400, f"{where} carries its values in {', '.join(given)}, but {tensor.datatype} {uses}")
    values = getattr(tensor.contents, expected) if expected else ()
    if tensor.datatype == "BYTES":  # laid out as the binary extension does, so the codec checks count and UTF-8
        item._raw = memoryview(b"".join(struct.pack("<I", len(v)) + v for v in values))
    else:
        item.data = list(values)  # the codec checks count, kind and range as for JSON values
    return item


# ---- responses --------------------------------------------------------------------------------------


def infer_response(response: InferenceResponse) -> pb.ModelInferResponse:
    """The answer with each output's bytes in raw_output_contents (outputs were asked for as binary)."""
    message = pb.ModelInferResponse(
        model_name=response.model_name, model_version=response.model_version or "", id=response.id or "",
    )
    for out in response.outputs:
        message.outputs.add(name=out.name, datatype=out.datatype, shape=out.shape)
        if out.raw is None:
            raise ValueError(f"output {out.name!r} was not encoded as binary data")
        message.raw_output_contents.append(out.raw)
    return message


def model_metadata(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=meta.name, versions=meta.versions, platform=meta.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
    )


def server_metadata(name: str, version: str, extensions: list[str]) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=name, version=version, extensions=extensions)


# ---- groups: the router's coalesced ModelInfer calls, to and from a model replica over HTTP -------------

GROUP_CONTENT_TYPE = "application/x-optiserve-grpc-group"
Result = tuple[int, bytes | str, float | None]  # (HTTP-style status, payload or message, retry-after s)
_LEN = struct.Struct("<I")
GROUP_FRAMING = _LEN.size  # bytes a group adds per message
_RESULT = struct.Struct("<HdI")  # status, retry-after (NaN: none), payload length


def pack_group(raws: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(raw)) + raw for raw in raws)


def unpack_group(body: bytes) -> list[bytes]:
    view, out, at = memoryview(body), [], 0
    while at < len(body):
        if at + 4 > len(body):
            raise InferError(400, "a truncated gRPC group")
        (n,) = _LEN.unpack_from(body, at)
        at += 4
        if at + n > len(body):
            raise InferError(400, "a truncated gRPC group")
        out.append(bytes(view[at:at + n]))
        at += n
    return out


def pack_results(results: list[Result]) -> bytes:
    parts = []
    for status, payload, retry in results:
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        parts.append(_RESULT.pack(status, math.nan if retry is None else retry, len(data)) + data)
    return b"".join(parts)


def unpack_results(body: bytes) -> list[Result]:
    out, at = [], 0
    while at < len(body):
        status, retry, n = _RESULT.unpack_from(body, at)
        at += _RESULT.size
        data = body[at:at + n]
        at += n
        out.append((status, data if status == 200 else data.decode(errors="replace"),
                    None if math.isnan(retry) else retry))
    return out


async def infer_many(runtime, raws: list[bytes]) -> list[Result]:
    """A group of ModelInfer requests the router coalesced: submitted to the batcher together (so they can
    share batches), one answer per request, in order; one request's mistake is its own answer."""
    async def one(raw: bytes) -> Result:
        try:
            request, version = infer_request(parse_infer(raw))
            # the router's group is the batch-to-be: it does not also wait for batch_wait_timeout_ms
            response = await runtime.infer(request, version, wait=False)
            return 200, infer_response(response).SerializeToString(), None
        except InferError as exc:
            return exc.status, exc.message, exc.retry_after_s
        except Exception:  # a failure of this request alone must not fail the others of its group
            logging.getLogger("optiserve.serve").exception("gRPC inference failed")
            return 500, "internal error (see the model replica's log)", None

    if len(raws) == 1:
        return [await one(raws[0])]
    return list(await asyncio.gather(*(one(raw) for raw in raws)))
