"""A load test's typed result: objectives, the verdict against them, and everything the report plots.

`build_result` turns raw request records and replica samples into a `LoadTestResult`; cost comes from
autoscale's cost model (one implementation for simulated and live runs). The JSON is the source of
truth; HTML and CSV are renderers of it (see report.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoscale.cost import CostBreakdown, CostModel
from optiserve.errors import UserError

from ._json import clean, nan
from .replicas import ReplicaSample, ReplicaSummary, summarize_replicas
from .stats import LatencySummary, Records, SecondStats, SloAttainment, slo_attainment, summarize, time_series

RESULT_VERSION = 1


@dataclass(frozen=True)
class Objectives:
    """What a run must meet; None means not checked."""

    slo_p95_ms: float | None = None
    max_error_rate: float = 0.01
    max_cost_per_1k: float | None = None

    def __post_init__(self) -> None:
        if self.slo_p95_ms is not None and not self.slo_p95_ms > 0:
            raise UserError(f"--slo-p95-ms must be positive, got {self.slo_p95_ms}.")
        if not 0 <= self.max_error_rate <= 1:
            raise UserError(f"--max-error-rate must be between 0 and 1, got {self.max_error_rate}.")
        if self.max_cost_per_1k is not None and self.max_cost_per_1k < 0:
            raise UserError(f"--max-cost-per-1k must be non-negative, got {self.max_cost_per_1k}.")


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool


@dataclass(frozen=True)
class Verdict:
    passed: bool
    checks: list[Check]

    def explain(self) -> str:
        lines = [f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.value:.4g} (limit {c.limit:.4g})"
                 for c in self.checks]
        return "\n".join(lines) or "no objectives given"


def verdict(summary: LatencySummary, cost: CostBreakdown, objectives: Objectives) -> Verdict:
    checks = []
    if objectives.slo_p95_ms is not None:
        p95 = summary.p95_ms if not math.isnan(summary.p95_ms) else math.inf  # no success at all fails
        checks.append(Check("p95 latency (ms)", p95, objectives.slo_p95_ms, p95 <= objectives.slo_p95_ms))
    err = summary.error_rate if summary.requests else 1.0  # a run that sent nothing fails
    checks.append(Check("error rate", err, objectives.max_error_rate, err <= objectives.max_error_rate))
    if objectives.max_cost_per_1k is not None:
        c = cost.cost_per_1k_requests
        checks.append(Check("cost per 1k requests (USD)", c, objectives.max_cost_per_1k,
                            c <= objectives.max_cost_per_1k))
    return Verdict(all(c.passed for c in checks), checks)


@dataclass(frozen=True)
class RunConfig:
    """What was run: recorded in the result so a report is self-describing."""

    url: str
    model: str
    shape: str
    duration_s: float
    trace_params: dict = field(default_factory=dict)
    replica_kind: str = "cpu-1"
    users: int = 0
    policy: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class LoadTestResult:
    config: RunConfig
    objectives: Objectives
    started_unix_s: float
    duration_s: float
    summary: LatencySummary
    timeseries: list[SecondStats]
    replicas: list[ReplicaSample]
    replica_summary: ReplicaSummary
    slo: SloAttainment | None
    cost: CostBreakdown
    verdict: Verdict
    target_requests: float = 0.0  # what the trace asked for; much more than summary.requests = generator fell behind
    result_version: int = RESULT_VERSION

    def to_dict(self) -> dict:
        return clean(asdict(self))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> LoadTestResult:
        try:
            v = d["verdict"]
            return cls(
                config=RunConfig(**d["config"]), objectives=Objectives(**d["objectives"]),
                started_unix_s=d["started_unix_s"], duration_s=d["duration_s"],
                summary=LatencySummary(**nan(d["summary"])),
                timeseries=[SecondStats(**nan(r)) for r in d["timeseries"]],
                replicas=[ReplicaSample(**r) for r in d["replicas"]],
                replica_summary=ReplicaSummary(**d["replica_summary"]),
                slo=SloAttainment(**nan(d["slo"])) if d.get("slo") else None,
                cost=CostBreakdown(**d["cost"]),
                verdict=Verdict(v["passed"], [Check(**nan(c)) for c in v["checks"]]),
                target_requests=d.get("target_requests", 0.0),
                result_version=d.get("result_version", RESULT_VERSION),
            )
        except (KeyError, TypeError) as exc:
            raise UserError(f"not a load test result ({exc!r}); was it written by `loadtest run`?") from None

    @classmethod
    def load(cls, path: str | Path) -> LoadTestResult:
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise UserError(f"{path} does not exist.") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}).") from None


def build_result(config: RunConfig, objectives: Objectives, records: Records, samples: list[ReplicaSample],
                 started_unix_s: float, duration_s: float, cost_model: CostModel | None = None,
                 target_rps=None, window_s: float = 10.0) -> LoadTestResult:
    """Everything a report needs, computed from raw per-request records and replica samples."""
    cost_model = cost_model or CostModel()
    summary = summarize(records, duration_s)
    rsum = summarize_replicas(samples, duration_s)
    slo = (slo_attainment(records, duration_s, objectives.slo_p95_ms, objectives.max_error_rate, window_s)
           if objectives.slo_p95_ms is not None else None)
    misses = slo.slo_misses if slo else summary.failures
    cost = cost_model.cost_of_run(rsum.replica_seconds, config.replica_kind, summary.requests, misses)
    ts = time_series(records, duration_s, target_rps)
    target = float(sum(r.target_rps for r in ts if not math.isnan(r.target_rps)))
    return LoadTestResult(
        config=config, objectives=objectives, started_unix_s=started_unix_s, duration_s=duration_s,
        summary=summary, timeseries=ts, replicas=list(samples), replica_summary=rsum, slo=slo, cost=cost,
        verdict=verdict(summary, cost, objectives), target_requests=target,
    )
