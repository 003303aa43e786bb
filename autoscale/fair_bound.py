"""A fair perfect-foresight bound: the same replicas, the same queue, the same start, all known in advance.

`bound.lower_bound` gives each second ceil(arrivals / best throughput) replicas, started instantly: it
lets a replica run at 100 % with no queueing and lets replicas come and go for free, none of which a
policy can do (at 1-5 replicas of 60 req/s and an objective of three service times, a queue needs
40-80 % more). This bound keeps only the foresight:

- each second gets the fewest whole replicas with which the simulator's own service model (FIFO, the
  profile's batch latencies, the replicas' busy times carried over from the second before) serves at
  least `goal` of that second's requests within the objective;
- a replica that is added is started `replica_start_s` ahead (the start is known, so it is ready in
  time) and billed while it starts, as the simulator bills; one that would idle for less than a start
  between two uses is kept instead of stopped and restarted (whichever is cheaper).

It asks the goal of every second, so a policy that spends its whole miss budget on a few seconds (gives
up a spike) can come in under it; it is the reference for "as cheap as knowing the future", not a proof
that less is impossible (`lower_bound` is that).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

import numpy as np

from optiserve.errors import UserError

from .profile import ModelProfile
from .simulator import _serve


@dataclass(frozen=True)
class FairBound:
    replica_seconds: float  # serving plus starting, with foresight
    serving_replica_seconds: float  # the per-second replicas alone
    starts: int
    replica_start_s: float
    goal: float
    peak_replicas: int

    def to_dict(self) -> dict:
        return asdict(self)


def per_second_replicas(arrivals: np.ndarray, duration_s: float, profile: ModelProfile, slo_p95_ms: float,
                        min_replicas: int = 1, goal: float = 0.99) -> np.ndarray:
    """Fewest replicas per second that serve >= `goal` of the second's requests within the objective."""
    if duration_s <= 0 or not 0 < goal <= 1:
        raise UserError("duration_s must be positive and goal in (0, 1].")
    a = np.sort(np.asarray(arrivals, float))
    n_steps = int(math.ceil(duration_s - 1e-9))
    edges = np.searchsorted(a, np.arange(n_steps + 1, dtype=float), "left")
    edges[-1] = len(a)
    max_bs = profile.max_batch_size
    lat_s = np.asarray(profile.latency_ms(np.arange(0, max_bs + 1)), float) / 1000.0
    wait_s = profile.batch_wait_ms / 1000.0
    cap = profile.capacity_rps(slo_p95_ms, latency_factor=1.0)
    slo_s = slo_p95_ms / 1000.0
    need = np.empty(n_steps, int)
    free: list[float] = [0.0] * max(min_replicas, 0)  # when each replica of the last second is next free

    def trial(seg: np.ndarray, t: float, c: int) -> tuple[float, list[float]]:
        # Keep the busiest replicas when shrinking (the simulator stops the idle ones first), add ready ones.
        kept = sorted(free)[-c:] if c <= len(free) else free + [t] * (c - len(free))
        servers = [(max(f, t), k) for k, f in enumerate(kept)]
        heapq.heapify(servers)
        comp = np.full(len(seg), np.inf)
        _serve(seg, 0, math.inf, servers, [], comp, lat_s, wait_s, max_bs, None)
        ok = float(np.mean(comp - seg <= slo_s + 1e-12)) if len(seg) else 1.0
        return ok, [f for f, _ in servers]

    for t in range(n_steps):
        seg = a[edges[t]:edges[t + 1]]
        c = max(min_replicas, math.ceil(len(seg) / cap - 1e-9), 1 if len(seg) else 0)
        ok, after = trial(seg, float(t), c)
        while ok < goal - 1e-12:
            c += 1
            ok, after = trial(seg, float(t), c)
        need[t], free = c, after
    return need


def with_foresight(need: np.ndarray, replica_start_s: float, initial: int = 0) -> tuple[float, int]:
    """Replica-seconds and starts of meeting `need` per second with starts known in advance.

    Replica k serves the seconds where need >= k; its gaps shorter than a start are bridged (idling costs
    less than a restart), and each run it is up costs its length plus one start (none for the first
    `initial` replicas, which are up at time 0 as in the simulator)."""
    total, starts = 0.0, 0
    for k in range(1, int(need.max(initial=0)) + 1):
        on = np.flatnonzero(need >= k)
        if on.size == 0:
            continue
        breaks = np.flatnonzero(np.diff(on) > 1)
        begins = np.concatenate(([on[0]], on[breaks + 1]))
        ends = np.concatenate((on[breaks], [on[-1]])) + 1
        runs = [[int(begins[0]), int(ends[0])]]
        for b, e in zip(begins[1:], ends[1:], strict=True):
            if b - runs[-1][1] <= replica_start_s:
                runs[-1][1] = int(e)  # bridge a short gap
            else:
                runs.append([int(b), int(e)])
        for i, (b, e) in enumerate(runs):
            free_start = k <= initial and i == 0 and b == 0
            total += (e - b) + (0.0 if free_start else replica_start_s)
            starts += 0 if free_start else 1
    return total, starts


def fair_bound(arrivals: np.ndarray, duration_s: float, profile: ModelProfile, slo_p95_ms: float,
               min_replicas: int = 1, goal: float = 0.99) -> FairBound:
    need = per_second_replicas(arrivals, duration_s, profile, slo_p95_ms, min_replicas, goal)
    total, starts = with_foresight(need, profile.replica_start_s, initial=min_replicas)
    return FairBound(total, float(need.sum()), starts, profile.replica_start_s, goal,
                     int(need.max(initial=0)))
