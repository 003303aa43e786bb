"""What every policy shares: the Ray-free observation, typed configs loaded from YAML, small helpers.

A policy is a pure function `(obs, config, state) -> (desired_replicas, new_state)`; `state` is a plain
JSON-serialisable dict the caller keeps between calls (Ray Serve keeps it as `policy_state`), so a
policy can be tested with a fake clock and its state round-trips through JSON.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from optiserve.config import read_mapping
from optiserve.errors import UserError


@dataclass(frozen=True)
class Observation:
    """What the control loop knows at `time_s` (metrics already aggregated and lagged as Ray's are)."""

    time_s: float
    current_replicas: int  # running (ready) replicas
    target_replicas: int  # the last decision (includes replicas still starting)
    ongoing_requests: float  # total across replicas, queued + running (Ray's total_num_requests)
    queued_requests: float = 0.0
    arrival_rate_rps: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    replica_start_s: float = 0.0
    min_replicas: int = 1
    max_replicas: int = 10

    def clamp(self, n: float) -> int:
        return int(min(max(math.ceil(n - 1e-9), self.min_replicas), self.max_replicas))


@dataclass(frozen=True)
class PolicyConfig:
    """Base of every policy config: validated on construction, dict/YAML round-trip."""

    # Window Ray Serve averages metrics over (AutoscalingConfig.look_back_period_s); the simulator lags the
    # observation the same way and the Ray adapter passes it on.
    look_back_period_s: float = 30.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int | float) and not isinstance(v, bool) and (not math.isfinite(v) or v < 0):
                raise UserError(f"{type(self).__name__}.{f.name} must be a non-negative number, got {v}.")
        if self.look_back_period_s <= 0:
            raise UserError("look_back_period_s must be positive.")
        self.validate()

    def validate(self) -> None:
        """Extra per-policy checks; raise UserError."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None):
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(names))}.")
        try:
            return cls(**data)
        except TypeError as exc:
            raise UserError(f"bad {cls.__name__} settings ({exc}).") from None

    def replace(self, **changes):
        return self.from_dict({**self.to_dict(), **changes})


def read_yaml(path: str | Path) -> dict:
    return read_mapping(path, "config file", "adaptive: {target_utilization: 0.7}")


def windowed_max(history: list, t: float, value: int, window_s: float, bucket_s: float = 1.0) -> tuple[int, list]:
    """Append `value` at `t` to [[t, v], ...] (one entry per `bucket_s`) and return the max over the window.

    The scale-down stabilisation of HPA/KPA: a lower recommendation only wins once every recommendation
    in the window agrees, so noise does not cause flapping and scale-up is never delayed.
    """
    hist = [h for h in history if t - h[0] < window_s]
    if hist and t - hist[-1][0] < bucket_s:
        hist[-1] = [hist[-1][0], max(hist[-1][1], value)]
    else:
        hist.append([t, value])
    return max(v for _, v in hist), hist
