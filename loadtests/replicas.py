"""Replica counts sampled during a run, and what they add up to: replica-seconds and scaling events.

Pure: the samples come from Ray Serve (see `_serve_probe.py`) or a test's fake list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from optiserve.errors import UserError


@dataclass(frozen=True)
class ReplicaSample:
    """Replica states of one deployment at `t_s` seconds into the run."""

    t_s: float
    running: int
    starting: int = 0
    stopping: int = 0

    @property
    def committed(self) -> int:
        """Replicas the controller wants (running + starting): what a scale decision changes."""
        return self.running + self.starting

    @property
    def billed(self) -> int:
        """Replicas holding resources, so costing money: starting and stopping ones too."""
        return self.running + self.starting + self.stopping

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReplicaSummary:
    replica_seconds: float
    min_replicas: int
    max_replicas: int
    mean_replicas: float
    scale_ups: int  # times the committed count rose
    scale_downs: int  # times it fell

    def to_dict(self) -> dict:
        return asdict(self)


def replica_seconds(samples: list[ReplicaSample], duration_s: float) -> float:
    """Integral of billed replicas over [0, duration_s]; each sample holds until the next (first one from 0)."""
    if duration_s < 0:
        raise UserError("duration_s must be non-negative.")
    pts = sorted((s for s in samples if s.t_s < duration_s), key=lambda s: s.t_s)
    if not pts:
        return 0.0
    total = 0.0
    for i, s in enumerate(pts):
        t0 = 0.0 if i == 0 else max(s.t_s, 0.0)
        t1 = pts[i + 1].t_s if i + 1 < len(pts) else duration_s
        total += s.billed * max(t1 - t0, 0.0)
    return total


def summarize_replicas(samples: list[ReplicaSample], duration_s: float) -> ReplicaSummary:
    pts = sorted(samples, key=lambda s: s.t_s)
    if not pts:
        return ReplicaSummary(0.0, 0, 0, 0.0, 0, 0)
    committed = [s.committed for s in pts]
    ups = sum(1 for a, b in zip(committed, committed[1:], strict=False) if b > a)
    downs = sum(1 for a, b in zip(committed, committed[1:], strict=False) if b < a)
    rs = replica_seconds(pts, duration_s)
    return ReplicaSummary(
        replica_seconds=rs, min_replicas=min(s.running for s in pts), max_replicas=max(s.running for s in pts),
        mean_replicas=rs / duration_s if duration_s > 0 else 0.0, scale_ups=ups, scale_downs=downs,
    )
