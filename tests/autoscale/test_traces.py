import numpy as np
import pytest

from autoscale.traces import TRACE_KINDS, load_csv, make_trace, trace_from_spec
from optiserve.errors import UserError


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


@pytest.mark.parametrize("kind", ["mmpp", "heavy"])
def test_production_like_traces_are_seeded(kind):
    a, b, c = make_trace(kind, 1800.0, seed=1), make_trace(kind, 1800.0, seed=1), make_trace(kind, 1800.0, seed=2)
    assert np.array_equal(a.rates_rps, b.rates_rps) and np.array_equal(a.times_s, b.times_s)
    assert not np.array_equal(a.rates(1.0), c.rates(1.0))
    assert np.array_equal(a.arrivals(0), b.arrivals(0))


def test_mmpp_levels_mean_rate_and_burstiness():
    tr = make_trace("mmpp", 20_000.0, base_rps=10, peak_rps=160, states=3, mean_dwell_s=60)
    per_s = tr.rates(1.0)
    assert set(np.round(np.unique(per_s), 6)) == {10.0, 40.0, 160.0}  # geometric levels from base to peak
    # Dwell in level k has mean 60 x sqrt(base / level), jumps are uniform: the time-average rate follows.
    dwell = 60 * np.sqrt(10 / np.array([10.0, 40.0, 160.0]))
    expected = float((dwell * [10.0, 40.0, 160.0]).sum() / dwell.sum())
    assert tr.mean_rps == pytest.approx(expected, rel=0.15)
    assert per_s.max() / tr.mean_rps > 2.5  # bursty: peak well above mean
    a = tr.arrivals(0)
    assert abs(len(a) - tr.mean_rps * tr.duration_s) < 5 * np.sqrt(tr.mean_rps * tr.duration_s)


def test_heavy_mean_rate_and_self_similar_burstiness():
    tr = make_trace("heavy", 40_000.0, mean_rps=60, base_rps=10, sources=16, alpha=1.4, seed=3)
    per_s = tr.rates(1.0)
    assert per_s.min() >= 10.0 and tr.mean_rps == pytest.approx(60.0, rel=0.25)
    # Self-similar: the variance of the mean rate over blocks of m seconds decays slower than 1/m (Poisson-like
    # or short-range traffic would give slope -1 on log-log; Hurst H = (3 - alpha) / 2 = 0.8 gives 2H - 2).
    ms = np.array([10, 30, 100, 300])
    var = [per_s[: len(per_s) // m * m].reshape(-1, m).mean(axis=1).var() for m in ms]
    slope = np.polyfit(np.log(ms), np.log(var), 1)[0]
    assert -0.8 < slope < -0.05, slope
    with pytest.raises(UserError):
        make_trace("heavy", 100.0, alpha=2.5)
    with pytest.raises(UserError):
        make_trace("heavy", 100.0, mean_rps=5, base_rps=10)
    with pytest.raises(UserError):
        make_trace("mmpp", 100.0, states=1)


def test_trace_from_spec_reads_csv_and_kinds(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("rps\n5\n7\n")
    assert trace_from_spec(f"csv:{path}").rate_at(1.5) == 7
    assert trace_from_spec(str(path)).duration_s == 2.0
    assert trace_from_spec("ramp", 100.0).rate_at(100.0) == 200.0
    with pytest.raises(UserError, match="do not apply"):
        trace_from_spec(f"csv:{path}", 10.0, rps=3)


@pytest.mark.parametrize(("content", "message"), [
    ("", "needs a header row"),
    ("rps\n", "needs a header row"),
    ("rps\n\n\n", "no data rows"),
    ("rps\n5\nabc\n", "line 3 has a non-numeric value"),
    ("time_s,rps\n0,1\n1\n", "line 3 has fewer columns"),
    ("rps\n5\n-2\n", "negative or non-finite value in data row 2"),
    ("rps\n5\nnan\n", "negative or non-finite"),
    ("time_s,rps\n0,1\n0,2\n", "must increase row by row"),
    ("foo\n1\n", "needs a header with a timestamp_s column"),
])
def test_csv_replay_errors_are_one_clear_sentence(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_csv(path)
    text = str(err.value)
    assert text.endswith(".") and "\n" not in text and "Traceback" not in text


def test_csv_replay_missing_or_binary_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_csv(tmp_path / "missing.csv")
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81rps\n")
    with pytest.raises(UserError, match="not a readable text CSV"):
        load_csv(binary)
