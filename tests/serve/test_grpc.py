"""Live: Triton's own gRPC client (tritonclient.grpc), unchanged and without any routing metadata, against a
`modelserve start`-style deployment on a local Ray: health, metadata, ModelInfer with raw and typed contents for
FP32, INT64, BYTES and FP16, client mistakes as INVALID_ARGUMENT / NOT_FOUND / UNAUTHENTICATED (never INTERNAL),
overload as UNAVAILABLE, and HTTP still answering beside it. One Ray and one app for the module."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest

from optiserve.repository import MODEL_FILE, publish, version_dir

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is installed by `make install`")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]
TOKEN = "grpc-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CONFIG = """
defaults: {max_batch_size: 16, batch_wait_timeout_ms: 2, cpus: 0.25}
models:
  tiny: {max_queue: 1, max_batch_size: 1, batch_wait_timeout_ms: 0}
auth_token_env: MS_GRPC_TOKEN
max_body_bytes: 65536
"""


def publish_ints(repo, tmp) -> str:
    """Model `ints`: INT64 ids -> ids + ids."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Add", ["ids", "ids"], ["doubled"])], "ints",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("doubled", TensorProto.INT64, ["batch"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    save(model, str(tmp / "ints.onnx"))
    return publish(tmp / "ints.onnx", repo, "ints").version


@pytest.fixture(scope="module", params=["haproxy", "proxy"])
def live(request, tmp_path_factory, helpers):
    """The same app behind either HTTP front end (serve/_ingress.py): gRPC must not depend on which one runs."""

    from serve import _ingress

    root = tmp_path_factory.mktemp("grpc")
    repo = root / "models"
    helpers.publish(repo, "mlp", "mlp", seed=1, tmp=root)
    helpers.publish(repo, "mlp", "mlp", seed=2, tmp=root)
    helpers.publish(repo, "tiny", "mlp", seed=4, tmp=root)
    helpers.publish_mixed(repo, root)
    publish_ints(repo, root)
    (root / "serve.yaml").write_text(f"ingress: {request.param}\n" + CONFIG)
    env = _ingress.cluster_env(request.param, str(root), helpers.free_port)
    env.update(MS_GRPC_TOKEN=TOKEN, OPTISERVE_STATE_DIR=str(root / "state"))
    with helpers.running_app(repo, root / "serve.yaml", env, num_cpus=4, grpc_port=helpers.free_port()) as info:
        assert info.ingress == request.param
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{info.grpc_port}")
        yield {"info": info, "repo": repo, "client": client}
        client.close()


def reference(repo, name, version, feeds):
    path = str(version_dir(repo, name, version) / MODEL_FILE)
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def given(name, arr, datatype):
    tensor = grpcclient.InferInput(name, list(arr.shape), datatype)
    tensor.set_data_from_numpy(arr)
    return tensor


def status_of(call) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value.status()


def test_health_and_metadata_with_tritons_client(live, helpers):
    c = live["client"]
    assert c.is_server_live(headers=AUTH)
    assert helpers.wait_for(lambda: c.is_server_ready(headers=AUTH), what="server ready")
    assert c.get_server_metadata(headers=AUTH).name == "optiserve"
    assert c.is_model_ready("mlp", headers=AUTH) and c.is_model_ready("mlp", "1", headers=AUTH)
    assert not c.is_model_ready("mlp", "9", headers=AUTH)
    meta = c.get_model_metadata("mlp", headers=AUTH)
    assert list(meta.versions) == ["1", "2"] and list(meta.inputs[0].shape) == [-1, 64]
    assert meta.inputs[0].datatype == "FP32" and meta.outputs[0].name == "logits"
    assert live["info"].grpc_port and live["info"].host == "127.0.0.1"


def test_model_infer_raw_contents_match_onnxruntime(live):
    c, repo = live["client"], live["repo"]
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    for version in ("1", "2", ""):
        result = c.infer("mlp", [given("input", x, "FP32")], model_version=version, request_id="q1", headers=AUTH)
        served = result.get_response().model_version
        assert served == (version or "2") and result.get_response().id == "q1"
        np.testing.assert_allclose(result.as_numpy("logits"), reference(repo, "mlp", served, {"input": x}),
                                   rtol=1e-5, atol=1e-6)
    ids = np.array([1, -3, 2**40], np.int64)
    assert c.infer("ints", [given("ids", ids, "INT64")], headers=AUTH).as_numpy("doubled").tolist() == \
        (ids * 2).tolist()
    text = np.array([b"hello", "\u00e9t\u00e9".encode()], object)
    half = np.array([[0.5, 1.5], [-2.0, 4.0]], np.float16)
    result = c.infer("mixed", [given("text", text, "BYTES"), given("half", half, "FP16")],
                     outputs=[grpcclient.InferRequestedOutput("double"), grpcclient.InferRequestedOutput("echo")],
                     headers=AUTH)
    assert result.as_numpy("echo").tolist() == text.tolist()
    np.testing.assert_array_equal(result.as_numpy("double"), half * 2)


def stub_infer(live, message, metadata=tuple(AUTH.items())):
    with grpc.insecure_channel(f"127.0.0.1:{live['info'].grpc_port}") as channel:
        return service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, metadata=metadata, timeout=60)


def test_model_infer_typed_contents(live):
    x = np.random.default_rng(1).random((2, 64), dtype=np.float32)
    message = service_pb2.ModelInferRequest(model_name="mlp", model_version="1")
    message.inputs.add(name="input", datatype="FP32", shape=[2, 64]).contents.fp32_contents.extend(x.ravel())
    answer = stub_infer(live, message)
    logits = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(list(answer.outputs[0].shape))
    np.testing.assert_allclose(logits, reference(live["repo"], "mlp", "1", {"input": x}), rtol=1e-5, atol=1e-6)
    ints = service_pb2.ModelInferRequest(model_name="ints")
    ints.inputs.add(name="ids", datatype="INT64", shape=[3]).contents.int64_contents.extend([5, -1, 0])
    assert np.frombuffer(stub_infer(live, ints).raw_output_contents[0], "<i8").tolist() == [10, -2, 0]
    text = service_pb2.ModelInferRequest(model_name="mixed")
    text.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"abc")
    text.inputs.add(name="half", datatype="FP16", shape=[1, 2])  # FP16 has no typed field: only raw can carry it
    with pytest.raises(grpc.RpcError) as info:
        stub_infer(live, text)
    assert info.value.code().name == "INVALID_ARGUMENT"


def test_client_mistakes_are_never_internal(live):
    c = live["client"]
    x = np.zeros((1, 64), np.float32)
    short = given("input", x, "FP32")
    short._raw_content = short._raw_content[:-4]  # one element short of the declared shape
    assert status_of(lambda: c.infer("mlp", [short], headers=AUTH)) == "StatusCode.INVALID_ARGUMENT"
    assert status_of(lambda: c.infer("mlp", [given("input", np.zeros((1, 32), np.float32), "FP32")],
                                     headers=AUTH)) == "StatusCode.INVALID_ARGUMENT"  # wrong shape
    assert status_of(lambda: c.infer("mlp", [given("input", x.astype(np.float64), "FP64")],
                                     headers=AUTH)) == "StatusCode.INVALID_ARGUMENT"  # wrong datatype
    assert status_of(lambda: c.infer("nope", [given("input", x, "FP32")], headers=AUTH)) == "StatusCode.NOT_FOUND"
    assert status_of(lambda: c.infer("mlp", [given("input", x, "FP32")], model_version="9",
                                     headers=AUTH)) == "StatusCode.NOT_FOUND"
    assert status_of(lambda: c.get_model_metadata("nope", headers=AUTH)) == "StatusCode.NOT_FOUND"
    assert status_of(lambda: c.infer("mlp", [given("input", x, "FP32")])) == "StatusCode.UNAUTHENTICATED"
    assert status_of(lambda: c.is_server_live(headers={"authorization": "Bearer nope"})) == \
        "StatusCode.UNAUTHENTICATED"
    big = np.zeros((300, 64), np.float32)  # 76.8 kB, over max_body_bytes (64 KiB): refused by gRPC itself
    assert status_of(lambda: c.infer("mlp", [given("input", big, "FP32")], headers=AUTH)) == \
        "StatusCode.RESOURCE_EXHAUSTED"
    assert c.infer("mlp", [given("input", x, "FP32")], headers=AUTH).as_numpy("logits").shape == (1, 10)


def test_overload_is_unavailable_with_retry_after_and_concurrent_answers_are_right(live):
    x = np.random.default_rng(3).random((1, 64), dtype=np.float32)
    expected = reference(live["repo"], "tiny", "1", {"input": x})
    message = service_pb2.ModelInferRequest(model_name="tiny")
    message.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    message.raw_input_contents.append(x.tobytes())
    local, channels, lock = threading.local(), [], threading.Lock()

    def call(_):
        if not hasattr(local, "stub"):  # one connection per thread, as separate clients would have
            channel = grpc.insecure_channel(f"127.0.0.1:{live['info'].grpc_port}")
            local.stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            with lock:
                channels.append(channel)
        try:
            answer = local.stub.ModelInfer(message, metadata=tuple(AUTH.items()), timeout=60)
        except grpc.RpcError as exc:
            return exc.code().name, dict(exc.trailing_metadata() or ()).get("retry-after")
        np.testing.assert_allclose(np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(1, 10), expected,
                                   rtol=1e-5, atol=1e-6)
        return "OK", None

    try:
        with cf.ThreadPoolExecutor(32) as pool:
            results = list(pool.map(call, range(160)))
    finally:
        for channel in channels:
            channel.close()
    codes = {code for code, _ in results}
    assert codes == {"OK", "UNAVAILABLE"}  # nothing else (never INTERNAL), and both happen
    assert all(retry == "1" for code, retry in results if code == "UNAVAILABLE")
    assert live["client"].infer("tiny", [given("input", x, "FP32")], headers=AUTH).as_numpy("logits").shape == (1, 10)


def test_many_concurrent_calls_each_get_their_own_answer_and_a_bad_one_its_own_error(live):
    """Calls in flight together travel to the replica in shared handle calls (the router coalesces them):
    each still gets the answer to its own input, and one malformed request fails alone."""
    import asyncio

    rng = np.random.default_rng(7)
    inputs = [rng.random((1 + i % 3, 64), dtype=np.float32) for i in range(48)]
    bad = 17  # declares 64 features but carries 32 per row

    def message(i, x):
        m = service_pb2.ModelInferRequest(model_name="mlp", model_version="1", id=f"r{i}")
        m.inputs.add(name="input", datatype="FP32", shape=[x.shape[0], 64])
        m.raw_input_contents.append(x[:, :32].tobytes() if i == bad else x.tobytes())
        return m

    async def all_at_once():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{live['info'].grpc_port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            calls = [stub.ModelInfer(message(i, x), metadata=tuple(AUTH.items()), timeout=60)
                     for i, x in enumerate(inputs)]
            return await asyncio.gather(*calls, return_exceptions=True)

    answers = asyncio.run(all_at_once())
    expected = reference(live["repo"], "mlp", "1", {"input": np.concatenate(inputs)})
    row = 0
    for i, (x, answer) in enumerate(zip(inputs, answers, strict=True)):
        mine, row = expected[row:row + len(x)], row + len(x)
        if i == bad:
            assert isinstance(answer, grpc.aio.AioRpcError) and answer.code().name == "INVALID_ARGUMENT"
            continue
        assert not isinstance(answer, BaseException), f"request {i}: {answer!r}"
        assert answer.id == f"r{i}" and list(answer.outputs[0].shape) == [len(x), 10]
        logits = np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(len(x), 10)
        np.testing.assert_allclose(logits, mine, rtol=1e-5, atol=1e-6)


def test_http_is_unchanged_beside_grpc(live):
    info = live["info"]
    x = np.zeros((1, 64), np.float32)
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
    r = httpx.post(f"http://127.0.0.1:{info.port}/v2/models/mlp/infer", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 200 and r.json()["model_version"] == "2"
    from serve import status

    assert set(status()) == {"mlp", "tiny", "mixed", "ints"}  # the gRPC app is not mistaken for a model
