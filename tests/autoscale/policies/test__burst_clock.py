"""The burst clock of `adaptive` on its own: onsets, the test for a clock, anticipation, the burst hold."""

import json
import math

import pytest

from autoscale.policies import load_policy_config
from autoscale.policies._burst_clock import (
    NO_LULL,
    Burst,
    BurstClock,
    BurstHold,
    Phase,
    anticipation,
    held_need,
    hold,
    lull_start,
    mark,
    onset_level,
    periodic,
    phase,
    track,
)
from optiserve.errors import UserError

CAP = 60.0  # requests/s one replica serves within the objective
LOOK = 10.0  # how far back the lull's low reaches (a start plus the metrics lag)
ON = Phase(active=True, anticipating=False)
OFF = Phase(active=False, anticipating=False)


def _cfg(**kw):
    return load_policy_config("adaptive", None, capacity_rps_per_replica=CAP, **kw)


def _never():
    raise AssertionError("the peak's need is asked only when anticipating without a finished burst")


# The test for a clock.

def test_periodic_needs_four_rises_on_a_clock():
    cfg = _cfg()
    assert periodic(cfg, [0.0, 120.0, 240.0]) is None  # two gaps agree by chance too often
    assert periodic(cfg, [0.0, 120.0, 240.0, 360.0]) == (120.0, 0.0)
    assert periodic(cfg, [0.0, 118.0, 242.0, 360.0, 479.0]) is not None  # a few seconds of jitter
    # mmpp's fast rises (its default trace, seed 0): 64 s then 68 s agree, the four latest gaps do not
    mmpp = [2390.0, 3040.0, 3090.0, 3110.0, 3174.0, 3242.0]
    assert periodic(cfg, mmpp) is None
    assert periodic(cfg, [0.0, 180.0, 270.0, 500.0, 640.0]) is None  # CV 0.4


def test_periodic_jitter_is_an_upper_bound_that_tightens_with_more_gaps():
    cfg = _cfg()
    few = [0.0, 118.0, 240.0, 360.0]  # gaps 118, 122, 120: sample standard deviation 2
    many = [0.0, 118.0, 240.0, 358.0, 480.0, 598.0, 720.0, 838.0, 960.0]  # 118, 122 alternating
    (p_few, s_few), (p_many, s_many) = periodic(cfg, few), periodic(cfg, many)
    assert p_few == pytest.approx(120.0) and p_many == pytest.approx(120.0)
    sample_many = math.sqrt(8 * 4.0 / 7)  # the sample standard deviation of the eight gaps
    assert s_few > 2 * 2.0  # three gaps: the bound is more than twice what they show
    assert sample_many < s_many < 1.6 * sample_many  # eight: closer to it
    # only the latest periodic_gaps gaps count: an old irregular gap drops out
    assert periodic(cfg, [0.0, 400.0] + [400.0 + 120.0 * k for k in range(1, 9)]) == (120.0, 0.0)


def test_anticipation_asks_a_start_plus_the_metrics_lag_and_a_margin_ahead():
    cfg = _cfg()
    ask, give_up = anticipation(cfg, 4.0, [0.0, 120.0, 240.0, 360.0])
    # expected rise at 480 s; margin: one push (no jitter seen); metrics lag rise_lag_s = 6 s
    assert ask == pytest.approx(480.0 - 4.0 - 6.0 - 2.0)
    assert give_up == pytest.approx(480.0 + 6.0 + 2.0)
    slow_ask, _ = anticipation(cfg, 10.0, [0.0, 120.0, 240.0, 360.0])
    assert slow_ask == pytest.approx(ask - 6.0)  # a slower start asks earlier
    jit_ask, jit_give_up = anticipation(cfg, 4.0, [0.0, 118.0, 240.0, 360.0])
    _, std = periodic(cfg, [0.0, 118.0, 240.0, 360.0])
    assert jit_ask == pytest.approx(480.0 - 4.0 - 6.0 - 3.0 * std)  # periodic_jitter_k = 3 deviations
    assert jit_give_up == pytest.approx(480.0 + 6.0 + 3.0 * std)
    assert anticipation(cfg, 4.0, [0.0, 180.0, 270.0, 500.0]) is None


def test_phase_is_active_until_the_next_burst_is_overdue_and_anticipates_from_the_ask():
    cfg = _cfg()
    clock = BurstClock(onsets=(0.0, 120.0, 240.0, 360.0))
    ask, give_up = anticipation(cfg, 4.0, clock.onsets)
    assert phase(clock, cfg, ask - 1.0, 4.0) == Phase(True, False)
    assert phase(clock, cfg, ask, 4.0) == Phase(True, True)
    assert phase(clock, cfg, give_up + 0.1, 4.0) == Phase(False, False)  # overdue: the clock is off
    assert phase(BurstClock(onsets=(0.0, 120.0, 240.0)), cfg, 300.0, 4.0) == OFF  # no clock yet


# Onsets.

def test_onset_level_is_a_ratio_of_the_lull_and_more_than_a_replica_above_it():
    cfg = _cfg()
    assert onset_level(cfg, 100.0) == pytest.approx(200.0)  # onset_ratio 2 x the lull
    assert onset_level(cfg, 4.0) == pytest.approx(4.0 + CAP)  # a small lull: one replica's capacity above it
    assert onset_level(_cfg(onset_ratio=3.0), 100.0) == pytest.approx(300.0)
    with pytest.raises(UserError):
        _cfg(onset_ratio=1.0)


def _jump(clock, t, rate=200.0, low=20.0, queueing=False, rise_level=None, cfg=None):
    return mark(clock, cfg or _cfg(), t, rate, low, LOOK, queueing, rise_level)


def test_a_jump_is_an_onset_a_push_later_or_at_the_next_observation_with_a_queue():
    first = _jump(BurstClock(), 100.0)
    assert first.onsets == () and first.onset_pending == 100.0 and first.burst is None
    assert _jump(first, 101.0).onsets == ()  # within the same push (bucket_s 2 s): may be noise
    second = _jump(first, 102.0)
    assert second.onsets == (102.0,) and second.onset_pending is None
    assert second.burst == Burst(onset_level(_cfg(), 20.0), 102.0, 0)  # over once under the onset level
    assert _jump(BurstClock(), 100.0, queueing=True).onsets == ()  # one observation is not a jump ...
    assert _jump(first, 101.0, queueing=True).onsets == (101.0,)  # ... the next, queueing, confirms it
    assert _jump(first, 102.0, rate=70.0).onset_pending is None  # back under the level: pending dropped
    assert _jump(first, 102.0, cfg=load_policy_config("adaptive", None)).onsets == ()  # no capacity model


def test_one_onset_per_look_and_onsets_are_forgotten_after_memory():
    clock = _jump(_jump(BurstClock(), 100.0), 102.0)
    assert _jump(_jump(clock, 108.0), 110.0).onsets == (102.0,)  # within LOOK of the last onset
    assert _jump(_jump(clock, 114.0), 116.0).onsets == (102.0, 116.0)
    later = 102.0 + _cfg().memory_s
    assert _jump(clock, later).onsets == ()


def test_a_fast_rise_is_an_onset_and_starts_a_burst_over_under_what_was_held_before_it():
    clock = _jump(BurstClock(), 100.0, rise_level=120.0)
    assert clock.onsets == (100.0,) and clock.burst == Burst(120.0, 100.0, 0)
    # a rise within its onset's look continues that onset's burst, its need so far kept, no second onset
    onset = BurstClock(onsets=(100.0,), burst=Burst(80.0, 100.0, 3))
    cont = _jump(onset, 104.0, rise_level=120.0)
    assert cont.onsets == (100.0,) and cont.burst == Burst(120.0, 104.0, 3) and cont.needs == ()
    # a rise after the look is a new burst: the one under way counts as finished
    new = _jump(onset, 120.0, rise_level=120.0)
    assert new.onsets == (100.0, 120.0) and new.burst == Burst(120.0, 120.0, 0) and new.needs == (3,)


# The burst under way and the burst hold.

def test_track_keeps_the_bursts_highest_need_and_ends_it_under_its_level():
    cfg = _cfg()
    clock = BurstClock(burst=Burst(100.0, 10.0, 2))
    clock = track(clock, cfg, 12.0, 200.0, 4)
    assert clock.burst == Burst(100.0, 10.0, 4)
    clock = track(clock, cfg, 14.0, 150.0, 3)
    assert clock.burst.need == 4
    over = track(clock, cfg, 40.0, 20.0, 1)
    assert over.burst is None and over.needs == (4,)
    assert over.settled_s == 40.0 + cfg.look_back_period_s  # the look-back still averages the burst in
    many = BurstClock(burst=Burst(100.0, 10.0, 9), needs=tuple(range(cfg.periodic_gaps + 1)))
    assert track(many, cfg, 40.0, 20.0, 1).needs == (*range(1, cfg.periodic_gaps + 1), 9)  # the latest only


def test_lull_start_ignores_the_bursts_samples_only_while_the_clock_is_on():
    clock = BurstClock(settled_s=50.0)
    assert lull_start(clock, ON) == 50.0
    assert lull_start(clock, OFF) == NO_LULL
    assert lull_start(BurstClock(), ON) == NO_LULL  # no burst has ended yet (the state stores None)


def test_a_periodic_bursts_need_is_held_apart_and_released_a_short_hold_after_it():
    cfg = _cfg()
    start = 4.0
    short = max(cfg.periodic_hold_starts * start, cfg.look_back_period_s)
    under_way = BurstClock(burst=Burst(100.0, 10.0, 4), hold=BurstHold(12.0, 4))
    clock, steady, fallback = hold(under_way, cfg, 20.0, start, ON, 5, 4, _never)
    assert (steady, fallback) == (0, None)  # the hold window does not see the burst's need ...
    assert clock.hold == BurstHold(20.0 + short, 5) and held_need(clock) == 5  # ... the burst hold keeps it
    after = BurstClock(hold=clock.hold)
    kept, steady, _ = hold(after, cfg, 20.0 + short - 0.1, start, ON, 1, 5, _never)
    assert kept.hold == clock.hold and steady == 0
    released, steady, fallback = hold(after, cfg, 20.0 + short, start, ON, 1, 5, _never)
    assert released.hold is None and held_need(released) == 0 and (steady, fallback) == (1, None)


def test_a_clock_learned_mid_burst_keeps_what_was_asked_for_it():
    cfg = _cfg()
    clock, _, _ = hold(BurstClock(burst=Burst(100.0, 10.0, 2)), cfg, 20.0, 4.0, ON, 2, 5, _never)
    assert clock.hold.need == 5  # the target asked for the burst, not the steady need seen so far


def test_the_next_bursts_need_is_asked_ahead():
    cfg = _cfg()
    clock, steady, _ = hold(BurstClock(needs=(4, 6, 5)), cfg, 20.0, 4.0, Phase(True, True), 1, 1, _never)
    assert clock.hold.need == 6 and steady == 0  # the highest of the latest bursts
    clock, _, _ = hold(BurstClock(), cfg, 20.0, 4.0, Phase(True, True), 1, 1, lambda: 7)
    assert clock.hold.need == 7  # no burst finished yet: the need of the highest rate seen


def test_an_overdue_bursts_hold_falls_back_to_the_policys_hold_window():
    cfg = _cfg()
    clock, steady, fallback = hold(BurstClock(hold=BurstHold(30.0, 6)), cfg, 20.0, 4.0, OFF, 2, 6, _never)
    assert clock.hold is None and (steady, fallback) == (2, 6)
    assert hold(BurstClock(), cfg, 20.0, 4.0, OFF, 2, 6, _never) == (BurstClock(), 2, None)


def test_the_clock_round_trips_through_the_policys_json_state():
    clock = BurstClock(onsets=(1.0, 2.5), onset_pending=3.0, burst=Burst(10.0, 2.5, 3), needs=(2, 3),
                       hold=BurstHold(9.0, 4), settled_s=7.0)
    state = json.loads(json.dumps(clock.to_state()))
    assert BurstClock.from_state(state) == clock
    assert BurstClock.from_state({}) == BurstClock()
    assert set(state) == {"onsets", "onset_pending", "burst", "burst_needs", "bhold", "settled_s"}
