import pytest

from autoscale.profile import ModelProfile
from autoscale.startcost import (
    ReplicaTimeline,
    cold_start_report,
    record_start_cost,
    start_samples,
    summarize_starts,
)
from optiserve.errors import UserError


def _timelines():
    return [
        ReplicaTimeline(100.0, 100.2, 103.0, 103.4, model="mlp"),
        ReplicaTimeline(200.0, 200.1, 205.0, 205.5, model="mlp"),
        ReplicaTimeline(300.0, 300.3, 304.0, 304.1, model="cnn"),
        ReplicaTimeline(400.0, 400.1, None, None, model="cnn"),  # never ran: left out
    ]


def test_samples_run_from_decision_to_first_request_served():
    samples = start_samples(_timelines())
    assert [s.start_s for s in samples] == pytest.approx([3.4, 5.5, 4.1])
    assert [s.to_running_s for s in samples] == pytest.approx([3.0, 5.0, 4.0])
    assert all(s.served_known for s in samples)


def test_summary_spread_and_lower_bound_flag():
    s = summarize_starts(start_samples(_timelines()))
    assert (s.n, s.median_s, s.min_s, s.max_s) == (3, pytest.approx(4.1), pytest.approx(3.4), pytest.approx(5.5))
    assert s.median_to_running_s == pytest.approx(4.0) and not s.lower_bound
    only_running = summarize_starts(start_samples([ReplicaTimeline(0.0, running_s=2.5)]))
    assert only_running.median_s == pytest.approx(2.5) and only_running.lower_bound


def test_out_of_order_timeline_and_no_start_are_user_errors():
    with pytest.raises(UserError, match="out of order"):
        start_samples([ReplicaTimeline(10.0, 10.1, 12.0, 11.0)])
    with pytest.raises(UserError, match="no replica start"):
        summarize_starts(start_samples([ReplicaTimeline(0.0, 0.1)]))


def test_recorded_into_the_profile_the_simulator_reads(tmp_path):
    prof = ModelProfile({1: 1.0, 8: 4.0}, replica_start_s=10.0, notes={"repeats": 30})
    out = record_start_cost(prof, summarize_starts(start_samples(_timelines())), source="test")
    out.save(tmp_path / "p.json")
    back = ModelProfile.load(tmp_path / "p.json")
    assert back.replica_start_s == pytest.approx(4.1)
    assert back.notes["repeats"] == 30 and back.notes["replica_start"]["n"] == 3
    assert back.notes["replica_start"]["source"] == "test"

    from autoscale.profile import replica_start_s_of

    assert replica_start_s_of(tmp_path / "p.json") == pytest.approx(4.1)


def test_cold_start_report():
    r = cold_start_report([2500.0, 3100.0, 2800.0], [4.0, 6.0, 5.0])
    assert r.median_first_ms == 2800.0 and r.max_first_ms == 3100.0 and r.warm_ms == 5.0
    assert r.penalty_ms == pytest.approx(2795.0) and "2.80 s" in r.sentence()
    assert r.to_dict()["n"] == 3
    with pytest.raises(UserError):
        cold_start_report([], [1.0])
