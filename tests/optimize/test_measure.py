"""The statistics behind noise-aware comparisons: interleaved rounds, sign-test intervals, paired ratios."""

import numpy as np
import pytest

from optimize.measure import Timing, median_interval, percentile_timing, ratio, time_interleaved


def test_median_interval_uses_the_largest_k_that_keeps_95_percent():
    low, high, cov = median_interval(range(1, 10))  # 9 values: k = 2 covers 1 - 2 * 10/512 = 96.1 %
    assert (low, high) == (2, 8) and cov == pytest.approx(1 - 20 / 512)
    low, high, cov = median_interval([5.0, 1.0, 3.0])  # too few for 95 %: the full range, and its real coverage
    assert (low, high) == (1.0, 5.0) and cov == pytest.approx(0.75)
    with pytest.raises(ValueError):
        median_interval([])


def test_ratio_pairs_rounds_so_a_drift_shared_by_both_cancels():
    drift = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]  # the machine slows down during the measurement
    base = [2.0 * d for d in drift]
    other = [1.0 * d for d in drift]
    r = ratio(base, other)
    assert r.value == pytest.approx(2.0) and r.low == pytest.approx(2.0) and r.faster and not r.slower
    # unpaired, the same numbers overlap completely: only pairing sees the 2x
    assert max(other) > min(base)


def test_ratio_interval_straddles_one_for_a_noisy_tie():
    rng = np.random.default_rng(0)
    base = list(1.0 + 0.3 * rng.random(9))
    other = list(1.0 + 0.3 * rng.random(9))
    r = ratio(base, other)
    assert r.low < 1.0 < r.high and not r.faster and not r.slower
    with pytest.raises(ValueError):
        ratio([1.0], [1.0, 2.0])


def test_timing_spread_and_round_medians():
    samples = [0.001] * 5 + [0.002] * 5 + [0.003] * 5  # three rounds of five calls
    t = percentile_timing(samples, rounds=3)
    assert t.round_p50_ms == pytest.approx((1.0, 2.0, 3.0)) and t.samples == 15
    assert t.spread_pct == pytest.approx(50 * (3.0 - 1.0) / 2.0)
    assert Timing(1.0, 1.0, 1).spread_pct is None


def test_time_interleaved_visits_every_runner_in_every_round_alternating_order():
    calls = []
    runners = {name: (lambda _feed, n=name: calls.append(n)) for name in ("a", "b", "c")}
    timings = time_interleaved(runners, {}, repeats=4, rounds=4, warmup=0)
    assert all(len(t.round_p50_ms) == 4 and t.samples == 4 for t in timings.values())
    assert calls == ["a", "b", "c", "c", "b", "a", "a", "b", "c", "c", "b", "a"]  # one call per runner per round
