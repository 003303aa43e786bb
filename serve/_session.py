"""One onnxruntime session per model version and replica: checked, created with its providers, warmed up.

Loading goes through the repository's `verify` (manifest + sha256) before onnxruntime sees the file,
so a corrupt or changed model is refused with a clear reason instead of crashing a replica.

Providers come from the model's config: CPU, or CUDA with its options, or TensorRT in front of CUDA.
onnxruntime's own fallback is turned off (`enable_fallback=0`): it retries a failed TensorRT or CUDA
session with bare provider names, which silently drops our CUDA options (cuDNN's EXHAUSTIVE search
returns) or lands a GPU model on the CPU. Instead TensorRT falls back to CUDA here, with one log line,
and a cuda model that gets no CUDA provider is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from optiserve.errors import UserError
from optiserve.repository import MODEL_FILE, Manifest, check_name, check_version, verify, version_dir
from serve._codec import DTYPES, batchable
from serve.config import ModelConfig

log = logging.getLogger("optiserve.serve")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

Provider = tuple[str, dict[str, Any]]


def providers(
    cfg: ModelConfig, *, cache_dir: Path | None = None, available: Sequence[str] | None = None
) -> list[Provider]:
    """onnxruntime's (name, options) provider list for a model's config, most preferred first.

    A GPU asked for where onnxruntime has no CUDA provider is an error. TensorRT is listed whenever the config
    asks for it; `open_session` drops it, with a log line, when this onnxruntime cannot create it.
    """
    if cfg.device != "cuda":
        return [(CPU, {})]
    available = list(ort.get_available_providers() if available is None else available)
    if CUDA not in available:
        raise UserError(
            f"device cuda needs onnxruntime's {CUDA}, but this onnxruntime has only {available}: "
            "install onnxruntime-gpu on the GPU nodes or serve the model with device: cpu"
        )
    cuda: dict[str, Any] = {
        "device_id": cfg.device_id,
        "cudnn_conv_algo_search": cfg.cudnn_conv_algo_search,
        "arena_extend_strategy": cfg.arena_extend_strategy,
    }
    if cfg.gpu_mem_limit is not None:
        cuda["gpu_mem_limit"] = cfg.gpu_mem_limit
    chain: list[Provider] = [(CUDA, cuda), (CPU, {})]
    if cfg.tensorrt:
        trt: dict[str, Any] = {"device_id": cfg.device_id}
        if cache_dir is not None:
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir),
                       trt_timing_cache_enable=True, trt_timing_cache_path=str(cache_dir))
        chain.insert(0, (TENSORRT, trt))
    return chain


def trt_cache_dir(cfg: ModelConfig, repo: Path, name: str, version: str) -> Path:
    """Where a version's TensorRT engines live: beside its version folder, or under the configured folder."""
    if cfg.tensorrt_cache is not None:
        return Path(cfg.tensorrt_cache) / check_name(name) / check_version(version)
    return Path(repo) / check_name(name) / ".trt-cache" / check_version(version)


def merges(cfg: ModelConfig, manifest: Manifest) -> bool:
    """Whether requests to this version can be merged into batches (and so padded to buckets)."""
    return batchable(manifest.inputs, manifest.outputs) and cfg.max_batch_size > 1


def warm_rows(cfg: ModelConfig, manifest: Manifest) -> tuple[int, ...]:
    """The batch sizes a replica warms at start: every bucket, else one row."""
    return (cfg.buckets or (1,)) if merges(cfg, manifest) else (1,)


def session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


def open_session(
    path: Path, cfg: ModelConfig, prepare: Callable[[Any], None], *, cache_dir: Path | None = None,
    factory: Callable[..., Any] = ort.InferenceSession, available: Sequence[str] | None = None,
) -> Any:
    """A session on cfg's providers, `prepare`d (checked and warmed up); UserError when it cannot serve.

    With TensorRT the engines are built during `prepare` (the warm-up runs), so a TensorRT failure at
    creation or at warm-up falls back to CUDA with one warning; the CUDA attempt then decides.
    """
    chain = providers(cfg, cache_dir=cache_dir, available=available)
    if chain[0][0] == TENSORRT:
        available = list(ort.get_available_providers() if available is None else available)
        reason = None
        if TENSORRT not in available:
            reason = f"this onnxruntime has no {TENSORRT} (it has {available})"
        elif cache_dir is not None:
            try:
                cache_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = f"cannot create the engine cache folder {cache_dir}: {exc.strerror}"
        if reason is None:
            try:
                return _start(path, chain, cfg.intra_op_threads, prepare, factory)
            except Exception as exc:  # noqa: BLE001 - whatever TensorRT's failure, CUDA gets its turn
                reason = _first_line(exc)
        log.warning("TensorRT cannot serve %s (%s); falling back to CUDA", path, reason)
        chain = chain[1:]
    return _start(path, chain, cfg.intra_op_threads, prepare, factory)


def _start(path: Path, chain: list[Provider], threads: int, prepare: Callable[[Any], None], factory) -> Any:
    try:
        session = factory(str(path), sess_options=session_options(threads), providers=chain, enable_fallback=0)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
        raise UserError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from None
    wanted, got = chain[0][0], list(session.get_providers())
    if wanted not in got:  # onnxruntime skips a provider whose libraries fail to load, with only a log line
        raise UserError(f"onnxruntime could not enable {wanted} for {path} (the session has {got}): check the "
                        "node's CUDA, cuDNN (and TensorRT) libraries against onnxruntime-gpu's, "
                        "or serve with device: cpu")
    prepare(session)
    return session


def load(
    repo: Path, name: str, version: str, cfg: ModelConfig | None = None, *, device: str = "cpu", threads: int = 1,
    factory: Callable[..., Any] = ort.InferenceSession,
) -> tuple[Manifest, Any]:
    """(manifest, warmed-up InferenceSession) for one version; UserError if it cannot be served.

    `cfg` is the model's serve config; without it (batch inference, deploy-time checks) a plain session on
    `device` with `threads` threads and no buckets.
    """
    if cfg is None:  # gpus only schedules Ray replicas; the session ignores it
        cfg = ModelConfig(device=device, gpus=1.0 if device == "cuda" else 0.0, threads=threads, batch_buckets="off")
    manifest = verify(repo, name, version)
    path = version_dir(repo, name, version) / MODEL_FILE
    rows = warm_rows(cfg, manifest)

    def prepare(session) -> None:
        declared = sorted(t.name for t in manifest.inputs)
        actual = sorted(i.name for i in session.get_inputs())
        if declared != actual:
            raise UserError(f"{path}: the manifest lists inputs {declared} but the model has {actual}; republish it")
        try:
            warm_up(session, manifest, rows)
        except Exception as exc:  # a model that cannot run on a dummy row will not run on real ones
            raise UserError(f"{path} fails on a warm-up row: {_first_line(exc)}") from None

    cache = trt_cache_dir(cfg, repo, name, version) if cfg.tensorrt else None
    return manifest, open_session(path, cfg, prepare, cache_dir=cache, factory=factory)


def warm_order(rows: Sequence[int]) -> list[int]:
    """Smallest, largest, then the rest: TensorRT widens its shape range (and rebuilds) only when a shape falls
    outside the range seen so far, so after the first two every bucket fits the engine already built."""
    ordered = sorted(set(rows))
    return ordered[:1] + ordered[-1:] + ordered[1:-1] if len(ordered) > 1 else ordered


def warm_up(session, manifest: Manifest, rows: Sequence[int] = (1,)) -> None:
    """Run all-zeros requests, one per batch size in `rows` (other dynamic axes = 1), so neither the first real
    request nor the first batch of each size pays lazy initialisation (or cuDNN's algorithm search)."""
    specs = []
    for spec in manifest.inputs:
        dtype = DTYPES.get(spec.datatype)
        if dtype is None:
            return  # e.g. BYTES inputs: nothing sensible to synthesise
        specs.append((spec, dtype))
    for n in warm_order(rows):
        feeds = {}
        for spec, dtype in specs:
            shape = [1 if d == -1 else d for d in spec.shape]
            if spec.shape and spec.shape[0] == -1:
                shape[0] = n
            feeds[spec.name] = np.zeros(shape, dtype)
        session.run(None, feeds)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]
