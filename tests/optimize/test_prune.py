import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from optimize._prune_graph import modulize
from optimize._prune_report import PruneReport, to_markdown
from optimize.cli import main
from optimize.examples import DigitsMLP, digits_split
from optimize.export import session
from optimize.prune import PruneConfig, prune
from optimize.quantize import QuantizeConfig, quantize
from optiserve.errors import UserError

FAST = dict(repeats=5)


def _weights(path) -> dict[str, tuple[int, ...]]:
    model = onnx.load(str(path))
    return {i.name: tuple(i.dims) for i in model.graph.initializer if len(i.dims) >= 2}


def _npz(path, x, y=None):
    np.savez(path, inputs=x, **({"labels": y} if y is not None else {}))
    return path


@pytest.fixture(scope="module")
def digits_train(tmp_path_factory):
    x_tr, y_tr, _, _ = digits_split()
    folder = tmp_path_factory.mktemp("digits")
    return {"mlp": _npz(folder / "mlp.npz", x_tr, y_tr),
            "cnn": _npz(folder / "cnn.npz", x_tr.reshape(-1, 1, 8, 8), y_tr)}


@pytest.fixture(scope="module")
def pruned_mlp(examples_dir, digits_train, tmp_path_factory):
    out = tmp_path_factory.mktemp("p-mlp")
    mlp = examples_dir / "mlp"
    report = prune(mlp / "model.pt2", out, PruneConfig(ratio=0.5, epochs=3, **FAST),
                   eval_path=mlp / "eval.npz", finetune_path=digits_train["mlp"])
    return out, report


def test_mlp_structured_pruning_really_shrinks_the_onnx_model(pruned_mlp):
    out, report = pruned_mlp
    assert {layer["name"]: tuple(layer["shape_after"]) for layer in report.layers} == {
        "net.0": (512, 64), "net.2": (512, 512), "net.4": (10, 512)}  # the output layer keeps its 10 classes
    shapes = sorted(_weights(out / "model.onnx").values())
    assert (512, 512) in shapes or (512, 512)[::-1] in shapes
    assert max(np.prod(s) for s in shapes) == 512 * 512
    pruned, fp32 = report.variant("pruned"), report.variant("fp32")
    assert pruned.size_ratio < 0.3 and pruned.size_bytes < fp32.size_bytes
    assert report.params_after < 0.3 * report.params_before and report.flops_after < 0.3 * report.flops_before
    assert report.export["max_abs_diff"] < 1e-3  # the pruned ONNX export was verified against pruned PyTorch
    sess = session(out / "model.onnx")
    assert sess.run(None, {"x": np.zeros((3, 64), np.float32)})[0].shape == (3, 10)


def test_fine_tuning_recovers_accuracy(pruned_mlp):
    _, report = pruned_mlp
    pruned = report.variant("pruned")
    assert report.finetune["epochs"] == 3 and report.finetune["accuracy_after"] == pruned.accuracy
    assert pruned.accuracy_change_pts >= -1.5 and pruned.top1_agreement >= 0.95
    assert pruned.within_budget is (pruned.accuracy_change_pts >= -1.0)


def test_report_round_trips_and_renders(pruned_mlp):
    out, report = pruned_mlp
    loaded = PruneReport.load(out / "report.json")
    assert loaded.to_dict() == json.loads((out / "report.json").read_text())
    assert loaded.params_after == report.params_after and loaded.variant("pruned").extra["ratio"] == 0.5
    md = (out / "report.md").read_text()
    assert md == to_markdown(loaded) and "| net.2 | (1024, 1024) | (512, 512) |" in md


def test_prune_then_quantize_composes(pruned_mlp, examples_dir, tmp_path):
    out, _ = pruned_mlp
    report = quantize(out / "model.pt2", tmp_path, QuantizeConfig(method="dynamic", repeats=5),
                      eval_path=examples_dir / "mlp" / "eval.npz")
    assert report.chosen == "dynamic-int8"
    assert (512, 512) in _weights(tmp_path / "variants" / "fp32.onnx").values() or \
        (512, 512) in [s[::-1] for s in _weights(tmp_path / "variants" / "fp32.onnx").values()]


def test_cnn_taylor_pruning_rounds_channels(examples_dir, tmp_path):
    cnn = examples_dir / "cnn"
    report = prune(cnn / "model.pt2", tmp_path, PruneConfig(ratio=0.6, criterion="taylor", round_to=8, **FAST),
                   calibration_path=cnn / "calibration.npz", eval_path=cnn / "eval.npz")
    after = {layer["name"]: layer["shape_after"] for layer in report.layers}
    for name in ("features.0", "features.3", "head.1"):
        assert after[name][0] % 8 == 0 and after[name][0] < {"features.0": 32, "features.3": 64, "head.1": 128}[name]
    assert after["features.3"][1] == after["features.0"][0]  # the next conv lost the matching input channels
    assert after["head.1"][1] == after["features.3"][0] * 16  # ... and so did the Linear after Flatten
    conv_shapes = [s for s in _weights(tmp_path / "model.onnx").values() if len(s) == 4]
    assert sorted(s[0] for s in conv_shapes) == sorted([after["features.0"][0], after["features.3"][0]])
    assert report.variant("pruned").size_ratio < 0.5


def test_residual_block_prunes_coupled_channels_and_recovers(digits_train, tmp_path, residual_cnn):
    from optimize.examples import train

    x_tr, y_tr, x_ev, y_ev = digits_split()
    x_tr, x_ev = x_tr.reshape(-1, 1, 8, 8), x_ev.reshape(-1, 1, 8, 8)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = train(residual_cnn(32), x_tr, y_tr, epochs=6)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (torch.from_numpy(x_ev[:4]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "res.pt2")
    eval_path = _npz(tmp_path / "eval.npz", x_ev, y_ev)
    report = prune(tmp_path / "res.pt2", tmp_path / "out", PruneConfig(ratio=0.5, epochs=8, learning_rate=3e-3,
                   max_accuracy_drop=2, **FAST), eval_path=eval_path, finetune_path=digits_train["cnn"])
    after = {layer["name"]: tuple(layer["shape_after"]) for layer in report.layers}
    assert after["stem.0"] == (16, 1, 3, 3) and after["block.0"] == (16, 16, 3, 3)
    assert after["block.3"] == (16, 16, 3, 3) and after["head"] == (10, 16)  # add-coupled channels shrank together
    pruned = report.variant("pruned")
    assert pruned.size_ratio < 0.4 and report.flops_after < 0.35 * report.flops_before
    assert pruned.accuracy_change_pts >= -2 and pruned.top1_agreement >= 0.9  # outputs stay close after tuning
    sess = session(tmp_path / "out" / "model.onnx")
    assert sess.run(None, {"x": x_ev[:5]})[0].shape == (5, 10)


def test_modulize_keeps_the_function_and_names(examples_dir):
    program = torch.export.load(str(examples_dir / "cnn" / "model.pt2"))
    model = modulize(program.module())
    assert isinstance(model.get_submodule("features.0"), nn.Conv2d)
    assert isinstance(model.get_submodule("features.1"), nn.BatchNorm2d)
    assert isinstance(model.get_submodule("head.3"), nn.Linear)
    x = torch.rand(7, 1, 8, 8)
    assert torch.allclose(model(x), program.module()(x), atol=1e-6)


def test_unstructured_pruning_gives_sparsity_not_a_smaller_model(examples_dir, tmp_path):
    mlp = examples_dir / "mlp"
    report = prune(mlp / "model.pt2", tmp_path, PruneConfig(ratio=0.8, mode="unstructured", **FAST),
                   eval_path=mlp / "eval.npz")
    assert all(layer["shape_after"] == layer["shape_before"] for layer in report.layers)
    assert 0.15 < report.params_after / report.params_before < 0.3  # non-zero parameters left
    zeros = [float(np.mean(onnx.numpy_helper.to_array(i) == 0)) for i in onnx.load(str(tmp_path / "model.onnx"))
             .graph.initializer if len(i.dims) == 2 and i.dims[0] == i.dims[1]]
    assert zeros and zeros[0] > 0.6
    assert 0.95 < report.variant("pruned").size_ratio < 1.05
    assert any("not speed" in n for n in report.notes)


def test_size_target_searches_for_the_least_pruning(examples_dir, tmp_path):
    mlp = examples_dir / "mlp"
    report = prune(mlp / "model.pt2", tmp_path, PruneConfig(target_size_share=0.5, **FAST),
                   eval_path=mlp / "eval.npz")
    assert [s["meets_target"] for s in report.search][-1] and not any(s["meets_target"] for s in report.search[:-1])
    assert report.ratio == report.search[-1]["ratio"] and 0.2 <= report.ratio <= 0.4
    assert report.variant("pruned").size_ratio <= 0.5


def test_ignore_keeps_a_layer_and_pickles_need_permission(tmp_path, examples_dir):
    torch.manual_seed(0)
    torch.save(DigitsMLP(hidden=64), tmp_path / "mlp.pkl")
    with pytest.raises(UserError, match="--allow-pickle"):
        prune(tmp_path / "mlp.pkl", tmp_path / "a", PruneConfig(input_shape="1,64", **FAST))
    report = prune(tmp_path / "mlp.pkl", tmp_path / "b", PruneConfig(ratio=0.5, ignore=("net.0",), allow_pickle=True,
                   input_shape="1,64", **FAST))
    after = {layer["name"]: tuple(layer["shape_after"]) for layer in report.layers}
    assert after == {"net.0": (64, 64), "net.2": (32, 64), "net.4": (10, 32)}
    assert not report.accuracy_measured and report.budget["metric"] == "relative_error_pct"


def test_torchscript_is_traced_into_prunable_layers(examples_dir, tmp_path):
    for name, kept in (("mlp", "net.4"), ("cnn", "head.3")):
        data = examples_dir / name
        report = prune(data / "model.pt", tmp_path / name, PruneConfig(ratio=0.5, **FAST), eval_path=data / "eval.npz")
        shapes = {layer["name"]: (layer["shape_before"], layer["shape_after"]) for layer in report.layers}
        assert shapes[kept][0][0] == shapes[kept][1][0]  # the output layer keeps its width (the classes)
        assert any(after[0] < before[0] for before, after in shapes.values())  # channels really went
        assert report.params_after < report.params_before and report.export["max_abs_diff"] < 1e-3
        assert report.source["kind"] == "torchscript"


def test_refusals_are_one_sentence(examples_dir, tmp_path, capsys):
    mlp = examples_dir / "mlp"
    with pytest.raises(UserError, match="matches no module"):
        prune(mlp / "model.pt2", tmp_path, PruneConfig(ignore=("nope",), **FAST), eval_path=mlp / "eval.npz")
    with pytest.raises(UserError, match="needs --calibration-data"):
        prune(mlp / "model.pt2", tmp_path, PruneConfig(criterion="taylor", **FAST), eval_path=mlp / "eval.npz")
    with pytest.raises(UserError, match="not a target"):
        PruneConfig(mode="unstructured", max_latency_ms=1.0)
    with pytest.raises(UserError, match="between 0 and 1"):
        PruneConfig(ratio=1.5)
    assert main(["prune", str(mlp / "model.pt"), "--out", str(tmp_path)]) == 2
    assert "error: " in capsys.readouterr().err
    assert main(["prune", str(mlp / "model.pt2"), "--target-size", "big", "--out", str(tmp_path)]) == 2


def test_cli_writes_the_outputs(examples_dir, tmp_path, capsys):
    mlp = examples_dir / "mlp"
    code = main(["prune", str(mlp / "model.pt2"), "--ratio", "0.25", "--eval-data", str(mlp / "eval.npz"),
                 "--repeats", "5", "--out", str(tmp_path)])
    report = PruneReport.load(tmp_path / "report.json")
    assert code == (0 if report.chosen else 1)
    assert {p.name for p in tmp_path.iterdir()} >= {"model.onnx", "model.pt2", "report.json", "report.md"}
    assert "parameters" in capsys.readouterr().out
