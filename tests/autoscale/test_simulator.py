import math

import numpy as np
import pytest

from autoscale._results import SimulationResult
from autoscale.bound import lower_bound
from autoscale.compare import default_configs
from autoscale.policies import load_policy_config
from autoscale.profile import ModelProfile
from autoscale.simulator import SimConfig, simulate
from autoscale.traces import make_trace
from optiserve.errors import UserError

PROFILE = ModelProfile({1: 8.0, 2: 9.0, 4: 11.0, 8: 15.0}, replica_start_s=10.0, max_batch_size=8,
                       batch_wait_ms=2.0)


def erlang_c_wait_s(lam, mu, c):
    a = lam / mu
    top = a**c / math.factorial(c) / (1 - a / c)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam)


@pytest.mark.parametrize("c,lam", [(4, 300.0), (2, 160.0)])
def test_mmc_mean_wait_matches_erlang_c(c, lam):
    prof = ModelProfile({1: 10.0}, max_batch_size=1, batch_wait_ms=0.0)  # mean service 10 ms: mu = 100/s
    waits = []
    for seed in (0, 1):
        sim = SimConfig(min_replicas=c, max_replicas=c, service="exponential", seed=seed)
        r = simulate(make_trace("constant", 600.0, rps=lam), "queue", load_policy_config("queue"), prof, sim)
        assert r.max_replicas == c
        waits.append(r.latency_mean_ms - 10.0)
    expected_ms = erlang_c_wait_s(lam, 100.0, c) * 1000
    assert np.mean(waits) == pytest.approx(expected_ms, rel=0.05)


def test_deterministic_per_seed_and_json_round_trip(tmp_path):
    tr = make_trace("step", 300.0, base_rps=100, peak_rps=1500, step_up_at_s=100, step_down_at_s=200)
    cfg = load_policy_config("target-tracking")
    a = simulate(tr, "target-tracking", cfg, PROFILE, SimConfig(seed=5))
    b = simulate(tr, "target-tracking", cfg, PROFILE, SimConfig(seed=5))
    assert a.replica_seconds == b.replica_seconds and a.latency_p99_ms == b.latency_p99_ms
    assert a.timeseries == b.timeseries
    a.save(tmp_path / "r.json")
    assert SimulationResult.load(tmp_path / "r.json").to_dict() == a.to_dict()
    c = simulate(tr, "target-tracking", cfg, PROFILE, SimConfig(seed=6))
    assert c.latency_p99_ms != a.latency_p99_ms


def test_step_scales_up_after_start_time_and_back_down():
    tr = make_trace("step", 400.0, base_rps=100, peak_rps=2000, step_up_at_s=100, step_down_at_s=250)
    cfg = load_policy_config("slo", None, capacity_rps_per_replica=PROFILE.capacity_rps(50, 2.0),
                             downscale_delay_s=30)
    r = simulate(tr, "slo", cfg, PROFILE, SimConfig(max_replicas=30))
    reps = dict(zip(r.timeseries["t_s"], r.timeseries["replicas"], strict=True))
    ready = dict(zip(r.timeseries["t_s"], r.timeseries["ready_replicas"], strict=True))
    assert reps[50.0] == 1 and reps[200.0] >= 4 and reps[390.0] == 1
    assert ready[200.0] == reps[200.0] and r.scaling_actions >= 2
    assert r.requests == pytest.approx(100 * 250 + 2000 * 150, rel=0.02)
    assert r.cost_total == pytest.approx(r.replica_seconds / 3600 * 0.05)


def test_an_undersized_deployment_misses_the_slo():
    tr = make_trace("constant", 120.0, rps=700.0)  # one replica serves ~530/s at most: queue grows
    r = simulate(tr, "queue", load_policy_config("queue"), PROFILE, SimConfig(min_replicas=1, max_replicas=1))
    assert r.slo_attainment_requests < 0.5 and r.slo_attainment_windows < 0.5
    ok = simulate(tr, "queue", load_policy_config("queue"), PROFILE, SimConfig(min_replicas=3, max_replicas=3))
    assert ok.slo_attainment_requests > 0.99 and ok.latency_p95_ms < 50


def test_lower_bound_counts_needed_replicas_per_second():
    arrivals = np.concatenate([np.linspace(0, 0.99, 100), np.linspace(1, 1.99, 1200)])
    lb = lower_bound(arrivals, 3.0, PROFILE, slo_p95_ms=50, min_replicas=1)
    cap = 8 * 1000 / 15.0
    assert lb.capacity_rps_per_replica == pytest.approx(cap)
    assert lb.replica_seconds == 1 + math.ceil(1200 / cap) + 1 and lb.peak_replicas == math.ceil(1200 / cap)


def test_bad_sim_config_is_a_user_error():
    with pytest.raises(UserError):
        SimConfig(min_replicas=5, max_replicas=2)
    with pytest.raises(UserError):
        SimConfig(service="weird")


def test_policies_see_the_profiles_replica_start_time(monkeypatch):
    from autoscale import policies

    seen = []

    def spy(obs, cfg, state):
        seen.append(obs.replica_start_s)
        return policies.adaptive_policy(obs, cfg, state)

    monkeypatch.setitem(policies.POLICIES, "adaptive", spy)
    prof = ModelProfile({1: 10.0}, replica_start_s=17.5, max_batch_size=1)
    cfg = default_configs(["adaptive"], prof, 50.0)["adaptive"]
    r = simulate(make_trace("constant", 20.0, rps=20), "adaptive", cfg, prof, SimConfig())
    assert set(seen) == {17.5} and r.profile["replica_start_s"] == 17.5


def test_adaptive_default_holds_the_slo_on_a_short_bursty_trace_after_the_first_burst():
    prof = ModelProfile({1: 16.6}, replica_start_s=10.0, max_batch_size=1, batch_wait_ms=0.0)
    cfg = default_configs(["adaptive"], prof, 50.0)["adaptive"]
    tr = make_trace("bursty", 1200.0)
    r = simulate(tr, "adaptive", cfg, prof, SimConfig())
    ts = r.timeseries
    after = [(p, d) for t, p, d in zip(ts["t_s"], ts["latency_p95_ms"], ts["demand_rps"], strict=True)
             if p is not None and t > 300]
    # every burst after the second is served within the SLO: capacity is held through the lulls, or, once the
    # bursts are seen to come on a clock, asked ahead of each
    assert not [p for p, d in after if d > 100 and p > 50]
    # a lull on one replica may let up to max_miss (3 %) of its few requests wait too long, so a rare 10 s
    # window of it may be over the objective
    assert sum(p > 50 for p, _ in after) <= 0.05 * len(after)
    # no flapping: the first burst's scale-up and stepped release (11), then one step up ahead of each periodic
    # burst and one down after it
    assert r.scaling_actions <= 12 + 2 * 6
