"""GPU replicas: run only where a CUDA GPU and onnxruntime's CUDA provider exist (marked `gpu`).

The provider lists, TensorRT's fallback and the buckets are unit-tested without a GPU (test__session.py,
test__batching.py); these check them against the real CUDA and TensorRT providers.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from optiserve.errors import UserError
from optiserve.repository import MODEL_FILE, version_dir
from serve._deploy import _check_gpus
from serve.config import ServeConfig

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers() and shutil.which("nvidia-smi") is not None
HAS_TENSORRT = HAS_CUDA and "TensorrtExecutionProvider" in ort.get_available_providers()


def test_gpu_model_without_cuda_provider_fails_at_deploy_time_with_a_clear_message():
    if HAS_CUDA:
        pytest.skip("this machine has CUDA")
    cfg = ServeConfig(models={"mlp": {"device": "cuda", "gpus": 0.5}})
    with pytest.raises(UserError, match="CUDAExecutionProvider.*device: cpu"):
        _check_gpus({"mlp": "1"}, cfg)


@pytest.mark.gpu
@pytest.mark.ray
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and onnxruntime-gpu")
def test_half_gpu_replica_serves_with_the_cuda_provider(tmp_path, helpers):
    import ray

    import serve

    repo = tmp_path / "models"
    helpers.publish(repo, "mlp", seed=1, tmp=tmp_path)
    (tmp_path / "serve.yaml").write_text("models: {mlp: {device: cuda, gpus: 0.5}}\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        serve.start_app(repo, port=port, config_path=tmp_path / "serve.yaml")
        x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
        body = {"inputs": [{"name": "input", "shape": [4, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
        resp = httpx.post(f"http://127.0.0.1:{port}/v2/models/mlp/infer", json=body, timeout=60)
        assert resp.status_code == 200
        cpu = ort.InferenceSession(str(version_dir(repo, "mlp", "1") / MODEL_FILE), providers=["CPUExecutionProvider"])
        got = np.array(resp.json()["outputs"][0]["data"], np.float32).reshape(4, 10)
        np.testing.assert_allclose(got, cpu.run(None, {"input": x})[0], rtol=1e-3, atol=1e-4)
        status = httpx.get(f"http://127.0.0.1:{port}/v2/models/mlp/status", timeout=30).json()
        assert status["providers"][0] == "CUDAExecutionProvider"
    finally:
        serve.stop_app()
        ray.shutdown()


def _cpu_reference(repo, x):
    cpu = ort.InferenceSession(str(version_dir(repo, "cnn", "1") / MODEL_FILE), providers=["CPUExecutionProvider"])
    return cpu.run(None, {"input": x})[0]


def _infer(rt, x):
    from serve._codec import InferenceRequest

    body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    out = asyncio.run(rt.infer(InferenceRequest(**body))).outputs[0]
    return np.array(out.data, np.float32).reshape(out.shape)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU and onnxruntime-gpu")
def test_gpu_runtime_pads_to_warmed_buckets_with_the_configured_cuda_options(repo):
    from serve._model import ModelRuntime
    from serve.config import ModelConfig

    rt = ModelRuntime(repo, "cnn", ModelConfig(device="cuda", gpus=0.5, max_batch_size=8))
    rt.load_initial()
    status = rt.status()
    assert status["providers"][0] == "CUDAExecutionProvider" and status["batching"]["buckets"] == [1, 2, 4, 8]
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(_infer(rt, x), _cpu_reference(repo, x), rtol=1e-3, atol=1e-4)
    assert rt.status()["batching"]["padded_rows"] == 1.0  # 3 rows ran as a batch of 4


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TENSORRT, reason="needs a CUDA GPU and onnxruntime-gpu with TensorRT's libraries")
def test_tensorrt_replica_caches_its_engines_or_says_why_it_fell_back(repo, tmp_path, caplog):
    from serve._model import ModelRuntime
    from serve.config import ModelConfig

    cfg = ModelConfig(device="cuda", gpus=0.5, max_batch_size=8, tensorrt=True, tensorrt_cache=tmp_path / "trt")
    with caplog.at_level(logging.WARNING, logger="optiserve.serve"):
        rt = ModelRuntime(repo, "cnn", cfg)
        rt.load_initial()
    providers = rt.status()["providers"]
    if providers[0] == "TensorrtExecutionProvider":
        assert any((tmp_path / "trt" / "cnn" / "1").iterdir()), "TensorRT ran but cached no engine"
    else:
        assert providers[0] == "CUDAExecutionProvider"
        assert any("falling back to CUDA" in r.getMessage() for r in caplog.records)
    x = np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(_infer(rt, x), _cpu_reference(repo, x), rtol=1e-2, atol=1e-3)
