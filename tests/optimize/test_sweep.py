import base64
import json
import re

import pytest

from optimize._sweep_report import SweepReport, pareto_front
from optimize.cli import main
from optimize.report import VariantResult
from optimize.sweep import SweepConfig, grid, sweep
from optiserve.errors import UserError


def _v(name, latency, change, **kw):
    return VariantResult(name, kw.pop("kind", "static"), latency_b32_p50_ms=latency, accuracy_change_pts=change,
                         relative_error=kw.pop("rel", 0.0), **kw)


def test_pareto_front_keeps_only_undominated_variants():
    variants = [_v("pytorch", 0.1, 5.0, kind="pytorch"), _v("fp32", 1.0, 0.0), _v("a", 0.3, 0.0),
                _v("b", 0.4, 0.0), _v("c", 0.2, -2.0), _v("d", 0.2, -3.0), _v("e", 0.1, -5.0),
                _v("f", 0.05, -9.0, error="failed")]
    # b is slower than a at equal accuracy, d is as fast as c but less accurate, fp32 is slower than a;
    # pytorch (not a deployable ONNX model) and failed variants never count.
    assert pareto_front(variants, labelled=True) == ["a", "c", "e"]
    # Without labels the quality is minus the relative error.
    rel = [_v("x", 0.3, None, rel=0.01), _v("y", 0.2, None, rel=0.05), _v("z", 0.25, None, rel=0.06)]
    assert pareto_front(rel, labelled=False) == ["x", "y"]


def test_grid_always_has_the_fp32_baseline():
    points = grid(SweepConfig(quantization=("dynamic", "static"), calibration_methods=("minmax",),
                              prune_ratios=(0.5,)))
    assert [p.name for p in points] == ["fp32", "dynamic-int8", "static-int8-minmax", "pruned0.5-dynamic-int8",
                                        "pruned0.5-static-int8-minmax"]


def test_yaml_grid_and_validation(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("quantization: [none, fp16]\nprune_ratios: [0, 0.3]\nrepeats: 7\n")
    config = SweepConfig.from_yaml(path, repeats=9)
    assert config.quantization == ("none", "fp16") and config.prune_ratios == (0, 0.3) and config.repeats == 9
    path.write_text("quantisation: [int4]\n")
    with pytest.raises(UserError, match="unknown keys"):
        SweepConfig.from_yaml(path)
    with pytest.raises(UserError, match="prune ratios"):
        SweepConfig(prune_ratios=(1.2,))
    with pytest.raises(UserError, match="quantization"):
        SweepConfig(quantization=("int4",))


@pytest.fixture(scope="module")
def serial_sweep(examples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    mlp = examples_dir / "mlp"
    config = SweepConfig(quantization=("none", "dynamic", "static"), calibration_methods=("minmax",),
                         prune_ratios=(0.0, 0.5), repeats=5, executor="serial")
    return out, sweep(mlp / "model.pt2", out, config, calibration_path=mlp / "calibration.npz",
                      eval_path=mlp / "eval.npz")


def test_every_variant_is_evaluated_and_pareto_marked(serial_sweep):
    out, report = serial_sweep
    names = [v.name for v in report.variants]
    assert names == ["pytorch", "fp32", "dynamic-int8", "static-int8-minmax", "pruned0.5-fp32",
                     "pruned0.5-dynamic-int8", "pruned0.5-static-int8-minmax"]
    for v in report.variants:
        assert v.error is None and v.latency_b32_p50_ms > 0 and v.latency_b1_p95_ms >= v.latency_b1_p50_ms
        assert v.accuracy_change_pts is not None and v.within_budget is not None
        if v.kind != "pytorch":
            assert (out / v.path).is_file() and v.extra["pareto"] == (v.name in report.pareto)
    assert report.pareto == pareto_front(report.variants, True) and report.pareto
    assert report.variant("pruned0.5-fp32").size_ratio < 0.3  # the pruned models really are smaller
    assert report.variant("pruned0.5-dynamic-int8").size_ratio < 0.1
    assert report.variant("static-int8-minmax").quantized_share == 1.0
    assert report.executor == "serial" and report.build_wall_s > 0


def test_report_json_and_self_contained_html(serial_sweep):
    out, report = serial_sweep
    loaded = SweepReport.load(out / "report.json")
    assert loaded.to_dict() == json.loads((out / "report.json").read_text())
    assert loaded.pareto == report.pareto and loaded.variant("fp32").size_bytes == report.variant("fp32").size_bytes
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    png = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert png and base64.b64decode(png.group(1)).startswith(b"\x89PNG")
    assert page.count("<tr class=") == len(report.variants) and page.count("<td>★</td>") == len(report.pareto)


def test_cli_sweep_refuses_pruning_an_unconvertible_onnx(tmp_path, capsys):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("TopK", ["x", "k"], ["y", "idx"], name="pick")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
                              [numpy_helper.from_array(np.array([2], np.int64), "k")])
    model = tmp_path / "topk.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8), str(model))
    assert main(["sweep", str(model), "--prune-ratios", "0,0.5", "--out", str(tmp_path / "out")]) == 2
    assert "cannot be made prunable: operator TopK (node 'pick')" in capsys.readouterr().err


@pytest.mark.ray
def test_sweep_on_ray_matches_serial(examples_dir, serial_sweep, tmp_path, capsys):
    mlp = examples_dir / "mlp"
    code = main(["sweep", str(mlp / "model.pt2"), "--quantization", "none,dynamic,static", "--calibration-method",
                 "minmax", "--prune-ratios", "0,0.5", "--repeats", "5", "--executor", "ray", "--num-cpus", "4",
                 "--calibration-data", str(mlp / "calibration.npz"), "--eval-data", str(mlp / "eval.npz"),
                 "--out", str(tmp_path)])
    report = SweepReport.load(tmp_path / "report.json")
    assert code == 0 and report.executor == "ray"
    _, serial = serial_sweep
    assert [v.name for v in report.variants] == [v.name for v in serial.variants]
    for v in report.variants:  # the same deterministic builds, whichever process made them
        assert v.error is None and v.accuracy == serial.variant(v.name).accuracy
        if v.kind != "pytorch":
            assert v.size_bytes == pytest.approx(serial.variant(v.name).size_bytes, rel=0.01)
    assert "Pareto-optimal:" in capsys.readouterr().out
