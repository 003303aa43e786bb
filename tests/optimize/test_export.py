import onnx
import pytest

from optimize.export import export_onnx
from optimize.loading import load_model
from optiserve.data import InputSpec, bind, load_npz
from optiserve.errors import UserError

SPEC = [InputSpec("x", (64,))]


def _eval(examples_dir):
    return bind(load_npz(examples_dir / "mlp/eval.npz"), SPEC)


def test_fresh_torchscript_exports_with_dynamic_batch_and_is_verified(examples_dir, tmp_path):
    result = export_onnx(load_model(examples_dir / "mlp/model.pt"), SPEC, _eval(examples_dir), tmp_path / "m.onnx")
    assert result.verified_samples == 450 and result.max_abs_diff <= result.tolerance
    dim0 = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.dim_value


def test_disagreement_is_an_error_not_a_warning(examples_dir, tmp_path):
    source = load_model(examples_dir / "mlp/model.pt")
    honest = source.run_torch
    source.run_torch = lambda feed: honest(feed) + 0.5  # PyTorch and ONNX now disagree
    with pytest.raises(UserError, match="disagrees with PyTorch"):
        export_onnx(source, SPEC, _eval(examples_dir), tmp_path / "m.onnx")


def test_onnx_with_external_data_is_copied_as_one_self_contained_file(examples_dir, tmp_path):
    exported = export_onnx(load_model(examples_dir / "mlp/model.pt"), SPEC, _eval(examples_dir), tmp_path / "m.onnx")
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(onnx.load(str(exported.path)), str(src / "ext.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="ext.onnx.data", size_threshold=1024)
    assert (src / "ext.onnx").stat().st_size < 10_000  # the weights are in ext.onnx.data

    copied = export_onnx(load_model(src / "ext.onnx"), SPEC, _eval(examples_dir), tmp_path / "out" / "copy.onnx")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.onnx"]
    model = onnx.load(str(copied.path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert copied.input_names == exported.input_names
