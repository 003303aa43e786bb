"""The typed result of one simulation, and the summary maths that builds it from raw per-request data."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class SimulationResult:
    trace: str
    policy: str
    seed: int
    duration_s: float
    requests: int
    slo_p95_ms: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    slo_attainment_requests: float  # share of requests answered within slo_p95_ms
    slo_attainment_windows: float  # share of windows (with traffic) whose p95 <= slo_p95_ms
    window_s: float
    replica_seconds: float
    mean_replicas: float
    max_replicas: int
    scaling_actions: int
    cost: dict
    cost_total: float
    cost_per_1k_requests: float
    wall_s: float
    policy_config: dict = field(default_factory=dict)
    sim_config: dict = field(default_factory=dict)
    profile: dict = field(default_factory=dict)
    timeseries: dict = field(default_factory=dict)  # t_s, demand_rps, replicas, ready_replicas, latency_p95_ms
    lower_bound_replica_seconds: float | None = None

    @property
    def ratio_to_bound(self) -> float | None:
        lb = self.lower_bound_replica_seconds
        return self.replica_seconds / lb if lb else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ratio_to_bound"] = self.ratio_to_bound
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SimulationResult:
        return cls(**{k: v for k, v in d.items() if k != "ratio_to_bound"})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SimulationResult:
        return cls.from_dict(json.loads(Path(path).read_text()))


def window_p95(arrivals: np.ndarray, latency_ms: np.ndarray, window_s: float, n_windows: int) -> np.ndarray:
    """p95 latency of the requests arriving in each window (NaN for an empty window)."""
    edges = np.searchsorted(arrivals, np.arange(n_windows + 1) * window_s, "left")
    out = np.full(n_windows, np.nan)
    for w in range(n_windows):
        lo, hi = edges[w], edges[w + 1]
        if hi > lo:
            out[w] = np.percentile(latency_ms[lo:hi], 95)
    return out


def summarize(trace, policy, policy_config, profile, sim, cost_model, a, comp, allocated, ready,
              replica_seconds, actions, wall_s) -> SimulationResult:
    lat = (comp - a) * 1000.0
    n = len(a)
    ok = lat <= sim.slo_p95_ms
    p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if n else (0.0, 0.0, 0.0)
    n_win = max(1, int(np.ceil(trace.duration_s / sim.window_s - 1e-9)))
    wp95 = window_p95(a, lat, sim.window_s, n_win)
    has = ~np.isnan(wp95)
    win_att = float(np.mean(wp95[has] <= sim.slo_p95_ms)) if has.any() else 1.0
    misses = int(n - ok.sum())
    cost = cost_model.cost_of_run(replica_seconds, sim.replica_kind, n, misses)

    step = sim.timeseries_step_s
    n_ts = max(1, int(np.ceil(trace.duration_s / step - 1e-9)))
    per_tick = max(1, int(round(step / sim.control_interval_s)))
    pad = n_ts * per_tick - len(allocated)
    alloc_ts = np.pad(allocated, (0, max(pad, 0)), mode="edge")[: n_ts * per_tick].reshape(n_ts, per_tick)
    ready_ts = np.pad(ready, (0, max(pad, 0)), mode="edge")[: n_ts * per_tick].reshape(n_ts, per_tick)
    demand = np.bincount(np.minimum((a // step).astype(int), n_ts - 1), minlength=n_ts) / step if n else \
        np.zeros(n_ts)
    lat_ts = window_p95(a, lat, step, n_ts)
    finite = np.isfinite(lat)
    return SimulationResult(
        trace=trace.kind, policy=policy, seed=sim.seed, duration_s=trace.duration_s, requests=n,
        slo_p95_ms=sim.slo_p95_ms,
        latency_mean_ms=float(lat[finite].mean()) if finite.any() else 0.0,
        latency_p50_ms=float(p50), latency_p95_ms=float(p95), latency_p99_ms=float(p99),
        latency_max_ms=float(lat.max()) if n else 0.0,
        slo_attainment_requests=float(ok.mean()) if n else 1.0, slo_attainment_windows=win_att,
        window_s=sim.window_s, replica_seconds=replica_seconds,
        mean_replicas=float(allocated.mean()), max_replicas=int(allocated.max()), scaling_actions=actions,
        cost=cost.to_dict(), cost_total=cost.total, cost_per_1k_requests=cost.cost_per_1k_requests,
        wall_s=wall_s, policy_config=policy_config.to_dict(), sim_config=asdict(sim),
        profile=profile.to_dict(),
        timeseries={
            "t_s": (np.arange(n_ts) * step).tolist(),
            "demand_rps": np.round(demand, 3).tolist(),
            "replicas": np.round(alloc_ts.mean(axis=1), 3).tolist(),
            "ready_replicas": np.round(ready_ts.mean(axis=1), 3).tolist(),
            "latency_p95_ms": [None if np.isnan(x) else round(float(x), 3) for x in lat_ts],
        },
    )
