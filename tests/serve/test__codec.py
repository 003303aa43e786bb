import numpy as np
import pytest

from optimize.repository import TensorSpec
from serve._codec import InferenceRequest, InferError, batchable, check_requested, decode_inputs, encode_outputs

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
    assert check_requested(request, OUT) == ["y"]
    with pytest.raises(InferError, match="unknown output"):
        check_requested(InferenceRequest(inputs=req().inputs, outputs=[{"name": "nope"}]), OUT)
    out = encode_outputs({"y": np.array([[1.5, 2.0]], np.float32)}, OUT, None)
    assert out[0].shape == [1, 2] and out[0].data == [1.5, 2.0] and out[0].datatype == "FP32"


def test_batchable_needs_dynamic_leading_axes_everywhere():
    assert batchable(SPECS, OUT)
    assert not batchable([TensorSpec("x", "FP32", [1, 4])], OUT)
    assert not batchable(SPECS, [TensorSpec("y", "FP32", [])])
