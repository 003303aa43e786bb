import json
import math

import pytest

from autoscale.cost import CostModel, PriceTable
from loadtests.replicas import ReplicaSample
from loadtests.result import LoadTestResult, Objectives, RunConfig, build_result
from loadtests.stats import Records
from optiserve.errors import UserError


def _run(latency_ms=10.0, fail_every=0, objectives=Objectives(slo_p95_ms=50.0), n=200):
    rows = [(i * 0.1, latency_ms, not (fail_every and i % fail_every == 0), "HTTP 503" if fail_every and
             i % fail_every == 0 else "") for i in range(n)]
    samples = [ReplicaSample(0.0, 1), ReplicaSample(10.0, 2)]
    cost = CostModel(PriceTable({"cpu-1": 3.6}))  # 0.001 USD per replica-second
    return build_result(RunConfig("http://127.0.0.1:1", "m", "constant", 20.0), objectives,
                        Records.from_rows(rows), samples, 1000.0, 20.0, cost, target_rps=lambda t: 10.0)


def test_passing_run_and_cost_from_replica_seconds():
    r = _run()
    assert r.verdict.passed
    assert r.replica_summary.replica_seconds == pytest.approx(30.0)
    assert r.cost.total == pytest.approx(0.03)
    assert r.cost.cost_per_1k_requests == pytest.approx(0.03 / 200 * 1000)
    assert len(r.timeseries) == 20


def test_slow_run_fails_p95_check():
    r = _run(latency_ms=80.0)
    assert not r.verdict.passed
    failed = [c.name for c in r.verdict.checks if not c.passed]
    assert failed == ["p95 latency (ms)"]
    assert r.slo.slo_misses == 200


def test_errors_fail_the_verdict_and_cost_limit_is_checked():
    r = _run(fail_every=10, objectives=Objectives(slo_p95_ms=50.0, max_error_rate=0.05, max_cost_per_1k=0.01))
    failed = {c.name for c in r.verdict.checks if not c.passed}
    assert failed == {"error rate", "cost per 1k requests (USD)"}


def test_a_run_without_successes_fails():
    r = _run(fail_every=1)
    assert not r.verdict.passed
    assert math.isinf(r.verdict.checks[0].value)


def test_json_round_trip_with_nan(tmp_path):
    r = _run(fail_every=1)
    path = r.save(tmp_path / "results.json")
    json.loads(path.read_text())  # strict JSON: NaN written as null
    back = LoadTestResult.load(path)
    assert back.summary.requests == r.summary.requests
    assert math.isnan(back.summary.p95_ms)
    assert back.replicas == r.replicas
    assert back.verdict.passed == r.verdict.passed


def test_objectives_validated():
    with pytest.raises(UserError):
        Objectives(slo_p95_ms=-1)
    with pytest.raises(UserError):
        Objectives(max_error_rate=2)
