"""The fair perfect-foresight bound: same replicas, queue and start as the simulator, known in advance."""

import numpy as np
import pytest

from autoscale.bound import lower_bound
from autoscale.fair_bound import fair_bound, per_second_replicas, with_foresight
from autoscale.profile import ModelProfile

PROFILE = ModelProfile({1: 16.6}, replica_start_s=4.0, max_batch_size=1, batch_wait_ms=0.0)


def test_foresight_bills_each_start_and_bridges_gaps_shorter_than_a_start():
    need = np.array([1, 1, 3, 3, 1, 1, 3, 3])
    # levels 2 and 3 run in two bursts of 2 s with a 2 s gap between them
    total, starts = with_foresight(need, replica_start_s=1.0, initial=1)
    assert starts == 4 and total == pytest.approx(8 + 2 * (2 + 1 + 2 + 1))  # level 1 free; restart each burst
    total, starts = with_foresight(need, replica_start_s=5.0, initial=1)
    assert starts == 2 and total == pytest.approx(8 + 2 * (6 + 5))  # a 2 s gap costs less than a 5 s start: kept
    # a replica that is not up at time 0 pays its start, even at the first second
    total, starts = with_foresight(np.array([2, 2]), replica_start_s=3.0, initial=0)
    assert starts == 2 and total == pytest.approx(2 * (2 + 3))


def test_evenly_spaced_load_under_one_replicas_throughput_needs_no_spare():
    a = np.arange(0.0, 60.0, 0.02)  # 50 req/s, one every 20 ms, served in 16.6 ms: no request ever waits
    need = per_second_replicas(a, 60.0, PROFILE, 50.0, min_replicas=1)
    assert set(need.tolist()) == {1}


def test_poisson_load_needs_queueing_headroom_the_lower_bound_ignores():
    a = np.sort(np.random.default_rng(0).uniform(0.0, 600.0, 30_000))  # 50 req/s Poisson on 60 req/s replicas
    lb = lower_bound(a, 600.0, PROFILE, 50.0)
    fair = fair_bound(a, 600.0, PROFILE, 50.0, min_replicas=1, goal=0.99)
    assert fair.replica_seconds >= fair.serving_replica_seconds >= lb.replica_seconds
    assert fair.replica_seconds / lb.replica_seconds > 1.2  # M/D/1 at 83 % misses 50 ms often
    strict = fair_bound(a, 600.0, PROFILE, 50.0, min_replicas=1, goal=0.999)
    assert strict.serving_replica_seconds >= fair.serving_replica_seconds
    assert fair.to_dict()["replica_start_s"] == 4.0


def test_a_slower_start_costs_the_bound_more_on_bursty_load():
    rng = np.random.default_rng(1)
    a = np.sort(np.concatenate([rng.uniform(0, 300, 6000)] + [rng.uniform(s, s + 20, 4000) for s in (60, 180)]))
    fast = fair_bound(a, 300.0, PROFILE, 50.0)
    slow = fair_bound(a, 300.0, ModelProfile({1: 16.6}, replica_start_s=20.0, max_batch_size=1,
                                             batch_wait_ms=0.0), 50.0)
    assert slow.serving_replica_seconds == fast.serving_replica_seconds  # foresight: same replicas serving
    assert slow.replica_seconds > fast.replica_seconds and fast.starts >= 2
