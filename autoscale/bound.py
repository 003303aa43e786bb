"""Perfect-foresight lower bound: the fewest replica-seconds that could meet the SLO.

Knows every arrival in advance and starts replicas instantly and for free: each second gets
arrivals / (best throughput) replicas, rounded up, at the best throughput a replica reaches with batches
whose latency alone is within the objective, i.e. every replica busy 100 % of the second with no
queueing at all, and never fewer than `min_replicas`. No policy can use fewer replica-seconds and meet
the objective, so it is a true lower bound; but it is not a fair yardstick: it ignores that a queue
needs idle capacity to keep waits under the objective (Erlang C: 40-80 % more at 1-5 replicas when the
objective is three service times) and that a replica is billed while it starts. `fair_bound` keeps the
foresight and drops those two simplifications; `references` below says what is reachable at all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from optiserve.errors import UserError

from .profile import ModelProfile


@dataclass(frozen=True)
class LowerBound:
    replica_seconds: float
    capacity_rps_per_replica: float
    step_s: float
    peak_replicas: int

    def to_dict(self) -> dict:
        return asdict(self)


def lower_bound(arrivals: np.ndarray, duration_s: float, profile: ModelProfile, slo_p95_ms: float,
                min_replicas: int = 1, step_s: float = 1.0) -> LowerBound:
    if step_s <= 0 or duration_s <= 0:
        raise UserError("step_s and duration_s must be positive.")
    cap = profile.capacity_rps(slo_p95_ms, latency_factor=1.0)
    n_steps = int(np.ceil(duration_s / step_s - 1e-9))
    idx = np.minimum((np.asarray(arrivals) // step_s).astype(int), n_steps - 1)
    counts = np.bincount(idx, minlength=n_steps)
    need = np.maximum(np.ceil(counts / (cap * step_s) - 1e-9), min_replicas)
    return LowerBound(float(need.sum() * step_s), cap, step_s, int(need.max()) if need.size else 0)


@dataclass(frozen=True)
class References:
    """What classes of policies can reach on one arrival draw (fluid model, per second), next to the bound.

    queueing_floor: with perfect foresight and instant starts, but requests queue (Erlang C with the measured
    service time): the fewest replica-seconds whose modelled share of late requests is <= 1 - goal each
    second. `queueing_floor / bound` is the price of random arrivals alone; no policy beats it by much.
    reactive: no foresight, per-second counts seen `metrics_lag_s` late (compare: half the metrics push
    period, the mean age of the newest pushed data), replicas ready `replica_start_s` after that, plus
    replicas that drain a backlog; capacity = the largest per-second need of a hold window, times
    (1 + headroom). `reactive_attainment` is reaction with only a short hold (max(30 s,
    3 starts), enough to absorb per-second noise) and no headroom; `reactive_goal_*` is the cheapest
    (hold, headroom) of a grid that reaches the goal. A burst faster than a start shows as
    reactive_attainment < goal: only capacity held in advance can serve it.
    """

    goal: float
    replica_start_s: float
    bound_replica_seconds: float
    queueing_floor_replica_seconds: float
    reactive_attainment: float
    reactive_goal_reached: bool
    reactive_goal_hold_s: float | None
    reactive_goal_headroom: float | None
    reactive_goal_replica_seconds: float | None
    metrics_lag_s: float = 0.0  # how stale the controller's newest data is (half the metrics push period)

    @property
    def queueing_floor_ratio(self) -> float:
        return self.queueing_floor_replica_seconds / self.bound_replica_seconds

    @property
    def reactive_goal_ratio(self) -> float | None:
        r = self.reactive_goal_replica_seconds
        return r / self.bound_replica_seconds if r is not None else None

    def verdict(self, max_ratio: float = 1.3) -> str:
        """One or two sentences: whether the goal, and the goal within `max_ratio` x the bound, are reachable."""
        g, out = f"{100 * self.goal:g}%", []
        if self.reactive_attainment < self.goal:
            short = 100 * (self.goal - self.reactive_attainment)
            lag = f" plus {self.metrics_lag_s:g} s of metrics lag" if self.metrics_lag_s else ""
            out.append(f"a burst faster than a {self.replica_start_s:g} s replica start{lag}: reaction reaches "
                       f"{100 * self.reactive_attainment:.2f}% ({short:.2f} points short of {g})")
            if self.reactive_goal_reached:
                hold, room = self.reactive_goal_hold_s, 100 * self.reactive_goal_headroom
                out.append(f"{g} needs capacity held {hold:g} s with +{room:g}% headroom, "
                           f"{self.reactive_goal_ratio:.2f}x the bound")
            else:
                out.append(f"no hold/headroom setting of the reference grid reaches {g} without foresight")
        if self.queueing_floor_ratio > max_ratio:
            out.append(f"even with foresight, queueing alone needs {self.queueing_floor_ratio:.2f}x the bound "
                       f"(> {max_ratio:g}x)")
        elif self.reactive_goal_ratio is not None and self.reactive_goal_ratio > max_ratio:
            out.append(f"without foresight {g} costs {self.reactive_goal_ratio:.2f}x the bound (> {max_ratio:g}x)")
        return "; ".join(out) + "." if out else f"{g} within {max_ratio:g}x the bound is within reach."

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(queueing_floor_ratio=self.queueing_floor_ratio, reactive_goal_ratio=self.reactive_goal_ratio,
                 verdict=self.verdict())
        return d


HOLD_GRID_S = (0.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0)
HEADROOM_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def _react(counts: np.ndarray, want: np.ndarray, cap: float, start: int, drain_s: float) -> tuple[int, float]:
    """Late requests and replica-seconds when capacity follows `want` `start` seconds late, plus replicas
    asked (also `start` seconds ahead of being ready) to drain the backlog within `drain_s`. FIFO fluid
    queue (Lindley recursion); a request still queued at the end of its second is late, counted once."""
    n_steps = len(counts)
    extra = np.zeros(n_steps)
    backlog, late, rs = 0.0, 0.0, 0.0
    for t in range(n_steps):
        c = (want[t - start] if t >= start else want[0]) + extra[t]
        rs += c
        n = counts[t]
        backlog = max(backlog + n - c * cap, 0.0)
        late += min(n, backlog)
        if backlog > 0 and t + start < n_steps:
            extra[t + start] = max(extra[t + start], np.ceil(backlog / (cap * drain_s)))
    return int(round(late)), rs


def references(arrivals: np.ndarray, duration_s: float, profile: ModelProfile, slo_p95_ms: float,
               min_replicas: int = 1, goal: float = 0.99, drain_s: float = 2.0,
               metrics_lag_s: float = 0.0) -> References:
    from .policies.slo import SloPolicyConfig, steady_need

    lb = lower_bound(arrivals, duration_s, profile, slo_p95_ms, min_replicas)
    cap = lb.capacity_rps_per_replica
    n_steps = int(np.ceil(duration_s - 1e-9))
    counts = np.bincount(np.minimum(np.asarray(arrivals, float).astype(int), n_steps - 1), minlength=n_steps)
    total = max(int(counts.sum()), 1)

    q_cfg = SloPolicyConfig(slo_p95_ms=slo_p95_ms, capacity_rps_per_replica=profile.capacity_rps(slo_p95_ms, 2.0),
                            target_miss=min(max(1.0 - goal, 1e-6), 0.5))
    per_count = {int(n): max(steady_need(q_cfg, float(n)), min_replicas) for n in np.unique(counts)}
    floor = float(sum(per_count[int(n)] for n in counts))

    if metrics_lag_s < 0:
        raise UserError("metrics_lag_s must be >= 0.")
    start = int(round(profile.replica_start_s + metrics_lag_s))

    def reactive(hold_s: float, headroom: float) -> tuple[float, float]:
        want = np.maximum(np.ceil(counts * (1.0 + headroom) / cap - 1e-9), min_replicas)
        h = int(hold_s)
        if h > 0:  # sliding max over the hold window (doubling trick: O(n log h))
            held, span = want.copy(), 1
            while span <= h:
                step = min(span, h + 1 - span)
                held[step:] = np.maximum(held[step:], held[:-step])
                span += step
            want = held
        late, rs = _react(counts.astype(float), want, cap, start, drain_s)
        return 1.0 - late / total, rs

    pure_att, _ = reactive(max(30.0, 3 * profile.replica_start_s), 0.0)
    best: tuple[float, float, float] | None = None  # (replica-s, hold, headroom)
    for headroom in HEADROOM_GRID:
        for hold in HOLD_GRID_S:
            att, rs = reactive(hold, headroom)
            if att >= goal and (best is None or rs < best[0]):
                best = (rs, hold, headroom)
            if att >= goal:
                break  # longer holds at this headroom only cost more
    return References(goal, profile.replica_start_s, lb.replica_seconds, floor, pure_att, best is not None,
                      best[1] if best else None, best[2] if best else None, best[0] if best else None,
                      metrics_lag_s)
