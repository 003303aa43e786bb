"""Demand-driven autoscaling: pure policies, cost model, traces and simulator; Ray Serve adapter.

`autoscale.ray_adapter` (the only module importing Ray) is not imported here, so the pure core stays
importable without starting or loading Ray.
"""

from .bound import LowerBound, References, lower_bound, references
from .compare import Comparison, TraceComparison, compare_trace, default_configs
from .cost import CostBreakdown, CostModel, PriceTable
from .policies import DEFAULT_POLICY, POLICIES, Observation, load_policy_config
from .profile import ModelProfile, measure_profile
from .simulator import SimConfig, SimulationResult, simulate
from .traces import TRACE_KINDS, Trace, load_csv, make_trace, trace_from_spec

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "TRACE_KINDS",
    "Comparison",
    "CostBreakdown",
    "CostModel",
    "LowerBound",
    "ModelProfile",
    "Observation",
    "PriceTable",
    "References",
    "SimConfig",
    "SimulationResult",
    "Trace",
    "TraceComparison",
    "compare_trace",
    "default_configs",
    "load_csv",
    "load_policy_config",
    "lower_bound",
    "make_trace",
    "measure_profile",
    "references",
    "simulate",
    "trace_from_spec",
]
