"""The serving configuration: a YAML file the user writes, parsed with pydantic so mistakes are one clear sentence.

    defaults:                 # applies to every model unless the model overrides it
      max_batch_size: 32      # rows merged into one onnxruntime call
      batch_wait_timeout_ms: 2
      max_queue: 256          # waiting requests per replica; beyond it: 503 + Retry-After
      num_replicas: 1         # or `autoscaling: {...}` (a Ray Serve autoscaling_config)
      cpus: 1                 # Ray CPUs per replica; onnxruntime threads default to this
    models:
      mlp: {version: "2", max_batch_size: 64}       # pin a version
      cnn: {device: cuda, gpus: 0.5}                # a GPU replica (half a GPU)
      big: {device: cuda, gpus: 1, tensorrt: true, batch_buckets: [1, 8, 32], gpu_mem_limit: 8589934592}
    max_body_bytes: 8388608   # larger request bodies get 413
    auth_token_env: OPTISERVE_TOKEN                 # or auth_token_file: /path/to/token
    poll_interval_s: 5        # how often replicas look for new versions in the repository
    ingress: haproxy          # haproxy: Ray Serve's direct ingress behind HAProxy (fast); proxy: Serve's Python proxy
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optiserve.config import read_mapping
from optiserve.errors import UserError
from optiserve.repository import check_name, check_version
from serve._batching import power_of_two_buckets


class ModelConfig(BaseModel):
    """How one model is served. Every field has a default, so an empty config serves everything sensibly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch_size: int = Field(32, ge=1, le=65536)
    batch_wait_timeout_ms: float = Field(2.0, ge=0, le=10_000)
    max_queue: int = Field(256, ge=1, le=1_000_000)
    num_replicas: int = Field(1, ge=1, le=1024)
    autoscaling: dict[str, Any] | None = None  # a Ray Serve autoscaling_config; overrides num_replicas
    cpus: float = Field(1.0, gt=0, le=1024)
    threads: int | None = Field(None, ge=1, le=1024)  # onnxruntime intra-op threads; default: round(cpus)
    gpus: float = Field(0.0, ge=0, le=64)
    device: Literal["cpu", "cuda"] = "cpu"
    version: str | None = None  # pin: serve exactly this version (no automatic roll-out)
    max_versions: int = Field(2, ge=1, le=64)  # newest loadable versions kept loaded for named requests
    # Shape-stable batching: merged batches padded up to one of these sizes (serve/_batching.py). "auto":
    # 1, 2, 4, ... up to max_batch_size on cuda (each new shape costs a cuDNN algorithm search there), off on
    # cpu (CPU onnxruntime has no per-shape cost, padding would only waste compute). A list must be strictly
    # increasing and end at max_batch_size; a single request above it runs at its own size.
    batch_buckets: Literal["auto", "off"] | tuple[int, ...] = "auto"
    # onnxruntime CUDAExecutionProvider options (device: cuda only). HEURISTIC, not onnxruntime's EXHAUSTIVE:
    # measured on an H100, a new batch size cost ~240 ms with EXHAUSTIVE and ~56 ms with HEURISTIC.
    cudnn_conv_algo_search: Literal["HEURISTIC", "EXHAUSTIVE", "DEFAULT"] = "HEURISTIC"
    arena_extend_strategy: Literal["kNextPowerOfTwo", "kSameAsRequested"] = "kNextPowerOfTwo"
    gpu_mem_limit: int | None = Field(None, ge=1 << 20)  # bytes per loaded version's GPU arena; None: no limit
    device_id: int = Field(0, ge=0, le=63)  # among the GPUs Ray gave the replica (it numbers them from 0)
    # TensorrtExecutionProvider first (CUDA behind it), engines cached on disk: in tensorrt_cache/<model>/<version>,
    # default <repository>/<model>/.trt-cache/<version>. Falls back to CUDA (one log line) when TensorRT fails.
    tensorrt: bool = False
    tensorrt_cache: Path | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        return None if v is None else _checked(check_version, v)

    @field_validator("batch_buckets", mode="before")
    @classmethod
    def _bucket_kind(cls, v: Any) -> Any:
        if v is False:  # YAML reads an unquoted `off` as false
            return "off"
        sizes = isinstance(v, list | tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        if not (sizes or v in ("auto", "off")):
            raise ValueError(f'batch_buckets is "auto", "off" or a list of batch sizes such as [1, 8, 32]; got {v!r}')
        return v

    @model_validator(mode="after")
    def _device(self) -> ModelConfig:
        if self.device == "cuda" and self.gpus <= 0:
            raise ValueError("device cuda needs gpus > 0 (a fraction such as 0.5 shares a GPU)")
        if self.device == "cpu" and self.gpus > 0:
            raise ValueError("gpus > 0 needs device: cuda")
        if self.tensorrt and self.device != "cuda":
            raise ValueError("tensorrt: true needs device: cuda (TensorRT runs on NVIDIA GPUs)")
        visible = max(1, math.ceil(self.gpus))
        if self.device == "cuda" and self.device_id >= visible:
            raise ValueError(f"device_id {self.device_id} is not one of the replica's GPUs: Ray shows a replica "
                             f"only the {visible} GPU(s) it reserved (gpus: {self.gpus:g}), numbered from 0")
        return self

    @model_validator(mode="after")
    def _buckets(self) -> ModelConfig:
        b = self.batch_buckets
        if isinstance(b, tuple) and (
            not b or b[0] < 1 or any(x >= y for x, y in zip(b, b[1:], strict=False)) or b[-1] != self.max_batch_size
        ):
            raise ValueError(f"batch_buckets must be strictly increasing positive row counts ending at "
                             f"max_batch_size ({self.max_batch_size}), e.g. [1, 4, 16, {self.max_batch_size}]; "
                             f"got {list(b)}")
        return self

    @property
    def buckets(self) -> tuple[int, ...]:
        """The batch sizes merged batches are padded to; empty: no padding."""
        if isinstance(self.batch_buckets, tuple):
            return self.batch_buckets
        if self.batch_buckets == "auto" and self.device == "cuda":
            return power_of_two_buckets(self.max_batch_size)
        return ()

    @property
    def intra_op_threads(self) -> int:
        return self.threads or max(1, round(self.cpus))

    @property
    def batch_wait_timeout_s(self) -> float:
        return self.batch_wait_timeout_ms / 1000.0


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    serve_models: list[str] | None = None  # serve only these; default: every model in the repository
    max_body_bytes: int = Field(8 << 20, ge=1024, le=1 << 31)
    auth_token_env: str | None = None
    auth_token_file: Path | None = None
    poll_interval_s: float = Field(5.0, gt=0, le=3600)
    ingress_cpus: float = Field(0.1, gt=0, le=64)  # the small app answering /v2, health and unknown models
    ingress: Literal["haproxy", "proxy"] | None = None  # front end; default: $OPTISERVE_INGRESS, else haproxy

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        _model("defaults", self.defaults)
        for name, overrides in self.models.items():
            _checked(check_name, name)
            _model(f"models.{name}", {**self.defaults, **overrides})
        for name in self.serve_models or []:
            _checked(check_name, name)
        return self

    def for_model(self, name: str) -> ModelConfig:
        return ModelConfig(**{**self.defaults, **self.models.get(name, {})})

    def token(self) -> str | None:
        """The bearer token, read from the configured environment variable or file (never the command line)."""
        if self.auth_token_env:
            value = os.environ.get(self.auth_token_env, "").strip()
            if not value:
                raise UserError(f"auth_token_env names {self.auth_token_env}, which is not set: export the token")
            return value
        if self.auth_token_file:
            try:
                value = self.auth_token_file.read_text().strip()
            except OSError as exc:
                raise UserError(f"cannot read auth_token_file {self.auth_token_file}: {exc.strerror}") from None
            if not value:
                raise UserError(f"auth_token_file {self.auth_token_file} is empty")
            return value
        return None

    def token_sha256(self) -> str | None:
        """Replicas get only the token's hash, so the secret never sits in Ray's deployment records."""
        token = self.token()
        return hashlib.sha256(token.encode()).hexdigest() if token else None


def _model(where: str, fields: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig(**fields)
    except ValidationError as exc:
        raise ValueError(f"{where}: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def _checked(check, value: str) -> str:
    try:
        return check(value)
    except UserError as exc:
        raise ValueError(str(exc)) from None


def load_config(path: Path | str | None) -> ServeConfig:
    """Parse a YAML config file (None: all defaults); any mistake becomes a UserError naming the field."""
    if path is None:
        return ServeConfig()
    data = read_mapping(path, "config", "models: {digits: {max_batch_size: 8}}")
    try:
        return ServeConfig(**data)
    except ValidationError as exc:
        raise UserError(f"config {path}: {_first_error(exc)}") from None
