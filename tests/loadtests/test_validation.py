import math

import pytest

from loadtests.replicas import ReplicaSample
from loadtests.result import Objectives, RunConfig, build_result
from loadtests.stats import Records
from loadtests.validation import compare, validation_html


def _live():
    rows = [(i * 0.1, 20.0, True, "") for i in range(300)]
    samples = [ReplicaSample(0, 1), ReplicaSample(10, 2), ReplicaSample(20, 1)]
    return build_result(RunConfig("http://127.0.0.1:1", "m", "step", 30.0, policy="slo"), Objectives(50.0),
                        Records.from_rows(rows), samples, 0.0, 30.0)


def test_side_by_side_and_fidelity():
    sim = {"requests": 330, "latency_p50_ms": 10.0, "latency_p95_ms": 30.0, "latency_p99_ms": 40.0,
           "slo_attainment_requests": 0.97, "slo_attainment_windows": 1.0, "replica_seconds": 60.0,
           "mean_replicas": 2.0, "max_replicas": 2, "cost_total": 0.001, "scaling_actions": 3,
           "timeseries": {"t_s": [0, 10, 20], "replicas": [1, 2, 1], "latency_p95_ms": [20, 30, 20]}}
    v = compare(_live(), sim, "slo", profile_overhead_ms=4.0)
    assert v.row("replica-seconds").live == pytest.approx(40.0)
    assert v.fidelity["replica_seconds_ratio"] == pytest.approx(1.5)
    assert v.fidelity["p95_ratio"] == pytest.approx(1.5)
    assert v.fidelity["attainment_abs_error"] == pytest.approx(0.03)
    assert (v.live_scale_ups, v.live_scale_downs, v.simulated_scaling_actions) == (1, 1, 3)
    d = v.to_dict()
    assert d["fidelity"]["replica_seconds_ratio"] == pytest.approx(1.5)
    text = validation_html(v, _live())
    assert "Simulator fidelity" in text and "data:image/png;base64," in text


def test_missing_simulated_figures_are_nan_not_errors():
    v = compare(_live(), {"replica_seconds": 0.0}, "queue")
    assert math.isnan(v.row("p95 latency (ms)").simulated)
    assert math.isnan(v.row("p95 latency (ms)").ratio)
    assert v.to_dict()["rows"][2]["simulated"] is None
