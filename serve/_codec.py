"""Open Inference Protocol (KServe v2 REST) messages and their translation to and from numpy arrays.

Pure: no Ray, no HTTP. Everything a client can get wrong (tensor names, datatypes, shapes, element
counts, value types) is checked here and raised as `InferError(400, ...)`, so a bad request can never
reach onnxruntime or a batch shared with other clients.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from optimize.repository import TensorSpec

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
_KINDS = {"b": "b", "u": "bui", "i": "bui", "f": "buif"}  # numpy kinds of JSON values accepted per target kind
MAX_DIMS = 16


class InferError(Exception):
    """A request that cannot be answered; `status` is the HTTP status code."""

    def __init__(self, status: int, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


class RequestInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(max_length=256)
    shape: list[int] = Field(max_length=MAX_DIMS)
    datatype: str = Field(max_length=16)
    data: list[Any]
    parameters: dict[str, Any] | None = None


class RequestOutput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(max_length=256)
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str | None = Field(None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=64)
    outputs: list[RequestOutput] | None = Field(None, max_length=64)


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[Any]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = "onnxruntime_onnx"
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ErrorResponse(BaseModel):
    error: str


def batchable(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> bool:
    """Requests can be merged along axis 0 only when every input and output has a dynamic leading axis."""
    return all(s.shape and s.shape[0] == -1 for s in [*inputs, *outputs])


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
    if dtype is None:
        raise InferError(400, f"input {name!r} has datatype {spec.datatype}, which this server cannot decode")
    shape = tensor.shape
    fits = len(shape) == len(spec.shape) and all(
        d >= 0 and s in (-1, d) for d, s in zip(shape, spec.shape, strict=True)
    )
    if not fits:
        raise InferError(400, f"input {name!r} has shape {shape}, the model expects {_fmt(spec.shape)}")
    count = math.prod(shape)
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InferError(400, f"input {name!r}: data must be a flat or regularly nested list of numbers") from None
    if values.size != count:
        raise InferError(400, f"input {name!r} has {values.size} elements, shape {shape} needs {count}")
    if count == 0:
        return np.zeros(shape, dtype)
    if values.dtype.kind not in _KINDS[dtype.kind]:
        what = "true/false" if dtype.kind == "b" else "integers" if dtype.kind in "iu" else "numbers"
        raise InferError(400, f"input {name!r} ({spec.datatype}) must contain {what} only")
    if dtype.kind in "iu" and values.dtype != np.bool_:
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise InferError(400, f"input {name!r} has values outside the {spec.datatype} range")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InferError(400, f"input {name!r} contains NaN or infinity")
    with np.errstate(over="ignore"):
        return values.astype(dtype, copy=False).reshape(shape)


def _fmt(shape: list[int]) -> str:
    return "[" + ", ".join("any" if d == -1 else str(d) for d in shape) + "]"


def check_requested(request: InferenceRequest, specs: list[TensorSpec]) -> list[str] | None:
    """Names of the outputs the client asked for (None: all), each checked to exist."""
    if not request.outputs:
        return None
    known = {s.name for s in specs}
    names = [o.name for o in request.outputs]
    unknown = sorted(set(names) - known)
    if unknown:
        raise InferError(400, f"unknown output(s) {unknown}; the model's outputs are {sorted(known)}")
    return names


def encode_outputs(
    outputs: dict[str, np.ndarray], specs: list[TensorSpec], requested: list[str] | None
) -> list[ResponseOutput]:
    """The model's outputs as v2 JSON tensors (flat row-major data), in the model's or the requested order."""
    datatypes = {s.name: s.datatype for s in specs}
    names = requested or [s.name for s in specs]
    result = []
    for name in names:
        arr = np.asarray(outputs[name])
        result.append(ResponseOutput(name=name, shape=list(arr.shape), datatype=datatypes[name],
                                     data=arr.ravel().tolist()))
    return result


def metadata_tensors(specs: list[TensorSpec]) -> list[MetadataTensor]:
    return [MetadataTensor(name=s.name, datatype=s.datatype, shape=list(s.shape)) for s in specs]
