import json
import math
import random

import pytest

from autoscale.policies import POLICIES, Observation, load_policy_config
from optiserve.errors import UserError

CAP = 100.0  # requests/s one replica serves within the objective


def _cfg(name, **kw):
    if name in ("adaptive", "slo", "predictive"):
        kw.setdefault("capacity_rps_per_replica", CAP)
    return load_policy_config(name, None, **kw)


def _run(name, cfg, load, dt=1.0, start=1, min_r=1, max_r=50, rate=None, json_state=False):
    """Drive a policy with a fake clock; load(t) -> ongoing requests, rate(t) -> arrival rate."""
    target, current, state, out = start, start, {}, []
    for k in range(int(len(load))):
        t = k * dt
        obs = Observation(t, current, target, load[k], 0.0, rate[k] if rate else load[k] * 10.0,
                          min_replicas=min_r, max_replicas=max_r, replica_start_s=10.0)
        if json_state:
            state = json.loads(json.dumps(state))
        target, state = POLICIES[name](obs, cfg, state)
        current = target  # instant start: policies are judged on their decisions here
        out.append(target)
    return out


def _ray_decisions(loads, cfg_kwargs, dt=1.0):
    """Ray Serve 2.60's own default policy (wrapped as the controller wraps it) on the same inputs."""
    pytest.importorskip("ray.serve")
    from ray.serve import autoscaling_policy as ap
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    clock = {"t": 0.0}

    class _Time:
        @staticmethod
        def time():
            return clock["t"]

    real_time, ap.time = ap.time, _Time
    try:
        config = AutoscalingConfig(min_replicas=1, max_replicas=50, **cfg_kwargs)
        policy = ap._apply_autoscaling_config(ap.replica_queue_length_autoscaling_policy)
        target, state, out = 1, {}, []
        for k, load in enumerate(loads):
            clock["t"] = k * dt
            ctx = AutoscalingContext(
                deployment_id=None, deployment_name="d", app_name="a", current_num_replicas=target,
                target_num_replicas=target, running_replicas=[], total_num_requests=load,
                total_queued_requests=0.0, aggregated_metrics={}, raw_metrics={}, capacity_adjusted_min_replicas=1,
                capacity_adjusted_max_replicas=50, policy_state=state, last_scale_up_time=None,
                last_scale_down_time=None, current_time=clock["t"], config=config)
            decision, state = policy(ctx)
            target = min(max(math.ceil(decision), 1), 50)
            out.append(target)
        return out
    finally:
        ap.time = real_time


@pytest.mark.parametrize("cfg_kwargs", [
    dict(target_ongoing_requests=2, upscale_delay_s=5, downscale_delay_s=20),
    dict(target_ongoing_requests=3, upscale_delay_s=0, downscale_delay_s=8, upscaling_factor=0.5,
         downscaling_factor=0.3),
])
def test_queue_matches_ray_serve_default_policy(cfg_kwargs):
    rnd = random.Random(1)
    loads = [load for _ in range(30) for load in [rnd.choice([0, 1, 3, 8, 20, 40, 5]) * rnd.random() * 3] * 10]
    ours = _run("queue", _cfg("queue", **cfg_kwargs), loads)
    assert ours == _ray_decisions(loads, cfg_kwargs)
    assert len(set(ours)) > 3  # the comparison exercised real scaling


def test_queue_waits_its_upscale_and_downscale_delays():
    cfg = _cfg("queue", target_ongoing_requests=2, upscale_delay_s=30, downscale_delay_s=600)
    decisions = _run("queue", cfg, [20.0] * 100 + [2.0] * 700)
    assert decisions[29] == 1 and decisions[30] == 10  # 20 ongoing / 2 per replica, after 30 s
    assert decisions[100 + 598] == 10 and decisions[100 + 600] == 1


def test_target_tracking_panics_on_a_step_and_ignores_noise():
    cfg = _cfg("target-tracking")
    step = _run("target-tracking", cfg, [4.0] * 30 + [40.0] * 30, start=2)
    assert step[29] == 2 and step[30] > 2 and step[36] == 20  # panic: up at once, full need in 6 s
    rnd = random.Random(0)
    noisy = _run("target-tracking", cfg, [20.0 * (1 + rnd.uniform(-0.08, 0.08)) for _ in range(600)], start=10)
    assert set(noisy) == {10}  # within the tolerance band: no flapping
    down = _run("target-tracking", cfg, [20.0] * 10 + [2.0] * 500, start=10)
    assert down[100] == 10 and down[-1] == 1  # scale-down only after the stabilisation window


@pytest.mark.parametrize("name", list(POLICIES))
def test_every_policy_respects_bounds(name):
    hi = _run(name, _cfg(name), [1000.0] * 50, min_r=2, max_r=7, start=2)
    lo = _run(name, _cfg(name), [0.0] * 900, min_r=2, max_r=7, start=7)
    assert max(hi) == 7 and min(hi) >= 2 and lo[-1] == 2 and max(lo) <= 7


@pytest.mark.parametrize("name", list(POLICIES))
def test_state_round_trips_through_json(name):
    rnd = random.Random(2)
    loads = [rnd.uniform(0, 60) for _ in range(400)]
    assert _run(name, _cfg(name), loads) == _run(name, _cfg(name), loads, json_state=True)


def test_slo_policy_provisions_rate_over_capacity_with_headroom():
    cfg = _cfg("slo", headroom=0.2, downscale_delay_s=30)
    rates = [450.0] * 10 + [90.0] * 60
    d = _run("slo", cfg, [0.0] * 70, rate=rates)
    assert d[0] == math.ceil(450 * 1.2 / CAP) and d[35] == 6 and d[-1] == math.ceil(90 * 1.2 / CAP)


def test_predictive_leads_a_rising_ramp():
    rates = [50.0 + 2.0 * k for k in range(200)]  # +2 rps every second
    slo = _run("slo", _cfg("slo"), [0.0] * 200, rate=rates)
    pred = _run("predictive", _cfg("predictive", update_period_s=1.0), [0.0] * 200, rate=rates)
    assert all(p >= s for p, s in zip(pred, slo, strict=True)) and sum(pred) > sum(slo)


def test_config_from_yaml_and_errors(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("policy: slo\nslo_p95_ms: 80\ncapacity_rps_per_replica: 55\n")
    cfg = load_policy_config("slo", f)
    assert cfg.slo_p95_ms == 80 and cfg.capacity_rps_per_replica == 55
    assert load_policy_config("slo", f, slo_p95_ms=20).slo_p95_ms == 20
    f.write_text("target-tracking:\n  tolerance: 0.2\n")
    assert load_policy_config("target-tracking", f).tolerance == 0.2
    f.write_text("bogus: 1\n")
    with pytest.raises(UserError):
        load_policy_config("queue", f)
    with pytest.raises(UserError):
        load_policy_config("nope")
    with pytest.raises(UserError):
        load_policy_config("queue", None, target_ongoing_requests=-1)


def test_miss_probability_is_the_exact_mm_c_wait_tail_for_exponential_service():
    from autoscale.policies.slo import miss_probability

    c, a, s, t = 3, 2.0, 0.01, 0.02  # M/M/3 at 2 Erlangs: Erlang C = 4/9, tail exp(-(c - a) t / s)
    assert miss_probability(c, a, s, t, service_cv=1.0) == pytest.approx(4 / 9 * math.exp(-2.0), rel=1e-9)
    assert miss_probability(2, 2.0, s, t) == 1.0  # at or over capacity every request waits
    # Deterministic service (cv 0) halves the wait: the tail decays twice as fast.
    assert miss_probability(c, a, s, t, 0.0) == pytest.approx(4 / 9 * math.exp(-4.0), rel=1e-9)


def test_one_replica_with_deterministic_service_has_the_exact_md1_wait_tail():
    from autoscale.policies.slo import md1_wait_tail, miss_probability

    rng = random.Random(0)
    service, slack = 0.0166, 0.0334
    for rho in (0.33, 0.6):
        # Lindley's recursion for M/D/1: the next wait is this one plus a service less the gap to the next arrival
        wait, late, n = 0.0, 0, 400_000
        for _ in range(n):
            late += wait > slack
            wait = max(0.0, wait + service - rng.expovariate(rho / service))
        assert miss_probability(1, rho, service, slack) == md1_wait_tail(rho, service, slack)
        assert md1_wait_tail(rho, service, slack) == pytest.approx(late / n, rel=0.1), rho
    assert md1_wait_tail(0.5, 1.0, 0.0) == pytest.approx(0.5)  # P(wait > 0) = rho
    # Kingman's factor, still used for two replicas and more, overstates one replica's tail at light load
    kingman = 0.33 * math.exp(-2.0 * (1 - 0.33) * slack / service)
    assert md1_wait_tail(0.33, service, slack) < 0.6 * kingman


def test_slo_steady_need_runs_large_fleets_hotter_than_small_ones():
    from autoscale.policies.slo import steady_need

    cfg = _cfg("slo")
    needs = {r: steady_need(cfg, r) for r in (0.0, 50.0, 100.0, 400.0, 1600.0)}
    assert needs[0.0] == 0 and all(needs[r] > r / CAP for r in needs if r)
    assert needs[50.0] <= needs[100.0] <= needs[400.0] <= needs[1600.0]
    assert 1600.0 / CAP / needs[1600.0] > 100.0 / CAP / needs[100.0]  # utilisation grows with the fleet


def _obs(t, current, target, queued, rate, **kw):
    return Observation(t, current, target, queued + current, queued, rate, replica_start_s=10.0, min_replicas=1,
                       max_replicas=50, **kw)


def test_slo_panics_on_a_backlog_and_releases_the_extra_replicas_once_it_is_drained():
    cfg = _cfg("slo", drain_s=2.0, downscale_delay_s=60.0)
    state = {}
    d0, state = POLICIES["slo"](_obs(0.0, 2, 2, 0.0, 50.0), cfg, state)
    # A step to 400 req/s: 600 already queued; 2 ready replicas fall 200 req/s behind for the 10 s start.
    d1, state = POLICIES["slo"](_obs(1.0, 2, d0, 600.0, 400.0), cfg, state)
    steady = POLICIES["slo"](_obs(0.0, 2, 2, 0.0, 400.0), cfg, {})[0]
    assert d1 >= steady + math.ceil((600 + 200 * 10) / (CAP * 2.0)) - 1 and d1 <= 50  # at once, with the drain
    d2, state = POLICIES["slo"](_obs(3.0, 2, d1, 900.0, 400.0), cfg, state)
    assert d2 >= d1  # never cancels starting replicas while panicking (that would restart their clock)
    d3, state = POLICIES["slo"](_obs(15.0, d2, d2, 0.0, 400.0), cfg, state)
    assert d3 == steady  # queue gone: the drain replicas go at once, not after downscale_delay_s


def test_slo_does_not_flap_on_noisy_load():
    rnd = random.Random(7)
    cfg = _cfg("slo")
    rates = [300.0 * (1 + rnd.uniform(-0.1, 0.1)) for _ in range(900)]
    d = _run("slo", cfg, [0.0] * 900, rate=rates, start=5)
    changes = sum(1 for x, y in zip(d[60:], d[61:], strict=False) if x != y)
    assert changes <= 2 and max(d[60:]) - min(d[60:]) <= 1


def test_slo_scales_a_rate_step_within_one_observation():
    rates = [100.0] * 30 + [400.0] * 30
    d = _run("slo", _cfg("slo"), [0.0] * 60, rate=rates)
    steady_hi = POLICIES["slo"](_obs(0.0, 1, 1, 0.0, 400.0), _cfg("slo"), {})[0]
    assert d[29] < steady_hi and d[30] == steady_hi  # the jump bypasses the rate smoothing
