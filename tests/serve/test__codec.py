"""The v2 codec: JSON tensors, and Triton's binary tensor data extension with Content-Type-free bodies.

Binary wire format from triton-inference-server/server docs/protocol/extension_binary_data.md; where Triton's
own client (tritonclient.http, a test dependency) is installed, its request builder and response reader are used.
"""

import json
import struct

import numpy as np
import pytest

from optiserve.repository import TensorSpec
from serve._codec import (
    DTYPES,
    InferenceRequest,
    InferenceResponse,
    InferError,
    batchable,
    check_requested,
    decode_inputs,
    encode_outputs,
    parse_request,
    render_response,
)

SPECS = [TensorSpec("x", "FP32", [-1, 4])]
OUT = [TensorSpec("y", "FP32", [-1, 2])]


def req(**tensor):
    base = {"name": "x", "shape": [2, 4], "datatype": "FP32", "data": list(range(8))}
    return InferenceRequest(inputs=[{**base, **tensor}])


def test_decodes_flat_and_nested_data_to_the_model_dtype():
    arrays, rows = decode_inputs(req(), SPECS, split_rows=True)
    assert rows == 2 and arrays["x"].dtype == np.float32 and arrays["x"].shape == (2, 4)
    nested, _ = decode_inputs(req(data=[[0, 1, 2, 3], [4, 5, 6, 7]]), SPECS, split_rows=True)
    np.testing.assert_array_equal(nested["x"], arrays["x"])


@pytest.mark.parametrize("tensor, fragment", [
    ({"name": "z"}, "unknown input 'z'"),
    ({"datatype": "INT64"}, "datatype INT64"),
    ({"shape": [2, 5]}, "shape [2, 5]"),
    ({"shape": [2, 4, 1]}, "shape"),
    ({"shape": [-2, 4]}, "shape"),
    ({"data": list(range(7))}, "7 elements"),
    ({"data": ["a"] * 8}, "numbers only"),
    ({"data": [[1, 2], [3]]}, "regularly nested"),
    ({"data": [float("nan")] * 8}, "NaN"),
    ({"shape": [0, 4], "data": []}, "no rows"),
])
def test_rejects_bad_tensors_with_400(tensor, fragment):
    with pytest.raises(InferError) as exc:
        decode_inputs(req(**tensor), SPECS, split_rows=True)
    assert exc.value.status == 400 and fragment in exc.value.message


def test_missing_duplicate_and_ragged_inputs():
    specs = [TensorSpec("a", "INT64", [-1]), TensorSpec("b", "INT64", [-1])]
    with pytest.raises(InferError, match="missing"):
        decode_inputs(InferenceRequest(inputs=[{"name": "a", "shape": [1], "datatype": "INT64", "data": [1]}]),
                      specs, split_rows=True)
    two = {"name": "a", "shape": [1], "datatype": "INT64", "data": [1]}
    with pytest.raises(InferError, match="more than once"):
        decode_inputs(InferenceRequest(inputs=[two, two]), specs, split_rows=True)
    with pytest.raises(InferError, match="same number of rows"):
        decode_inputs(InferenceRequest(inputs=[two, {"name": "b", "shape": [2], "datatype": "INT64", "data": [1, 2]}]),
                      specs, split_rows=True)


def test_integer_inputs_reject_floats_and_out_of_range_values():
    specs = [TensorSpec("i", "INT8", [-1])]
    ok, _ = decode_inputs(InferenceRequest(inputs=[{"name": "i", "shape": [2], "datatype": "INT8", "data": [1, -3]}]),
                          specs, split_rows=True)
    assert ok["i"].dtype == np.int8
    for data in ([1.5, 2], [300, 1], [2**70, 1]):
        with pytest.raises(InferError):
            decode_inputs(InferenceRequest(inputs=[{"name": "i", "shape": [2], "datatype": "INT8", "data": data}]),
                          specs, split_rows=True)


def test_requested_outputs_and_encoding():
    request = InferenceRequest(inputs=req().inputs, outputs=[{"name": "y"}])
    assert check_requested(request, OUT) == [("y", False)]
    with pytest.raises(InferError, match="unknown output"):
        check_requested(InferenceRequest(inputs=req().inputs, outputs=[{"name": "nope"}]), OUT)
    out = encode_outputs({"y": np.array([[1.5, 2.0]], np.float32)}, OUT, [("y", False)])
    assert out[0].shape == [1, 2] and out[0].data == [1.5, 2.0] and out[0].datatype == "FP32"


def test_batchable_needs_dynamic_leading_axes_everywhere():
    assert batchable(SPECS, OUT)
    assert not batchable([TensorSpec("x", "FP32", [1, 4])], OUT)
    assert not batchable(SPECS, [TensorSpec("y", "FP32", [])])


# ---- binary tensor data extension ------------------------------------------------------------------------------------


def binary_body(inputs: list[dict], raw: list[bytes], **request) -> tuple[bytes, str]:
    """JSON header then raw tensor bytes, as the extension lays them out; returns (body, header length)."""
    header = json.dumps({**request, "inputs": inputs}).encode()
    return header + b"".join(raw), str(len(header))


def tensor(name: str, datatype: str, shape: list[int], size: int) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


def bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def decode(body: bytes, header: str | None, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    return decode_inputs(parse_request(body, header), specs, split_rows=True)[0]


def test_json_body_needs_no_content_type_and_pydantic_errors_are_400():
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}).encode()
    arrays = decode(body, None, [TensorSpec("x", "FP32", [-1, 2])])
    np.testing.assert_array_equal(arrays["x"], [[1, 2]])
    for bad, fragment in [(b"{oops", "Invalid JSON"), (b"[1]", "object"), (b'{"inputs": []}', "inputs")]:
        with pytest.raises(InferError) as exc:
            parse_request(bad)
        assert exc.value.status == 400 and fragment in exc.value.message


@pytest.mark.parametrize("datatype", sorted(DTYPES))
def test_every_fixed_size_datatype_round_trips_as_binary(datatype):
    dtype = DTYPES[datatype]
    x = (np.arange(6) % 2).astype(dtype).reshape(2, 3) if dtype.kind == "b" else np.arange(6, dtype=dtype).reshape(2, 3)
    spec = [TensorSpec("x", datatype, [-1, 3])]
    body, header = binary_body([tensor("x", datatype, [2, 3], x.nbytes)], [x.astype(dtype.newbyteorder("<")).tobytes()])
    got = decode(body, header, spec)["x"]
    assert got.dtype == dtype and got.flags.writeable and got.flags.aligned
    np.testing.assert_array_equal(got, x)
    out = encode_outputs({"x": got}, spec, [("x", True)])[0]
    assert out.data is None and out.parameters == {"binary_data_size": x.nbytes} and out._raw == x.tobytes()


def test_fp16_binary_and_json_inputs_mixed_in_one_request():
    specs = [TensorSpec("h", "FP16", [-1, 2]), TensorSpec("i", "INT64", [-1])]
    h = np.array([[0.5, -2.0]], np.float16)
    body, header = binary_body([tensor("h", "FP16", [1, 2], 4),
                                {"name": "i", "datatype": "INT64", "shape": [1], "data": [7]}], [h.tobytes()])
    arrays = decode(body, header, specs)
    np.testing.assert_array_equal(arrays["h"], h)
    assert arrays["i"].tolist() == [7]


def test_bytes_binary_and_json():
    spec = [TensorSpec("t", "BYTES", [-1])]
    body, header = binary_body([tensor("t", "BYTES", [3], 4 * 3 + 6)], [bytes_elements(b"ab", "é".encode(), b"cd")])
    got = decode(body, header, spec)["t"]
    assert got.dtype == object and got.tolist() == ["ab", "é", "cd"]
    body = json.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [2], "data": [["x"], ["yz"]]}]})
    assert decode(body.encode(), None, spec)["t"].tolist() == ["x", "yz"]
    binary, text = encode_outputs({"t": got}, spec, [("t", True), ("t", False)])
    assert binary._raw == bytes_elements(b"ab", "é".encode(), b"cd") and text.data == ["ab", "é", "cd"]


@pytest.mark.parametrize("inputs, raw, header, fragment", [
    ([tensor("x", "FP32", [1, 2], 4)], [b"\0" * 4], None, "needs 8 bytes"),
    ([tensor("x", "FP32", [1, 2], 12)], [b"\0" * 12], None, "needs 8 bytes"),
    ([tensor("x", "FP32", [1, 2], 8)], [b"\0" * 4], None, "only 4 remain"),
    ([tensor("x", "FP32", [1, 2], 8)], [b"\0" * 10], None, "2 bytes after the JSON header"),
    ([tensor("x", "FP32", [1, 2], 8)], [b"\0" * 8], "99999", "larger than the body"),
    ([tensor("x", "FP32", [1, 2], 8)], [b"\0" * 8], "-3", "byte count"),
    ([tensor("x", "FP32", [1, 2], True)], [b"\0"], None, "non-negative integer"),
    ([tensor("x", "FP32", [1, 2], -8)], [], None, "non-negative integer"),
    ([{**tensor("x", "FP32", [1, 2], 8), "data": [1, 2]}], [b"\0" * 8], None, "both data"),
    ([{"name": "x", "datatype": "FP32", "shape": [1, 2]}], [], None, "neither data nor"),
    ([tensor("x", "FP32", [1, 2], 8)], [np.array([np.nan, 1], np.float32).tobytes()], None, "NaN"),
    ([tensor("b", "BOOL", [2], 2)], [b"\x01\x02"], None, "bytes 0 or 1"),
    ([tensor("t", "BYTES", [2], 6)], [bytes_elements(b"ab")], None, "1 BYTES elements"),
    ([tensor("t", "BYTES", [1], 8)], [bytes_elements(b"ab") + b"\0\0"], None, "beyond its 1 BYTES"),
    ([tensor("t", "BYTES", [2], 8)], [bytes_elements(b"ab") + b"\0\0"], None, "truncated length prefix"),
    ([tensor("t", "BYTES", [1], 6)], [struct.pack("<I", 9) + b"ab"], None, "declares 9 bytes"),
    ([tensor("t", "BYTES", [1], 5)], [bytes_elements(b"\xff")], None, "not UTF-8"),
])
def test_bad_binary_requests_are_400(inputs, raw, header, fragment):
    specs = [TensorSpec("x", "FP32", [-1, 2]), TensorSpec("b", "BOOL", [-1]), TensorSpec("t", "BYTES", [-1])]
    body, length = binary_body(inputs, raw)
    with pytest.raises(InferError) as exc:
        request = parse_request(body, header or length)
        by_name = {s.name: s for s in specs}
        decode_inputs(request, [by_name[t["name"]] for t in inputs], split_rows=True)
    assert exc.value.status == 400 and fragment in exc.value.message, exc.value.message


def test_binary_output_flags_per_request_and_per_output():
    specs = [TensorSpec("a", "FP32", [-1]), TensorSpec("b", "INT64", [-1])]
    x = {"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}

    def wanted(**extra):
        return check_requested(parse_request(json.dumps({**x, **extra}).encode()), specs)

    assert wanted() == [("a", False), ("b", False)]
    assert wanted(parameters={"binary_data_output": True}) == [("a", True), ("b", True)]
    assert wanted(parameters={"binary_data_output": True},
                  outputs=[{"name": "b", "parameters": {"binary_data": False}}]) == [("b", False)]
    assert wanted(outputs=[{"name": "a", "parameters": {"binary_data": True}}, {"name": "b"}]) == [
        ("a", True), ("b", False)]
    for bad in ({"parameters": {"binary_data_output": "yes"}},
                {"outputs": [{"name": "a", "parameters": {"binary_data": 1}}]}):
        with pytest.raises(InferError, match="true or false"):
            wanted(**bad)


def test_rendered_response_puts_binary_outputs_after_the_json_header_in_order():
    specs = [TensorSpec("a", "FP32", [-1]), TensorSpec("b", "INT64", [-1]), TensorSpec("c", "BYTES", [-1])]
    arrays = {"a": np.array([1.5, float("inf")], np.float32), "b": np.array([3, 4]), "c": np.array(["hi"], object)}
    outputs = encode_outputs(arrays, specs, [("a", True), ("b", False), ("c", True)])
    body, length = render_response(InferenceResponse(model_name="m", model_version="1", outputs=outputs))
    header = json.loads(body[:length])
    assert [o.get("parameters") for o in header["outputs"]] == [{"binary_data_size": 8}, None,
                                                               {"binary_data_size": 6}]
    assert header["outputs"][1]["data"] == [3, 4] and "data" not in header["outputs"][0]
    assert body[length:] == arrays["a"].tobytes() + bytes_elements(b"hi")
    plain, none = render_response(InferenceResponse(model_name="m", outputs=encode_outputs(arrays, specs[:1],
                                                                                           [("a", False)])))
    assert none is None and b"Infinity" in plain


def test_tritonclient_request_and_response_wire_format():
    http = pytest.importorskip("tritonclient.http")
    from tritonclient.http._utils import _get_inference_request

    specs = [TensorSpec("x", "FP16", [-1, 2]), TensorSpec("t", "BYTES", [-1]), TensorSpec("n", "INT32", [-1])]
    x = np.array([[1.0, 2.5]], np.float16)
    t = np.array([b"one", "two"], object)
    inputs = [http.InferInput("x", [1, 2], "FP16").set_data_from_numpy(x),
              http.InferInput("t", [2], "BYTES").set_data_from_numpy(t),
              http.InferInput("n", [1], "INT32").set_data_from_numpy(np.array([5], np.int32), binary_data=False)]
    outputs = [http.InferRequestedOutput("x", binary_data=True), http.InferRequestedOutput("t", binary_data=False)]
    body, json_size = _get_inference_request(inputs, "req-1", outputs, 0, False, False, 0, None, None)
    request = parse_request(body, str(json_size))
    arrays, _ = decode_inputs(request, specs, split_rows=False)
    np.testing.assert_array_equal(arrays["x"], x)
    assert arrays["t"].tolist() == ["one", "two"] and arrays["n"].tolist() == [5]

    wanted = check_requested(request, specs)
    response = InferenceResponse(model_name="m", id=request.id, outputs=encode_outputs(arrays, specs, wanted))
    body, length = render_response(response)
    result = http.InferResult.from_response_body(body, header_length=length)
    np.testing.assert_array_equal(result.as_numpy("x"), x)
    assert result.as_numpy("t").tolist() == ["one", "two"] and result.get_response()["id"] == "req-1"

    # no outputs named: the client asks for every output as binary data
    body, json_size = _get_inference_request(inputs[:1], "", None, 0, False, False, 0, None, None)
    request = parse_request(body, str(json_size))
    wanted = check_requested(request, specs[:1])
    out, length = render_response(InferenceResponse(model_name="m", outputs=encode_outputs(arrays, specs[:1], wanted)))
    np.testing.assert_array_equal(http.InferResult.from_response_body(out, header_length=length).as_numpy("x"), x)
