"""The per-batch predict function without Ray: binding columns to inputs, row checks, outputs, rejects."""

import numpy as np
import pytest

from optiserve.errors import UserError
from serve.batch._predict import REJECT, Binding, TensorIO, assemble, bind_rows, predict_batch

RNG = np.random.default_rng(0)
W = RNG.standard_normal((4, 3)).astype(np.float32)
LINEAR = Binding(inputs=(TensorIO("input", (4,)),), outputs=(TensorIO("logits", (3,)),))


def run(feeds):
    return [feeds["input"] @ W]


def table_batch(n=5, **extra):
    x = RNG.random((n, 4))
    return x, {"path": np.full(n, "/d/a.csv", dtype=object), "id": np.arange(n) + 100,
               **{f"f{i}": x[:, i] for i in range(4)}, **extra}


def test_feature_columns_feed_a_single_input_and_keys_ride_along():
    x, batch = table_batch(label=np.arange(5) % 3)
    binding = Binding(LINEAR.inputs, LINEAR.outputs, key_columns=("id",))
    table = predict_batch(batch, binding, run)
    assert table.column_names == ["source", "id", "label", "logits", "probabilities", "prediction", REJECT]
    logits = np.array(table.column("logits").to_pylist())
    np.testing.assert_allclose(logits, x.astype(np.float32) @ W, rtol=1e-5)
    assert table.column("id").to_pylist() == list(range(100, 105))
    assert table.column("prediction").to_pylist() == list(logits.argmax(1))
    probs = np.array(table.column("probabilities").to_pylist())
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert set(table.column(REJECT).to_pylist()) == {""}


def test_probabilities_are_kept_when_the_model_already_outputs_them():
    def softmaxed(feeds):
        z = np.exp(feeds["input"] @ W)
        return [(z / z.sum(1, keepdims=True)).astype(np.float32)]

    x, batch = table_batch(id=np.arange(5))
    table = predict_batch(batch, Binding(LINEAR.inputs, LINEAR.outputs, key_columns=("id",)), softmaxed)
    np.testing.assert_allclose(table.column("probabilities").to_pylist(), table.column("logits").to_pylist())


def test_explicit_feature_columns_and_input_map():
    x, batch = table_batch(extra=np.zeros(5))
    cols = ("f0", "f1", "f2", "f3")
    for roles in ({"feature_columns": cols}, {"input_map": (("input", ",".join(cols)),)}):
        binding = Binding(LINEAR.inputs, LINEAR.outputs, key_columns=("id",), **roles)
        table = predict_batch(batch, binding, run)
        np.testing.assert_allclose(table.column("logits").to_pylist(), x.astype(np.float32) @ W, rtol=1e-5)


def test_too_many_feature_columns_is_one_clear_sentence():
    _, batch = table_batch()  # `id` is not declared a key: 5 columns for an input of 4
    with pytest.raises(UserError, match="5 feature column.*do not fit model input 'input'.*--key-columns"):
        predict_batch(batch, LINEAR, run)
    with pytest.raises(UserError, match="no key column"):
        predict_batch(batch, Binding(LINEAR.inputs, LINEAR.outputs, key_columns=("nope",)), run)
    _, batch = table_batch(name=np.array(["a"] * 5))
    with pytest.raises(UserError, match="'name' holds .* not numbers"):
        predict_batch(batch, Binding(LINEAR.inputs, LINEAR.outputs, key_columns=("id",)), run)


def test_tensor_columns_fixed_and_ragged_with_bad_shapes_rejected():
    x = RNG.random((4, 4))
    fixed = {"path": np.full(4, "/d/x.npy", dtype=object), "data": x}
    table = predict_batch(fixed, LINEAR, run)
    np.testing.assert_allclose(table.column("logits").to_pylist(), x.astype(np.float32) @ W, rtol=1e-5)
    ragged = np.empty(4, dtype=object)
    ragged[:] = [x[0], x[1][:3], x[2], np.append(x[3], 1.0)]
    table = predict_batch({"path": fixed["path"], "pixels": ragged}, LINEAR, run)
    reasons = table.column(REJECT).to_pylist()
    assert reasons[0] == reasons[2] == "" and "bad shape" in reasons[1] and "bad shape" in reasons[3]
    np.testing.assert_allclose(table.column("logits").to_pylist()[2], x[2].astype(np.float32) @ W, rtol=1e-5)
    wrong = {"path": fixed["path"], "data": RNG.random((4, 5))}
    assert all("bad shape" in r for r in predict_batch(wrong, LINEAR, run).column(REJECT).to_pylist())


@pytest.mark.parametrize("policy", ["reject", "zero", "propagate"])
def test_nan_policy(policy):
    x, batch = table_batch()
    batch["f2"] = batch["f2"].copy()
    batch["f2"][1] = np.nan
    batch["f0"] = np.array([0.1, 0.2, None, 0.4, "x"], dtype=object)  # a null and a value that is not a number
    binding = Binding(LINEAR.inputs, LINEAR.outputs, key_columns=("id",), nan=policy)
    table = predict_batch(batch, binding, run)
    reasons = table.column(REJECT).to_pylist()
    assert "not a number in column 'f0'" in reasons[4]
    logits = np.array(table.column("logits").to_pylist())
    if policy == "reject":
        assert "NaN" in reasons[1] and "NaN" in reasons[2] and reasons[0] == reasons[3] == ""
    elif policy == "zero":
        assert reasons[:4] == [""] * 4
        expected = np.array([[0.2, x[1, 1], 0.0, x[1, 3]]], dtype=np.float32) @ W
        np.testing.assert_allclose(logits[1], expected[0], rtol=1e-5)
    else:
        assert reasons[:4] == [""] * 4 and np.isnan(logits[1]).all()


def test_rows_the_model_fails_on_are_isolated():
    calls = []

    def picky(feeds):
        calls.append(len(feeds["input"]))
        if (feeds["input"][:, 0] > 0.9).any():
            raise RuntimeError("value out of range\nmore detail")
        return run(feeds)

    x, batch = table_batch(n=6)
    batch["f0"] = np.array([0.1, 0.95, 0.2, 0.3, 0.99, 0.4])
    table = predict_batch(batch, Binding(LINEAR.inputs, LINEAR.outputs, key_columns=("id",)), picky)
    reasons = table.column(REJECT).to_pylist()
    assert [bool(r) for r in reasons] == [False, True, False, False, True, False]
    assert reasons[1] == "model error: value out of range"
    assert calls[0] == 6 and calls[1:] == [1] * 6


def test_multi_input_models_match_columns_by_name():
    binding = Binding((TensorIO("a", (2,)), TensorIO("b", (-1,))), (TensorIO("s", (1,)),))
    batch = {"path": np.full(3, "p", dtype=object), "A": RNG.random((3, 2)), "b": RNG.random((3, 5))}
    feeds, reasons = bind_rows(batch, binding)
    assert feeds["a"].shape == (3, 2) and feeds["b"].shape == (3, 5) and set(reasons) == {""}
    with pytest.raises(UserError, match="model input 'b'"):
        bind_rows({"path": batch["path"], "a": batch["A"], "c": batch["b"]}, binding)


def test_all_rejected_batch_still_has_one_row_per_input_row():
    reasons = np.array(["bad"] * 3, dtype=object)
    table = assemble({"path": np.full(3, "p", dtype=object)}, LINEAR, None, np.array([], dtype=np.int64), reasons)
    assert table.num_rows == 3 and table.column(REJECT).to_pylist() == ["bad"] * 3
