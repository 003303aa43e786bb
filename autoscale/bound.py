"""Perfect-foresight lower bound: the fewest replica-seconds that could meet the SLO.

Knows every arrival in advance and starts replicas instantly: each second gets exactly the replicas its
realised arrivals need at the best throughput a replica reaches with batches whose latency alone is
within the objective (no queueing at all), and never fewer than `min_replicas`. No policy can use fewer
replica-seconds and meet the objective, so `replica_seconds / bound` measures the price of not knowing
the future.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from optimize._errors import UserError

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
