import json

import numpy as np
import pytest

from autoscale.profile import ModelProfile, measure_profile
from optiserve.errors import UserError


def test_interpolation_capacity_and_json_round_trip(tmp_path):
    p = ModelProfile({1: 10.0, 4: 16.0, 8: 24.0}, max_batch_size=8, batch_wait_ms=2.0)
    assert p.latency_ms(2) == pytest.approx(12.0) and p.latency_ms(16) == pytest.approx(40.0)
    assert p.capacity_rps(30.0) == pytest.approx(8 * 1000 / 24)  # batch 8 fits a 30 ms objective
    assert p.capacity_rps(12.0) == pytest.approx(2 * 1000 / 12)  # only batches up to 2 fit 12 ms
    p.save(tmp_path / "p.json")
    assert ModelProfile.load(tmp_path / "p.json") == p


def test_from_optimize_report_picks_a_variant(tmp_path):
    report = {"variants": [{"name": "fp32"}, {"name": "int8", "latency_curve_ms": {"1": 2.0, "8": 5.0}}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    prof = ModelProfile.from_optimize_report(path)
    assert prof.batch_latency_ms == {1: 2.0, 8: 5.0} and "int8" in prof.source
    with pytest.raises(UserError):
        ModelProfile.from_optimize_report(path, variant="fp32")


def test_measure_profile_on_an_exported_mlp(tiny_onnx):
    prof = measure_profile(tiny_onnx, batch_sizes=(1, 4, 16), warmup=1, repeats=3)
    assert sorted(prof.batch_latency_ms) == [1, 4, 16]
    assert all(v > 0 for v in prof.batch_latency_ms.values())
    assert np.isfinite(prof.latency_ms(32))
    with pytest.raises(UserError):
        measure_profile(tiny_onnx.parent / "missing.onnx")
