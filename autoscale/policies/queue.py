"""`queue`: Ray Serve's default `replica_queue_length_autoscaling_policy`, re-implemented without Ray.

Mirrors ray/serve/autoscaling_policy.py (Ray 2.60): desired = total ongoing requests / target per
replica, the cold-start fast path, upscaling/downscaling factors applied to the change relative to the
running replicas, wall-clock upscale/downscale delays measured from the first consecutive decision in
one direction, then min/max bounds. Config defaults are Ray's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optiserve.errors import UserError

from ._base import Observation, PolicyConfig

_EPS_S = 1e-6  # Ray's _DELAY_ELAPSED_EPS_S


@dataclass(frozen=True)
class QueuePolicyConfig(PolicyConfig):
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    downscale_to_zero_delay_s: float | None = None
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0
    look_back_period_s: float = 30.0

    def validate(self) -> None:
        if self.target_ongoing_requests <= 0 or self.upscaling_factor <= 0 or self.downscaling_factor <= 0:
            raise UserError("target_ongoing_requests and the scaling factors must be positive.")


def _scaling_factors(desired: float, current: int, cfg: QueuePolicyConfig) -> int:
    if current == 0:
        return math.ceil(desired)
    delta = desired - current
    factor = cfg.upscaling_factor if delta > 0 else cfg.downscaling_factor
    scaled = math.ceil(current + factor * delta)
    if math.ceil(float(desired)) < current and scaled == current:  # stuck by a small factor: step down 1
        scaled -= 1
    return scaled


def _delay(desired: int, target: int, cfg: QueuePolicyConfig, state: dict, now: float) -> tuple[int, dict]:
    decision = target
    counter = state.get("decision_counter", 0)
    since = state.get("decision_timestamp_s")
    if desired > target:
        if counter < 0:
            counter, since = 0, None
        counter += 1
        since = now if since is None else since
        if now - since + _EPS_S >= cfg.upscale_delay_s:
            counter, since, decision = 0, None, desired
    elif desired < target:
        if counter > 0:
            counter, since = 0, None
        counter -= 1
        if target == 1 and cfg.downscale_to_zero_delay_s is not None:
            delay_s = cfg.downscale_to_zero_delay_s
        else:
            delay_s = cfg.downscale_delay_s
            if target != 1:
                desired = max(1, desired)
        since = now if since is None else since
        if now - since + _EPS_S >= delay_s:
            counter, since, decision = 0, None, desired
    else:
        counter, since = 0, None
    return decision, {**state, "decision_counter": counter, "decision_timestamp_s": since}


def queue_policy(obs: Observation, cfg: QueuePolicyConfig, state: dict) -> tuple[int, dict]:
    state = dict(state)
    cur, target = obs.current_replicas, obs.target_replicas
    if cur == 0 and obs.ongoing_requests > 0:  # cold-start fast path, no delay
        return obs.clamp(max(math.ceil(cfg.upscaling_factor), target)), state
    if cur == 0:
        desired = math.ceil(target)
        if desired > 0:
            return obs.clamp(desired), state
    else:
        desired = _scaling_factors(obs.ongoing_requests / cfg.target_ongoing_requests, cur, cfg)
    decision, state = _delay(max(0, desired), target, cfg, state, obs.time_s)
    return obs.clamp(decision), state
