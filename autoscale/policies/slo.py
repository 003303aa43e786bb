"""`slo`: replicas from the arrival rate and a measured capacity model, to keep p95 latency <= objective.

capacity_rps_per_replica is the throughput one replica sustains while meeting the objective, taken from
the model's measured latency-versus-batch-size curve (`ModelProfile.capacity_rps`; set it directly or give
`profile_path`). With a = rate / capacity (the offered load in replicas), the steady need is
a x (1 + headroom) + staffing_beta x sqrt(a): square-root staffing (Halfin-Whitt), because the spare
capacity random arrivals need grows with sqrt(a), not with a, so large fleets run hotter than small ones
at the same tail latency. Scale-down of the steady need waits until the lower need held for
`downscale_delay_s` (max over the window), so noise does not flap.

Panic (burst) mode: queued requests mean the fleet is already behind. Then the policy asks, at once and
outside the downscale window, for the steady need plus enough replicas to drain the queue (as it will be
when the replicas now starting are ready) within `drain_s`; those extra replicas go as soon as the queue
is gone. If `latency_feedback`, one extra replica while the observed p95 is over the objective (off by
default: it runs away when the latency comes from batch size, not from queueing). Without a capacity,
falls back to ongoing / 2 per replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optiserve.errors import UserError

from ._base import Observation, PolicyConfig, windowed_max


@dataclass(frozen=True)
class SloPolicyConfig(PolicyConfig):
    slo_p95_ms: float = 50.0
    capacity_rps_per_replica: float | None = None
    profile_path: str | None = None
    target_miss: float = 0.01  # share of requests the queueing model may let wait past the objective
    service_ms: float | None = None  # mean service time of one request; default 1000 / capacity
    service_cv: float = 0.0  # coefficient of variation of the service time (0: deterministic model compute)
    headroom: float = 0.0  # extra proportional spare capacity on the rate (for noisy or unmodelled load)
    downscale_delay_s: float = 60.0
    drain_s: float = 2.0  # panic: drain the (projected) queue within this many seconds
    rate_window_s: float = 20.0  # the steady need uses the mean observed rate over this window ...
    jump_tolerance: float = 0.2  # ... unless the latest rate is this much above it (then the latest)
    latency_feedback: bool = False  # +1 replica while observed p95 > objective (off: runs away when
    # the latency comes from batch size, not from queueing)
    fallback_ongoing_per_replica: float = 2.0
    look_back_period_s: float = 4.0  # short: the policy smooths scale-down itself, scale-up must not lag

    def validate(self) -> None:
        if self.slo_p95_ms <= 0:
            raise UserError("slo_p95_ms must be positive.")
        if self.capacity_rps_per_replica is not None and self.capacity_rps_per_replica <= 0:
            raise UserError("capacity_rps_per_replica must be positive.")
        if self.drain_s <= 0:
            raise UserError("drain_s must be positive.")
        if not 0 < self.target_miss < 1:
            raise UserError("target_miss must lie strictly between 0 and 1.")
        if self.service_ms is not None and not 0 < self.service_ms < self.slo_p95_ms:
            raise UserError("service_ms must be positive and below slo_p95_ms.")

    def resolved(self):
        """With capacity_rps_per_replica filled in from `profile_path` when only the profile is given."""
        if self.capacity_rps_per_replica is not None or not self.profile_path:
            return self
        from autoscale.profile import ModelProfile

        cap = ModelProfile.load(self.profile_path).capacity_rps(self.slo_p95_ms, latency_factor=2.0)
        return self.replace(capacity_rps_per_replica=cap)


def miss_probability(c: int, a: float, service_s: float, slack_s: float, service_cv: float = 0.0) -> float:
    """P(wait > slack) with c replicas at offered load a (in replicas): Erlang C times the exponential tail
    of M/M/c, whose decay rate (c - a) / service is scaled by 2 / (1 + cv^2) for less variable service
    (Kingman's heavy-traffic factor; cv = 0 is M/D/c). One replica with deterministic service is M/D/1,
    whose exact tail is known (`md1_wait_tail`): Kingman's factor overstates it about 2x at light load
    (20 req/s on a 60 req/s replica, a 2-service-time slack: 2.2 % against 1.1 %), which kept a second
    replica where one serves."""
    if c <= a:
        return 1.0
    if c == 1 and service_cv == 0.0 and slack_s <= MD1_EXACT_SLACK * service_s:
        return md1_wait_tail(a, service_s, slack_s)
    b = 1.0
    for k in range(1, c + 1):  # Erlang B by the stable recursion
        b = a * b / (k + a * b)
    erlang_c = c * b / (c - a * (1.0 - b))
    return erlang_c * math.exp(-2.0 / (1.0 + service_cv**2) * (c - a) * slack_s / service_s)


MD1_EXACT_SLACK = 8.0  # the exact M/D/1 tail's alternating series loses precision past this many services


def md1_wait_tail(rho: float, service_s: float, slack_s: float) -> float:
    """P(wait > slack) in M/D/1 at utilisation rho (Erlang's formula; Crommelin 1932): with arrival rate
    l = rho / D, P(wait <= t) = (1 - rho) sum_{k=0}^{floor(t/D)} (l (kD - t))^k / k! e^{-l (kD - t)}."""
    lam = rho / service_s
    total = 0.0
    for k in range(int(slack_s / service_s) + 1):
        x = lam * (k * service_s - slack_s)
        total += x**k / math.factorial(k) * math.exp(-x)
    return min(max(1.0 - (1.0 - rho) * total, 0.0), 1.0)


def steady_need(cfg: SloPolicyConfig, rate_rps: float, target_miss: float | None = None) -> int:
    """Fewest replicas that serve `rate_rps` with at most `target_miss` (default: the config's) of requests
    waiting longer than the objective leaves after the service time (Erlang C with the measured capacity and
    service time)."""
    target_miss = cfg.target_miss if target_miss is None else target_miss
    cap = cfg.capacity_rps_per_replica
    a = max(rate_rps, 0.0) * (1.0 + cfg.headroom) / cap
    if a <= 0:
        return 0
    service_s = (cfg.service_ms if cfg.service_ms is not None else 1000.0 / cap) / 1000.0
    slack_s = max(cfg.slo_p95_ms / 1000.0 - service_s, 0.0)
    c = max(math.floor(a) + 1, 1)
    while miss_probability(c, a, service_s, slack_s, cfg.service_cv) > target_miss and c < a + 10 * a**0.5 + 10:
        c += 1
    return c


def burst_need(obs: Observation, cfg: SloPolicyConfig, rate_rps: float, state: dict) -> tuple[int, dict]:
    """Panic need: steady need plus the replicas that drain the queue (projected to when the replicas now
    starting are ready) within `drain_s`; 0 while nothing is queued. Tracks when replicas started in `state`."""
    t, cap = obs.time_s, cfg.capacity_rps_per_replica
    since = state.get("starting_since_s")
    since = (since if since is not None else t) if obs.target_replicas > obs.current_replicas else None
    if obs.queued_requests <= 0:
        return 0, {"starting_since_s": since}
    # Until more replicas are ready the queue keeps growing by what the ready ones cannot serve.
    wait_s = obs.replica_start_s - (t - since) if since is not None else obs.replica_start_s
    excess_rps = max(rate_rps - cap * obs.current_replicas, 0.0)
    drain = (obs.queued_requests + excess_rps * max(wait_s, 0.0)) / (cap * cfg.drain_s)
    if drain < 1.0:  # a queue one replica clears in drain_s is ordinary queueing, not a burst
        return 0, {"starting_since_s": since}
    # Panic never scales down: cancelling a starting replica and asking again restarts its clock.
    need = max(steady_need(cfg, rate_rps) + drain, obs.target_replicas)
    return math.ceil(need - 1e-9), {"starting_since_s": since}


def slo_need(obs: Observation, cfg: SloPolicyConfig, rate_rps: float) -> int:
    """Steady replicas for `rate_rps` (shared with `predictive`); ongoing / 2 without a capacity."""
    cap = cfg.capacity_rps_per_replica
    if cap is None:
        return math.ceil(obs.ongoing_requests / cfg.fallback_ongoing_per_replica)
    need = steady_need(cfg, rate_rps)
    if cfg.latency_feedback and obs.latency_p95_ms > cfg.slo_p95_ms and obs.current_replicas > 0:
        need = max(need, obs.target_replicas + 1)
    return need


def decide(obs: Observation, cfg: SloPolicyConfig, state: dict, steady: int, rate_rps: float) -> tuple[int, dict]:
    """The steady need held over the downscale window, overridden at once by the panic need (not held)."""
    final, recs = windowed_max(state.get("recommendations", []), obs.time_s, steady, cfg.downscale_delay_s)
    burst, panic_state = 0, {}
    if cfg.capacity_rps_per_replica is not None:
        burst, panic_state = burst_need(obs, cfg, rate_rps, state)
    return obs.clamp(max(final, burst)), {"recommendations": recs, **panic_state}


def smoothed_rate(obs: Observation, cfg: SloPolicyConfig, state: dict) -> tuple[float, list]:
    """Mean observed rate over `rate_window_s` (one sample per second kept in state), or the latest rate
    when it jumped more than `jump_tolerance` above that mean: noise does not lift the need, a step does."""
    t, rate = obs.time_s, obs.arrival_rate_rps
    hist = [h for h in state.get("rates", []) if t - h[0] < cfg.rate_window_s]
    if not hist or t - hist[-1][0] >= 1.0:
        hist.append([t, rate])
    else:
        hist[-1] = [hist[-1][0], rate]
    mean = sum(r for _, r in hist) / len(hist)
    return (rate if rate > mean * (1.0 + cfg.jump_tolerance) else mean), hist


def slo_policy(obs: Observation, cfg: SloPolicyConfig, state: dict) -> tuple[int, dict]:
    rate, hist = smoothed_rate(obs, cfg, state)
    desired, new_state = decide(obs, cfg, state, slo_need(obs, cfg, rate), obs.arrival_rate_rps)
    return desired, {**new_state, "rates": hist}
