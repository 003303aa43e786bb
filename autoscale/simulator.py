"""Trace-driven discrete-event simulation of an autoscaled deployment. Pure and deterministic per seed.

Requests arrive from `trace.arrivals(seed)` into one FIFO queue (Ray Serve's router sends a request to a
replica with room, queueing at the handle otherwise). A free replica takes the waiting requests as one
batch: up to `max_batch_size`, waiting up to `batch_wait_ms` for the batch to fill (as `@serve.batch`),
and serves it in the profile's measured latency for that batch size. The control loop runs every
`control_interval_s` (Ray's 0.1 s); it sees metrics the way Ray's controller does: replicas record a
sample every min(0.2 x look_back, metrics_interval) and push every `metrics_interval_s`, and the
controller averages the samples of the last `look_back_period_s` it has received. New replicas serve
after `replica_start_s`; removed replicas finish their batch. Cost is billed on every allocated replica
(starting or running).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from optiserve.errors import UserError

from ._results import SimulationResult, summarize
from .cost import CostModel
from .policies import Observation, PolicyConfig, get_policy
from .profile import ModelProfile
from .traces import Trace


@dataclass(frozen=True)
class SimConfig:
    min_replicas: int = 1
    max_replicas: int = 50
    initial_replicas: int | None = None
    control_interval_s: float = 0.1
    metrics_interval_s: float = 2.0  # replicas' metrics push period; ray_adapter.METRICS_INTERVAL_S (Ray: 10)
    slo_p95_ms: float = 50.0
    window_s: float = 10.0
    replica_kind: str = "cpu-1"
    service: str = "profile"  # or "exponential": service time ~ Exp(mean = profile latency at batch 1)
    seed: int = 0
    timeseries_step_s: float = 10.0

    def __post_init__(self) -> None:
        if not (0 <= self.min_replicas <= self.max_replicas) or self.max_replicas < 1:
            raise UserError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1.")
        init = self.initial_replicas
        if init is not None and not (self.min_replicas <= init <= self.max_replicas):
            raise UserError("initial_replicas must lie between min_replicas and max_replicas.")
        if self.control_interval_s <= 0 or self.metrics_interval_s <= 0 or self.window_s <= 0:
            raise UserError("control_interval_s, metrics_interval_s and window_s must be positive.")
        if self.slo_p95_ms <= 0:
            raise UserError("slo_p95_ms must be positive.")
        if self.service not in ("profile", "exponential"):
            raise UserError("service must be 'profile' or 'exponential'.")


@dataclass
class _Metrics:
    """Samples the replicas record, and the lagged aggregate the controller sees."""

    record_s: float
    push_s: float
    look_back_s: float
    t: list = field(default_factory=list)
    ongoing: list = field(default_factory=list)
    queued: list = field(default_factory=list)
    rate: list = field(default_factory=list)
    seen_push: float = -1.0
    agg: tuple = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def simulate(trace: Trace, policy: str, policy_config: PolicyConfig, profile: ModelProfile,
             sim: SimConfig | None = None, cost_model: CostModel | None = None,
             arrivals: np.ndarray | None = None) -> SimulationResult:
    """Run `policy` against `trace`; `arrivals` overrides `trace.arrivals(sim.seed)` (for shared draws)."""
    sim = sim or SimConfig()
    wall0 = time.perf_counter()
    fn = get_policy(policy)
    a = trace.arrivals(sim.seed) if arrivals is None else np.asarray(arrivals, float)
    n = len(a)
    rng = np.random.default_rng(sim.seed + 1)
    max_bs = 1 if sim.service == "exponential" else profile.max_batch_size
    lat_s = np.asarray(profile.latency_ms(np.arange(0, max_bs + 1)), float) / 1000.0
    wait_s = 0.0 if sim.service == "exponential" else profile.batch_wait_ms / 1000.0
    expo = rng.exponential(1.0, n) if sim.service == "exponential" else None
    comp = np.full(n, np.inf)

    look_back = policy_config.look_back_period_s
    m = _Metrics(min(0.2 * look_back, sim.metrics_interval_s), sim.metrics_interval_s, look_back)
    start_s = profile.replica_start_s
    dt = sim.control_interval_s
    n_ticks = int(math.ceil(trace.duration_s / dt - 1e-9))
    target = sim.initial_replicas if sim.initial_replicas is not None else sim.min_replicas
    servers = [(0.0, k) for k in range(target)]  # (free_at_s, id): ready replicas
    heapq.heapify(servers)
    pending: list[float] = []  # ready_at_s of starting replicas, ascending
    next_id = target
    inflight: list[tuple[float, int, float]] = []  # (finish_s, size, start_s) of batches not yet done
    done = 0
    i = 0
    state: dict = {}
    allocated = np.empty(n_ticks)
    ready = np.empty(n_ticks)
    actions = 0
    next_record = 0.0

    for k in range(n_ticks):
        now = k * dt
        # Replicas record a sample (ongoing, queued, arrival rate) on their own period.
        if now + 1e-9 >= next_record:
            while inflight and inflight[0][0] <= now:
                done += heapq.heappop(inflight)[1]
            arrived = int(np.searchsorted(a, now, "right"))
            running = sum(s for f, s, st in inflight if st <= now)
            prev = m.t[-1] if m.t else 0.0
            prev_arrived = m.rate[-1][1] if m.rate else 0
            m.t.append(now)
            m.ongoing.append(arrived - done)
            m.queued.append(max(arrived - done - running, 0))
            m.rate.append(((arrived - prev_arrived) / max(now - prev, m.record_s), arrived))
            next_record = now + m.record_s
        obs = _observe(m, now, a, comp, len(servers), target, start_s, sim)
        desired, state = fn(obs, policy_config, state)
        if desired != target:
            actions += 1
            if desired > target:
                pending.extend([now + start_s] * (desired - target))
            else:
                for _ in range(target - desired):
                    if pending:
                        pending.pop()
                    elif servers:
                        heapq.heappop(servers)  # the replica free soonest (idle first) drains and stops
            target = desired
        t_end = now + dt
        while pending and pending[0] < t_end:
            heapq.heappush(servers, (pending.pop(0), next_id))
            next_id += 1
        allocated[k] = len(servers) + len(pending)
        ready[k] = len(servers)
        i = _serve(a, i, t_end, servers, inflight, comp, lat_s, wait_s, max_bs, expo)

    if servers:  # drain what is still queued at the end of the trace, without scaling
        i = _serve(a, i, math.inf, servers, inflight, comp, lat_s, wait_s, max_bs, expo)
    if i < n:
        comp[i:] = math.inf
    replica_seconds = float(allocated.sum() * dt)
    return summarize(trace, policy, policy_config, profile, sim, cost_model or CostModel(), a, comp,
                     allocated, ready, replica_seconds, actions, time.perf_counter() - wall0)


def _observe(m: _Metrics, now: float, a, comp, current: int, target: int, start_s: float,
             sim: SimConfig) -> Observation:
    push = math.floor(now / m.push_s + 1e-9) * m.push_s
    if push != m.seen_push:  # new data reached the controller: recompute the window aggregate
        m.seen_push = push
        ts = np.asarray(m.t)
        sel = (ts > push - m.look_back_s - 1e-9) & (ts <= push + 1e-9)
        if sel.any():
            ongoing = float(np.asarray(m.ongoing)[sel].mean())
            queued = float(np.asarray(m.queued)[sel].mean())
            rate = float(np.asarray([r for r, _ in m.rate])[sel].mean())
        else:
            ongoing = queued = rate = 0.0
        lo, hi = np.searchsorted(a, [push - m.look_back_s, push], "right")
        lat = comp[lo:hi] - a[lo:hi]
        lat = lat[comp[lo:hi] <= push] * 1000.0
        p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if lat.size else (0.0, 0.0, 0.0)
        m.agg = (ongoing, queued, rate, float(p50), float(p95), float(p99))
        # Keep the sample lists short: only the window can matter from now on.
        if len(m.t) > 4 * (m.look_back_s / m.record_s + 2):
            keep = int(2 * (m.look_back_s / m.record_s + 2))
            m.t, m.ongoing, m.queued, m.rate = m.t[-keep:], m.ongoing[-keep:], m.queued[-keep:], m.rate[-keep:]
    ongoing, queued, rate, p50, p95, p99 = m.agg
    return Observation(now, current, target, ongoing, queued, rate, p50, p95, p99, start_s,
                       sim.min_replicas, sim.max_replicas)


def _serve(a, i, t_end, servers, inflight, comp, lat_s, wait_s, max_bs, expo) -> int:
    """Start every batch that opens before `t_end`; return the index of the first unserved request."""
    n = len(a)
    push, pop, search = heapq.heappush, heapq.heappop, np.searchsorted
    while i < n and servers:
        free, sid = servers[0]
        ai = a[i]
        t_open = free if free > ai else ai
        if t_open >= t_end:
            break
        pop(servers)
        if max_bs == 1:
            j, close = i + 1, t_open
        else:
            last = i + max_bs - 1
            close = t_open + wait_s
            if last < n and a[last] < close:
                close = a[last] if a[last] > t_open else t_open
            j = min(int(search(a, close, "right")), i + max_bs)
        b = j - i
        service = lat_s[1] * expo[i] if expo is not None else lat_s[b]
        finish = close + service
        comp[i:j] = finish
        push(servers, (finish, sid))
        push(inflight, (finish, b, close))
        i = j
    return i
