import numpy as np
import pytest

from autoscale.traces import TRACE_KINDS, load_csv, make_trace
from optimize._errors import UserError


@pytest.mark.parametrize("kind", [k for k in TRACE_KINDS if k != "replay"])
def test_arrivals_follow_the_rate_and_are_deterministic(kind):
    tr = make_trace(kind, 600.0)
    a, b = tr.arrivals(3), tr.arrivals(3)
    assert np.array_equal(a, b) and np.all(np.diff(a) >= 0)
    assert not np.array_equal(a, tr.arrivals(4))
    expected = tr.mean_rps * tr.duration_s
    assert abs(len(a) - expected) < 5 * np.sqrt(expected)


def test_step_spike_and_bursty_shapes():
    step = make_trace("step", 300.0, base_rps=10, peak_rps=100, step_up_at_s=100, step_down_at_s=200)
    assert step.rate_at(50) == 10 and step.rate_at(150) == 100 and step.rate_at(250) == 10
    spike = make_trace("spike", 300.0, base_rps=5, peak_rps=50, spike_at_s=100, spike_duration_s=20, rise_s=2)
    assert spike.rate_at(110) == 50 and spike.rate_at(50) == 5 and spike.peak_rps == 50
    bursty = make_trace("bursty", 300.0, base_rps=1, burst_rps=9, on_s=10, off_s=20)
    assert bursty.rate_at(25) == 9 and bursty.rate_at(35) == 1
    assert step.rate_at(-1) == 0 and step.rate_at(301) == 0
    assert len(step.rates(10.0)) == 30


def test_scaled_and_stretched():
    tr = make_trace("diurnal", 3600.0, min_rps=10, peak_rps=100, noise=0.0)
    assert tr.scaled(2.0).rate_at(1800) == pytest.approx(2 * tr.rate_at(1800))
    short = tr.stretched(60.0)
    assert short.duration_s == 60.0 and short.rate_at(30) == pytest.approx(tr.rate_at(1800))


@pytest.mark.parametrize("bad", [dict(kind="nope"), dict(kind="step", peak=3), dict(kind="constant", rps=-1),
                                 dict(kind="step", step_up_at_s=50, step_down_at_s=10)])
def test_bad_params_are_user_errors(bad):
    with pytest.raises(UserError):
        make_trace(duration_s=100.0, **bad)


def test_load_csv_timestamps_rates_and_table(tmp_path):
    ts = tmp_path / "ts.csv"
    ts.write_text("timestamp_s\n10.0\n10.5\n11.2\n14.0\n")
    tr = load_csv(ts)
    assert tr.kind == "replay" and np.allclose(tr.arrivals(0), [0.0, 0.5, 1.2, 4.0])
    rates = tmp_path / "r.csv"
    rates.write_text("rps\n5\n7\n9\n")
    tr = load_csv(rates)
    assert tr.duration_s == 3.0 and tr.rate_at(1.5) == 7
    table = tmp_path / "t.csv"
    table.write_text("time_s,rps\n0,1\n60,3\n")
    assert load_csv(table).rate_at(90) == 3
    bad = tmp_path / "bad.csv"
    bad.write_text("foo\n1\n")
    with pytest.raises(UserError):
        load_csv(bad)
