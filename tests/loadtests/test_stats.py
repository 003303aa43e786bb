import math

import numpy as np
import pytest

from loadtests.stats import Records, percentile, slo_attainment, summarize, time_series
from optiserve.errors import UserError


def _records(n_ok=100, fail=0, t_step=0.1):
    rows = [(i * t_step, float(i + 1), True, "") for i in range(n_ok)]  # latencies 1..n_ok ms
    rows += [(i * t_step, 0.5, False, "HTTP 503") for i in range(fail)]
    return Records.from_rows(rows)


def test_percentiles_exact_not_rounded_to_two_digits():
    # Locust's stats would report 1234 ms as 1200 ms; the raw samples keep the exact value.
    rec = Records.from_rows([(0.0, 1234.0, True, ""), (0.1, 1234.0, True, "")])
    assert summarize(rec, 1.0).p95_ms == 1234.0
    lat = np.arange(1, 101, dtype=float)
    assert percentile(lat, 50) == pytest.approx(50.5)
    assert percentile(lat, 99) == pytest.approx(99.01)
    assert math.isnan(percentile(np.empty(0), 95))


def test_failures_kept_out_of_latency_but_counted():
    rec = _records(n_ok=100, fail=25)
    s = summarize(rec, duration_s=10.0)
    assert (s.requests, s.successes, s.failures) == (125, 100, 25)
    assert s.error_rate == pytest.approx(0.2)
    # fast failures (0.5 ms) would drag p50 down if mixed in
    assert s.p50_ms == pytest.approx(50.5)
    assert s.failures_by_kind == {"HTTP 503": 25}
    assert s.achieved_rps == pytest.approx(10.0)


def test_from_rows_sorts_and_offsets():
    rec = Records.from_rows([(105.0, 2.0, True, ""), (100.5, 1.0, True, "")], t0_s=100.0)
    assert rec.start_s.tolist() == [0.5, 5.0]
    assert rec.latency_ms.tolist() == [1.0, 2.0]


def test_time_series_buckets_by_second():
    rows = [(0.2, 10.0, True, ""), (0.7, 20.0, True, ""), (1.5, 30.0, False, "timeout"), (2.9, 5.0, True, "")]
    ts = time_series(Records.from_rows(rows), duration_s=3.0, target_rps=lambda t: 2 * t)
    assert [r.sent for r in ts] == [2, 1, 1]
    assert [r.ok for r in ts] == [2, 0, 1]
    assert [r.failed for r in ts] == [0, 1, 0]
    assert ts[0].p50_ms == pytest.approx(15.0)
    assert math.isnan(ts[1].p95_ms)
    assert [r.target_rps for r in ts] == [1.0, 3.0, 5.0]


def test_slo_attainment_by_request_and_window():
    # window 0 (0-10 s): fast; window 1 (10-20 s): slow
    rows = [(t * 0.5, 10.0, True, "") for t in range(20)] + [(10 + t * 0.5, 200.0, True, "") for t in range(20)]
    a = slo_attainment(Records.from_rows(rows), duration_s=20.0, slo_p95_ms=50.0)
    assert a.requests_within_slo == pytest.approx(0.5)
    assert (a.windows, a.windows_met) == (2, 0.5)
    assert a.slo_misses == 20


def test_slo_window_fails_on_errors_even_when_fast():
    rows = [(t * 0.1, 1.0, t % 10 != 0, "" if t % 10 else "HTTP 500") for t in range(100)]
    a = slo_attainment(Records.from_rows(rows), 10.0, slo_p95_ms=50.0, max_error_rate=0.05)
    assert a.windows_met == 0.0
    assert a.slo_misses == 10


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError):
        slo_attainment(_records(), 10.0, slo_p95_ms=0)
    with pytest.raises(UserError):
        Records(np.zeros(2), np.zeros(1), np.zeros(2, bool), ("", ""))
