"""ModelRuntime in-process: serving, roll-out to a new version, failed roll-outs keep the old version."""

import asyncio

import numpy as np
import onnxruntime as ort
import pytest

from optiserve.errors import UserError
from optiserve.repository import MODEL_FILE, version_dir
from serve._codec import InferenceRequest, InferError
from serve._model import ModelRuntime
from serve.config import ModelConfig


def request(x: np.ndarray) -> InferenceRequest:
    return InferenceRequest(inputs=[{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "data": x.ravel().tolist()}])


def reference(repo, name, version, x):
    sess = ort.InferenceSession(str(version_dir(repo, name, version) / MODEL_FILE), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


@pytest.fixture
def fresh_repo(tmp_path, helpers):
    repo = tmp_path / "models"
    helpers.publish(repo, "mlp", seed=1, tmp=tmp_path)
    return repo


def test_serves_newest_version_and_named_versions(repo, helpers):
    rt = ModelRuntime(repo, "mlp", ModelConfig())
    rt.load_initial()
    assert rt.default == "2" and sorted(rt.versions) == ["1", "2"]
    x = helpers.rows(5)

    async def main():
        latest = await rt.infer(request(x))
        first = await rt.infer(request(x), "1")
        with pytest.raises(InferError) as exc:
            await rt.infer(request(x), "7")
        return latest, first, exc.value

    latest, first, missing = asyncio.run(main())
    assert latest.model_version == "2" and first.model_version == "1"
    np.testing.assert_allclose(np.array(latest.outputs[0].data).reshape(5, 10), reference(repo, "mlp", "2", x),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(first.outputs[0].data).reshape(5, 10), reference(repo, "mlp", "1", x),
                               rtol=1e-5, atol=1e-6)
    assert missing.status == 404 and "served: 1, 2" in missing.message


def test_pinned_version_is_served_even_when_newer_exist(repo):
    rt = ModelRuntime(repo, "mlp", ModelConfig(version="1"))
    rt.load_initial()
    assert rt.default == "1" and list(rt.versions) == ["1"]


def test_roll_out_switches_without_failing_requests_in_flight(fresh_repo, tmp_path, helpers):
    rt = ModelRuntime(fresh_repo, "mlp", ModelConfig(max_versions=1, batch_wait_timeout_ms=1))
    rt.load_initial()
    x = helpers.rows(2)

    async def main():
        async def traffic():
            versions = []
            for _ in range(60):
                versions.append((await rt.infer(request(x))).model_version)
                await asyncio.sleep(0.002)
            return versions

        task = asyncio.ensure_future(traffic())
        await asyncio.sleep(0.03)
        helpers.publish(fresh_repo, "mlp", seed=5, tmp=tmp_path)
        await rt.refresh()
        return await task

    versions = asyncio.run(main())
    assert versions[0] == "1" and versions[-1] == "2"
    assert rt.default == "2" and list(rt.versions) == ["2"]  # max_versions=1 retired version 1


@pytest.mark.parametrize("damage", ["checksum", "corrupt", "manifest"])
def test_failed_roll_out_keeps_the_old_version_and_reports_why(fresh_repo, tmp_path, damage, helpers):
    rt = ModelRuntime(fresh_repo, "mlp", ModelConfig())
    rt.load_initial()
    bad = helpers.publish(fresh_repo, "mlp", seed=6, tmp=tmp_path)
    if damage == "manifest":
        (version_dir(fresh_repo, "mlp", bad) / "manifest.json").write_text("{not json")
    else:
        helpers.corrupt(fresh_repo, "mlp", bad, keep_checksum=damage == "corrupt")
    asyncio.run(rt.refresh())
    assert rt.default == "1" and bad in rt.status()["failed_versions"]
    reason = rt.status()["failed_versions"][bad]
    assert {"checksum": "sha256", "corrupt": "onnxruntime cannot load", "manifest": "not a valid manifest"}[damage] \
        in reason
    with pytest.raises(InferError) as exc:
        asyncio.run(rt.infer(request(helpers.rows(1)), bad))
    assert exc.value.status == 404 and "failed to load" in exc.value.message
    assert asyncio.run(rt.infer(request(helpers.rows(1)))).model_version == "1"


def test_no_loadable_version_is_a_user_error(fresh_repo, helpers):
    helpers.corrupt(fresh_repo, "mlp", "1")
    with pytest.raises(UserError, match="no version that can be served"):
        ModelRuntime(fresh_repo, "mlp", ModelConfig()).load_initial()


def test_cuda_without_provider_is_a_clear_error(fresh_repo):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    rt = ModelRuntime(fresh_repo, "mlp", ModelConfig(device="cuda", gpus=0.5))
    with pytest.raises(UserError, match="CUDAExecutionProvider"):
        rt.load_initial()


def test_autoscaling_stats_use_the_shared_metric_names(repo):
    from autoscale import metrics as m

    rt = ModelRuntime(repo, "cnn", ModelConfig())
    rt.load_initial()
    x = np.zeros((3, 1, 8, 8), np.float32)
    asyncio.run(rt.infer(InferenceRequest(inputs=[{"name": "input", "shape": [3, 1, 8, 8], "datatype": "FP32",
                                                   "data": x.ravel().tolist()}])))
    stats = rt.autoscaling_stats()
    assert set(stats) == set(m.ALL) and stats[m.BATCH_SIZE_MEAN] == 3.0 and stats[m.LATENCY_P50_MS] > 0


def test_buckets_pad_batches_answers_stay_exact_and_status_shows_the_padding_cost(repo, helpers):
    rt = ModelRuntime(repo, "mlp", ModelConfig(version="1", max_batch_size=8, batch_buckets=[1, 4, 8]))
    rt.load_initial()
    runs = []
    session_run = rt.versions["1"].batcher._run

    def recording(feeds):
        runs.append(feeds["input"].shape[0])
        return session_run(feeds)

    rt.versions["1"].batcher._run = recording
    x = helpers.rows(3)
    out = asyncio.run(rt.infer(request(x)))
    assert runs == [4] and out.outputs[0].shape == [3, 10]
    np.testing.assert_allclose(np.array(out.outputs[0].data).reshape(3, 10), reference(repo, "mlp", "1", x),
                               rtol=1e-5, atol=1e-6)
    status = rt.status()
    assert status["batching"] == {"buckets": [1, 4, 8], "computed_rows": 4.0, "padded_rows": 1.0,
                                  "padding_fraction": 0.25}
    cpu = ModelRuntime(repo, "mlp", ModelConfig(version="1"))  # cpu default: no buckets
    cpu.load_initial()
    asyncio.run(cpu.infer(request(x)))
    assert cpu.status()["batching"] == {"buckets": [], "computed_rows": 3.0, "padded_rows": 0.0,
                                        "padding_fraction": 0.0}
