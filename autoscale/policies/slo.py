"""`slo`: replicas from the arrival rate and a measured capacity model, to keep p95 latency <= objective.

capacity_rps_per_replica is the throughput one replica sustains while meeting the objective, taken from
the model's measured latency-versus-batch-size curve (`ModelProfile.capacity_rps`; set it directly or give
`profile_path`). desired = rate x (1 + headroom) / capacity, with two reactive backstops: Little's law on
the ongoing requests (a backlog the rate alone misses) and, if `latency_feedback`, one extra replica while the
observed p95 is over the objective. Scale-up is immediate; scale-down waits until the lower need held for
`downscale_delay_s` (max over the window). Without a capacity, falls back to ongoing / 2 per replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimize._errors import UserError

from ._base import Observation, PolicyConfig, windowed_max


@dataclass(frozen=True)
class SloPolicyConfig(PolicyConfig):
    slo_p95_ms: float = 50.0
    capacity_rps_per_replica: float | None = None
    profile_path: str | None = None
    headroom: float = 0.25
    downscale_delay_s: float = 60.0
    latency_feedback: bool = False  # +1 replica while observed p95 > objective (off: runs away when
    # the latency comes from batch size, not from queueing)
    fallback_ongoing_per_replica: float = 2.0
    look_back_period_s: float = 12.0

    def validate(self) -> None:
        if self.slo_p95_ms <= 0:
            raise UserError("slo_p95_ms must be positive.")
        if self.capacity_rps_per_replica is not None and self.capacity_rps_per_replica <= 0:
            raise UserError("capacity_rps_per_replica must be positive.")

    def resolved(self):
        """With capacity_rps_per_replica filled in from `profile_path` when only the profile is given."""
        if self.capacity_rps_per_replica is not None or not self.profile_path:
            return self
        from autoscale.profile import ModelProfile

        cap = ModelProfile.load(self.profile_path).capacity_rps(self.slo_p95_ms, latency_factor=2.0)
        return self.replace(capacity_rps_per_replica=cap)


def slo_need(obs: Observation, cfg: SloPolicyConfig, rate_rps: float) -> int:
    """Replicas for `rate_rps` plus the reactive backstops (shared with `predictive`)."""
    cap = cfg.capacity_rps_per_replica
    if cap is None:
        return math.ceil(obs.ongoing_requests / cfg.fallback_ongoing_per_replica)
    need = math.ceil(rate_rps * (1.0 + cfg.headroom) / cap - 1e-9)
    # Little's law: at the objective each replica holds cap x slo requests; more means a backlog.
    backlog = math.ceil(obs.ongoing_requests / (cap * cfg.slo_p95_ms / 1000.0) - 1e-9)
    need = max(need, backlog)
    if cfg.latency_feedback and obs.latency_p95_ms > cfg.slo_p95_ms and obs.current_replicas > 0:
        need = max(need, obs.target_replicas + 1)
    return need


def slo_policy(obs: Observation, cfg: SloPolicyConfig, state: dict) -> tuple[int, dict]:
    need = slo_need(obs, cfg, obs.arrival_rate_rps)
    final, recs = windowed_max(state.get("recommendations", []), obs.time_s, need, cfg.downscale_delay_s)
    return obs.clamp(final), {"recommendations": recs}
