"""Open Inference Protocol (KServe v2 REST) messages (`serve._messages`) to and from numpy arrays.

Pure: no Ray, no HTTP. Everything a client can get wrong (tensor names, datatypes, shapes, element
counts, value types, binary sizes) is checked here and raised as `InferError(400, ...)`, so a bad request
can never reach onnxruntime or a batch shared with other clients.

Bodies are JSON, or JSON followed by raw tensor bytes (Triton's binary tensor data extension,
docs/protocol/extension_binary_data.md in triton-inference-server/server): the JSON part is
`Inference-Header-Content-Length` bytes long, each binary input says its size in
`parameters.binary_data_size`, and its bytes follow in input order (little-endian, row-major; BOOL one
byte; BYTES elements each a 4-byte little-endian length then the bytes). Outputs go back the same way
when the request asks (`binary_data` per output, or `binary_data_output` for all).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
from pydantic import ValidationError

from optiserve.repository import TensorSpec
from serve._json_tensors import parse_large
from serve._messages import (
    MAX_DIMS,
    InferenceRequest,
    InferenceResponse,
    InferError,
    MetadataTensor,
    RequestInput,
    ResponseOutput,
)

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_KINDS = {"b": "b", "u": "bui", "i": "bui", "f": "buif"}  # numpy kinds of JSON values accepted per target kind


def batchable(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> bool:
    """Requests can be merged along axis 0 only when every input and output has a dynamic leading axis."""
    return all(s.shape and s.shape[0] == -1 for s in [*inputs, *outputs])


# ---- request bodies ---------------------------------------------------------------------------------


def parse_request(body: bytes, header_length: str | None = None) -> InferenceRequest:
    """The request in an HTTP body, whatever its Content-Type: JSON alone, or JSON then binary tensor data."""
    size = _header_size(header_length, len(body))
    header = body if size is None else body[:size]
    request = parse_large(header)
    if request is None:
        try:
            request = InferenceRequest.model_validate_json(header)
        except ValidationError as exc:
            raise InferError(400, validation_message(exc.errors(include_url=False))) from None
    _attach_binary(request, memoryview(body)[len(body) if size is None else size:])
    return request


def validation_message(errors: list[dict[str, Any]]) -> str:
    """pydantic's first complaint as one sentence, e.g. `invalid request: inputs.0.shape: Field required`."""
    if not errors:
        return "invalid request"
    err = errors[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    return f"invalid request: {loc}: {err.get('msg', 'invalid')}" if loc else f"invalid request: {err.get('msg')}"


def _header_size(value: str | None, body_len: int) -> int | None:
    if value is None:
        return None
    if not value.strip().isdigit():
        raise InferError(400, f"the Inference-Header-Content-Length header must be a byte count, got {value[:40]!r}")
    size = int(value)
    if size > body_len:
        raise InferError(400, f"the Inference-Header-Content-Length header ({size}) is larger than the body "
                              f"({body_len} bytes)")
    return size


def _param(params: dict[str, Any] | None, key: str, kind: type, where: str) -> Any:
    """A typed parameter or None; bools are not ints here (JSON true is not a size)."""
    value = (params or {}).get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) or (kind is int and value < 0):
        what = "true or false" if kind is bool else "a non-negative integer"
        raise InferError(400, f"{where}: parameters.{key} must be {what}, got {value!r}")
    return value


def _attach_binary(request: InferenceRequest, binary: memoryview) -> None:
    """Give each input that declares binary_data_size its slice of the bytes after the JSON header."""
    offset = 0
    for tensor in request.inputs:
        where = f"input {tensor.name!r}"
        size = _param(tensor.parameters, "binary_data_size", int, where)
        if size is None:
            if tensor.data is None:
                raise InferError(400, f"{where} has neither data nor parameters.binary_data_size")
            continue
        if tensor.data is not None:
            raise InferError(400, f"{where} has both data and parameters.binary_data_size; send one of them")
        if offset + size > len(binary):
            raise InferError(400, f"{where} declares {size} bytes of binary data but only {len(binary) - offset} "
                                  "remain after the JSON header (check Inference-Header-Content-Length)")
        tensor._raw = binary[offset:offset + size]
        offset += size
    if offset != len(binary):
        raise InferError(400, f"the body has {len(binary) - offset} bytes after the JSON header that no input "
                              "claims with parameters.binary_data_size")


# ---- inputs -----------------------------------------------------------------------------------------


def decode_inputs(
    request: InferenceRequest, specs: list[TensorSpec], *, split_rows: bool
) -> tuple[dict[str, np.ndarray], int]:
    """Validate the request's tensors against the model's inputs; returns (arrays by name, rows).

    `rows` is the common leading dimension when `split_rows` (a batchable model), else 1.
    """
    by_name = {s.name: s for s in specs}
    arrays: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = by_name.get(tensor.name)
        if spec is None:
            raise InferError(400, f"unknown input {tensor.name!r}; the model's inputs are {sorted(by_name)}")
        if tensor.name in arrays:
            raise InferError(400, f"input {tensor.name!r} is given more than once")
        arrays[tensor.name] = _decode_tensor(tensor, spec)
    missing = sorted(set(by_name) - set(arrays))
    if missing:
        raise InferError(400, f"missing input(s) {missing}")
    if not split_rows:
        return arrays, 1
    rows = {a.shape[0] for a in arrays.values()}
    if len(rows) != 1:
        raise InferError(400, f"all inputs must have the same number of rows (axis 0), got {sorted(rows)}")
    n = rows.pop()
    if n == 0:
        raise InferError(400, "the request has no rows (axis 0 is 0)")
    return arrays, n


def _decode_tensor(tensor: RequestInput, spec: TensorSpec) -> np.ndarray:
    name = tensor.name
    if tensor.datatype != spec.datatype:
        raise InferError(400, f"input {name!r} has datatype {tensor.datatype}, the model expects {spec.datatype}")
    dtype = DTYPES.get(spec.datatype)
    if dtype is None and spec.datatype != "BYTES":
        raise InferError(400, f"input {name!r} has datatype {spec.datatype}, which this server cannot decode")
    shape = tensor.shape
    fits = len(shape) == len(spec.shape) and all(
        d >= 0 and s in (-1, d) for d, s in zip(shape, spec.shape, strict=True)
    )
    if not fits:
        raise InferError(400, f"input {name!r} has shape {shape}, the model expects {_fmt(spec.shape)}")
    if tensor.raw is not None:
        return _decode_binary(name, tensor.raw, spec.datatype, shape)
    if tensor.values is not None:
        return _checked(name, tensor.values, dtype, spec.datatype, shape)
    if dtype is None:
        return _decode_json_bytes(name, tensor.data, shape)
    return _decode_json(name, tensor.data, dtype, spec.datatype, shape)


def _decode_json(name: str, data: list[Any], dtype: np.dtype, datatype: str, shape: list[int]) -> np.ndarray:
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InferError(400, f"input {name!r}: data must be a flat or regularly nested list of numbers") from None
    return _checked(name, values, dtype, datatype, shape)


def _checked(name: str, values: np.ndarray, dtype: np.dtype, datatype: str, shape: list[int]) -> np.ndarray:
    """JSON values (as numpy inferred them) as the model's dtype and shape, or the 400 that says what is wrong."""
    count = math.prod(shape)
    if values.size != count:
        raise InferError(400, f"input {name!r} has {values.size} elements, shape {shape} needs {count}")
    if count == 0:
        return np.zeros(shape, dtype)
    if values.dtype.kind not in _KINDS[dtype.kind]:
        what = "true/false" if dtype.kind == "b" else "integers" if dtype.kind in "iu" else "numbers"
        raise InferError(400, f"input {name!r} ({datatype}) must contain {what} only")
    if dtype.kind in "iu" and values.dtype != np.bool_:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise InferError(400, f"input {name!r} has values outside the {datatype} range")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InferError(400, f"input {name!r} contains NaN or infinity")
    with np.errstate(over="ignore"):
        return values.astype(dtype, copy=False).reshape(shape)


def _decode_json_bytes(name: str, data: list[Any], shape: list[int]) -> np.ndarray:
    """BYTES in JSON are strings (Triton's convention); ONNX string tensors take them as str."""
    flat = _flatten(data)
    if flat is None or not all(isinstance(v, str) for v in flat):
        raise InferError(400, f"input {name!r} (BYTES) must be a flat or nested list of strings")
    count = math.prod(shape)
    if len(flat) != count:
        raise InferError(400, f"input {name!r} has {len(flat)} elements, shape {shape} needs {count}")
    return _object_array(flat, shape)


def _flatten(data: list[Any], depth: int = 0) -> list[Any] | None:
    if depth > MAX_DIMS:
        return None
    out: list[Any] = []
    for v in data:
        if isinstance(v, list):
            inner = _flatten(v, depth + 1)
            if inner is None:
                return None
            out.extend(inner)
        else:
            out.append(v)
    return out


def _object_array(values: list[Any], shape: list[int]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr.reshape(shape)


def _decode_binary(name: str, raw: memoryview, datatype: str, shape: list[int]) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        return _object_array(_split_bytes(name, raw, count), shape)
    dtype = DTYPES[datatype]
    need = count * dtype.itemsize
    if len(raw) != need:
        raise InferError(400, f"input {name!r} has binary_data_size {len(raw)}, but shape {shape} of {datatype} "
                              f"needs {need} bytes")
    if dtype.kind == "b":
        as_bytes = np.frombuffer(raw, np.uint8)
        if count and as_bytes.max() > 1:
            raise InferError(400, f"input {name!r} (BOOL) must contain bytes 0 or 1 only")
    values = np.frombuffer(raw, dtype.newbyteorder("<"))
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InferError(400, f"input {name!r} contains NaN or infinity")
    # a private, aligned, native-order copy: the body's buffer is read-only and offsets are arbitrary
    return values.astype(dtype, copy=True).reshape(shape)


def _split_bytes(name: str, raw: memoryview, count: int) -> list[str]:
    """BYTES elements: a 4-byte little-endian length, then that many bytes; exactly `count` of them."""
    out: list[str] = []
    offset, end = 0, len(raw)
    while offset < end:
        if len(out) == count:
            raise InferError(400, f"input {name!r} has bytes beyond its {count} BYTES elements")
        if offset + 4 > end:
            raise InferError(400, f"input {name!r}: BYTES element {len(out)} has a truncated length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > end:
            raise InferError(400, f"input {name!r}: BYTES element {len(out)} declares {size} bytes but only "
                                  f"{end - offset} remain")
        try:
            out.append(str(raw[offset:offset + size], "utf-8"))
        except UnicodeDecodeError:
            raise InferError(400, f"input {name!r}: BYTES element {len(out)} is not UTF-8 text, which ONNX string "
                                  "tensors need") from None
        offset += size
    if len(out) != count:
        raise InferError(400, f"input {name!r} has {len(out)} BYTES elements, shape needs {count}")
    return out


def _fmt(shape: list[int]) -> str:
    return "[" + ", ".join("any" if d == -1 else str(d) for d in shape) + "]"


# ---- outputs ----------------------------------------------------------------------------------------


def check_requested(request: InferenceRequest, specs: list[TensorSpec]) -> list[tuple[str, bool]]:
    """(name, as binary) of each output to return: the requested ones, or all in the model's order."""
    default = _param(request.parameters, "binary_data_output", bool, "the request") or False
    if not request.outputs:
        return [(s.name, default) for s in specs]
    known = {s.name for s in specs}
    unknown = sorted({o.name for o in request.outputs} - known)
    if unknown:
        raise InferError(400, f"unknown output(s) {unknown}; the model's outputs are {sorted(known)}")
    wanted = []
    for out in request.outputs:
        binary = _param(out.parameters, "binary_data", bool, f"output {out.name!r}")
        wanted.append((out.name, default if binary is None else binary))
    return wanted


def encode_outputs(
    outputs: dict[str, np.ndarray], specs: list[TensorSpec], wanted: list[tuple[str, bool]]
) -> list[ResponseOutput]:
    """The model's outputs as v2 tensors: flat row-major JSON data, or binary data with its size."""
    datatypes = {s.name: s.datatype for s in specs}
    result = []
    for name, binary in wanted:
        arr = np.asarray(outputs[name])
        out = ResponseOutput(name=name, shape=list(arr.shape), datatype=datatypes[name])
        if binary:
            raw = out._raw = _tensor_bytes(arr, datatypes[name])
            out.parameters = {"binary_data_size": len(raw)}
        elif datatypes[name] == "BYTES":
            out.data = [_text(v) for v in arr.ravel().tolist()]
        else:
            out.data = arr.ravel().tolist()
        result.append(out)
    return result


def _tensor_bytes(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = [v if isinstance(v, bytes) else _text(v).encode() for v in arr.ravel().tolist()]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    return np.ascontiguousarray(arr, DTYPES[datatype].newbyteorder("<")).tobytes()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else str(value)


def render_response(response: InferenceResponse) -> tuple[bytes, int | None]:
    """(body, JSON header length): the header length is None when no output is binary (a plain JSON body)."""
    header = response.model_dump_json(exclude_none=True).encode()
    raws = [o.raw for o in response.outputs if o.raw is not None]
    if not raws:
        return header, None
    return b"".join([header, *raws]), len(header)


def metadata_tensors(specs: list[TensorSpec]) -> list[MetadataTensor]:
    return [MetadataTensor(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in specs]
