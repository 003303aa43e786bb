"""Sessions: the provider list built from a model's config, TensorRT's fallback to CUDA and bucket warm-up.

No GPU needed: the CUDA/TensorRT paths use an injected list of available providers and a fake session
factory that behaves like onnxruntime does (a provider it cannot create is skipped or raises).
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from optiserve.errors import UserError
from optiserve.repository import Manifest, TensorSpec
from serve import _session
from serve._session import CPU, CUDA, TENSORRT, open_session, providers, trt_cache_dir, warm_order, warm_up
from serve.config import ModelConfig

GPU_ORT = [TENSORRT, CUDA, CPU]  # what onnxruntime-gpu lists where TensorRT's libraries exist
GPU = dict(device="cuda", gpus=0.5)


def test_cpu_models_get_the_cpu_provider_alone():
    assert providers(ModelConfig()) == [(CPU, {})]
    assert providers(ModelConfig(), available=[CPU]) == [(CPU, {})]


def test_cuda_provider_carries_the_configured_options():
    chain = providers(ModelConfig(**GPU), available=GPU_ORT)
    assert chain == [(CUDA, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC",
                             "arena_extend_strategy": "kNextPowerOfTwo"}), (CPU, {})]
    cfg = ModelConfig(device="cuda", gpus=2, device_id=1, cudnn_conv_algo_search="EXHAUSTIVE",
                      arena_extend_strategy="kSameAsRequested", gpu_mem_limit=2 << 30)
    assert providers(cfg, available=[CUDA, CPU])[0] == (CUDA, {
        "device_id": 1, "cudnn_conv_algo_search": "EXHAUSTIVE", "arena_extend_strategy": "kSameAsRequested",
        "gpu_mem_limit": 2 << 30})


def test_tensorrt_goes_first_with_its_engine_cache_and_cuda_behind_it(tmp_path):
    chain = providers(ModelConfig(**GPU, tensorrt=True), cache_dir=tmp_path, available=GPU_ORT)
    assert [name for name, _ in chain] == [TENSORRT, CUDA, CPU]
    assert chain[0][1] == {"device_id": 0, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(tmp_path),
                           "trt_timing_cache_enable": True, "trt_timing_cache_path": str(tmp_path)}
    assert chain[1][1]["cudnn_conv_algo_search"] == "HEURISTIC"  # the CUDA options stay for TensorRT's fallback


def test_cuda_without_onnxruntime_cuda_provider_is_a_clear_error():
    with pytest.raises(UserError, match="CUDAExecutionProvider.*device: cpu"):
        providers(ModelConfig(**GPU), available=[CPU])
    if CUDA not in ort.get_available_providers():  # this machine's own onnxruntime
        with pytest.raises(UserError, match="onnxruntime-gpu"):
            providers(ModelConfig(**GPU))


def test_engine_cache_beside_the_version_or_under_the_configured_folder(tmp_path):
    default = trt_cache_dir(ModelConfig(**GPU, tensorrt=True), tmp_path, "cnn", "3")
    assert default == tmp_path / "cnn" / ".trt-cache" / "3"  # hidden: not a version folder, like .staging-*
    cfg = ModelConfig(**GPU, tensorrt=True, tensorrt_cache=tmp_path / "engines")
    assert trt_cache_dir(cfg, tmp_path / "repo", "cnn", "3") == tmp_path / "engines" / "cnn" / "3"
    with pytest.raises(UserError):
        trt_cache_dir(cfg, tmp_path, "..", "3")


class FakeSession:
    def __init__(self, active: list[str]) -> None:
        self.active = active

    def get_providers(self) -> list[str]:
        return self.active


class FakeOrt:
    """Creates sessions like onnxruntime-gpu: `broken` providers raise at creation, `skipped` ones are left out."""

    def __init__(self, broken=(), skipped=()) -> None:
        self.broken, self.skipped, self.calls = set(broken), set(skipped), []

    def __call__(self, path, *, sess_options, providers, enable_fallback):
        self.calls.append({"providers": providers, "enable_fallback": enable_fallback})
        names = [name for name, _ in providers]
        if self.broken & set(names):
            raise RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : {sorted(self.broken & set(names))[0]} failed\nmore")
        return FakeSession([n for n in names if n not in self.skipped])


def _open(cfg, fake, prepare=lambda s: None, **kw):
    return open_session("/m/model.onnx", cfg, prepare, factory=fake, available=GPU_ORT, **kw)


def test_tensorrt_that_works_is_used_and_onnxruntime_fallback_is_off(tmp_path, caplog):
    fake = FakeOrt()
    session = _open(ModelConfig(**GPU, tensorrt=True), fake, cache_dir=tmp_path / "c")
    assert session.get_providers() == [TENSORRT, CUDA, CPU]
    assert len(fake.calls) == 1 and fake.calls[0]["enable_fallback"] == 0
    assert (tmp_path / "c").is_dir() and not caplog.records


@pytest.mark.parametrize("failure, reason", [
    ("creation", "TensorrtExecutionProvider failed"),
    ("skipped", "could not enable TensorrtExecutionProvider"),
    ("engine build", "fails on a warm-up row: no engine"),
])
def test_tensorrt_failure_falls_back_to_cuda_with_its_options_and_one_log_line(tmp_path, caplog, failure, reason):
    fake = FakeOrt(broken=[TENSORRT] if failure == "creation" else (),
                   skipped=[TENSORRT] if failure == "skipped" else ())

    def prepare(session):  # the warm-up builds TensorRT's engines
        if failure == "engine build" and TENSORRT in session.get_providers():
            raise UserError("/m/model.onnx fails on a warm-up row: no engine")

    cfg = ModelConfig(**GPU, tensorrt=True, cudnn_conv_algo_search="DEFAULT")
    with caplog.at_level(logging.WARNING, logger="optiserve.serve"):
        session = _open(cfg, fake, prepare, cache_dir=tmp_path)
    assert session.get_providers() == [CUDA, CPU]
    assert [[n for n, _ in c["providers"]] for c in fake.calls] == [[TENSORRT, CUDA, CPU], [CUDA, CPU]]
    assert fake.calls[1]["providers"][0][1]["cudnn_conv_algo_search"] == "DEFAULT"
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "TensorRT cannot serve /m/model.onnx" in line and reason in line and "falling back to CUDA" in line


def test_tensorrt_missing_from_onnxruntime_or_no_cache_folder_goes_straight_to_cuda(tmp_path, caplog):
    fake = FakeOrt()
    with caplog.at_level(logging.WARNING, logger="optiserve.serve"):
        open_session("/m/model.onnx", ModelConfig(**GPU, tensorrt=True), lambda s: None, factory=fake,
                     available=[CUDA, CPU], cache_dir=tmp_path)
    assert [[n for n, _ in c["providers"]] for c in fake.calls] == [[CUDA, CPU]]
    assert "has no TensorrtExecutionProvider" in caplog.records[-1].getMessage()
    (tmp_path / "file").write_text("in the way")
    fake = FakeOrt()
    with caplog.at_level(logging.WARNING, logger="optiserve.serve"):
        _open(ModelConfig(**GPU, tensorrt=True), fake, cache_dir=tmp_path / "file" / "cache")
    assert [[n for n, _ in c["providers"]] for c in fake.calls] == [[CUDA, CPU]]
    assert "cannot create the engine cache folder" in caplog.records[-1].getMessage()


def test_cuda_that_onnxruntime_cannot_enable_is_an_error_not_a_cpu_replica():
    with pytest.raises(UserError, match="could not enable CUDAExecutionProvider.*device: cpu"):
        _open(ModelConfig(**GPU), FakeOrt(skipped=[CUDA]))
    with pytest.raises(UserError, match="onnxruntime cannot load /m/model.onnx: .*CUDAExecutionProvider failed$"):
        _open(ModelConfig(**GPU), FakeOrt(broken=[CUDA]))
    # TensorRT's fallback is CUDA, never the CPU: a broken CUDA fails the load after the TensorRT attempt too
    with pytest.raises(UserError, match="could not enable CUDAExecutionProvider"):
        _open(ModelConfig(**GPU, tensorrt=True), FakeOrt(skipped=[TENSORRT, CUDA]))


def test_warm_order_visits_the_extremes_first():
    assert warm_order([1, 2, 4, 8, 16, 32]) == [1, 32, 2, 4, 8, 16]
    assert warm_order([8]) == [8] and warm_order([4, 1]) == [1, 4]


class Recorder:
    def __init__(self, session) -> None:
        self.session, self.runs = session, []

    def run(self, names, feeds):
        self.runs.append({k: v.shape for k, v in feeds.items()})
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_warm_up_runs_each_bucket_on_the_batch_axis_only():
    manifest = Manifest(name="m", version="1", sha256="0", inputs=[
        TensorSpec("x", "FP32", [-1, 3, -1]), TensorSpec("ids", "INT64", [-1]), TensorSpec("fixed", "FP32", [2, 2]),
    ], outputs=[TensorSpec("y", "FP32", [-1])])

    class Fake:
        def __init__(self) -> None:
            self.runs = []

        def run(self, names, feeds):
            self.runs.append({k: (v.shape, v.dtype) for k, v in feeds.items()})

    fake = Fake()
    warm_up(fake, manifest, (1, 4, 8))
    assert [r["x"][0] for r in fake.runs] == [(1, 3, 1), (8, 3, 1), (4, 3, 1)]
    assert [r["ids"] for r in fake.runs] == [((1,), np.int64), ((8,), np.int64), ((4,), np.int64)]
    assert all(r["fixed"][0] == (2, 2) for r in fake.runs)


def test_load_warms_every_bucket_of_a_mergeable_model(repo):
    made = []

    def factory(*args, **kwargs):
        made.append(Recorder(ort.InferenceSession(*args, **kwargs)))
        return made[-1]

    manifest, session = _session.load(repo, "mlp", "1", ModelConfig(batch_buckets=[1, 4, 32]), factory=factory)
    assert session is made[0] and [r["input"][0] for r in session.runs] == [1, 32, 4]
    _, plain = _session.load(repo, "mlp", "1", factory=factory)  # no config: one warm-up row, as before
    assert [r["input"][0] for r in plain.runs] == [1]
    _, single = _session.load(repo, "mlp", "1", ModelConfig(batch_buckets=[1], max_batch_size=1), factory=factory)
    assert [r["input"][0] for r in single.runs] == [1]  # max_batch_size 1: requests never merge
