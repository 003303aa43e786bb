"""The default `adaptive` policy, driven with injected observations and a fake clock (no simulator)."""

import json
import math
import random

import pytest

from autoscale.policies import DEFAULT_POLICY, Observation, adaptive_policy, load_policy_config
from autoscale.policies.adaptive import miss_target, recurring_hold

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


def _bursts(lulls, on_s=30, rate=200.0, base=20.0):
    """`base` req/s with `on_s` bursts to `rate`, each after the next lull in `lulls` (seconds)."""
    out = []
    for lull in lulls:
        out += [base] * lull + [rate] * on_s
    return out


IRREGULAR = [90, 150, 60, 200, 110]  # gaps 180, 90, 230, 140: not a clock (CV 0.4)


def test_holds_capacity_between_irregular_recurring_bursts_and_releases_after_calm():
    _, mid = _drive(_bursts(IRREGULAR))
    assert len(mid["rises"]) == 5 and mid["hold_s"] >= 1.5 * 230  # a recurring gap extends the hold
    assert not mid["periodic"]
    out, _ = _drive(_bursts(IRREGULAR) + [20.0] * 3000)
    # After the second burst the peak's capacity is kept through the lulls ...
    lull = out[90 + 30 + 150 + 30: 90 + 30 + 150 + 30 + 60]
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
    assert not state["rises"] and not state["onsets"]  # noise is not a burst


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
    # 20 s at 10x after irregular lulls (gaps 80, 170, 100), then back 420 s after the last (2.5x the longest)
    rates = [20.0] * 100 + _bursts([100, 60, 150, 80], on_s=20) + [20.0] * 400 + [200.0] * 20 + [20.0] * 2400
    out, state = _drive(rates, start_s=2.0)  # a single rise is held 150 starts = 300 s: not through the lull
    back = 100 + 100 + 60 + 150 + 80 + 4 * 20 + 400  # the burst returns at 970 s, 400 s after the last
    assert min(out[back - 390: back - 5]) >= 4  # the recurring peak's capacity is there when it does
    assert out[-1] <= 2  # and released after a long calm
    changes = sum(1 for a, b in zip(out, out[1:], strict=False) if a != b)
    assert changes <= 20, changes  # never flaps


# Periodic bursts: anticipated instead of held (the clock itself: test__burst_clock.py).

PERIOD, ON, START = 120, 30, 4.0


def test_below_the_mean_rate_the_miss_budget_is_spent_evenly_in_time():
    cfg = _cfg()
    assert miss_target(cfg, 100.0, 65.0) == cfg.target_miss == 0.005  # at or above the mean: per request
    assert miss_target(cfg, 20.0, 0.0) == cfg.target_miss  # no mean seen yet
    assert miss_target(cfg, 40.0, 65.0) == pytest.approx(0.01 * 65 / 40)  # lull_miss x mean late requests/s
    assert miss_target(cfg, 5.0, 65.0) == cfg.max_miss == 0.03  # never more than max_miss of them
    assert miss_target(_cfg(lull_miss=0.001), 60.0, 65.0) == cfg.target_miss  # never under the per-request one
    # bursty's lull, 20 req/s on 60 req/s replicas: two replicas for the per-request 0.5 %, one once the mean
    # rate (65 req/s: 30 s bursts to 200 every 2 minutes) has been seen
    lull = lambda peaks: adaptive_policy(  # noqa: E731
        Observation(0.0, 2, 2, 20 / CAP, 0.0, 20.0, replica_start_s=4.43, min_replicas=1, max_replicas=50),
        cfg, {"peaks": peaks})[0]
    assert lull([]) == 2 and lull([[-60.0, 200.0, 65.0 * 30, 30]]) == 1


def _periodic_rates(cycles, base=20.0, noise=0.0, seed=0):
    rng = random.Random(seed)
    rates = _bursts([90] * cycles, on_s=ON, base=base)
    return [r if r > base else max(0.0, rng.gauss(base, noise * base)) for r in rates]


def test_periodic_bursts_are_released_in_the_lull_and_asked_a_start_ahead():
    out, state = _drive(_periodic_rates(10) + [20.0] * 60, start_s=START, ready_lag_s=START)
    assert state["periodic"] and len(state["rises"]) == 10
    onsets = [90 + PERIOD * k for k in range(10)]
    for k in range(5, 9):  # the fourth rise shows the clock; from the fifth lull on, nothing waits for it
        lull = out[onsets[k] + ON + 15: onsets[k] + ON + 60]
        assert max(lull) <= 2, (k, lull)  # the burst's replicas are released after it ...
        nxt = onsets[k + 1]
        assert min(out[nxt - int(START) - 1: nxt + ON]) >= 4  # ... and asked a start before the next one
    cycle = out[onsets[5]: onsets[9]]
    changes = sum(1 for a, b in zip(cycle, cycle[1:], strict=False) if a != b)
    assert changes <= 2 * 4, changes  # one step up ahead of each burst, one step down after it


def test_periodic_bursts_on_a_noisy_base_do_not_flap():
    rates = _periodic_rates(12, base=100.0, noise=0.08)
    out, state = _drive(rates, start_s=START, ready_lag_s=START)
    assert state["periodic"]
    onsets = [90 + PERIOD * k for k in range(12)]
    cycle = out[onsets[6]: onsets[11]]
    moves = [(i, b > a) for i, (a, b) in enumerate(zip(cycle, cycle[1:], strict=False)) if a != b]
    assert len(moves) <= 3 * 5, moves  # up ahead, down after, at most one more for a noise jump per cycle
    turns = [(i, j) for (i, up), (j, up2) in zip(moves, moves[1:], strict=False) if up != up2]
    assert all(j - i >= 20 for i, j in turns), turns  # never back and forth within a few pushes
    assert max(out[onsets[8] + ON + 20: onsets[9] - 20]) <= 4  # the lull keeps the base's need (3), not the burst's


def test_an_overdue_periodic_burst_falls_back_to_holding_its_capacity():
    rates = _periodic_rates(6) + [20.0] * 3000  # the seventh burst never comes
    out, state = _drive(rates, start_s=START, ready_lag_s=START)
    expected = 90 + PERIOD * 6
    assert min(out[expected - 5: expected + 300]) >= 4  # asked ahead, then held as recurring bursts are
    assert not state["periodic"] and out[-1] <= 2  # and released after a long calm


def test_an_early_burst_breaks_the_clock():
    rates = _periodic_rates(6) + [20.0] * 30 + [200.0] * ON + [20.0] * 600  # the next burst 60 s early
    out, state = _drive(rates, start_s=START, ready_lag_s=START)
    assert not state["periodic"]  # gap 60 s among 120 s ones: CV over 0.1
    early_end = 90 + PERIOD * 6 + ON
    assert min(out[early_end: early_end + 300]) >= 4  # its capacity is held again (recurring_hold)


# Burst onsets: the periodic clock's marks, also when the capacity held absorbs a burst (no fast rise).

def test_an_onset_is_confirmed_on_the_next_observation_or_at_once_by_a_queue():
    rates = [20.0] * 60 + [200.0] * 2
    _, one = _drive(rates)
    assert not one["onsets"]  # the same push (bucket_s 2 s) may be noise
    _, two = _drive(rates + [200.0])
    assert two["onsets"] == [62.0] and two["rises"] == [62.0]  # a fast rise is an onset too, stamped once
    _, queued = _drive(rates[:61], queued=[0.0] * 60 + [50.0])
    assert queued["onsets"] == [60.0]


def test_noise_and_slow_growth_are_no_onsets():
    rng = random.Random(0)
    noisy = [max(0.0, rng.gauss(100.0, 15.0)) for _ in range(1800)]
    assert not _drive(noisy)[1]["onsets"]
    ramp = [20.0 + 0.5 * k for k in range(600)]  # 0.5 req/s per second: never a replica within a start
    assert not _drive(ramp)[1]["onsets"]


# The live case of issue 14: 4 req/s with 30 s bursts to 40 every 90 s, 15 req/s per replica, a 100 ms
# objective (67 ms service), 3.15 s start, 1..4 replicas. Erlang C keeps 3 replicas (45 req/s) for the
# lull's 4 req/s, so no burst is a fast rise; the clock is learned from the onsets.
SMALL_CAP, SMALL_START = 15.0, 3.15


def test_periodic_bursts_the_held_capacity_absorbs_are_learned_from_their_onsets():
    cfg = load_policy_config("adaptive", None, capacity_rps_per_replica=SMALL_CAP, slo_p95_ms=100.0)
    rates = _bursts([60] * 10, on_s=30, rate=40.0, base=4.0)
    out, state = _drive(rates, cfg=cfg, start_s=SMALL_START, ready_lag_s=SMALL_START, max_r=4)
    onsets = [60 + 90 * k for k in range(10)]
    assert not state["rises"]  # every burst absorbed: the old clock (fast rises only) never started
    assert state["periodic"] and len(state["onsets"]) == 10
    assert state["onsets"][0] == onsets[0] + 2  # confirmed a push after the jump
    lull_need = max(out[onsets[0] - 20: onsets[0]])
    burst_need = max(out[onsets[0]: onsets[0] + 30])
    assert lull_need < burst_need == 4
    # The fourth onset shows the clock: released after each burst, to one level every lull (at most the first
    # lull's: once the mean rate has seen bursts, the lull's 4 req/s may miss a larger share), asked ahead of
    # the next.
    lulls = {max(out[onsets[k] + 40: onsets[k + 1] - 15]) for k in range(4, 9)}
    assert len(lulls) == 1 and lulls.pop() <= lull_need
    for k in range(4, 9):
        assert min(out[onsets[k + 1] - int(SMALL_START) - 1: onsets[k + 1] + 30]) == burst_need, k


def test_a_clock_learned_mid_burst_keeps_what_was_asked_for_that_burst():
    # Each burst first shows 100 req/s for 8 s (an onset: more than 2x the lull and a replica above it, below
    # the fast-rise level), then 200. The fourth onset shows the clock while its burst is under way: the
    # recurring capacity asked for it (5) is kept, not cut to the need of the 100 req/s seen so far (3).
    rates = []
    for _ in range(6):
        rates += [20.0] * 90 + [100.0] * 8 + [200.0] * 22
    out, state = _drive(rates + [20.0] * 60, start_s=START, ready_lag_s=START)
    fourth = 90 + 120 * 3
    assert state["onsets"][3] == fourth + 2 and state["rises"][3] > fourth + 2  # the onset comes first
    assert state["periodic"]
    assert min(out[fourth: fourth + 30]) == max(out[fourth - 10: fourth]) == 5


def _ray_like(demand, duration_s, window_s, cfg, start_s, max_r, t0=1_796_164_770.0):
    """Drive the policy as Ray Serve does: 0.1 s control ticks on the epoch clock (`ctx.current_time` is
    time.time()), each replica's arrival rate (requests over its last `window_s`) recorded every 0.8 s and
    pushed every 2 s, the controller averaging the samples of the last look-back (4 s); the state is passed
    back as Ray's policy_state. Replicas serve `start_s` after they are asked for."""
    fluid = lambda t: sum(demand(t - window_s * (k + 0.5) / 40) for k in range(40)) / 40  # noqa: E731
    samples, state, target, asked, out = [], {}, 1, [], []
    for k in range(int(duration_s / 0.1)):
        t = k * 0.1
        if k % 8 == 0:
            samples.append((t, fluid(t)))
        push = math.floor(t / 2.0 + 1e-9) * 2.0
        seen = [r for ts, r in samples if push - cfg.look_back_period_s - 1e-9 < ts <= push + 1e-9]
        ready = max([n for ts, n in asked if t - ts >= start_s] + [1])
        obs = Observation(t0 + t, min(ready, target), target, 0.0, 0.0, sum(seen) / len(seen),
                          replica_start_s=start_s, min_replicas=1, max_replicas=max_r)
        target, state = adaptive_policy(obs, cfg, state)
        asked.append((t, target))
        out.append(target)
    return out, state


def test_the_live_bursty_run_learns_the_clock_from_observations_built_as_ray_builds_them():
    # The live validate of issue 14 (4 -> 40 req/s, 30 s bursts every 90 s, 10 minutes), observed as Ray's
    # controller sees it. With the arrival rate counted over a push (2 s) the clock is learned from the
    # onsets and replicas released in the last lulls, as in the simulator. serve/'s replicas counted it
    # over 30 s (serve/_stats.py RollingStats' window): the rate then climbs 36 req/s over 30 s, never a
    # replica (15 req/s) within the onset look (start + metrics lag, 9 s), so no onset and no release.
    cfg = load_policy_config("adaptive", None, capacity_rps_per_replica=SMALL_CAP, slo_p95_ms=100.0)
    demand = lambda t: 40.0 if t >= 0 and t % 90.0 >= 60.0 else 4.0  # noqa: E731
    out, state = _ray_like(demand, 600.0, 2.0, cfg, SMALL_START, 4)
    assert state["periodic"] and not state["rises"]
    assert [round(o - state["onsets"][0]) for o in state["onsets"]] == [0, 90, 180, 270, 360, 450]
    downs = [k for k in range(1, len(out)) if out[k] < out[k - 1]]
    # released in the lulls, to 2 (the lull's 4 req/s may miss up to 3 % once the mean rate has seen bursts)
    assert len(downs) >= 2 and min(out[3900:]) == 2 and max(out[3900:]) == 4
    assert all(out[int(10 * (60 + 90 * b)) + 5: int(10 * (90 + 90 * b))] == [4] * (300 - 5) for b in range(4, 6))


def test_a_staircase_of_bursts_that_never_end_does_not_break_the_lulls_window():
    # Four onsets on a clock with the burst never over (each step up before the rate falls back): no
    # burst has ended, so the lull's window has no start yet (settled_s None in the state; a TypeError before).
    rates = [20.0] * 60
    for _ in range(6):
        rates += [rates[-1] * 3 + 60] * 20
    out, state = _drive(rates, max_r=500)
    assert state["periodic"] and state["settled_s"] is None and state["burst"] is not None
    assert out[-1] == max(out)
