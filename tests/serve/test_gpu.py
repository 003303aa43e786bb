"""GPU replicas: run only where a CUDA GPU and onnxruntime's CUDA provider exist (marked `gpu`)."""

from __future__ import annotations

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
