"""KServe v2 gRPC messages <-> the codec's requests and responses: no server, no Ray.

Requests are built by Triton's own gRPC client code (tritonclient.grpc, a test dependency) and answers read
by its InferResult, so the translation is checked against what that client really sends and expects."""

import hashlib
import struct

import grpc
import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")

from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult, service_pb2  # noqa: E402
from tritonclient.grpc._utils import _get_inference_request  # noqa: E402

from optiserve.repository import TensorSpec  # noqa: E402
from serve import _grpc  # noqa: E402
from serve._codec import check_requested, decode_inputs, encode_outputs  # noqa: E402
from serve._messages import InferenceResponse, InferError, MetadataTensor, ModelMetadata  # noqa: E402

SPECS = [TensorSpec("x", "FP32", [-1, 4]), TensorSpec("ids", "INT64", [-1]), TensorSpec("text", "BYTES", [-1])]
OUTS = [TensorSpec("y", "FP32", [-1, 2]), TensorSpec("echo", "BYTES", [-1])]


def triton_request(inputs, outputs=None, version="", request_id="") -> bytes:
    message = _get_inference_request(
        model_name="m", inputs=inputs, model_version=version, request_id=request_id, outputs=outputs,
        sequence_id=0, sequence_start=False, sequence_end=False, priority=0, timeout=None, parameters=None,
    )
    return message.SerializeToString()


def triton_inputs(x, ids, text):
    tensors = []
    for name, arr, datatype in (("x", x, "FP32"), ("ids", ids, "INT64"), ("text", text, "BYTES")):
        t = InferInput(name, list(arr.shape), datatype)
        t.set_data_from_numpy(arr)
        tensors.append(t)
    return tensors


def decoded(raw: bytes):
    request, version = _grpc.infer_request(_grpc.parse_infer(raw))
    arrays, rows = decode_inputs(request, SPECS, split_rows=True)
    return request, version, arrays, rows


def test_raw_input_contents_from_tritons_client_decode_to_the_same_arrays():
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = np.array([1, -2, 2**40], np.int64)
    text = np.array([b"a", "é".encode(), b""], dtype=np.object_)
    request, version, arrays, rows = decoded(triton_request(triton_inputs(x, ids, text), version="2", request_id="r1"))
    assert version == "2" and request.id == "r1" and rows == 3
    np.testing.assert_array_equal(arrays["x"], x)
    np.testing.assert_array_equal(arrays["ids"], ids)
    assert arrays["x"].dtype == np.float32 and arrays["ids"].dtype == np.int64
    assert arrays["text"].tolist() == ["a", "é", ""]


def test_typed_contents_decode_like_raw_ones():
    message = service_pb2.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([0.5, 1, 2, 3])
    message.inputs.add(name="ids", datatype="INT64", shape=[1]).contents.int64_contents.append(-7)
    message.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append("ü".encode())
    request, version, arrays, rows = decoded(message.SerializeToString())
    assert version is None and rows == 1
    np.testing.assert_array_equal(arrays["x"], np.array([[0.5, 1, 2, 3]], np.float32))
    assert arrays["ids"].tolist() == [-7] and arrays["text"].tolist() == ["ü"]


def bad(message: service_pb2.ModelInferRequest, specs=SPECS) -> str:
    with pytest.raises(InferError) as info:
        request, _ = _grpc.infer_request(_grpc.parse_infer(message.SerializeToString()))
        decode_inputs(request, specs, split_rows=True)
    assert info.value.status == 400
    return info.value.message


def raw_message(x_bytes: bytes, shape=(1, 4), datatype="FP32") -> service_pb2.ModelInferRequest:
    message = service_pb2.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype=datatype, shape=list(shape))
    message.raw_input_contents.append(x_bytes)
    return message


def test_client_mistakes_are_400s_with_a_reason():
    x = SPECS[:1]
    assert "needs 16 bytes" in bad(raw_message(b"\0" * 12), x)  # wrong raw size
    assert "shape" in bad(raw_message(b"\0" * 20, shape=(1, 5)), x)  # wrong shape
    assert "datatype" in bad(raw_message(b"\0" * 32, datatype="FP64"), x)  # wrong datatype
    assert "NaN" in bad(raw_message(np.full(4, np.nan, np.float32).tobytes()), x)
    two = raw_message(b"\0" * 16)
    two.raw_input_contents.append(b"")
    assert "raw_input_contents has 2 entries" in bad(two, x)
    typed = service_pb2.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.int_contents.extend([1, 2, 3, 4])
    assert "fp32_contents" in bad(typed, x)  # values in the wrong typed field
    short = service_pb2.ModelInferRequest(model_name="m")
    short.inputs.add(name="x", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1, 2])
    assert "2 elements" in bad(short, x)
    small = service_pb2.ModelInferRequest(model_name="m")
    small.inputs.add(name="b", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    assert "outside the INT8 range" in bad(small, [TensorSpec("b", "INT8", [-1])])
    text = service_pb2.ModelInferRequest(model_name="m")
    text.inputs.add(name="t", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xff")
    assert "UTF-8" in bad(text, [TensorSpec("t", "BYTES", [-1])])
    none = service_pb2.ModelInferRequest(model_name="m")
    assert "inputs" in bad(none, x)
    with pytest.raises(InferError) as info:
        _grpc.parse_infer(b"\xff\xff\xff")
    assert info.value.status == 400


def test_outputs_come_back_as_raw_output_contents_that_tritons_client_reads():
    request, _, _, _ = decoded(triton_request(triton_inputs(
        np.zeros((2, 4), np.float32), np.zeros(2, np.int64), np.array([b"a", b"b"], np.object_)),
        outputs=[InferRequestedOutput("echo"), InferRequestedOutput("y")]))
    wanted = check_requested(request, OUTS)
    assert wanted == [("echo", True), ("y", True)]
    y = np.array([[1.5, -2], [3, 4]], np.float32)
    echo = np.array(["hé", "x"], dtype=object)
    response = InferenceResponse(model_name="m", model_version="3", id="r",
                                 outputs=encode_outputs({"y": y, "echo": echo}, OUTS, wanted))
    message = _grpc.infer_response(response)
    result = InferResult(service_pb2.ModelInferResponse.FromString(message.SerializeToString()))
    np.testing.assert_array_equal(result.as_numpy("y"), y)
    assert result.as_numpy("echo").tolist() == ["hé".encode(), b"x"]
    assert result.get_response().model_version == "3" and result.get_response().id == "r"


def test_metadata_messages():
    meta = ModelMetadata(name="m", versions=["1", "2"], inputs=[MetadataTensor(name="x", datatype="FP32",
                         shape=[-1, 4])], outputs=[MetadataTensor(name="y", datatype="FP32", shape=[-1, 2])])
    message = _grpc.model_metadata(meta)
    assert list(message.versions) == ["1", "2"] and message.platform == "onnxruntime_onnx"
    assert list(message.inputs[0].shape) == [-1, 4] and message.outputs[0].name == "y"
    assert list(_grpc.server_metadata("s", "1", ["a"]).extensions) == ["a"]


def test_status_codes_never_internal_for_a_client_error():
    assert _grpc.status_code(400) == grpc.StatusCode.INVALID_ARGUMENT
    assert _grpc.status_code(404) == grpc.StatusCode.NOT_FOUND
    assert _grpc.status_code(503) == grpc.StatusCode.UNAVAILABLE
    assert _grpc.status_code(401) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc.status_code(422) == grpc.StatusCode.INVALID_ARGUMENT
    assert _grpc.status_code(500) == grpc.StatusCode.INTERNAL


def test_bearer_token_in_metadata():
    digest = hashlib.sha256(b"secret").hexdigest()
    assert _grpc.authorized([], None)
    assert _grpc.authorized([("authorization", "Bearer secret")], digest)
    assert _grpc.authorized([("Authorization", b"bearer  secret ")], digest)
    assert not _grpc.authorized([], digest)
    assert not _grpc.authorized([("authorization", "Bearer wrong")], digest)
    assert not _grpc.authorized([("authorization", "Basic secret")], digest)
    assert not _grpc.authorized([("authorization", "Bearer ")], digest)


def test_bytes_elements_use_the_binary_extensions_length_prefix():
    raw = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0)
    request, _ = _grpc.infer_request(_grpc.parse_infer(raw_message(raw, shape=(2,), datatype="BYTES")
                                                       .SerializeToString()))
    arrays, _ = decode_inputs(request, [TensorSpec("x", "BYTES", [-1])], split_rows=True)
    assert arrays["x"].tolist() == ["ab", ""]


def test_groups_and_their_results_travel_as_framed_bytes():
    raws = [b"first", b"", bytes(range(256)) * 10]
    assert _grpc.unpack_group(_grpc.pack_group(raws)) == raws
    results = [(200, b"\x00answer", None), (503, "queue is full: ü", 2.0), (400, "bad shape", None)]
    assert _grpc.unpack_results(_grpc.pack_results(results)) == results
    for truncated in (_grpc.pack_group(raws)[:-1], b"\x05\x00\x00"):
        with pytest.raises(InferError) as info:
            _grpc.unpack_group(truncated)
        assert info.value.status == 400


def test_the_model_name_is_read_without_parsing_the_message():
    message = service_pb2.ModelInferRequest(model_name="digits-mlp", id="7")
    message.raw_input_contents.append(b"\x00" * 1000)
    assert _grpc.infer_model_name(message.SerializeToString()) == "digits-mlp"
    long_name = "m" * 200  # a two-byte length: parsed instead
    assert _grpc.infer_model_name(service_pb2.ModelInferRequest(model_name=long_name).SerializeToString()) == long_name
    assert _grpc.infer_model_name(service_pb2.ModelInferRequest(id="x").SerializeToString()) == ""
    assert _grpc.infer_model_name(b"") == ""
    with pytest.raises(InferError):  # a length past the end is not a name
        _grpc.infer_model_name(b"\x0a\x09mlp")
