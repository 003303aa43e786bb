import pytest

from loadtests.replicas import ReplicaSample, replica_seconds, summarize_replicas


def test_replica_seconds_holds_each_sample_until_the_next():
    s = [ReplicaSample(0.0, 1), ReplicaSample(10.0, 1, starting=1), ReplicaSample(20.0, 2),
         ReplicaSample(30.0, 1, stopping=1), ReplicaSample(35.0, 1)]
    # 1x10 + 2x10 + 2x10 + 2x5 + 1x5 (until 40)
    assert replica_seconds(s, 40.0) == pytest.approx(65.0)


def test_first_sample_counts_from_zero_and_late_samples_ignored():
    s = [ReplicaSample(1.0, 2), ReplicaSample(50.0, 9)]
    assert replica_seconds(s, 10.0) == pytest.approx(20.0)
    assert replica_seconds([], 10.0) == 0.0


def test_scale_events_follow_committed_count():
    s = [ReplicaSample(0, 1), ReplicaSample(1, 1, starting=2), ReplicaSample(2, 3), ReplicaSample(3, 3),
         ReplicaSample(4, 1, stopping=2), ReplicaSample(5, 1)]
    r = summarize_replicas(s, 6.0)
    assert (r.scale_ups, r.scale_downs) == (1, 1)
    assert (r.min_replicas, r.max_replicas) == (1, 3)
    assert r.mean_replicas == pytest.approx(r.replica_seconds / 6.0)
