"""The default `adaptive` policy, driven with injected observations and a fake clock (no simulator)."""

import json
import math
import random

import pytest

from autoscale.policies import DEFAULT_POLICY, Observation, adaptive_policy, load_policy_config
from autoscale.policies.adaptive import recurring_hold

CAP = 60.0  # requests/s one replica serves within the objective


def _cfg(**kw):
    return load_policy_config("adaptive", None, capacity_rps_per_replica=CAP, **kw)


def _drive(rates, cfg=None, start_s=10.0, dt=1.0, queued=None, ready_lag_s=0.0, max_r=50):
    """Feed one observation per `dt`; replicas become ready `ready_lag_s` after they are asked for."""
    cfg = cfg or _cfg()
    target, state, out, asked = 1, {}, [], []
    for k, rate in enumerate(rates):
        t = k * dt
        ready = max([n for ts, n in asked if t - ts >= ready_lag_s] + [1])
        obs = Observation(t, min(ready, target), target, rate / CAP, queued[k] if queued else 0.0, rate,
                          replica_start_s=start_s, min_replicas=1, max_replicas=max_r)
        state = json.loads(json.dumps(state))  # the state must survive Ray's policy_state (JSON)
        target, state = adaptive_policy(obs, cfg, state)
        asked.append((t, target))
        out.append(target)
    return out, state


def test_adaptive_is_the_default():
    assert DEFAULT_POLICY == "adaptive"


def test_scales_up_at_once_on_a_burst_and_asks_for_the_backlog():
    rates = [20.0] * 60 + [200.0] * 30
    out, state = _drive(rates, ready_lag_s=10.0)
    assert out[59] <= 2
    assert out[61] >= 4  # within one observation of the burst: no upscale delay
    assert max(out[60:70]) > 5  # the backlog piling up during the start is asked for too (panic)
    assert state["rises"] and state["rises"][0] >= 60


def test_holds_capacity_between_recurring_bursts_and_releases_after_calm():
    burst = [20.0] * 90 + [200.0] * 30  # bursty: 30 s at 10x every 2 minutes
    _, mid = _drive(burst * 5)
    assert len(mid["rises"]) == 5 and mid["hold_s"] >= 1.5 * 120  # a recurring gap extends the hold
    out, state = _drive(burst * 5 + [20.0] * 3000)
    # After the second burst the peak's capacity is kept through the 90 s lulls ...
    lull = out[2 * 120 + 30: 3 * 120]
    assert min(lull) >= 4
    # ... and released once no burst came for the hold (rate-limited steps, never below the steady need).
    assert out[-1] <= 2
    downs = [b for a, b in zip(out, out[1:], strict=False) if b < a]
    assert all(b >= 1 for b in downs)


def test_hold_scales_with_the_replica_start_time():
    flat_then_low = [150.0] * 100 + [30.0] * 400
    fast, _ = _drive(flat_then_low, start_s=2.0)
    slow, _ = _drive(flat_then_low, start_s=30.0)
    first_down = lambda out: next(i for i in range(100, len(out)) if out[i] < out[99])  # noqa: E731
    assert first_down(slow) > first_down(fast)  # a slower start holds longer (6 starts vs the 60 s minimum)
    assert first_down(slow) - 100 >= 6 * 30.0 - 2


def test_no_flapping_on_a_noisy_flat_trace():
    rng = random.Random(0)
    rates = [max(0.0, rng.gauss(100.0, 15.0)) for _ in range(1800)]
    out, state = _drive(rates)
    changes = sum(1 for a, b in zip(out, out[1:], strict=False) if a != b)
    assert changes <= 3, changes  # the initial scale-up, nothing after
    assert not state["rises"]  # noise is not a burst


def test_scale_down_is_rate_limited_and_gradual():
    out, _ = _drive([300.0] * 30 + [10.0] * 600, cfg=_cfg(min_hold_s=10.0, hold_starts=0.0))
    steps = [(i, a - b) for i, (a, b) in enumerate(zip(out, out[1:], strict=False)) if b < a]
    assert len(steps) >= 2  # not one cliff
    assert all(j - i >= 10 for (i, _), (j, _) in zip(steps, steps[1:], strict=False))  # downscale_step_s apart


def test_without_a_capacity_model_falls_back_to_ongoing_requests():
    cfg = load_policy_config("adaptive", None)
    obs = Observation(0.0, 1, 1, 9.0, 0.0, 0.0, replica_start_s=10.0, max_replicas=20)
    desired, state = adaptive_policy(obs, cfg, {})
    assert desired == 5 and json.loads(json.dumps(state)) == state


def test_scales_from_zero_when_requests_wait_and_stays_at_zero_when_idle():
    cfg = _cfg()
    idle = Observation(0.0, 0, 0, 0.0, replica_start_s=5.0, min_replicas=0, max_replicas=4)
    assert adaptive_policy(idle, cfg, {})[0] == 0
    # No replica reports a rate at zero replicas: the requests Ray counts at the proxy wake the deployment.
    waiting = Observation(1.0, 0, 0, 1.0, replica_start_s=5.0, min_replicas=0, max_replicas=4)
    assert adaptive_policy(waiting, cfg, {})[0] == 1
    fallback = load_policy_config("adaptive", None)  # no capacity model
    assert adaptive_policy(waiting, fallback, {})[0] == 1


def test_a_queue_confirms_a_fast_rise_at_its_first_observation():
    rates = [20.0] * 60 + [200.0] * 2
    _, calm = _drive(rates, ready_lag_s=10.0)
    assert not calm["rises"]  # one observation without a queue may be noise: confirmed a push later
    _, queued = _drive(rates, queued=[0.0] * 60 + [50.0] * 2, ready_lag_s=10.0)
    assert queued["rises"] == [60.0]  # 50 waiting on 1 replica: the fleet is already behind


def test_the_first_burst_ask_covers_what_arrives_during_a_start():
    rates = [20.0] * 60 + [110.0, 110.0, 200.0, 200.0, 200.0, 200.0]
    queued = [0.0] * 60 + [30.0] * 6
    fast, _ = _drive(rates, queued=queued, start_s=2.0, ready_lag_s=2.0)
    slow, _ = _drive(rates, queued=queued, start_s=10.0, ready_lag_s=10.0)
    assert max(slow[60:]) > max(fast[60:]) >= 4  # a slower start piles up more backlog to drain


def _peaks(mean_rps, peak_rps, n=10):
    return [[60.0 * k, peak_rps, mean_rps * 100, 100] for k in range(n)]


def test_recurring_hold_grows_with_the_burst_period_the_start_and_the_burst_size():
    cfg = _cfg()
    rises = [0.0, 120.0, 240.0, 360.0]
    base = recurring_hold(cfg, 10.0, rises, _peaks(50.0, 200.0))
    # H = g ln(L / (g B)): g = 120 s, L = 200 req/s x (10 + 6) s, B = 0.005 x 50 req/s
    assert base == pytest.approx(120.0 * math.log(200.0 * 16.0 / (120.0 * 0.005 * 50.0)))
    assert base > 3 * 120.0  # keeps the peak through a lull several periods long
    assert recurring_hold(cfg, 2.0, rises, _peaks(50.0, 200.0)) < base  # a cheaper miss: shorter hold
    assert recurring_hold(cfg, 10.0, [2 * r for r in rises], _peaks(50.0, 200.0)) > base  # slower period
    assert recurring_hold(cfg, 10.0, rises, _peaks(50.0, 400.0)) > base  # larger bursts over the same mean
    # never shorter than burst_gap_factor x the longest gap seen
    assert recurring_hold(cfg, 10.0, [0.0, 10.0, 20.0, 1000.0], _peaks(500.0, 600.0)) >= 1.5 * 980.0


def test_holds_a_recurring_bursts_capacity_through_a_lull_longer_than_any_seen():
    burst = [200.0] * 20 + [20.0] * 100  # 20 s at 10x every 2 minutes, then a lull 3.5x as long
    rates = [20.0] * 100 + burst * 4 + [20.0] * 300 + [200.0] * 20 + [20.0] * 2400
    out, state = _drive(rates, start_s=2.0)  # a single rise is held 150 starts = 300 s: not through the lull
    assert min(out[490:875]) >= 4  # the recurring peak's capacity is there when the burst returns at 880 s
    assert out[-1] <= 2  # and released after a long calm
    changes = sum(1 for a, b in zip(out, out[1:], strict=False) if a != b)
    assert changes <= 20, changes  # never flaps
