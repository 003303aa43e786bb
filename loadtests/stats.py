"""Latency statistics at full resolution, per-second time series and SLO attainment.

Locust's own stats round response times to 2 significant digits (a 1234 ms request counts as 1200 ms);
here every request's exact latency (ms, from perf_counter) is kept, so percentiles are exact. Failed
requests are counted apart and never enter the latency percentiles (a fast 500 must not make p95 look
good), but they do count as SLO misses.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from optiserve.errors import UserError

PERCENTILES = (50.0, 90.0, 95.0, 99.0)


@dataclass(frozen=True)
class Records:
    """One row per request: start time (s, relative to the run's start), latency (ms), success, error kind."""

    start_s: np.ndarray
    latency_ms: np.ndarray
    ok: np.ndarray
    error: tuple[str, ...]  # "" for a success, else e.g. "HTTP 503" or "ConnectionRefusedError"

    def __post_init__(self) -> None:
        n = len(self.start_s)
        if not (len(self.latency_ms) == len(self.ok) == len(self.error) == n):
            raise UserError("request records need equally long start, latency, ok and error columns.")

    @classmethod
    def from_rows(cls, rows: list[tuple[float, float, bool, str]], t0_s: float = 0.0) -> Records:
        """Rows of (start_s, latency_ms, ok, error); `t0_s` is subtracted from the start times."""
        if not rows:
            return cls(np.empty(0), np.empty(0), np.empty(0, bool), ())
        start, lat, ok, err = zip(*rows, strict=True)
        order = np.argsort(np.asarray(start, float), kind="stable")
        return cls(np.asarray(start, float)[order] - t0_s, np.asarray(lat, float)[order],
                   np.asarray(ok, bool)[order], tuple(str(err[i]) for i in order))

    def __len__(self) -> int:
        return len(self.start_s)

    def window(self, t0_s: float, t1_s: float) -> Records:
        """The requests that started in [t0_s, t1_s)."""
        m = (self.start_s >= t0_s) & (self.start_s < t1_s)
        idx = np.nonzero(m)[0]
        return Records(self.start_s[m], self.latency_ms[m], self.ok[m], tuple(self.error[i] for i in idx))


def percentile(latency_ms: np.ndarray, q: float) -> float:
    """The q-th percentile (linear interpolation between exact samples); NaN without samples."""
    return float(np.percentile(latency_ms, q)) if len(latency_ms) else math.nan


@dataclass(frozen=True)
class LatencySummary:
    requests: int
    successes: int
    failures: int
    error_rate: float
    achieved_rps: float  # successful responses per second of run
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    failures_by_kind: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(records: Records, duration_s: float) -> LatencySummary:
    lat = records.latency_ms[records.ok]
    n, ok = len(records), int(records.ok.sum())
    p = {q: percentile(lat, q) for q in PERCENTILES}
    kinds = Counter(e for e, good in zip(records.error, records.ok, strict=True) if not good)
    return LatencySummary(
        requests=n, successes=ok, failures=n - ok, error_rate=(n - ok) / n if n else 0.0,
        achieved_rps=ok / duration_s if duration_s > 0 else 0.0,
        mean_ms=float(lat.mean()) if len(lat) else math.nan,
        p50_ms=p[50.0], p90_ms=p[90.0], p95_ms=p[95.0], p99_ms=p[99.0],
        max_ms=float(lat.max()) if len(lat) else math.nan, failures_by_kind=dict(kinds.most_common()),
    )


@dataclass(frozen=True)
class SecondStats:
    """Requests that started in second [t_s, t_s + 1) of the run."""

    t_s: int
    target_rps: float
    sent: int
    ok: int
    failed: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


def time_series(records: Records, duration_s: float, target_rps=None, step_s: float = 1.0) -> list[SecondStats]:
    """Per-`step_s` rows over [0, duration_s]; `target_rps(t)` (e.g. Trace.rate_at) fills the demand column."""
    n = max(1, int(math.ceil(duration_s / step_s - 1e-9)))
    idx = np.floor(records.start_s / step_s).astype(int)
    rows = []
    for k in range(n):
        m = idx == k
        good = records.latency_ms[m & records.ok]
        sent = int(m.sum())
        rows.append(SecondStats(
            t_s=int(k * step_s), target_rps=float(target_rps((k + 0.5) * step_s)) if target_rps else math.nan,
            sent=sent, ok=len(good), failed=sent - len(good), p50_ms=percentile(good, 50),
            p95_ms=percentile(good, 95), p99_ms=percentile(good, 99),
        ))
    return rows


@dataclass(frozen=True)
class SloAttainment:
    """How much of the run met the objective: by request and by window."""

    slo_p95_ms: float
    window_s: float
    requests_within_slo: float  # share of all requests answered successfully within slo_p95_ms
    windows_met: float  # share of windows (with traffic) whose p95 <= slo and error rate <= the maximum
    windows: int
    slo_misses: int  # requests slower than the objective or failed

    def to_dict(self) -> dict:
        return asdict(self)


def slo_attainment(records: Records, duration_s: float, slo_p95_ms: float, max_error_rate: float = 0.01,
                   window_s: float = 10.0) -> SloAttainment:
    if slo_p95_ms <= 0 or window_s <= 0:
        raise UserError("slo_p95_ms and window_s must be positive.")
    within = records.ok & (records.latency_ms <= slo_p95_ms)
    n = len(records)
    met = total = 0
    for k in range(max(1, int(math.ceil(duration_s / window_s - 1e-9)))):
        w = records.window(k * window_s, (k + 1) * window_s)
        if not len(w):
            continue
        total += 1
        err = 1.0 - w.ok.mean()
        p95 = percentile(w.latency_ms[w.ok], 95)
        met += int(err <= max_error_rate and not math.isnan(p95) and p95 <= slo_p95_ms)
    return SloAttainment(
        slo_p95_ms=float(slo_p95_ms), window_s=float(window_s),
        requests_within_slo=float(within.mean()) if n else math.nan,
        windows_met=met / total if total else math.nan, windows=total, slo_misses=int(n - within.sum()),
    )
