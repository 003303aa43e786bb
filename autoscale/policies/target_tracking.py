"""`target-tracking`: the Kubernetes HPA / Knative KPA rule on ongoing requests per replica.

desired = load / target, where load is the average over a stable window (60 s) or, in panic mode, over a
short panic window (6 s). Panic starts when the panic-window need reaches `panic_threshold` x the ready
replicas and lasts a stable window; while panicking the autoscaler never scales down (KPA). Outside
panic a tolerance band (HPA's 10 %) ignores small deviations, and a lower recommendation only takes
effect once it held for `scale_down_stabilization_s` (HPA's stabilisation window): bursts scale up at
once, noise does not flap. Rate limits bound one step (KPA max scale up/down rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optiserve.errors import UserError

from ._base import Observation, PolicyConfig, windowed_max


@dataclass(frozen=True)
class TargetTrackingConfig(PolicyConfig):
    target_ongoing_per_replica: float = 2.0
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0
    tolerance: float = 0.1
    scale_down_stabilization_s: float = 120.0
    max_scale_up_rate: float = 10.0
    max_scale_down_rate: float = 2.0
    sample_period_s: float = 1.0
    look_back_period_s: float = 12.0

    def validate(self) -> None:
        if self.target_ongoing_per_replica <= 0 or self.panic_window_s <= 0:
            raise UserError("target_ongoing_per_replica and panic_window_s must be positive.")
        if self.panic_window_s > self.stable_window_s:
            raise UserError("panic_window_s must not exceed stable_window_s.")
        if self.max_scale_up_rate < 1 or self.max_scale_down_rate < 1:
            raise UserError("max_scale_up_rate and max_scale_down_rate must be at least 1.")


def _mean_since(samples: list, t0: float) -> float:
    vals = [v for t, v in samples if t >= t0]
    return sum(vals) / len(vals) if vals else 0.0


def target_tracking_policy(obs: Observation, cfg: TargetTrackingConfig, state: dict) -> tuple[int, dict]:
    t = obs.time_s
    samples = [list(s) for s in state.get("samples", []) if t - s[0] < cfg.stable_window_s]
    if not samples or t - samples[-1][0] >= cfg.sample_period_s:
        samples.append([t, float(obs.ongoing_requests)])
    else:
        samples[-1][1] = float(obs.ongoing_requests)  # latest value within the sample period wins
    stable_load = _mean_since(samples, t - cfg.stable_window_s)
    stable_need = math.ceil(stable_load / cfg.target_ongoing_per_replica)
    panic_need = math.ceil(_mean_since(samples, t - cfg.panic_window_s) / cfg.target_ongoing_per_replica)

    ready = max(obs.current_replicas, 1)
    panic_until = state.get("panic_until_s")
    if panic_need >= cfg.panic_threshold * ready and panic_need > obs.current_replicas:
        panic_until = t + cfg.stable_window_s
    panicking = panic_until is not None and t < panic_until
    if not panicking:
        panic_until = None

    target = obs.target_replicas
    if panicking:
        desired = max(panic_need, target)  # KPA: never scale down in panic mode
    else:
        desired = stable_need
        load_ratio = stable_load / (cfg.target_ongoing_per_replica * max(target, 1))
        if target > 0 and abs(load_ratio - 1.0) <= cfg.tolerance:
            desired = target
    desired = min(desired, math.ceil(ready * cfg.max_scale_up_rate))
    desired = max(desired, math.floor(target / cfg.max_scale_down_rate))
    final, recs = windowed_max(state.get("recommendations", []), t, desired, cfg.scale_down_stabilization_s)
    new_state = {"samples": samples, "recommendations": recs, "panic_until_s": panic_until}
    return obs.clamp(final), new_state
