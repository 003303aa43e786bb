"""Demand traces: request rate over time, and Poisson arrivals drawn from it.

Every trace is a piecewise-linear rate table (`times_s`, `rates_rps`), so `rate_at` is one `np.interp`
(cheap enough for a Locust shape polled every second) and scaling or stretching a trace is arithmetic
on the table. A replayed CSV of timestamps keeps its exact timestamps for `arrivals`.
The simulator and loadtests/ both use this module, so a simulated and a live run see the same demand.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optiserve.errors import UserError

from ._synthetic import heavy_points, mmpp_points

TRACE_KINDS = ("constant", "step", "spike", "ramp", "diurnal", "bursty", "mmpp", "heavy", "replay")

_EPS_S = 1e-6  # width of a vertical edge in the rate table (np.interp needs increasing x)


@dataclass(frozen=True)
class Trace:
    """A request-rate curve over [0, duration_s]; `timestamps_s` set only for replayed timestamps."""

    kind: str
    duration_s: float
    times_s: np.ndarray = field(repr=False, compare=False)
    rates_rps: np.ndarray = field(repr=False, compare=False)
    params: dict = field(default_factory=dict, compare=False)
    timestamps_s: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise UserError(f"trace duration must be a positive number of seconds, got {self.duration_s}.")
        if len(self.times_s) != len(self.rates_rps) or len(self.times_s) < 2:
            raise UserError("a trace's rate table needs at least two (time, rate) points of equal length.")
        if np.any(np.diff(self.times_s) < 0):
            raise UserError("a trace's rate table times must be non-decreasing.")
        if np.any(self.rates_rps < 0) or not np.all(np.isfinite(self.rates_rps)):
            raise UserError("trace rates must be finite and non-negative.")

    def rate_at(self, t_s: float) -> float:
        """Requests per second at time `t_s` (0 outside [0, duration_s])."""
        if t_s < 0 or t_s > self.duration_s:
            return 0.0
        return float(np.interp(t_s, self.times_s, self.rates_rps))

    def rates(self, step_s: float = 1.0) -> np.ndarray:
        """Rate sampled at the middle of each `step_s` bucket over the trace."""
        if step_s <= 0:
            raise UserError("step_s must be positive.")
        n = max(1, int(math.ceil(self.duration_s / step_s - 1e-9)))
        mid = (np.arange(n) + 0.5) * step_s
        return np.interp(np.minimum(mid, self.duration_s), self.times_s, self.rates_rps)

    @property
    def peak_rps(self) -> float:
        return float(self.rates_rps.max())

    @property
    def mean_rps(self) -> float:
        return float(np.trapezoid(self.rates_rps, self.times_s) / self.duration_s)

    def arrivals(self, seed: int) -> np.ndarray:
        """Sorted arrival times (s): a non-homogeneous Poisson process by thinning; same seed, same times."""
        if self.timestamps_s is not None:
            return self.timestamps_s.copy()
        rng = np.random.default_rng(seed)
        lam_max = self.peak_rps
        if lam_max <= 0:
            return np.empty(0)
        n = rng.poisson(lam_max * self.duration_s)
        t = np.sort(rng.uniform(0.0, self.duration_s, n))
        keep = rng.uniform(0.0, lam_max, n) < np.interp(t, self.times_s, self.rates_rps)
        return t[keep]

    def scaled(self, factor: float) -> Trace:
        """The same shape with every rate multiplied by `factor`."""
        if not factor > 0:
            raise UserError(f"scale factor must be positive, got {factor}.")
        ts = None if self.timestamps_s is None else _thin_timestamps(self.timestamps_s, factor)
        return Trace(self.kind, self.duration_s, self.times_s, self.rates_rps * factor,
                     {**self.params, "scale": factor}, ts)

    def stretched(self, duration_s: float) -> Trace:
        """The same shape played over `duration_s` instead (e.g. an hour-long diurnal in 5 minutes)."""
        if not duration_s > 0:
            raise UserError(f"duration must be positive, got {duration_s}.")
        k = duration_s / self.duration_s
        # Replayed timestamps no longer match the new duration: arrivals fall back to the rate table.
        return Trace(self.kind, duration_s, self.times_s * k, self.rates_rps,
                     {**self.params, "stretched_from_s": self.duration_s})


def _thin_timestamps(ts: np.ndarray, factor: float) -> np.ndarray | None:
    # Replayed timestamps can be thinned but not multiplied; above 1 fall back to rate-based arrivals.
    if factor > 1:
        return None
    keep = np.random.default_rng(0).uniform(size=len(ts)) < factor
    return ts[keep]


def _positive(name: str, value: float, allow_zero: bool = True) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"trace parameter {name} must be a {'non-negative' if allow_zero else 'positive'} "
                        f"number, got {value}.")
    return value


def _edges(points: list[tuple[float, float]], duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Turn (time, rate) breakpoints of a piecewise-constant curve into a piecewise-linear table."""
    ts, rs = [0.0], [points[0][1]]
    for t, r in points[1:]:
        t = min(max(t, 0.0), duration_s)
        ts += [max(t - _EPS_S, ts[-1]), t]
        rs += [rs[-1], r]
    ts.append(duration_s)
    rs.append(rs[-1])
    return np.array(ts), np.array(rs)


def make_trace(kind: str, duration_s: float = 3600.0, **params) -> Trace:
    """Build a trace of `kind` (see TRACE_KINDS) lasting `duration_s`; unknown params are a UserError.

    constant: rps=100. step: base_rps=50, peak_rps=200, step_up_at_s=D/3, step_down_at_s=2D/3.
    spike: base_rps=50, peak_rps=300, spike_at_s=D/2, spike_duration_s=60, rise_s=5.
    ramp: start_rps=10, end_rps=200. diurnal: min_rps=20, peak_rps=200, period_s=D, noise=0.1, noise_seed=0.
    bursty: base_rps=20, burst_rps=200, on_s=30, off_s=90. replay: rates_rps=[...] per second.
    mmpp: base_rps=20, peak_rps=200, states=4, mean_dwell_s=60, seed=0 (Markov-modulated Poisson process).
    heavy: mean_rps=60, base_rps=10, sources=16, alpha=1.4, mean_on_s=20, mean_off_s=60, seed=0 (superposed
    Pareto ON/OFF sources: self-similar). See `_synthetic` for both.
    """
    d = _positive("duration_s", duration_s, allow_zero=False)
    defaults = {
        "constant": {"rps": 100.0},
        "step": {"base_rps": 50.0, "peak_rps": 200.0, "step_up_at_s": d / 3, "step_down_at_s": 2 * d / 3},
        "spike": {"base_rps": 50.0, "peak_rps": 300.0, "spike_at_s": d / 2, "spike_duration_s": 60.0,
                  "rise_s": 5.0},
        "ramp": {"start_rps": 10.0, "end_rps": 200.0},
        "diurnal": {"min_rps": 20.0, "peak_rps": 200.0, "period_s": d, "noise": 0.1, "noise_seed": 0},
        "bursty": {"base_rps": 20.0, "burst_rps": 200.0, "on_s": 30.0, "off_s": 90.0},
        "mmpp": {"base_rps": 20.0, "peak_rps": 200.0, "states": 4, "mean_dwell_s": 60.0, "seed": 0},
        "heavy": {"mean_rps": 60.0, "base_rps": 10.0, "sources": 16, "alpha": 1.4, "mean_on_s": 20.0,
                  "mean_off_s": 60.0, "seed": 0},
        "replay": {"rates_rps": None},
    }
    if kind not in defaults:
        raise UserError(f"unknown trace kind {kind!r}; choose one of {', '.join(TRACE_KINDS)}.")
    unknown = set(params) - set(defaults[kind])
    if unknown:
        raise UserError(f"trace {kind!r} has no parameter(s) {', '.join(sorted(unknown))}; "
                        f"it takes {', '.join(defaults[kind])}.")
    p = {**defaults[kind], **params}
    for name, value in p.items():
        if name not in ("rates_rps", "noise_seed"):
            _positive(name, value)

    if kind == "constant":
        times, rates = np.array([0.0, d]), np.array([p["rps"]] * 2)
    elif kind == "step":
        if p["step_down_at_s"] <= p["step_up_at_s"]:
            raise UserError("step_down_at_s must come after step_up_at_s.")
        times, rates = _edges([(0, p["base_rps"]), (p["step_up_at_s"], p["peak_rps"]),
                               (p["step_down_at_s"], p["base_rps"])], d)
    elif kind == "spike":
        t0, rise, width = p["spike_at_s"], p["rise_s"], p["spike_duration_s"]
        pts_t = [0.0, t0, t0 + rise, t0 + rise + width, t0 + 2 * rise + width, d]
        pts_r = [p["base_rps"], p["base_rps"], p["peak_rps"], p["peak_rps"], p["base_rps"], p["base_rps"]]
        times = np.clip(np.array(pts_t), 0, d)
        times, rates = np.maximum.accumulate(times), np.array(pts_r)
    elif kind == "ramp":
        times, rates = np.array([0.0, d]), np.array([p["start_rps"], p["end_rps"]])
    elif kind == "diurnal":
        if p["peak_rps"] < p["min_rps"]:
            raise UserError("diurnal peak_rps must be at least min_rps.")
        times = np.linspace(0.0, d, int(min(d, 100_000)) + 1)
        mid, amp = (p["peak_rps"] + p["min_rps"]) / 2, (p["peak_rps"] - p["min_rps"]) / 2
        base = mid - amp * np.cos(2 * np.pi * times / p["period_s"])  # starts at the trough
        # Slow multiplicative noise: random walk points every 30 s, interpolated (part of the trace, not of
        # the arrival seed, so every policy sees the same demand).
        rng = np.random.default_rng(int(p["noise_seed"]))
        knots = np.arange(0.0, d + 30.0, 30.0)
        noise = np.interp(times, knots, rng.normal(0.0, p["noise"], len(knots)))
        rates = np.maximum(base * (1.0 + noise), 0.0)
    elif kind == "bursty":
        if p["on_s"] <= 0 or p["off_s"] <= 0:
            raise UserError("bursty on_s and off_s must be positive.")
        pts, t = [(0.0, p["base_rps"])], p["off_s"]
        while t < d:
            pts += [(t, p["burst_rps"]), (min(t + p["on_s"], d), p["base_rps"])]
            t += p["on_s"] + p["off_s"]
        times, rates = _edges(pts, d)
    elif kind == "mmpp":
        times, rates = _edges(mmpp_points(d, p["base_rps"], p["peak_rps"], p["states"], p["mean_dwell_s"],
                                          p["seed"]), d)
    elif kind == "heavy":
        times, rates = _edges(heavy_points(d, p["mean_rps"], p["sources"], p["alpha"], p["mean_on_s"],
                                           p["mean_off_s"], p["base_rps"], p["seed"]), d)
    else:  # replay
        if p["rates_rps"] is None:
            raise UserError("a replay trace needs rates_rps (per-second rates) or use load_csv(path).")
        per_s = np.asarray(p["rates_rps"], dtype=float)
        return _from_per_second(per_s, {"source": "rates_rps"})
    return Trace(kind, d, np.asarray(times, float), np.asarray(rates, float), p)


def _from_per_second(per_s: np.ndarray, params: dict) -> Trace:
    if per_s.size == 0:
        raise UserError("a replayed trace needs at least one rate.")
    pts = [(float(i), float(r)) for i, r in enumerate(per_s)]
    times, rates = _edges(pts, float(len(per_s)))
    return Trace("replay", float(len(per_s)), times, rates, params)


_TS_COLS = ("timestamp_s", "timestamp", "time_s", "time", "t", "ts")
_RATE_COLS = ("rps", "rate_rps", "rate", "requests_per_s", "requests")


def trace_from_spec(spec: str, duration_s: float = 3600.0, **params) -> Trace:
    """A trace from a command-line spec: a kind (see TRACE_KINDS), `csv:PATH`, or a path ending in .csv."""
    spec = spec.strip()
    if spec.startswith("csv:") or spec.lower().endswith(".csv"):
        if params:
            raise UserError("trace parameters do not apply to a replayed CSV trace.")
        return load_csv(spec[4:] if spec.startswith("csv:") else spec)
    return make_trace(spec, duration_s, **params)


def load_csv(path: str | Path) -> Trace:
    """Replay a CSV: a `timestamp_s` column (one row per request) or an `rps` column (one row per second).

    With both a time column and an rps column, rows are (time, rate) breakpoints held until the next row.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"trace file {path} does not exist.")
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"trace file {path} is not a readable text CSV ({type(exc).__name__}).") from None
    if len(rows) < 2:
        raise UserError(f"trace file {path} needs a header row and at least one data row.")
    header = [h.strip().lower() for h in rows[0]]
    ts_col = next((header.index(c) for c in _TS_COLS if c in header), None)
    rate_col = next((header.index(c) for c in _RATE_COLS if c in header), None)
    if ts_col is None and rate_col is None:
        raise UserError(f"trace file {path} needs a header with a timestamp_s column (one row per request) "
                        f"or an rps column (per-second rates); got {rows[0]}.")
    cols = [i for i in (ts_col, rate_col) if i is not None]
    values = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            values.append([float(row[i]) for i in cols])
        except IndexError:
            raise UserError(f"trace file {path} line {lineno} has fewer columns than its header.") from None
        except ValueError:
            raise UserError(f"trace file {path} line {lineno} has a non-numeric value: {row}.") from None
    if not values:
        raise UserError(f"trace file {path} has a header but no data rows.")
    data = np.array(values, dtype=float)
    if not np.all(np.isfinite(data)) or np.any(data < 0):
        bad = int(np.flatnonzero(~np.all(np.isfinite(data) & (data >= 0), axis=1))[0])
        raise UserError(f"trace file {path} has a negative or non-finite value in data row {bad + 1}; "
                        "times and rates must be finite and >= 0.")
    params = {"source": str(path)}
    if rate_col is None:  # timestamps
        ts = np.sort(data[:, 0] - data[:, 0].min())
        duration = max(float(ts[-1]), 1.0) + 1e-9
        counts = np.bincount(ts.astype(int), minlength=int(math.ceil(duration)))
        tr = _from_per_second(counts.astype(float), params)
        return Trace("replay", tr.duration_s, tr.times_s, tr.rates_rps, params, ts)
    if ts_col is None:
        return _from_per_second(data[:, 0], params)
    t, r = data[:, 0] - data[0, 0], data[:, 1]
    if np.any(np.diff(t) <= 0):
        raise UserError(f"trace file {path}: the time column must increase row by row.")
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    times, rates = _edges(list(zip(t.tolist(), r.tolist(), strict=True)), float(t[-1] + step))
    return Trace("replay", float(t[-1] + step), times, rates, params)
