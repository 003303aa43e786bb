"""Open Inference Protocol (KServe v2 REST) messages as pydantic models, and the error every check raises.
Translating them to and from numpy arrays is `serve._codec`'s."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

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
    data: list[Any] | None = None  # absent when the tensor is sent as binary data
    parameters: dict[str, Any] | None = None
    _raw: memoryview | None = PrivateAttr(None)
    _values: Any = PrivateAttr(None)

    @property
    def raw(self) -> memoryview | None:
        """The tensor's bytes when it came as binary data (Triton's extension, gRPC raw contents), else None."""
        return self.__pydantic_private__["_raw"]  # pydantic's own lookup (`__getattr__`) costs ~2.5 us a read

    @property
    def values(self) -> Any:
        """A large JSON body's flat float data as a float64 array (`serve._json_tensors`); `data` is then []."""
        return self.__pydantic_private__["_values"]


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
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None
    _raw: bytes | None = PrivateAttr(None)

    @property
    def raw(self) -> bytes | None:
        """The tensor's bytes when it is answered as binary data, else None."""
        return self.__pydantic_private__["_raw"]  # as RequestInput.raw


class InferenceResponse(BaseModel):
    # NaN/inf outputs are written as JSON's NaN/Infinity constants (as before), never turned into a 500
    model_config = ConfigDict(ser_json_inf_nan="constants")
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
