"""The HTTP layer in-process (no Ray): every route, error codes, token, body limit, overload, OpenAPI fuzz."""

import asyncio
import gzip
import hashlib
import json
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest

from serve._http import Dispatcher, build_model_app, build_server_app
from serve._model import ModelRuntime
from serve.config import ModelConfig

TOKEN = "test-token"


def make_app(repo, *, token=False, max_body_bytes=1 << 20, cfg=None, names=("mlp", "cnn")):
    sha = hashlib.sha256(TOKEN.encode()).hexdigest() if token else None
    runtimes = {}
    for name in names:
        runtimes[name] = ModelRuntime(repo, name, cfg or ModelConfig())
        runtimes[name].load_initial()

    async def ready():
        return True

    routes = {f"/v2/models/{n}": build_model_app(rt, token_sha256=sha, max_body_bytes=max_body_bytes)
              for n, rt in runtimes.items()}
    routes["/"] = build_server_app(lambda: sorted(runtimes), ready, token_sha256=sha, max_body_bytes=max_body_bytes)
    return Dispatcher(routes), runtimes


def run(app, calls):
    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await calls(client)
    return asyncio.run(main())


@pytest.fixture(scope="module")
def app(repo):
    return make_app(repo)[0]


def test_every_route_answers(app, helpers):
    body = helpers.valid_body(np.random.default_rng(0), 2, (64,))

    async def calls(c):
        return {
            "server": await c.get("/v2"), "live": await c.get("/v2/health/live"),
            "ready": await c.get("/v2/health/ready"),
            "meta": await c.get("/v2/models/mlp"), "model_ready": await c.get("/v2/models/mlp/ready"),
            "infer": await c.post("/v2/models/mlp/infer", json=body),
            "v_meta": await c.get("/v2/models/mlp/versions/1"),
            "v_ready": await c.get("/v2/models/mlp/versions/1/ready"),
            "v_infer": await c.post("/v2/models/mlp/versions/1/infer", json={**body, "id": "abc"}),
            "status": await c.get("/v2/models/mlp/status"), "openapi": await c.get("/openapi.json"),
        }

    r = run(app, calls)
    assert all(resp.status_code == 200 for resp in r.values()), {k: v.status_code for k, v in r.items()}
    assert r["server"].json()["name"] == "optiserve"
    assert r["meta"].json()["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    out = r["infer"].json()
    assert out["model_name"] == "mlp" and out["model_version"] == "2" and out["outputs"][0]["shape"] == [2, 10]
    assert r["v_infer"].json()["model_version"] == "1" and r["v_infer"].json()["id"] == "abc"
    assert r["status"].json()["versions"] == ["1", "2"]


def test_openapi_describes_the_v2_api_with_models(app):
    doc = run(app, lambda c: c.get("/openapi.json")).json()
    infer = doc["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("InferenceRequest")
    assert infer["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("InferenceResponse")
    assert {"400", "404", "413", "503"} <= set(infer["responses"])
    assert "/v2/health/ready" in doc["paths"] and "/v2/models/{model_name}/versions/{version}/infer" in doc["paths"]


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/v2/models/mlp/infer", {"inputs": [{"name": "bad", "shape": [1, 64], "datatype": "FP32",
                                                  "data": [0] * 64}]}, 400, "unknown input"),
    ("POST", "/v2/models/mlp/infer", {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "INT32",
                                                  "data": [0] * 64}]}, 400, "datatype"),
    ("POST", "/v2/models/mlp/infer", {"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32",
                                                  "data": [0] * 63}]}, 400, "shape"),
    ("POST", "/v2/models/mlp/infer", {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                                  "data": [0] * 60}]}, 400, "elements"),
    ("POST", "/v2/models/mlp/infer", {"nothing": 1}, 400, "inputs"),
    ("POST", "/v2/models/nope/infer", {"inputs": [{"name": "input", "shape": [1], "datatype": "FP32",
                                                   "data": [0]}]}, 404, "not served"),
    ("GET", "/v2/models/mlp/versions/9", None, 404, "not served"),
    ("GET", "/v2/models/mlp/versions/%2E%2E", None, 404, "not served"),
    ("GET", "/nowhere", None, 404, "Not Found"),
])
def test_bad_requests_get_clear_json_errors(app, method, path, body, status, fragment):
    resp = run(app, lambda c: c.request(method, path, json=body))
    assert resp.status_code == status and fragment in resp.json()["error"]


def test_invalid_json_is_400(app):
    resp = run(app, lambda c: c.post("/v2/models/mlp/infer", content=b"{oops",
                                     headers={"content-type": "application/json"}))
    assert resp.status_code == 400 and "error" in resp.json()


def test_body_limit_413_with_and_without_content_length(repo):
    app = make_app(repo, max_body_bytes=2048)[0]
    big = {"inputs": [{"name": "input", "shape": [10, 64], "datatype": "FP32", "data": [0.5] * 640}]}

    async def chunks():
        yield b'{"inputs": [' + b" " * 4096
        yield b"]}"

    async def calls(c):
        return (await c.post("/v2/models/mlp/infer", json=big),
                await c.post("/v2/models/mlp/infer", content=chunks(), headers={"content-type": "application/json"}))

    sized, chunked = run(app, calls)
    assert sized.status_code == 413 and "larger than 2048" in sized.json()["error"]
    assert chunked.status_code == 413


def test_bearer_token_protects_every_endpoint(repo, helpers):
    app = make_app(repo, token=True)[0]
    body = helpers.valid_body(np.random.default_rng(0), 1, (64,))

    async def calls(c):
        return [
            await c.get("/v2/health/live"), await c.get("/openapi.json"),
            await c.post("/v2/models/mlp/infer", json=body),
            await c.get("/v2/models/mlp", headers={"Authorization": "Bearer wrong"}),
            await c.get("/v2/models/mlp", headers={"Authorization": f"Basic {TOKEN}"}),
            await c.post("/v2/models/mlp/infer", json=body, headers={"Authorization": f"Bearer {TOKEN}"}),
            await c.get("/v2/health/live", headers={"authorization": f"bearer {TOKEN}"}),
        ]

    codes = [r.status_code for r in run(app, calls)]
    assert codes == [401, 401, 401, 401, 401, 200, 200]


def test_full_queue_answers_503_with_retry_after_and_recovers(repo, helpers):
    app, runtimes = make_app(repo, cfg=ModelConfig(max_queue=2, max_batch_size=1, batch_wait_timeout_ms=0))
    loaded = runtimes["mlp"].versions["2"]
    gate = threading.Event()
    real_run = loaded.batcher._run
    loaded.batcher._run = lambda feeds: (gate.wait(10), real_run(feeds))[1]
    body = helpers.valid_body(np.random.default_rng(0), 1, (64,))

    async def calls(c):
        tasks = [asyncio.ensure_future(c.post("/v2/models/mlp/infer", json=body)) for _ in range(8)]
        await asyncio.sleep(0.5)
        gate.set()
        first = await asyncio.gather(*tasks)
        return first, await c.post("/v2/models/mlp/infer", json=body)

    first, after = run(app, calls)
    codes = sorted(r.status_code for r in first)
    # at most one running + max_queue=2 waiting are accepted; the rest are refused, none is lost
    assert codes.count(200) in (2, 3) and codes.count(503) == 8 - codes.count(200)
    assert all(r.headers["retry-after"] == "1" for r in first if r.status_code == 503)
    assert after.status_code == 200


def test_fuzz_from_openapi_finds_no_5xx(app, helpers):
    doc = run(app, lambda c: c.get("/openapi.json")).json()
    cases = list(helpers.fuzz_cases(doc, n=400, seed=1, models={"mlp": (64,), "cnn": (1, 8, 8)}))

    async def calls(c):
        out = []
        for method, path, body in cases:
            resp = await c.request(method, path, json=body)
            out.append((resp.status_code, method, path, resp.text[:200]))
        return out

    results = run(app, calls)
    assert not [r for r in results if r[0] >= 500], [r for r in results if r[0] >= 500][:5]
    codes = {r[0] for r in results}
    assert {200, 400, 404} <= codes  # the fuzzer reached real answers, not only rejections


# ---- protocol compatibility: Content-Type, binary tensor data, compression ------------------------------------


def binary_request(header: dict, *raw: bytes) -> tuple[bytes, dict[str, str]]:
    """Body and headers as Triton's HTTP client sends them (tritonclient/http/_utils.py _get_inference_request):
    JSON, then the tensors' bytes; Inference-Header-Content-Length; no Content-Type."""
    head = json.dumps(header).encode()
    return head + b"".join(raw), {"Inference-Header-Content-Length": str(len(head))}


def split_binary(resp: httpx.Response) -> tuple[dict, bytes]:
    length = int(resp.headers["inference-header-content-length"])
    return json.loads(resp.content[:length]), resp.content[length:]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, helpers):
    root = tmp_path_factory.mktemp("mixed")
    helpers.publish_mixed(root / "models", root)
    return make_app(root / "models", names=("mixed",))[0]


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain",
                                          "application/json; charset=utf-8", "application/octet-stream"])
def test_json_inference_with_any_or_no_content_type(app, helpers, content_type):
    content = json.dumps(helpers.valid_body(np.random.default_rng(0), 2, (64,))).encode()
    headers = {"content-type": content_type} if content_type else {}

    async def calls(c):  # httpx adds no Content-Type of its own for raw content
        return await c.post("/v2/models/mlp/infer", content=content, headers=headers)

    resp = run(app, calls)
    assert resp.request.headers.get("content-type") == content_type
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json" and resp.json()["outputs"][0]["shape"] == [2, 10]


def test_binary_request_and_response_match_json(app):
    x = np.random.default_rng(1).random((3, 64), dtype=np.float32)
    as_json = {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
    header = {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": x.nbytes}}],
              "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}
    requests = [binary_request(header, x.tobytes()),
                binary_request({**header, "outputs": None, "parameters": {"binary_data_output": True}}, x.tobytes()),
                binary_request({**header, "outputs": [{"name": "logits"}]}, x.tobytes())]

    async def calls(c):
        return (await c.post("/v2/models/mlp/infer", json=as_json),
                *[await c.post("/v2/models/mlp/versions/2/infer", content=b, headers=h) for b, h in requests])

    plain, binary, implicit, json_out = run(app, calls)
    expected = np.array(plain.json()["outputs"][0]["data"], np.float32).reshape(3, 10)
    for resp in (binary, implicit):
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
        head, raw = split_binary(resp)
        assert head["outputs"][0]["parameters"] == {"binary_data_size": 120} and "data" not in head["outputs"][0]
        np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(3, 10), expected)
    assert json_out.headers["content-type"] == "application/json" and "inference-header-content-length" not in (
        json_out.headers)
    np.testing.assert_array_equal(np.array(json_out.json()["outputs"][0]["data"], np.float32).reshape(3, 10), expected)


def test_bytes_and_fp16_model_over_binary_and_json(mixed):
    half = np.array([[0.5, 1.5], [-2.0, 4.0]], np.float16)
    text = b"".join(struct.pack("<I", len(b)) + b for b in (b"hello", "\u00e9t\u00e9".encode()))
    header = {"id": "r1", "inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(text)}},
        {"name": "half", "shape": [2, 2], "datatype": "FP16", "parameters": {"binary_data_size": half.nbytes}}],
        "outputs": [{"name": "double", "parameters": {"binary_data": True}},
                    {"name": "echo", "parameters": {"binary_data": True}}]}
    content, headers = binary_request(header, text, half.tobytes())
    as_json = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hello", "\u00e9t\u00e9"]},
                          {"name": "half", "shape": [2, 2], "datatype": "FP16", "data": half.ravel().tolist()}]}

    async def calls(c):
        return (await c.post("/v2/models/mixed/infer", content=content, headers=headers),
                await c.post("/v2/models/mixed/infer", json=as_json))

    binary, plain = run(mixed, calls)
    head, raw = split_binary(binary)
    assert head["id"] == "r1" and [o["name"] for o in head["outputs"]] == ["double", "echo"]
    np.testing.assert_array_equal(np.frombuffer(raw[:8], "<f2").reshape(2, 2), half * 2)
    assert raw[8:] == text
    out = {o["name"]: o for o in plain.json()["outputs"]}
    assert out["echo"]["data"] == ["hello", "\u00e9t\u00e9"] and out["double"]["data"] == (half * 2).ravel().tolist()


@pytest.mark.parametrize("size, raw, header, fragment", [
    (256, b"\0" * 128, None, "only 128 remain"),
    (128, b"\0" * 128, None, "needs 256 bytes"),
    (256, b"\0" * 260, None, "4 bytes after the JSON header"),
    (256, b"\0" * 256, "100000", "larger than the body"),
    (256, b"\0" * 256, "abc", "byte count"),
    (256, b"\0" * 256, "5", "Invalid JSON"),
])
def test_binary_requests_with_wrong_sizes_are_400(app, size, raw, header, fragment):
    content, headers = binary_request({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                                   "parameters": {"binary_data_size": size}}]}, raw)
    if header:
        headers["Inference-Header-Content-Length"] = header
    resp = run(app, lambda c: c.post("/v2/models/mlp/infer", content=content, headers=headers))
    assert resp.status_code == 400 and fragment in resp.json()["error"], resp.text


def test_truncated_bytes_elements_are_400(mixed):
    half = np.zeros((1, 2), np.float16).tobytes()
    for text, fragment in [(struct.pack("<I", 10) + b"abc", "declares 10 bytes"), (b"\1\0", "truncated length")]:
        content, headers = binary_request({"inputs": [
            {"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(text)}},
            {"name": "half", "shape": [1, 2], "datatype": "FP16", "parameters": {"binary_data_size": 4}}]},
            text, half)
        resp = run(mixed, lambda c, b=content, h=headers: c.post("/v2/models/mixed/infer", content=b, headers=h))
        assert resp.status_code == 400 and fragment in resp.json()["error"], resp.text


def test_mutated_binary_requests_never_5xx(app):
    """Random damage to a valid binary request (sizes, header length, cut or padded bodies) is always a 4xx."""
    rng = np.random.default_rng(7)
    x = rng.random((2, 64), dtype=np.float32)
    header = {"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                          "parameters": {"binary_data_size": x.nbytes}}], "parameters": {"binary_data_output": True}}
    cases = []
    for _ in range(60):
        h = json.loads(json.dumps(header))
        t = h["inputs"][0]
        what = rng.integers(5)
        if what == 0:
            t["parameters"]["binary_data_size"] = int(rng.choice([0, 1, 511, 513, 2**40, -1]))
        elif what == 1:
            t["shape"] = [int(rng.integers(0, 4)), int(rng.choice([63, 64, 65]))]
        elif what == 2:
            t["datatype"] = str(rng.choice(["FP16", "FP64", "BYTES", "BOOL", "INT8"]))
        content, headers = binary_request(h, x.tobytes())
        if what == 3:
            content = content[: int(rng.integers(1, len(content)))]
        if what == 4:
            headers["Inference-Header-Content-Length"] = str(int(rng.integers(0, len(content) + 10)))
        cases.append((content, headers))

    async def calls(c):
        return [await c.post("/v2/models/mlp/infer", content=b, headers=h) for b, h in cases]

    codes = [r.status_code for r in run(app, calls)]
    assert all(code < 500 for code in codes) and 400 in codes, codes


def test_compressed_request_bodies(repo, helpers):
    app = make_app(repo, max_body_bytes=64 << 10, names=("mlp",))[0]
    body = json.dumps(helpers.valid_body(np.random.default_rng(0), 1, (64,))).encode()
    bomb = gzip.compress(b" " * (1 << 20))

    async def calls(c):
        url = "/v2/models/mlp/infer"
        return (await c.post(url, content=gzip.compress(body), headers={"content-encoding": "gzip"}),
                await c.post(url, content=zlib.compress(body), headers={"content-encoding": "deflate"}),
                await c.post(url, content=body, headers={"content-encoding": "br"}),
                await c.post(url, content=body, headers={"content-encoding": "gzip"}),
                await c.post(url, content=bomb, headers={"content-encoding": "gzip"}))

    codes = [r.status_code for r in run(app, calls)]
    assert codes == [200, 200, 415, 400, 413]


def test_server_metadata_lists_the_binary_extension(app):
    assert "binary_tensor_data" in run(app, lambda c: c.get("/v2")).json()["extensions"]


def test_a_grpc_group_is_answered_one_result_per_request(repo):
    from serve import _grpc

    app, _ = make_app(repo, token=True)
    x = np.ones((1, 64), np.float32)
    good = _grpc.pb.ModelInferRequest(model_name="mlp", inputs=[_grpc.pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, 64])], raw_input_contents=[x.tobytes()]).SerializeToString()
    bad = _grpc.pb.ModelInferRequest(model_name="mlp", inputs=[_grpc.pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, 63])], raw_input_contents=[x.tobytes()]).SerializeToString()
    group = _grpc.pack_group([good, bad, good])
    headers = {"content-type": _grpc.GROUP_CONTENT_TYPE, "authorization": f"Bearer {TOKEN}"}

    async def calls(c):
        return (await c.post("/v2/models/mlp/infer", content=group, headers=headers),
                await c.post("/v2/models/mlp/infer", content=group, headers={**headers, "authorization": "Bearer x"}),
                await c.post("/v2/models/mlp/infer", content=b"\x09\x00", headers=headers))

    answered, unauthorized, truncated = run(app, calls)
    assert answered.status_code == 200
    results = _grpc.unpack_results(answered.content)
    assert [status for status, _, _ in results] == [200, 400, 200] and "63" in results[1][1]
    logits = np.frombuffer(_grpc.pb.ModelInferResponse.FromString(results[0][1]).raw_output_contents[0], "<f4")
    assert logits.shape == (10,) and results[0][1] == results[2][1]
    assert unauthorized.status_code == 401 and truncated.status_code == 400  # the token guards groups too
