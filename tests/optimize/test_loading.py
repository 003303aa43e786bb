import pytest
import torch

from optimize.examples import DigitsMLP
from optimize.loading import load_model
from optiserve.errors import UserError


def test_torchscript(examples_dir):
    src = load_model(examples_dir / "mlp/model.pt")
    assert src.kind == "torchscript" and src.input_names == ["x"] and src.input_specs is None
    assert len(src.sha256) == 64


def test_exported_program_knows_its_shapes(examples_dir):
    src = load_model(examples_dir / "cnn/model.pt2")
    assert src.kind == "exported"
    assert [(s.name, s.shape) for s in src.input_specs] == [("x", (1, 8, 8))]


def test_onnx(tmp_path):
    path = tmp_path / "m.onnx"
    torch.onnx.export(DigitsMLP(8), (torch.zeros(1, 64),), str(path), input_names=["inp"],
                      dynamic_axes={"inp": {0: "b"}}, dynamo=False)
    src = load_model(path)
    assert src.kind == "onnx" and src.module is None and src.input_specs[0].shape == (64,)


def test_state_dict_is_refused_with_how_to(tmp_path):
    torch.save(DigitsMLP(8).state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserError, match="state dict.*torch.jit.save"):
        load_model(tmp_path / "w.pt")


def test_pickled_module_needs_allow_pickle(tmp_path):
    torch.save(DigitsMLP(8), tmp_path / "m.pt")
    with pytest.raises(UserError, match="pickled.*--allow-pickle"):
        load_model(tmp_path / "m.pt")
    src = load_model(tmp_path / "m.pt", allow_pickle=True)
    assert src.kind == "pickle" and src.input_names == ["x"]


@pytest.mark.parametrize(
    "name, content, message",
    [("m.onnx", b"not onnx", "not a valid ONNX"), ("m.pt2", b"junk", "torch.export"),
     ("m.pt", b"junk", "pickled|could not"), ("m.h5", b"junk", "unsupported format")],
)
def test_corrupt_or_unsupported_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_model(tmp_path / name)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
