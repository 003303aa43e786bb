"""Load tests against served models (Locust in a subprocess), SLO and cost verdicts, capacity plans."""

from .capacity import (
    CapacityCurve,
    CapacityPlan,
    CapacityReport,
    SearchConfig,
    StepMeasurement,
    build_report,
    find_capacity,
    plan_capacity,
)
from .replicas import ReplicaSample, replica_seconds, summarize_replicas
from .result import LoadTestResult, Objectives, RunConfig, Verdict, build_result
from .stats import Records, SloAttainment, slo_attainment, summarize, time_series

__all__ = [
    "CapacityCurve",
    "CapacityPlan",
    "CapacityReport",
    "LoadTestResult",
    "Objectives",
    "Records",
    "ReplicaSample",
    "RunConfig",
    "SearchConfig",
    "SloAttainment",
    "StepMeasurement",
    "Verdict",
    "build_report",
    "build_result",
    "find_capacity",
    "plan_capacity",
    "replica_seconds",
    "slo_attainment",
    "summarize",
    "summarize_replicas",
    "time_series",
]
