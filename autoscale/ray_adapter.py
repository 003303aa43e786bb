"""Ray Serve adapter: any pure policy as a Ray Serve custom autoscaling policy. The only Ray-aware module.

Ray 2.60 instantiates a policy *class* once with `autoscaling_config.policy.policy_kwargs` and calls it
with an `AutoscalingContext` every control-loop tick, then applies its own scaling factors, delays and
min/max bounds. `build_autoscaling_config` sets those Ray-side knobs to neutral (factor 1, delays 0) so
the pure policy alone decides, and passes the policy name and its config as `policy_kwargs`.
"""

from __future__ import annotations

import dataclasses
import time

from autoscale import metrics as m
from autoscale.policies import CONFIGS, DEFAULT_POLICY, Observation, get_policy, load_policy_config
from autoscale.profile import replica_start_s_of

POLICY_FUNCTION = "autoscale.ray_adapter:OptiservePolicy"
_STATE_KEY = "optiserve"  # our state lives under one key of Ray's policy_state, beside Ray's own keys
# Ray AutoscalingConfig fields that may be overridden through build_autoscaling_config(**overrides).
# How often replicas push metrics to the controller (Ray's default is 10 s; Ray 2.60 honours this deprecated
# field). The policies' short look-back windows and the simulator's default assume this value.
METRICS_INTERVAL_S = 2.0
_RAY_FIELDS = ("initial_replicas", "metrics_interval_s", "look_back_period_s", "aggregation_function",
               "downscale_to_zero_delay_s")


def build_autoscaling_config(policy: str | None, config_path: str | None, min_replicas: int, max_replicas: int,
                             replica_start_s: float | None = None, **overrides) -> dict:
    """The `autoscaling_config` dict for a Ray Serve deployment driven by pure policy `policy` (None: the
    default, `adaptive`).

    `replica_start_s` is what the policy assumes a new replica takes to serve; None reads it from the policy
    config's `profile_path`, else from the shipped profile (never a constant here).
    `overrides` may set policy config fields (e.g. slo_p95_ms=80) or Ray fields (initial_replicas,
    metrics_interval_s, look_back_period_s); None values are ignored.
    """
    policy = policy or DEFAULT_POLICY
    get_policy(policy)
    fields = {f.name for f in dataclasses.fields(CONFIGS[policy])}
    policy_over = {k: v for k, v in overrides.items() if k in fields and v is not None}
    ray_over = {k: v for k, v in overrides.items() if k in _RAY_FIELDS and k not in fields and v is not None}
    unknown = set(overrides) - set(policy_over) - set(ray_over) - {k for k, v in overrides.items() if v is None}
    if unknown:
        from optiserve.errors import UserError

        raise UserError(f"unknown autoscaling setting(s) {', '.join(sorted(unknown))} for policy {policy!r}.")
    cfg = load_policy_config(policy, config_path, **policy_over)
    out = {
        "min_replicas": int(min_replicas),
        "max_replicas": int(max_replicas),
        "look_back_period_s": cfg.look_back_period_s,
        "metrics_interval_s": METRICS_INTERVAL_S,
        # Neutral Ray-side shaping: the pure policy applies its own delays and factors.
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 0.0,
        "upscaling_factor": 1.0,
        "downscaling_factor": 1.0,
        "policy": {"policy_function": POLICY_FUNCTION,
                   "policy_kwargs": {"policy": policy, "config": cfg.to_dict(),
                                     "replica_start_s": float(replica_start_s if replica_start_s is not None
                                                              else replica_start_s_of(getattr(cfg, "profile_path",
                                                                                              None)))}},
    }
    if hasattr(cfg, "target_ongoing_requests"):
        out["target_ongoing_requests"] = cfg.target_ongoing_requests  # shown by Ray's own dashboards
    out.update(ray_over)
    return out


def _sum(metrics: dict, name: str) -> float | None:
    per_replica = metrics.get(name)
    return float(sum(per_replica.values())) if per_replica else None


def _max(metrics: dict, name: str) -> float:
    per_replica = metrics.get(name)
    return float(max(per_replica.values())) if per_replica else 0.0


def observation_from_context(ctx, replica_start_s: float = 0.0) -> Observation:
    """Build the pure Observation from Ray's AutoscalingContext and serve/'s per-replica metrics."""
    metrics = ctx.aggregated_metrics or {}
    ongoing = float(ctx.total_num_requests or 0.0)
    queued = _sum(metrics, m.QUEUE_LEN)
    if queued is None:
        queued = float(ctx.total_queued_requests or 0.0)
    return Observation(
        time_s=float(ctx.current_time if ctx.current_time is not None else time.time()),
        current_replicas=int(ctx.current_num_replicas),
        target_replicas=int(ctx.target_num_replicas),
        ongoing_requests=max(ongoing, _sum(metrics, m.ONGOING) or 0.0),
        queued_requests=queued,
        arrival_rate_rps=_sum(metrics, m.ARRIVAL_RATE_RPS) or 0.0,
        latency_p50_ms=_max(metrics, m.LATENCY_P50_MS),
        latency_p95_ms=_max(metrics, m.LATENCY_P95_MS),  # worst replica: the objective is per request
        latency_p99_ms=_max(metrics, m.LATENCY_P99_MS),
        replica_start_s=replica_start_s,
        min_replicas=int(ctx.capacity_adjusted_min_replicas),
        max_replicas=int(ctx.capacity_adjusted_max_replicas),
    )


class OptiservePolicy:
    """Ray Serve custom autoscaling policy: `OptiservePolicy(policy=NAME, config={...})(ctx)`."""

    def __init__(self, policy: str = DEFAULT_POLICY, config: dict | None = None,
                 replica_start_s: float | None = None) -> None:
        self.name = policy
        self.fn = get_policy(policy)
        self.config = CONFIGS[policy].from_dict(config or {})
        self.replica_start_s = (replica_start_s if replica_start_s is not None
                                else replica_start_s_of(getattr(self.config, "profile_path", None)))

    def __call__(self, ctx) -> tuple[int, dict]:
        obs = observation_from_context(ctx, self.replica_start_s)
        state = (ctx.policy_state or {}).get(_STATE_KEY, {})
        desired, new_state = self.fn(obs, self.config, state)
        return desired, {_STATE_KEY: new_state}
