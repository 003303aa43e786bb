"""The pipeline's bookkeeping without timing: recording builds, failures, identical models, the budget test."""

from pathlib import Path

import pytest

from optimize.pipeline import RunSettings, VariantSet, within_budget
from optimize.report import VariantResult
from optiserve.errors import UserError


def test_builds_are_recorded_and_failures_never_raise(tmp_path):
    (tmp_path / "variants").mkdir()
    a = tmp_path / "variants" / "a.onnx"
    a.write_bytes(b"model a")
    variants = VariantSet(tmp_path, ["from the inputs"])
    variants.add(VariantResult("fp32", "fp32"), a)

    def broken() -> Path:
        raise RuntimeError("calibration blew up\nwith a second line")

    failed = variants.add(VariantResult("static", "static"), broken)
    assert failed.error == "calibration blew up" and "static" not in variants.paths
    assert variants.results["fp32"].path == "variants/a.onnx"
    assert variants.notes == ["from the inputs"]


def test_identical_models_are_named_as_such(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.onnx").write_bytes(b"same" if name != "c" else b"other")
    variants = VariantSet(tmp_path)
    for name in ("a", "b", "c"):
        variants.add(VariantResult(name, "static"), tmp_path / f"{name}.onnx")
    assert variants.results["b"].extra == {"identical_to": "a"} and "identical_to" not in variants.results["c"].extra
    assert any("b is byte-identical to a" in n for n in variants.notes)


def test_pytorch_comes_first(tmp_path):
    variants = VariantSet(tmp_path)
    variants.add(VariantResult("fp32", "fp32"))
    variants.add(VariantResult("pytorch", "pytorch"))
    assert [v.name for v in variants.ordered()] == ["pytorch", "fp32"]


@pytest.mark.parametrize("labelled,change,error,ok", [
    (True, -0.9, 0.5, True), (True, -1.1, 0.0, False), (False, None, 0.009, True), (False, None, 0.011, False),
    (True, None, 0.02, False),  # labelled but no accuracy for this variant: the output error decides
])
def test_one_budget_test(labelled, change, error, ok):
    assert within_budget(labelled, 1.0, change, error) is ok


def test_settings_are_shared_and_validated():
    from optimize.prune import PruneConfig
    from optimize.quantize import QuantizeConfig
    from optimize.sweep import SweepConfig

    for cls in (QuantizeConfig, PruneConfig, SweepConfig):
        assert issubclass(cls, RunSettings)
        with pytest.raises(UserError, match="max-accuracy-drop"):
            cls(max_accuracy_drop=-1)
    assert SweepConfig().repeats == 50 and QuantizeConfig(threads=2).settings() == RunSettings(threads=2)


def _matmul_model(path: Path, scale: float) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], (scale * np.eye(4, 3)).astype(np.float32).ravel())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_measure_times_twins_once_and_the_asked_batch_size_too(tmp_path, monkeypatch):
    """Timings injected: which runners are timed at which batch sizes, and what a byte-identical twin gets."""
    import numpy as np

    from optimize import pipeline
    from optimize.loading import SourceModel
    from optimize.measure import Timing
    from optiserve.data import Dataset, InputSpec

    timed: dict[int, list[str]] = {}

    def fake_time_interleaved(runners, inputs, repeats, rounds=9, warmup=5):
        batch = len(inputs["x"])
        timed.setdefault(batch, list(runners))
        # every runner gets its own steady per-round latency: "a" 2 ms, the others 1 ms (times the batch)
        return {n: Timing(1.0, 1.0, rounds, tuple([(2.0 if n == "a" else 1.0) * batch] * rounds)) for n in runners}

    monkeypatch.setattr(pipeline, "time_interleaved", fake_time_interleaved)
    (tmp_path / "v").mkdir()
    fp32 = _matmul_model(tmp_path / "v/fp32.onnx", 1.0)
    a = _matmul_model(tmp_path / "v/a.onnx", 2.0)
    b = tmp_path / "v/b.onnx"
    b.write_bytes(a.read_bytes())
    variants = VariantSet(tmp_path)
    for name, path in (("fp32", fp32), ("a", a), ("b", b)):
        variants.add(VariantResult(name, "fp32" if name == "fp32" else "static"), path)
    data = Dataset({"x": np.ones((40, 4), np.float32)}, np.zeros(40, np.int64))
    inputs = pipeline.Inputs([InputSpec("x", (4,))], None, data, True)
    source = SourceModel(fp32, "onnx", "0" * 64)
    variants.measure(source, inputs, RunSettings(batch_size=8, repeats=5))
    assert timed[1] == timed[32] == timed[8] == ["fp32", "a"]  # b, identical to a, is never timed
    a_, b_ = variants.results["a"], variants.results["b"]
    assert a_.batch_rounds_ms == {"8": [16.0] * 9} and a_.latency_b1_rounds_ms == [2.0] * 9
    assert b_.extra == {"identical_to": "a"} and b_.path == "v/b.onnx"  # its own file and name, a's figures
    assert (b_.batch_rounds_ms, b_.latency_b32_rounds_ms, b_.max_abs_diff, b_.size_bytes, b_.accuracy) == \
        (a_.batch_rounds_ms, a_.latency_b32_rounds_ms, a_.max_abs_diff, a_.size_bytes, a_.accuracy)
    assert variants.results["fp32"].batch_rounds_ms == {"8": [8.0] * 9}
    variants.measure(source, inputs, RunSettings(repeats=5))
    assert a_.batch_rounds_ms == {}  # batch 32 asked: only 1 and 32 are timed in rounds


def test_batch_size_is_a_shared_setting():
    assert RunSettings().batch_size == 32
    with pytest.raises(UserError, match="--batch-size"):
        RunSettings(batch_size=0)
