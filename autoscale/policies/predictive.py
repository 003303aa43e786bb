"""`predictive`: forecast the arrival rate one replica start-up ahead and provision for it now.

Holt's linear (double exponential) smoothing of the observed arrival rate, updated once per metrics
period; the forecast horizon is the replica start time plus the metrics lag, so replicas are ready when
the demand arrives. desired = max(need(forecast), need(current rate)) with the `slo` policy's capacity
model and panic mode, so a wrong forecast never provisions below the reactive need.
"""

from __future__ import annotations

from dataclasses import dataclass

from optiserve.errors import UserError

from ._base import Observation
from .slo import SloPolicyConfig, decide, slo_need, smoothed_rate


@dataclass(frozen=True)
class PredictiveConfig(SloPolicyConfig):
    alpha: float = 0.6  # level smoothing
    beta: float = 0.3  # trend smoothing
    update_period_s: float = 2.0  # one update per metrics push (the observation is constant in between)
    metrics_lag_s: float = 4.0  # added to the replica start time to form the horizon (push + look-back)
    max_growth: float = 3.0  # cap on forecast / current rate, so one noisy jump cannot explode

    def validate(self) -> None:
        super().validate()
        if not (0 < self.alpha <= 1 and 0 <= self.beta <= 1):
            raise UserError("alpha must be in (0, 1] and beta in [0, 1].")
        if self.update_period_s <= 0 or self.max_growth < 1:
            raise UserError("update_period_s must be positive and max_growth at least 1.")


def predictive_policy(obs: Observation, cfg: PredictiveConfig, state: dict) -> tuple[int, dict]:
    t, rate = obs.time_s, obs.arrival_rate_rps
    level, trend, last_t = state.get("level"), state.get("trend", 0.0), state.get("last_update_s")
    if level is None:
        level, trend, last_t = rate, 0.0, t
    elif t - last_t >= cfg.update_period_s:
        dt = t - last_t
        new_level = cfg.alpha * rate + (1 - cfg.alpha) * (level + trend * dt)
        trend = cfg.beta * (new_level - level) / dt + (1 - cfg.beta) * trend
        level, last_t = new_level, t
    horizon = obs.replica_start_s + cfg.metrics_lag_s + (t - last_t)
    forecast = min(max(level + trend * horizon, 0.0), max(rate, level) * cfg.max_growth)
    smooth, hist = smoothed_rate(obs, cfg, state)
    need = max(slo_need(obs, cfg, forecast), slo_need(obs, cfg, smooth))
    desired, new_state = decide(obs, cfg, state, need, rate)
    return desired, {**new_state, "rates": hist, "level": level, "trend": trend, "last_update_s": last_t}
