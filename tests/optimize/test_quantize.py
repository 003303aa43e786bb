import json

import numpy as np
import onnx
import pytest

from optimize.choice import ANCHOR
from optimize.export import session
from optimize.measure import ROUNDS
from optimize.quantize import QuantizeConfig, quantize
from optimize.report import QuantizeReport, to_markdown
from optiserve.errors import UserError

FAST = QuantizeConfig(repeats=10)


@pytest.fixture(scope="module")
def mlp_report(examples_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("q-mlp")
    mlp = examples_dir / "mlp"
    report = quantize(mlp / "model.pt", out, FAST, calibration_path=mlp / "calibration.npz",
                      eval_path=mlp / "eval.npz")
    return out, report


def test_every_variant_is_built_and_measured(mlp_report):
    out, report = mlp_report
    names = [v.name for v in report.variants]
    int8 = ["dynamic-int8", "static-int8-minmax", "static-int8-entropy", "static-int8-percentile"]
    assert names == ["pytorch", "fp32", *int8, *[f"{n}-per-tensor" for n in int8], "fp16", ANCHOR]
    assert all(report.variant(n).per_channel and not report.variant(f"{n}-per-tensor").per_channel for n in int8)
    for v in report.variants:
        assert v.error is None
        assert v.latency_b1_p50_ms > 0 and v.latency_b32_p95_ms >= v.latency_b32_p50_ms > 0
        assert len(v.latency_b32_rounds_ms) == len(v.latency_b1_rounds_ms) == ROUNDS
        assert v.latency_b32_spread_pct >= 0 and v.latency_b1_spread_pct >= 0
        if v.kind not in ("fp32", "pytorch"):  # the interval holds the median; "faster" needs all of it above 1
            low, high = v.speedup_vs_fp32_interval
            assert low <= v.speedup_vs_fp32 <= high and (low > 1 or not v.faster_than_fp32)
        assert v.accuracy is not None and v.within_budget is not None
        if v.kind != "pytorch":
            assert (out / v.path).is_file() and v.size_bytes == (out / v.path).stat().st_size
            assert set(v.latency_curve_ms) == {"1", "2", "4", "8", "16", "32"}
    assert report.accuracy_measured and report.export["max_abs_diff"] < 1e-3


def test_each_calibration_gives_its_own_model(mlp_report):
    out, report = mlp_report
    static = [report.variant(f"static-int8-{m}") for m in ("minmax", "entropy", "percentile")]
    assert len({(out / v.path).read_bytes() for v in static}) == 3  # entropy used to equal min-max byte for byte
    assert not any("identical_to" in v.extra for v in static)
    for v in static:  # the per-tensor twin shares the calibration, not the weights' scales
        twin = report.variant(f"{v.name}-per-tensor")
        assert (out / twin.path).read_bytes() != (out / v.path).read_bytes() and "identical_to" not in twin.extra
        assert twin.size_bytes < v.size_bytes and twin.accuracy is not None


def test_int8_is_smaller_and_agrees_with_fp32(mlp_report):
    _, report = mlp_report
    for v in report.variants:
        if v.kind in ("dynamic", "static"):
            assert v.size_ratio < 0.3
            assert v.quantized_share == 1.0
            assert v.top1_agreement >= 0.97 and v.relative_error < 0.1
            assert abs(v.accuracy_change_pts) <= 1.0
    fp16 = report.variant("fp16")
    assert 0.45 < fp16.size_ratio < 0.55 and fp16.quantized_share == 0.0 and fp16.max_abs_diff < 0.05


def test_chosen_model_is_written_and_follows_the_rule(mlp_report):
    out, report = mlp_report
    chosen = report.variant(report.chosen or "fp32")  # whether anything beats fp32 depends on this machine's noise
    assert (out / "model.onnx").read_bytes() == (out / chosen.path).read_bytes()
    assert report.choice["rule"] and report.choice["anchor"]["name"] == ANCHOR
    if report.chosen:
        assert chosen.within_budget and chosen.faster_than_fp32 and report.chosen in report.choice["tied"]
    sess = session(out / "model.onnx")
    assert sess.run(None, {"x": np.zeros((3, 64), np.float32)})[0].shape == (3, 10)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the private staging folder is gone


def test_anchor_is_onnxruntimes_one_liner(mlp_report):
    out, report = mlp_report
    anchor = report.variant(ANCHOR)
    assert anchor.kind == "dynamic" and "quantize_dynamic" in anchor.extra["recipe"]
    assert any("one-liner" in n for n in report.notes)


def test_report_round_trips_and_renders(mlp_report):
    out, report = mlp_report
    loaded = QuantizeReport.load(out / "report.json")
    assert loaded == report
    assert json.loads((out / "report.json").read_text())["schema_version"] == 1
    md = (out / "report.md").read_text()
    assert md == to_markdown(report) and f"{report.chosen or 'fp32'}" in md and "reduce_range" in md
    assert "±" in md and "choice rule" in md and "choice optimised for batch size 32" in md
    with pytest.raises(ValueError, match="schema"):
        QuantizeReport.from_dict({**report.to_dict(), "schema_version": 99})


def test_the_batch_size_asked_for_is_timed_and_reported(examples_dir, tmp_path):
    mlp = examples_dir / "mlp"
    report = quantize(mlp / "model.pt2", tmp_path, QuantizeConfig(method="dynamic", batch_size=8, repeats=5),
                      eval_path=mlp / "eval.npz")
    assert [v.name for v in report.variants] == ["pytorch", "fp32", "dynamic-int8"]  # a named method: no twins
    assert all(len(v.batch_rounds_ms["8"]) == ROUNDS for v in report.variants)
    assert report.choice["batch_size"] == 8 and report.choice["guard_batch_sizes"] == [1, 32]
    assert "batch-8 speed ratio" in report.choice["rule"]
    assert "choice optimised for batch size 8" in (tmp_path / "report.md").read_text()
    assert QuantizeReport.load(tmp_path / "report.json") == report


def test_exported_program_cnn_static_only(examples_dir, tmp_path):
    cnn = examples_dir / "cnn"
    config = QuantizeConfig(method="static", calibration_methods=("entropy",), repeats=10)
    report = quantize(cnn / "model.pt2", tmp_path, config, calibration_path=cnn / "calibration.npz",
                      eval_path=cnn / "eval.npz")
    assert [v.name for v in report.variants] == ["pytorch", "fp32", "static-int8-entropy"]
    static = report.variant("static-int8-entropy")
    assert static.quantized_share == 1.0 and abs(static.accuracy_change_pts) <= 1.0
    # the fp32 export keeps its weights inside the file (no external .data), so sizes compare honestly
    assert not list(tmp_path.glob("variants/*.data"))
    assert onnx.load(str(tmp_path / "variants/fp32.onnx")).graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_onnx_input_without_data_measures_agreement_only(examples_dir, tmp_path):
    first = quantize(examples_dir / "mlp/model.pt", tmp_path / "a", QuantizeConfig(method="fp16", repeats=10),
                     calibration_path=examples_dir / "mlp/calibration.npz")
    report = quantize(tmp_path / "a/variants/fp32.onnx", tmp_path / "b", QuantizeConfig(method="dynamic", repeats=10))
    assert not report.accuracy_measured and report.budget["metric"] == "relative_error_pct"
    assert any("accuracy was not measured" in n for n in report.notes)
    assert any("generated inputs" in n for n in report.notes)
    assert [v.name for v in report.variants] == ["fp32", "dynamic-int8"]
    assert report.variant("dynamic-int8").accuracy is None and first.variant("fp16").accuracy is None


def test_input_shape_flag_for_torchscript_without_data(examples_dir, tmp_path):
    report = quantize(examples_dir / "mlp/model.pt", tmp_path,
                      QuantizeConfig(method="dynamic", input_shape="1,64", repeats=10))
    assert report.inputs == [{"name": "x", "shape": [64], "dtype": "float32"}]
    assert not report.accuracy_measured and report.variant("dynamic-int8").within_budget


def test_torchscript_without_any_shape_is_a_usage_error(examples_dir, tmp_path):
    with pytest.raises(UserError, match="--input-shape"):
        quantize(examples_dir / "mlp/model.pt", tmp_path, FAST)


def test_calibration_data_of_the_wrong_shape(examples_dir, tmp_path):
    with pytest.raises(UserError, match="does not accept inputs|expects"):
        quantize(examples_dir / "mlp/model.pt", tmp_path, FAST, calibration_path=examples_dir / "cnn/calibration.npz")
    with pytest.raises(UserError, match=r"do not fit the model.s input .x. of shape \(1, 8, 8\)"):
        quantize(examples_dir / "cnn/model.pt2", tmp_path, FAST, calibration_path=examples_dir / "mlp/calibration.npz")


def test_static_needs_calibration(examples_dir, tmp_path):
    with pytest.raises(UserError, match="--calibration-data"):
        quantize(examples_dir / "cnn/model.pt2", tmp_path, QuantizeConfig(method="static"))


def test_config_validation():
    for bad in ({"method": "int4"}, {"calibration_methods": ("bogus",)}, {"max_accuracy_drop": -1}):
        with pytest.raises(UserError):
            QuantizeConfig(**bad)
