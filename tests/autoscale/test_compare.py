"""compare's per-policy worst case across traces, queue tuned per attainment, and the reachability references."""

import numpy as np
import pytest

from autoscale._results import SimulationResult
from autoscale.bound import References, lower_bound, references
from autoscale.compare import Comparison, TraceComparison
from autoscale.profile import ModelProfile
from autoscale.traces import make_trace


def _result(policy, attainment, replica_s, bound=100.0, trace="t"):
    r = SimulationResult(trace, policy, 0, 60.0, 1000, 50.0, 10, 10, 20, 30, 40, attainment, attainment, 10.0,
                         replica_s, 1.0, 2, 3, {}, 0.0, 0.0, 0.0)
    r.lower_bound_replica_seconds = bound
    return r


def _trace(name, results, sweep):
    return TraceComparison(name, {"replica_seconds": 100.0}, results, best_policy=results[0].policy,
                           queue_sweep=[{"target_ongoing_requests": t, "slo_attainment_requests": a,
                                         "replica_seconds": rs} for t, a, rs in sweep])


def test_worst_case_takes_each_policys_worst_trace_and_tunes_queue_to_its_attainment():
    sweep = [(4.0, 0.95, 200.0), (1.0, 0.99, 400.0), (0.5, 0.999, 800.0)]
    a = _trace("step", [_result("adaptive", 0.995, 300.0), _result("slo", 0.97, 150.0)], sweep)
    b = _trace("bursty", [_result("adaptive", 0.985, 600.0, bound=150.0), _result("slo", 0.90, 130.0)], sweep)
    rows = {r["policy"]: r for r in Comparison([a, b], replica_start_s=10.0).worst_case()}
    ad = rows["adaptive"]
    assert ad["worst_attainment"] == 0.985 and ad["worst_attainment_trace"] == "bursty"
    # step: 0.995 needs queue at 0.5 (800 replica-s) -> 0.375x; bursty: 0.985 needs queue at 1.0 (400) -> 1.5x
    assert ad["worst_vs_tuned_queue"] == pytest.approx(1.5) and ad["worst_vs_tuned_queue_trace"] == "bursty"
    assert ad["worst_vs_bound"] == pytest.approx(4.0) and ad["worst_vs_bound_trace"] == "bursty"
    assert ad["meets_goal_everywhere"] is False and ad["total_replica_seconds"] == 900.0
    assert rows["slo"]["worst_attainment_trace"] == "bursty"
    # queue never reaches 0.9995: the row says so instead of pretending it was tuned to it
    tq = a.tuned_queue_for(0.9995)
    assert tq["reached"] is False and tq["target_ongoing_requests"] == 0.5
    d = Comparison([a, b], replica_start_s=10.0).to_dict()
    assert d["replica_start_s"] == 10.0 and len(d["worst_case"]) == 2 and d["traces"][0]["policies"][0]["vs_bound"]


PROFILE = ModelProfile({1: 16.6}, replica_start_s=10.0, max_batch_size=1, batch_wait_ms=0.0)


def test_references_flag_a_burst_faster_than_a_start_and_say_by_how_much():
    tr = make_trace("bursty", 1200.0, base_rps=20, burst_rps=200, on_s=30, off_s=90)
    ref = references(tr.arrivals(0), tr.duration_s, PROFILE, 50.0)
    assert ref.reactive_attainment < 0.99 and ref.replica_start_s == 10.0
    assert ref.queueing_floor_replica_seconds >= ref.bound_replica_seconds
    text = ref.verdict()
    assert "a burst faster than a 10 s replica start" in text and "points short of 99%" in text
    assert ref.to_dict()["verdict"] == text


def test_references_on_smooth_traffic_do_not_blame_bursts():
    tr = make_trace("ramp", 1200.0, start_rps=20, end_rps=200)
    ref = references(tr.arrivals(0), tr.duration_s, PROFILE, 50.0)
    assert ref.reactive_attainment >= 0.99 and ref.reactive_goal_reached
    assert "burst" not in ref.verdict()
    # with a start time of 0 there is nothing to react late to
    instant = references(tr.arrivals(0), tr.duration_s, ModelProfile({1: 16.6}, replica_start_s=0.0,
                                                                      max_batch_size=1), 50.0)
    assert instant.reactive_goal_ratio <= ref.reactive_goal_ratio


def test_queueing_floor_exceeds_the_bound_when_replicas_run_near_full():
    # 50 req/s on 60 req/s replicas: the bound runs 1 replica at 83 %; M/D/1 then waits past the SLO
    a = np.sort(np.random.default_rng(0).uniform(0, 600, 30_000))
    lb = lower_bound(a, 600.0, PROFILE, 50.0)
    ref = references(a, 600.0, PROFILE, 50.0)
    assert isinstance(ref, References) and ref.queueing_floor_ratio > 1.3
    assert "queueing alone needs" in ref.verdict() and lb.replica_seconds == ref.bound_replica_seconds


def test_metrics_lag_counts_against_reaction_and_the_verdict_names_it():
    tr = make_trace("spike", 1200.0, base_rps=50, peak_rps=300)
    prof = ModelProfile({1: 16.6}, replica_start_s=4.0, max_batch_size=1, batch_wait_ms=0.0)
    now = references(tr.arrivals(0), tr.duration_s, prof, 50.0)
    late = references(tr.arrivals(0), tr.duration_s, prof, 50.0, metrics_lag_s=3.0)
    assert late.reactive_attainment < now.reactive_attainment and late.metrics_lag_s == 3.0
    assert late.reactive_attainment < 0.99 and "plus 3 s of metrics lag" in late.verdict()


def test_compare_trace_reports_each_policy_against_the_fair_bound():
    from autoscale.compare import compare_trace, default_configs
    from autoscale.simulator import SimConfig

    prof = ModelProfile({1: 16.6}, replica_start_s=4.0, max_batch_size=1, batch_wait_ms=0.0)
    tr = make_trace("bursty", 300.0)
    tc = compare_trace(tr, ["adaptive"], prof, SimConfig(), default_configs(["adaptive"], prof, 50.0),
                       tune_queue=False)
    fair = tc.fair_bound["replica_seconds"]
    assert fair >= tc.lower_bound["replica_seconds"] and tc.fair_bound["replica_start_s"] == 4.0
    row = tc.policy_rows()[0]
    assert row["vs_fair_bound"] == pytest.approx(row["replica_seconds"] / fair)
    assert tc.summary()["best_vs_fair_bound"] == pytest.approx(row["vs_fair_bound"])
    if tc.references["reactive_goal_replica_seconds"] is not None:
        assert tc.summary()["reactive_goal_vs_fair_bound"] == pytest.approx(
            tc.references["reactive_goal_replica_seconds"] / fair)
    worst = Comparison([tc]).worst_case()[0]
    assert worst["worst_vs_fair_bound"] == pytest.approx(row["vs_fair_bound"])
    assert worst["worst_vs_fair_bound_trace"] == "bursty"
