import numpy as np
import pytest

from optimize._errors import UserError
from optimize.data import InputSpec, bind, generated, load_npz, parse_input_shape


def test_load_and_bind_single_input(tmp_path):
    np.savez(tmp_path / "d.npz", whatever=np.zeros((5, 64)), labels=np.arange(5))
    data = bind(load_npz(tmp_path / "d.npz"), [InputSpec("x", (64,))])
    assert list(data.inputs) == ["x"] and data.inputs["x"].dtype == np.float32 and len(data) == 5


@pytest.mark.parametrize(
    "arrays, message",
    [({"inputs": np.zeros((0, 64))}, "empty"), ({"labels": np.arange(3)}, "no input arrays"),
     ({"inputs": np.zeros((4, 64)), "labels": np.arange(3)}, "different numbers")],
)
def test_bad_npz_files_are_explained(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError, match=message):
        load_npz(tmp_path / "d.npz")


def test_not_an_npz(tmp_path):
    (tmp_path / "d.npz").write_text("hello")
    with pytest.raises(UserError, match="not a readable"):
        load_npz(tmp_path / "d.npz")


def test_shape_mismatch_names_both_shapes(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((4, 1, 8, 8)))
    with pytest.raises(UserError, match=r"\(1, 8, 8\).*\(64,\)"):
        bind(load_npz(tmp_path / "d.npz"), [InputSpec("x", (64,))])


def test_parse_input_shape():
    assert parse_input_shape("1,64") == InputSpec("input", (64,))
    assert parse_input_shape("x=8x1x8x8") == InputSpec("x", (1, 8, 8))
    for bad in ("64", "a,b", ""):
        with pytest.raises(UserError):
            parse_input_shape(bad)


def test_generated_is_seeded():
    a, b = generated([InputSpec("x", (3,))], 4), generated([InputSpec("x", (3,))], 4)
    assert np.array_equal(a.inputs["x"], b.inputs["x"]) and a.inputs["x"].shape == (4, 3)
