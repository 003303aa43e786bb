"""Capacity search and capacity plan, pure: the load measurement is a function passed in.

Search: a step load on ONE replica: a coarse geometric staircase, then finer ones between the last step
that met the objective and the first that did not, until that bracket is within 5 %. A step passes when
its p95 <= the objective, its error rate <= the maximum and it achieved (almost) the offered rate.
Capacity = the highest throughput achieved by a passing step. Plan: for a target peak, the replicas
needed at a target utilisation, cost per hour and per million inferences (autoscale's cost model), and a
recommended autoscaling config for the `slo` policy: the questions SageMaker Inference Recommender and
Triton Model Analyzer answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoscale.cost import CostModel
from optiserve.errors import UserError

from ._json import clean, nan


@dataclass(frozen=True)
class StepMeasurement:
    """One stair of a step load: `offered_rps` asked for, what came back."""

    offered_rps: float
    achieved_rps: float  # successful responses per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    error_rate: float
    requests: int
    passed: bool = False  # filled in by the search
    duration_s: float = 0.0  # measured window; lets the saturation test allow for Poisson noise


# measure(rates_rps, step_s) -> one StepMeasurement per rate, in order; may return fewer when it aborts
# early (e.g. the load generator stops once a stair is far over the objective).
MeasureFn = Callable[[Sequence[float], float], list[StepMeasurement]]


@dataclass(frozen=True)
class SearchConfig:
    slo_p95_ms: float
    max_error_rate: float = 0.01
    start_rps: float = 10.0
    growth: float = 1.6
    max_rps: float = 2000.0
    max_coarse_steps: int = 10
    refine_steps: int = 3
    refine_rounds: int = 2  # refinement runs at most (each narrows the bracket to a quarter with 3 steps)
    step_s: float = 10.0
    min_achieved_ratio: float = 0.9  # below this share of the offered rate the replica is saturated

    def __post_init__(self) -> None:
        if not self.slo_p95_ms > 0:
            raise UserError(f"--slo-p95-ms must be positive, got {self.slo_p95_ms}.")
        if not (self.start_rps > 0 and self.growth > 1 and self.max_rps >= self.start_rps):
            raise UserError("capacity search needs start_rps > 0, growth > 1 and max_rps >= start_rps.")
        if self.step_s <= 0 or self.max_coarse_steps < 1 or self.refine_steps < 0 or self.refine_rounds < 0:
            raise UserError("step_s must be positive, max_coarse_steps >= 1, refine_steps and refine_rounds >= 0.")

    def coarse_rates(self) -> list[float]:
        rates, r = [], self.start_rps
        while r <= self.max_rps * (1 + 1e-9) and len(rates) < self.max_coarse_steps:
            rates.append(round(r, 3))
            r *= self.growth
        return rates


@dataclass(frozen=True)
class CapacityCurve:
    """The search's outcome for one configuration (replica kind + batching)."""

    label: str
    replica_kind: str
    max_batch_size: int
    batch_wait_ms: float
    capacity_rps: float  # 0 when even the lowest step missed the objective
    limited_by: str  # "objective", "saturation", "errors", "max_rps" or "unreachable"
    steps: list[StepMeasurement]

    def to_dict(self) -> dict:
        return asdict(self)


def _kept_up(m: StepMeasurement, cfg: SearchConfig) -> bool:
    """Achieved at least min_achieved_ratio of the offered rate, or fell short by no more than Poisson noise
    (3 sigma of the expected count: a 4 s stair at 10 req/s can see 25 arrivals instead of 40)."""
    if m.achieved_rps >= cfg.min_achieved_ratio * m.offered_rps:
        return True
    expected = m.offered_rps * m.duration_s
    return m.duration_s > 0 and m.achieved_rps * m.duration_s >= expected - 3.0 * math.sqrt(expected)


def _judge(m: StepMeasurement, cfg: SearchConfig) -> StepMeasurement:
    ok = (m.requests > 0 and not math.isnan(m.p95_ms) and m.p95_ms <= cfg.slo_p95_ms
          and m.error_rate <= cfg.max_error_rate and _kept_up(m, cfg))
    return StepMeasurement(**{**asdict(m), "passed": bool(ok)})


def _why(m: StepMeasurement, cfg: SearchConfig) -> str:
    if m.error_rate > cfg.max_error_rate:
        return "errors"
    if not _kept_up(m, cfg):
        return "saturation"
    return "objective"


def find_capacity(measure: MeasureFn, cfg: SearchConfig, *, label: str = "default", replica_kind: str = "cpu-1",
                  max_batch_size: int = 1, batch_wait_ms: float = 0.0) -> CapacityCurve:
    coarse = [_judge(m, cfg) for m in measure(cfg.coarse_rates(), cfg.step_s)]
    if not coarse:
        raise UserError("the load measurement returned no steps; is the model being served?")
    steps = list(coarse)
    first_fail = next((i for i, m in enumerate(coarse) if not m.passed), None)
    if first_fail is None:
        limited = "max_rps"
    else:
        lo = coarse[first_fail - 1].offered_rps if first_fail > 0 else 0.0
        hi = coarse[first_fail].offered_rps
        limited = _why(coarse[first_fail], cfg)
        # Narrow the bracket [last pass, first fail] round by round until it is within 5 %.
        for _ in range(cfg.refine_rounds if cfg.refine_steps else 0):
            rates = [round(lo + (hi - lo) * j / (cfg.refine_steps + 1), 3) for j in range(1, cfg.refine_steps + 1)]
            fine = [_judge(m, cfg) for m in measure([r for r in rates if r > 0], cfg.step_s)] if rates else []
            steps += fine
            fail = next((m for m in fine if not m.passed), None)
            below = [m.offered_rps for m in fine if m.passed and (fail is None or m.offered_rps < fail.offered_rps)]
            lo = max([lo, *below])
            if fail is not None:
                hi, limited = fail.offered_rps, _why(fail, cfg)
            if not fine or hi - lo <= 0.05 * hi:
                break
    passing = [m for m in steps if m.passed]
    capacity = max((m.achieved_rps for m in passing), default=0.0)
    if not passing:
        limited = "unreachable"
    steps.sort(key=lambda m: m.offered_rps)
    return CapacityCurve(label, replica_kind, max_batch_size, batch_wait_ms, float(capacity), limited, steps)


@dataclass(frozen=True)
class CapacityPlan:
    """What a target peak needs with one configuration."""

    label: str
    replica_kind: str
    capacity_rps: float
    peak_rps: float
    target_utilization: float
    replicas_needed: int
    cost_per_hour: float  # at peak, USD
    cost_per_million: float  # USD per million inferences at peak
    autoscaling: dict  # min_replicas, max_replicas, policy, policy_config


@dataclass(frozen=True)
class CapacityReport:
    model: str
    slo_p95_ms: float
    max_error_rate: float
    peak_rps: float | None
    curves: list[CapacityCurve]
    plans: list[CapacityPlan] = field(default_factory=list)
    recommended: str | None = None  # label of the cheapest plan

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(clean(self.to_dict()), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> CapacityReport:
        curves = [CapacityCurve(**{**c, "steps": [StepMeasurement(**nan(s)) for s in c["steps"]]}) for c in d["curves"]]
        return cls(d["model"], d["slo_p95_ms"], d["max_error_rate"], d["peak_rps"], curves,
                   [CapacityPlan(**p) for p in d.get("plans", [])], d.get("recommended"))


def plan_capacity(curve: CapacityCurve, peak_rps: float, slo_p95_ms: float, cost_model: CostModel | None = None,
                  target_utilization: float = 0.8, min_rps: float = 0.0, burst_factor: float = 1.25,
                  downscale_delay_s: float = 60.0) -> CapacityPlan:
    """Replicas and cost for `peak_rps`, each replica run at `target_utilization` of its capacity."""
    if not peak_rps > 0:
        raise UserError(f"--peak-rps must be positive, got {peak_rps}.")
    if not 0 < target_utilization <= 1:
        raise UserError(f"target utilization must be in (0, 1], got {target_utilization}.")
    if curve.capacity_rps <= 0:
        raise UserError(f"configuration {curve.label!r} met the {slo_p95_ms:g} ms objective at no load tested; "
                        "relax --slo-p95-ms or lower --start-rps.")
    cost_model = cost_model or CostModel()
    per_replica = curve.capacity_rps * target_utilization
    needed = max(1, math.ceil(peak_rps / per_replica - 1e-9))
    hour = cost_model.cost_of_run(needed * 3600.0, curve.replica_kind, round(peak_rps * 3600), 0)
    # Headroom the policy keeps on top of the measured capacity = 1/utilisation - 1, so the autoscaler and
    # the plan agree on how hard a replica is driven.
    policy_config = {"slo_p95_ms": slo_p95_ms, "capacity_rps_per_replica": round(curve.capacity_rps, 3),
                     "headroom": round(1.0 / target_utilization - 1.0, 3), "downscale_delay_s": downscale_delay_s}
    autoscaling = {
        "min_replicas": max(1, math.ceil(min_rps / per_replica - 1e-9)) if min_rps > 0 else 1,
        "max_replicas": max(needed, math.ceil(needed * burst_factor - 1e-9)),
        "policy": "slo", "policy_config": policy_config,
    }
    return CapacityPlan(curve.label, curve.replica_kind, curve.capacity_rps, float(peak_rps), target_utilization,
                        needed, hour.total, hour.total / (peak_rps * 3600.0) * 1e6, autoscaling)


def build_report(model: str, search: SearchConfig, curves: list[CapacityCurve], peak_rps: float | None,
                 cost_model: CostModel | None = None, target_utilization: float = 0.8,
                 min_rps: float = 0.0, downscale_delay_s: float = 60.0) -> CapacityReport:
    plans = []
    if peak_rps is not None:
        plans = [plan_capacity(c, peak_rps, search.slo_p95_ms, cost_model, target_utilization, min_rps,
                               downscale_delay_s=downscale_delay_s)
                 for c in curves if c.capacity_rps > 0]
    best = min(plans, key=lambda p: p.cost_per_hour).label if plans else None
    return CapacityReport(model, search.slo_p95_ms, search.max_error_rate, peak_rps, curves, plans, best)
