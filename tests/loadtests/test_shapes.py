import pytest

from loadtests.shapes import (
    build_trace,
    parse_duration,
    parse_params,
    read_trace,
    staircase,
    write_trace,
)
from optiserve.errors import UserError


@pytest.mark.parametrize("text,seconds", [("90", 90), ("90s", 90), ("5m", 300), ("1h", 3600), ("250ms", 0.25),
                                          ("1.5m", 90)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5 minutes", "-3s", "0s"])
def test_bad_durations(bad):
    with pytest.raises(UserError):
        parse_duration(bad)


def test_params():
    assert parse_params(["peak_rps=40", "name=x"]) == {"peak_rps": 40, "name": "x"}
    with pytest.raises(UserError):
        parse_params(["peak_rps"])


def test_staircase_and_file_round_trip(tmp_path):
    t = staircase([5, 10, 20], 4)
    assert t.duration_s == 12
    assert [t.rate_at(x) for x in (1, 5, 11)] == [5, 10, 20]
    back = read_trace(write_trace(t, tmp_path / "t.json"))
    assert back.rates(1.0).tolist() == t.rates(1.0).tolist()


def test_build_trace_uses_autoscale_traces():
    t = build_trace("step", 30, {"base_rps": 5, "peak_rps": 40})
    assert t.kind == "step" and t.peak_rps == 40 and t.rate_at(1) == 5
    with pytest.raises(UserError):
        build_trace("sawtooth", 30)
    with pytest.raises(UserError):
        build_trace("step", 30, {"nope": 1})


def test_staircase_lead_in():
    t = staircase([5, 10], 2, lead_in_s=3)
    assert t.duration_s == 7
    assert [t.rate_at(x + 0.5) for x in range(7)] == [5, 5, 5, 5, 5, 10, 10]
