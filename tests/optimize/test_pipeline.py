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
