"""`optimize prune model.onnx`: the ONNX graph is converted to torch layers, pruned, and exported again."""

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from optimize._prune_report import PruneReport
from optimize.cli import main
from optimize.examples import digits_split, train
from optimize.export import session
from optimize.prune import PruneConfig, prune
from optiserve.errors import UserError

FAST = ["--repeats", "5"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    x_tr, y_tr, x_ev, y_ev = digits_split()
    folder = tmp_path_factory.mktemp("digits-onnx")
    np.savez(folder / "mlp.npz", inputs=x_ev, labels=y_ev)
    np.savez(folder / "cnn.npz", inputs=x_ev.reshape(-1, 1, 8, 8), labels=y_ev)
    np.savez(folder / "cnn-calib.npz", inputs=x_tr[:256].reshape(-1, 1, 8, 8))
    return {"train": (x_tr, y_tr), "mlp": folder / "mlp.npz", "cnn": folder / "cnn.npz",
            "calib": folder / "cnn-calib.npz", "folder": folder}


def _export(model, sample, path, name="x", **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (sample,), str(path), input_names=[name], output_names=["logits"], opset_version=18,
                          dynamo=False, dynamic_axes={name: {0: "batch"}, "logits": {0: "batch"}}, **kwargs)
    return path


def _weights(path) -> list[tuple[int, ...]]:
    return sorted(tuple(i.dims) for i in onnx.load(str(path)).graph.initializer if len(i.dims) >= 2)


def test_cli_prunes_an_onnx_mlp(digits, tmp_path, capsys):
    x_tr, y_tr = digits["train"]
    torch.set_num_threads(1)
    mlp = train(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
                x_tr, y_tr, epochs=3)
    path = _export(mlp, torch.zeros(1, 64), tmp_path / "mlp.onnx", name="input.1")  # not a Python identifier
    code = main(["prune", str(path), "--ratio", "0.5", "--eval-data", str(digits["mlp"]), *FAST,
                 "--out", str(tmp_path / "out")])
    report = PruneReport.load(tmp_path / "out" / "report.json")
    assert code == (0 if report.chosen else 1) and report.source["kind"] == "onnx"
    assert {layer["name"]: tuple(layer["shape_after"]) for layer in report.layers} == {
        "0": (32, 64), "2": (32, 32), "4": (10, 32)}  # named after the PyTorch modules; the classes stay
    assert report.params_after < 0.4 * report.params_before
    assert _weights(tmp_path / "out" / "model.onnx") == [(10, 32), (32, 32), (32, 64)] or \
        _weights(tmp_path / "out" / "model.onnx") == sorted([(32, 10), (32, 32), (64, 32)])
    pruned, fp32 = report.variant("pruned"), report.variant("fp32")
    assert pruned.size_bytes < 0.6 * fp32.size_bytes
    assert any("matches onnxruntime" in n for n in report.notes)  # the conversion was checked before pruning
    sess = session(tmp_path / "out" / "model.onnx")
    assert [i.name for i in sess.get_inputs()] == ["input.1"] and [o.name for o in sess.get_outputs()] == ["logits"]
    assert sess.run(None, {"input.1": np.zeros((3, 64), np.float32)})[0].shape == (3, 10)
    assert "parameters" in capsys.readouterr().out


@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
def test_residual_cnn_with_batchnorm_prunes_coupled_channels(digits, tmp_path, criterion, residual_cnn):
    x_tr, y_tr = digits["train"]
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = train(residual_cnn(), x_tr.reshape(-1, 1, 8, 8), y_tr, epochs=2)
    path = _export(model, torch.zeros(1, 1, 8, 8), tmp_path / "res.onnx", do_constant_folding=False)
    assert "BatchNormalization" in {n.op_type for n in onnx.load(str(path)).graph.node}
    extra = ["--criterion", "taylor", "--calibration-data", str(digits["calib"])] if criterion == "taylor" else []
    code = main(["prune", str(path), "--ratio", "0.5", "--eval-data", str(digits["cnn"]), *extra, *FAST,
                 "--out", str(tmp_path / "out")])
    report = PruneReport.load(tmp_path / "out" / "report.json")
    assert code in (0, 1)
    after = {layer["name"]: tuple(layer["shape_after"]) for layer in report.layers}
    assert after == {"stem.0": (8, 1, 3, 3), "block.0": (8, 8, 3, 3), "block.3": (8, 8, 3, 3), "head": (10, 8)}
    assert report.params_after < 0.35 * report.params_before and report.flops_after < 0.35 * report.flops_before
    assert report.variant("pruned").size_bytes < report.variant("fp32").size_bytes
    x_ev = np.load(digits["cnn"])["inputs"]
    sess = session(tmp_path / "out" / "model.onnx")
    assert sess.run(None, {"x": x_ev[:5]})[0].shape == (5, 10)
    assert report.export["max_abs_diff"] < 1e-3  # the pruned ONNX model computes what the pruned torch one does
    assert any("matches onnxruntime" in n for n in report.notes)


def test_dynamo_exported_onnx_prunes_through_the_api(digits, tmp_path):
    """The dynamo exporter (what `optimize quantize model.pt2` writes) flattens with a constant Reshape."""
    x_tr, y_tr = digits["train"]
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 10))
    cnn = train(cnn, x_tr.reshape(-1, 1, 8, 8), y_tr, epochs=1)
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(cnn, (torch.zeros(2, 1, 8, 8),), str(path), input_names=["x"], opset_version=18,
                          dynamo=True, dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                          external_data=False)
    assert "Reshape" in {n.op_type for n in onnx.load(str(path)).graph.node}
    report = prune(path, tmp_path / "out", PruneConfig(ratio=0.5, repeats=5), eval_path=digits["cnn"])
    after = {layer["name"]: tuple(layer["shape_after"]) for layer in report.layers}
    assert after["0"] == (8, 1, 3, 3) and after["5"] == (16, 8 * 16) and after["7"] == (10, 16)
    assert session(tmp_path / "out" / "model.onnx").run(None, {"x": np.zeros((2, 1, 8, 8), np.float32)})[0].shape \
        == (2, 10)


def test_an_unconvertible_onnx_model_names_the_operator(digits, tmp_path, capsys):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("TopK", ["r", "k"], ["y", "idx"], name="pick_best")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
                              [numpy_helper.from_array(np.array([2], np.int64), "k")])
    path = tmp_path / "topk.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(path))
    with pytest.raises(UserError, match=r"operator TopK \(node 'pick_best'\)"):
        prune(path, tmp_path / "a", PruneConfig(repeats=5))
    assert main(["prune", str(path), "--eval-data", str(digits["mlp"]), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "operator TopK (node 'pick_best')" in err and len(err.strip().splitlines()) == 1


def test_layers_whose_width_the_graph_fixes_are_kept(tmp_path):
    """A per-channel constant (Mul by a (1, C, 1, 1) tensor) and a Reshape to constant dimensions cannot follow
    pruned channels: the layers feeding them keep their width, the others are pruned."""
    rng = np.random.default_rng(0)
    f = np.float32
    inits = {"w1": rng.normal(size=(8, 1, 3, 3)).astype(f), "w2": rng.normal(size=(16, 8, 3, 3)).astype(f),
             "scale": rng.uniform(0.5, 1.5, size=(1, 16, 1, 1)).astype(f), "w3": rng.normal(size=(12, 16, 1, 1))
             .astype(f), "shape": np.array([0, 4, -1], np.int64), "wl": rng.normal(size=(3 * 64, 10)).astype(f)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="/conv1/Conv"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="/conv2/Conv"),
             helper.make_node("Mul", ["c2", "scale"], ["m"]),
             helper.make_node("Conv", ["m", "w3"], ["c3"], name="/conv3/Conv"),
             helper.make_node("Reshape", ["c3", "shape"], ["rs"]),  # (n, 12, 8, 8) -> (n, 4, 192)
             helper.make_node("ReduceMean", ["rs"], ["mean"], axes=[1], keepdims=0),
             helper.make_node("MatMul", ["mean", "wl"], ["y"], name="/head/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    report = prune(path, tmp_path / "out", PruneConfig(ratio=0.5, repeats=5, input_shape="1,1,8,8"))
    after = {layer["name"]: tuple(layer["shape_after"]) for layer in report.layers}
    assert after == {"conv1": (4, 1, 3, 3), "conv2": (16, 4, 3, 3), "conv3": (12, 16, 1, 1), "head": (10, 192)}
    x = np.random.default_rng(1).normal(size=(3, 1, 8, 8)).astype(f)
    assert session(tmp_path / "out" / "model.onnx").run(None, {"x": x})[0].shape == (3, 10)
