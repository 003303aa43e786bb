import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from optimize._onnx_to_torch import onnx_to_torch, verify
from optimize.export import session
from optiserve.errors import UserError


def _random_statistics(model: nn.Module) -> nn.Module:
    """BatchNorm with non-trivial statistics, so a wrong eps/mean/var mapping shows in the outputs."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            nn.init.uniform_(m.weight, 0.5, 2)
            nn.init.uniform_(m.bias, -0.5, 0.5)
    return model.eval()


def export(model: nn.Module, sample: torch.Tensor, path, dynamo: bool, **kwargs):
    """As optimize.export does it: legacy exporter with a dynamic batch axis, or the dynamo exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (sample,), str(path), input_names=["x"], opset_version=18, dynamo=True,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False, **kwargs)
        else:
            torch.onnx.export(model, (sample,), str(path), input_names=["x"], opset_version=18, dynamo=False,
                              dynamic_axes={"x": {0: "batch"}}, **kwargs)
    return path


def _ops(path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_mlp_gemms_become_named_linears_and_match_onnxruntime(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(20, 32), nn.GELU(), nn.Linear(32, 16), nn.Tanh(), nn.Dropout(), nn.Linear(16, 3),
                        nn.Softmax(-1)).eval()
    path = export(mlp, torch.rand(2, 20), tmp_path / "mlp.onnx", dynamo=False)
    assert "Gemm" in _ops(path)
    module = onnx_to_torch(path)
    assert [n for n, m in module.named_modules() if isinstance(m, nn.Linear)] == ["0", "2", "5"]
    x = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
    assert verify(module, path, {"x": x}, ["x"]) < 1e-5
    assert torch.allclose(module(torch.from_numpy(x)), mlp(torch.from_numpy(x)), atol=1e-5)


@pytest.mark.parametrize("dynamo,folding", [(False, True), (False, False), (True, True)])
def test_residual_cnn_with_batchnorm_matches_onnxruntime(tmp_path, dynamo, folding, residual_cnn):
    model = _random_statistics(residual_cnn())
    kwargs = {} if dynamo else {"do_constant_folding": folding}
    path = export(model, torch.rand(2, 1, 8, 8), tmp_path / "res.onnx", dynamo, **kwargs)
    module = onnx_to_torch(path)
    layers = {n: type(m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d | nn.Linear)}
    assert layers["stem.0"] is nn.Conv2d and layers["block.3"] is nn.Conv2d and layers["head"] is nn.Linear
    if "BatchNormalization" in _ops(path):  # without constant folding the legacy exporter keeps BatchNorm
        assert layers["stem.1"] is nn.BatchNorm2d and layers["block.4"] is nn.BatchNorm2d
    x = np.random.default_rng(1).normal(size=(33, 1, 8, 8)).astype(np.float32)
    assert verify(module, path, {"x": x}, ["x"]) < 1e-4
    exported = torch.export.export(module, (torch.from_numpy(x[:4]),),  # what the prune path does next
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert torch.allclose(exported.module()(torch.from_numpy(x)), model(torch.from_numpy(x)), atol=1e-4)


class _ViewCNN(nn.Module):
    """Flattens with x.view(x.size(0), -1): the legacy exporter computes that shape with Shape/Gather/Concat."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc(y.view(y.size(0), -1))


@pytest.mark.parametrize("dynamic", [True, False])
def test_a_flatten_by_view_becomes_torch_flatten(tmp_path, dynamic):
    torch.manual_seed(0)
    model = _ViewCNN().eval()
    path = tmp_path / "view.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(2, 1, 8, 8),), str(path), input_names=["x"], opset_version=18,
                          dynamo=False, dynamic_axes={"x": {0: "batch"}} if dynamic else None)
    assert ("Shape" in _ops(path)) is dynamic
    module = onnx_to_torch(path)
    assert torch.flatten in [n.target for n in module.graph.nodes]  # follows the channels once they are pruned
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    assert verify(module, path, {"x": x}, ["x"]) < 1e-5
    assert module(torch.rand(7, 1, 8, 8)).shape == (7, 10)


def _graph(nodes, inputs, output, initializers, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, [output],
                              [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def test_hand_built_graph_covers_the_other_operators(tmp_path):
    """Conv with groups/strides/dilations/asymmetric pads, pools, MatMul+Add, Transpose, Concat, Reshape..."""
    rng = np.random.default_rng(0)
    f = np.float32
    inits = {
        "w1": rng.normal(size=(8, 2, 3, 3)).astype(f), "b1": rng.normal(size=8).astype(f),
        "w2": rng.normal(size=(8, 4, 3, 3)).astype(f),
        "half": np.array(0.5, f), "scale": rng.uniform(0.5, 1.5, size=(1, 8, 1, 1)).astype(f),
        "shape": np.array([0, -1], np.int64), "wm": rng.normal(size=(8 + 8 * 5 * 4, 6)).astype(f),
        "bm": rng.normal(size=6).astype(f),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], strides=[1, 1], pads=[1, 0, 2, 1], dilations=[1, 1]),
        helper.make_node("LeakyRelu", ["c1"], ["a1"], alpha=0.2),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], group=2, strides=[2, 2], dilations=[2, 1], pads=[2, 1, 2, 1]),
        helper.make_node("Mul", ["c2", "scale"], ["m1"]),
        helper.make_node("Sub", ["m1", "half"], ["s1"]),
        helper.make_node("Sigmoid", ["s1"], ["g1"]),
        helper.make_node("Div", ["g1", "half"], ["d1"]),
        helper.make_node("Identity", ["d1"], ["i1"]),
        helper.make_node("MaxPool", ["i1"], ["p1"], kernel_shape=[2, 2], strides=[1, 1], pads=[0, 0, 1, 1]),
        helper.make_node("AveragePool", ["p1"], ["p2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1, ceil_mode=1),
        helper.make_node("GlobalAveragePool", ["p1"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["f1"], axis=1),
        helper.make_node("Transpose", ["p2"], ["t1"], perm=[0, 1, 3, 2]),
        helper.make_node("Reshape", ["t1", "shape"], ["r1"]),
        helper.make_node("Concat", ["f1", "r1"], ["cat"], axis=1),
        helper.make_node("MatMul", ["cat", "wm"], ["mm"]),
        helper.make_node("Add", ["mm", "bm"], ["lin"]),
        helper.make_node("Softmax", ["lin"], ["y"], axis=-1),
    ]
    model = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 15, 14])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6]), inits)
    path = tmp_path / "ops.onnx"
    onnx.save(model, str(path))
    assert session(path).run(None, {"x": np.zeros((1, 2, 15, 14), f)})[0].shape == (1, 6)
    module = onnx_to_torch(path)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2] and convs[1].dilation == (2, 1)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and linears[0].bias is not None  # the MatMul absorbed its Add
    x = rng.normal(size=(5, 2, 15, 14)).astype(f)
    assert verify(module, path, {"x": x}, ["x"]) < 1e-4


def test_an_unsupported_operator_is_named(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="act"),
             helper.make_node("TopK", ["r", "k"], ["y", "idx"], name="pick_best")]
    model = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2]), {"k": np.array([2], np.int64)})
    path = tmp_path / "topk.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UserError, match=r"topk.onnx cannot be made prunable: operator TopK \(node 'pick_best'\)") as e:
        onnx_to_torch(path)
    assert "\n" not in str(e.value)


def test_a_wrong_conversion_is_refused(tmp_path):
    torch.manual_seed(0)
    path = export(nn.Sequential(nn.Linear(4, 3)).eval(), torch.rand(2, 4), tmp_path / "lin.onnx", dynamo=False)
    module = onnx_to_torch(path)
    with torch.no_grad():
        module.get_submodule("0").bias.add_(1.0)
    with pytest.raises(UserError, match="disagrees with onnxruntime"):
        verify(module, path, {"x": np.ones((3, 4), np.float32)}, ["x"])


def test_gemm_attributes_and_computed_weights(tmp_path):
    """alpha/beta/transB and a (1, N) bias fold into nn.Linear; a Gemm on two activations stays a matmul."""
    rng = np.random.default_rng(0)
    f = np.float32
    inits = {"net.weight": rng.normal(size=(6, 5)).astype(f), "net.bias": rng.normal(size=(1, 6)).astype(f),
             "net.sub.weight": rng.normal(size=(6, 6)).astype(f), "c": rng.normal(size=(6,)).astype(f)}
    nodes = [
        helper.make_node("Gemm", ["x", "net.weight", "net.bias"], ["g1"], alpha=0.5, beta=2.0, transB=1),
        helper.make_node("Gemm", ["g1", "net.sub.weight", "c"], ["g2"]),  # named under a layer: kept flat
        helper.make_node("Gemm", ["g2", "g2", "c"], ["g3"], transA=1, alpha=0.1),  # no stored weight: a matmul
        helper.make_node("Cast", ["g3"], ["g4"], to=TensorProto.DOUBLE),
        helper.make_node("Cast", ["g4"], ["g5"], to=TensorProto.FLOAT),
        helper.make_node("Elu", ["g5"], ["y"]),
    ]
    model = _graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 5])],
                   helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 6]), inits)
    path = tmp_path / "gemm.onnx"
    onnx.save(model, str(path))
    module = onnx_to_torch(path)
    assert sorted(n for n, m in module.named_modules() if isinstance(m, nn.Linear)) == ["net", "net_sub"]
    assert verify(module, path, {"x": rng.normal(size=(6, 5)).astype(f)}, ["x"]) < 1e-4
