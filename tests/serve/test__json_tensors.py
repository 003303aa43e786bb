"""Large JSON bodies through simdjson: the same requests, arrays and errors as pydantic's path, or that path."""

import json

import numpy as np
import pytest

from optiserve.repository import TensorSpec
from serve import _json_tensors
from serve._codec import InferError, decode_inputs, parse_request
from serve._json_tensors import MIN_BYTES, parse_large

N = 1024  # floats per tensor: a body well over MIN_BYTES
SPECS = [TensorSpec("x", "FP32", [-1, N]), TensorSpec("k", "INT64", [-1, 2])]


def body(x_data=None, **top) -> bytes:
    x = {"name": "x", "shape": [1, N], "datatype": "FP32", "parameters": {"note": "a"},
         "data": [round(0.001 * i - 0.5, 3) for i in range(N)] if x_data is None else x_data}
    k = {"name": "k", "shape": [1, 2], "datatype": "INT64", "data": [3, -4]}
    return json.dumps({"id": "r1", "inputs": [x, k], "outputs": [{"name": "y"}], **top}).encode()


def both_paths(raw: bytes, monkeypatch):
    """parse_request + decode_inputs with the simdjson path, then with pydantic's: (request, arrays) or the error."""
    out = []
    for min_bytes in (MIN_BYTES, 1 << 40):
        monkeypatch.setattr(_json_tensors, "MIN_BYTES", min_bytes)
        try:
            request = parse_request(raw)
            out.append((request, decode_inputs(request, SPECS, split_rows=True)[0]))
        except InferError as exc:
            out.append((exc.status, exc.message))
    return out


def test_float_tensors_skip_python_lists_and_decode_as_pydantics_path_does(monkeypatch):
    (fast, fast_arrays), (slow, slow_arrays) = both_paths(body(), monkeypatch)
    assert fast.inputs[0].values is not None and fast.inputs[0].data == []  # x came straight into an array ...
    assert fast.inputs[1].values is None and fast.inputs[1].data == [3, -4]  # ... INT64 as before
    assert slow.inputs[0].values is None
    for name in ("x", "k"):
        assert fast_arrays[name].dtype == slow_arrays[name].dtype
        np.testing.assert_array_equal(fast_arrays[name], slow_arrays[name])
    assert fast.model_dump(exclude={"inputs": {0: {"data"}}}) == slow.model_dump(exclude={"inputs": {0: {"data"}}})


@pytest.mark.parametrize("data, message", [
    ([1.0] * (N - 1), "has 1023 elements"),  # the count is checked as on pydantic's path
    ([1] * N, None),  # integers are numbers for a float tensor
    ([True] + [1.0] * (N - 1), None),  # booleans too (numpy's kinds), via pydantic's path
    (["1"] + [1.0] * (N - 1), "must contain numbers only"),
    ([None] + [1.0] * (N - 1), "must contain numbers only"),
    ([[1.0] * (N // 2), [1.0] * (N // 2)], None),  # nested: pydantic's path (it checks regularity)
    ([[1.0] * (N // 2), [1.0] * (N // 2 - 1)], "flat or regularly nested"),
])
def test_every_other_data_gets_what_pydantics_path_gives(data, message, monkeypatch):
    fast, slow = both_paths(body(data), monkeypatch)
    if message is None:
        np.testing.assert_array_equal(fast[1]["x"], slow[1]["x"])
    else:
        assert fast == slow and fast[0] == 400 and message in fast[1], (fast, slow)


@pytest.mark.parametrize("raw", [
    body()[:-1],  # not JSON
    b"\xff" + body(),  # not UTF-8
    json.dumps([1] * N).encode(),  # not an object
    body().replace(b'"id": "r1"', b'"id": 7'),  # a field pydantic refuses
    body().replace(b'"name": "x",', b'"name": "x", "name": "z",'),  # a repeated key
    body().replace(b'"note": "a"', b'"note": 123456789012345678901234567890'),  # an integer past 64 bits
])
def test_bodies_it_does_not_take_go_to_pydantics_path(raw, monkeypatch):
    assert len(raw) >= MIN_BYTES and parse_large(raw) is None
    fast, slow = both_paths(raw, monkeypatch)
    if isinstance(fast[0], int):  # refused: the same status and message
        assert fast == slow
    else:
        assert fast[0] == slow[0] and all(np.array_equal(fast[1][k], slow[1][k]) for k in slow[1])


def test_data_beside_binary_data_size_is_refused_on_both_paths(monkeypatch):
    raw = body().replace(b'"parameters": {"note": "a"}', b'"parameters": {"binary_data_size": 8}')
    fast, slow = both_paths(raw, monkeypatch)
    assert fast == slow and fast[0] == 400 and "both data and parameters.binary_data_size" in fast[1]


def test_small_bodies_take_pydantics_path():
    small = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    assert len(small) < MIN_BYTES and parse_large(small.encode()) is None


def test_a_document_still_referenced_does_not_break_the_next_parse():
    held = _json_tensors._parse(body())  # as a traceback holding a frame would
    request = parse_large(body())
    assert request is not None and request.inputs[0].values.shape == (N,)
    assert held["id"] == "r1"
